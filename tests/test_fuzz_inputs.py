"""Fuzzed input (issue #20 item 6): generated recipes and data files either run or exit 2 with one line naming the
culprit — never a traceback, never a half-written output directory.

Recipes: a valid tiny distill recipe with 1-3 mutations — a key of the schema (or an unknown one, or a wrong
nesting) set to a value of a random type, or the YAML text itself broken. Data: SST-2-format train/dev files with
random rows (non-UTF-8 bytes, ragged rows, empty or 100k-character texts, NaN / out-of-range / non-numeric labels, a
missing or duplicated column, an empty split). Seeded (``derandomize``) and bounded: every case is a real
``distiller-nlp distill`` call in this process, on the tiny teacher, at most a few optimizer steps.
"""

import contextlib
import dataclasses
import io
import os
import shutil
import tempfile

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from distiller_nlp.cli import main  # noqa: E402
from distiller_nlp.config import DistillConfig  # noqa: E402

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"
SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OUTCOMES: dict = {}  # kind -> counts, read by benchmarks/reliability.py through the JSON it asks for


def _schema_keys(cls, prefix=""):
    out = []
    for f in dataclasses.fields(cls):
        t = f.type if not isinstance(f.type, str) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _schema_keys(type(default), prefix + f.name + ".")
        else:
            out.append(prefix + f.name)
        del t
    return out


KEYS = _schema_keys(DistillConfig)
# keys whose value would make a valid run long or reach outside the sandbox; fuzzed only with invalid values below
SLOW = {"train.epochs", "train.max_steps", "train.eval_steps", "train.save_steps", "output_dir", "teacher",
        "data.data_dir", "train.push_to_hub", "augment.stages", "augment.copies", "augment.repeated_aug",
        "train.num_workers", "train.report_to", "data.max_train_examples", "data.max_eval_examples", "teachers",
        "teacher_cache"}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(-2, 2), st.sampled_from(
    [float("nan"), float("inf"), 1e9]), st.text(max_size=6), st.sampled_from(["kd", "mse", "skip", "no", "bf16"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars, max_size=2))
bad_values = st.one_of(st.integers(-5, -1), st.text(min_size=1, max_size=4).map(lambda s: "?" + s),
                       st.lists(st.integers(), min_size=1, max_size=2), st.dictionaries(st.just("x"), st.integers(),
                                                                                        min_size=1))


def _set(d, dotted, value):
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["key", "key", "key", "unknown", "nesting"]))
    if kind == "key":
        key = draw(st.sampled_from(KEYS))
        return key, draw(bad_values if key in SLOW else values)
    if kind == "unknown":
        key = draw(st.sampled_from(["", "train.", "kd.", "data.", "kd.mapping."])) + draw(
            st.text(alphabet="abcxyz_", min_size=1, max_size=8))
        return key, draw(scalars)
    section = draw(st.sampled_from(["train", "kd", "data", "kd.mapping", "augment"]))
    return section, draw(scalars)


def _base(teacher, data_dir):
    return {"teacher": teacher, "student_shape": STUDENT, "data": {"task": "sst2", "data_dir": data_dir},
            "train": {"max_steps": 2, "batch_size": 8, "max_length": 16, "precision": "no", "report_to": "none",
                      "eval_batch_size": 16}}


def run_case(argv, out_dir, kind):
    """Run the CLI in this process; return (code, stderr lines). Fails the test on a traceback or a half-written
    output directory; counts the outcome."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - this is what the test is about
        OUTCOMES.setdefault(kind, {}).setdefault("traceback", 0)
        OUTCOMES[kind]["traceback"] += 1
        raise AssertionError(f"{kind} case raised {type(exc).__name__}: {exc}\nargv: {argv}") from exc
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    if code == 0:
        assert os.path.isfile(os.path.join(out_dir, "metrics.json")), argv
        outcome = "ran"
    elif code == 3:  # valid input that diverged (e.g. a temperature of 1e-300): the non-finite guard's exit
        assert len(errors) == 1 and lines[-1] == errors[0] and "non-finite" in errors[0], lines[-5:]
        assert not os.path.exists(os.path.join(out_dir, "metrics.json"))  # never promoted
        outcome = "exit 3 (non-finite)"
    else:
        assert code == 2, (code, lines[-3:], argv)
        assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
        assert "Traceback" not in err.getvalue()
        assert not os.path.exists(out_dir) or not os.listdir(out_dir), f"half-written {out_dir}: {argv}"
        outcome = "exit 2"
    OUTCOMES.setdefault(kind, {}).setdefault(outcome, 0)
    OUTCOMES[kind][outcome] += 1
    if errors:
        seen = OUTCOMES.setdefault("examples", {}).setdefault(kind, [])
        if len(seen) < 12 and errors[0][:60] not in {e[:60] for e in seen}:
            seen.append(errors[0][:240])
    return code, lines


@settings(max_examples=int(os.environ.get("FUZZ_RECIPES", "200")), **SETTINGS)
@given(muts=st.lists(mutation(), min_size=1, max_size=3), broken_yaml=st.sampled_from([None] * 9 + ["cut"]))
def test_fuzzed_recipes_run_or_exit_2_with_one_line(tiny_teacher, sst2_dir, muts, broken_yaml):
    work = tempfile.mkdtemp(prefix="fuzz-recipe-")
    cwd = os.getcwd()
    os.chdir(work)  # a fuzzed relative path (meta_dataset: mse) lands in the case's own directory, not the checkout
    try:
        recipe = _base(tiny_teacher, sst2_dir)
        for key, value in muts:
            _set(recipe, key, value) if "." in key else recipe.__setitem__(key, value)
        text = yaml.safe_dump(recipe, allow_unicode=True)
        if broken_yaml:
            text = text[: len(text) // 2] + "\n  - : [\n"
        path = os.path.join(work, "recipe.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        out = os.path.join(work, "out")
        run_case(["distill", "--config", path, "--output-dir", out], out, "recipe")
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)


texts = st.one_of(st.text(max_size=30), st.just(""), st.just("x" * 100_000), st.sampled_from(["good film", "bad"]))
labels = st.one_of(st.sampled_from(["0", "1", "1", "0", "2", "-1", "nan", "", "yes", "1.5"]), st.text(max_size=3))
dirty_rows = st.lists(st.tuples(texts, labels, st.sampled_from([0] * 8 + [1, -1])), min_size=0, max_size=12)
clean_rows = st.lists(st.tuples(st.sampled_from(["good film", "bad movie", "fine", "awful plot"]),
                                st.sampled_from(["0", "1"]), st.just(0)), min_size=3, max_size=12)
rows = st.one_of(clean_rows, dirty_rows)
headers = st.sampled_from(["sentence\tlabel"] * 12 + ["sentence", "text\tlabel", "sentence\tsentence\tlabel",
                                                        "label\tsentence", ""])


def _tsv(header, body, raw):
    lines = [header] if header else []
    for text, label, ragged in body:
        text = text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
        fields = [text, label] + (["extra"] if ragged == 1 else [])
        if ragged == -1:
            fields = fields[:1]
        lines.append("\t".join(fields))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    return data + (b"\xff\xfe bad \xc3\x28\n" if raw else b"")


@settings(max_examples=int(os.environ.get("FUZZ_DATA", "80")), **SETTINGS)
@given(train_h=headers, train=rows, dev_h=headers, dev=rows, raw=st.sampled_from([False] * 9 + [True]),
       drop=st.sampled_from([None] * 18 + ["train.tsv", "dev.tsv"]))
def test_fuzzed_data_files_run_or_exit_2_with_one_line(tiny_teacher, train_h, train, dev_h, dev, raw, drop):
    work = tempfile.mkdtemp(prefix="fuzz-data-")
    try:
        data = os.path.join(work, "data")
        os.makedirs(data)
        for name, header, body in (("train.tsv", train_h, train), ("dev.tsv", dev_h, dev)):
            if name != drop:
                with open(os.path.join(data, name), "wb") as fh:
                    fh.write(_tsv(header, body, raw and name == "train.tsv"))
        out = os.path.join(work, "out")
        run_case(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", data, "--student-shape",
                  STUDENT, "--max-steps", "2", "--precision", "no", "--report-to", "none", "--max-length", "16",
                  "--batch-size", "8", "--output-dir", out], out, "data")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def teardown_module(module):  # noqa: ARG001 - where the counts go when benchmarks/reliability.py asks for them
    path = os.environ.get("FUZZ_OUTCOMES")
    if path:
        import json

        with open(path, "w", encoding="utf-8") as fh:
            json.dump(OUTCOMES, fh, indent=1, sort_keys=True)
