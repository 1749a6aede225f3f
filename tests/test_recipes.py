"""The nine GLUE recipes and the staged recipes: each validates, and `distiller-nlp run` takes each through every
stage (teacher fine-tune -> distill -> evaluate -> GLUE-format test predictions -> report) for one step on a tiny
model and a tiny GLUE-format directory the test writes. Recipe augmenters that need Hub checkpoints are replaced by
``random`` on the command line, as the README tells offline users to do."""

import csv
import json
import os
import random

import pytest

from distiller_nlp.cli import main
from distiller_nlp.config import DistillConfig
from distiller_nlp.core.config import load_config
from distiller_nlp.tasks import get_task
from distiller_nlp.kd.recipe import expand_stages

HERE = os.path.dirname(os.path.abspath(__file__))
GLUE = os.path.join(HERE, "..", "recipes", "glue")
STAGES = os.path.join(HERE, "..", "recipes", "stages")
TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
WORDS = "the a movie film good bad great awful plot actor scene story happy sad long short".split()
TINY = ["--student-shape", "layers=1,hidden=16,heads=2,intermediate=32", "--max-steps", "1", "--max-eval-examples", "5",
        "--max-length", "16", "--batch-size", "8", "--eval-batch-size", "16", "--precision", "no", "--report-to", "none",
        "--set", "teacher_finetune.train={max_steps: 1, max_length: 16, batch_size: 8, precision: 'no', "
                 "report_to: none}"]


def _sentence(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def write_glue_dir(path, task: str, n_train=24, n_dev=10, n_test=6, seed=0) -> str:
    """A tiny GLUE-format directory for ``task``: train/dev TSVs with the task's own column names and labels, and
    an unlabelled test TSV (``index`` + text columns), as GLUE ships them (MNLI: dev/test matched + mismatched)."""
    spec = get_task(task)
    rng = random.Random(seed)
    os.makedirs(path, exist_ok=True)
    cols = [spec.text_column] + ([spec.text_pair_column] if spec.is_pair else [])
    dev = ["dev_matched", "dev_mismatched"] if task == "mnli" else ["dev"]
    test = ["test_matched", "test_mismatched"] if task == "mnli" else ["test"]

    def label(i):
        if spec.is_regression:
            return f"{rng.uniform(0, 5):.2f}"
        return spec.label_names[i % spec.num_labels]

    for name, n, labelled in [("train", n_train, True)] + [(d, n_dev, True) for d in dev] + \
                             [(t, n_test, False) for t in test]:
        with open(os.path.join(path, f"{name}.tsv"), "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            w.writerow((["index"] if not labelled else []) + cols + (["label"] if labelled else []))
            for i in range(n):
                w.writerow(([i] if not labelled else []) + [_sentence(rng) for _ in cols]
                           + ([label(i)] if labelled else []))
    return str(path)


@pytest.mark.parametrize("task", TASKS)
def test_glue_recipe_validates(task):
    path = os.path.join(GLUE, f"{task}.yaml")
    cfg = load_config(DistillConfig, path)
    assert cfg.data.task == task and cfg.teacher == "bert-base-uncased"
    assert cfg.student == "huawei-noah/TinyBERT_General_4L_312D" and cfg.kd.hard_label_weight == 0.0
    assert cfg.teacher_finetune.train.lr == 2e-5 and cfg.teacher_finetune.train.epochs == 3
    assert cfg.teacher_finetune.train.warmup_ratio == 0.1  # defaults kept for keys the recipe does not set
    assert cfg.kd.mapping is not None and cfg.kd.mapping.loss == "mi_alpha"
    assert len(expand_stages(cfg)) == 1
    text = open(path).read()
    assert "seeds_nlp.md A.7" in text  # every choice says where it comes from


def test_distiller_choices_are_the_published_ones():
    sst2 = load_config(DistillConfig, os.path.join(GLUE, "sst2.yaml"))
    assert sst2.augment.stages == ["back_translation", "contextual"] and sst2.kd.pred_loss == "soft_ce"
    assert sst2.kd.mapping.strategy == "skip" and sst2.kd.mapping.params["alpha"] == 0.9 and not sst2.kd.mixup
    stsb = load_config(DistillConfig, os.path.join(GLUE, "stsb.yaml"))
    assert stsb.augment.stages == ["random", "contextual"] and stsb.kd.mixup and stsb.kd.pred_loss == "logits_mse"
    for task, alpha in (("mnli", 0.9), ("qqp", 0.7)):
        cfg = load_config(DistillConfig, os.path.join(GLUE, f"{task}.yaml"))
        assert cfg.kd.mapping.strategy == "emd" and cfg.kd.mapping.params["alpha"] == alpha
    assert "NO published configuration" in open(os.path.join(GLUE, "wnli.yaml")).read()


@pytest.mark.parametrize("task", TASKS)
def test_glue_recipe_runs_every_stage(task, tiny_backbone, tmp_path, capsys):
    data = write_glue_dir(tmp_path / "data", task)
    out = tmp_path / "run"
    recipe = os.path.join(GLUE, f"{task}.yaml")
    extra = ["--augment", "random"] if load_config(DistillConfig, recipe).augment.stages else []
    code = main(["run", recipe, "--teacher", tiny_backbone, "--data-dir", data, "--output-dir", str(out), *TINY,
                 *extra])
    assert code == 0, capsys.readouterr().err
    summary = json.load(open(out / "metrics.json"))
    assert summary["task"] == task and summary["student_eval"] is not None
    assert os.path.isfile(out / "teacher" / "model.safetensors")  # the backbone had no classifier: fine-tuned
    assert os.path.isfile(out / "student" / "model.safetensors")
    assert "report.md" in os.listdir(out) and "recipe.yaml" in os.listdir(out)
    files = sorted(os.listdir(out / "predictions"))
    assert files == (["MNLI-m.tsv", "MNLI-mm.tsv"] if task == "mnli" else
                     [{"cola": "CoLA.tsv", "sst2": "SST-2.tsv", "mrpc": "MRPC.tsv", "stsb": "STS-B.tsv",
                       "qqp": "QQP.tsv", "qnli": "QNLI.tsv", "rte": "RTE.tsv", "wnli": "WNLI.tsv"}[task]])
    rows = list(csv.reader(open(out / "predictions" / files[0]), delimiter="\t"))
    assert rows[0] == ["index", "prediction"] and len(rows) == 7  # every test row, despite --max-eval-examples
    spec = get_task(task)
    if spec.is_regression:
        assert all(0.0 <= float(r[1]) <= 5.0 for r in rows[1:])
    elif task in ("mnli", "qnli", "rte"):
        assert all(r[1] in spec.label_names for r in rows[1:])
    else:
        assert all(r[1] in {str(i) for i in range(spec.num_labels)} for r in rows[1:])


def test_two_stage_and_general_recipes(tiny_backbone, sst2_dir, tmp_path, capsys):
    """TinyBERT's intermediate-then-prediction stages and a general (task-agnostic) stage followed by a task stage,
    each stage starting from the previous stage's student."""
    shape = ["--student-shape", "layers=1,hidden=32,heads=4,intermediate=64"]  # head size 8 = the backbone's
    for name in ("tinybert_two_stage", "general_then_task"):
        recipe = os.path.join(STAGES, f"{name}.yaml")
        cfg = load_config(DistillConfig, recipe)
        names = [n for n, _ in expand_stages(cfg)]
        assert names == (["intermediate", "prediction"] if name.startswith("tiny") else ["general", "task"])
        out = tmp_path / name
        args = ["run", recipe, "--teacher", tiny_backbone, "--task", "sst2", "--data-dir", sst2_dir,
                "--output-dir", str(out), *TINY[2:], *shape]
        # the tiny backbone has 2 layers: attention-score matches on its last layer only
        stages = [dict(s) for s in cfg.stages]
        stages[0]["kd"] = dict(stages[0]["kd"], intermediate=[
            {"layer_T": 2, "layer_S": 1, "feature": "attention_scores", "loss": "attention_score"}])
        if name == "general_then_task":
            stages[0]["teacher"] = tiny_backbone  # the general stage names its own teacher (the packaged MiniLM)
        args += ["--set", f"stages={json.dumps(stages)}"]
        assert main(args) == 0, capsys.readouterr().err
        first = out / f"stage-{names[0]}"
        m1 = json.load(open(first / "metrics.json"))
        if name == "general_then_task":
            assert "eval_distill_loss" in m1 and "eval_accuracy" not in m1
        else:
            assert "eval_accuracy" in m1
        final = json.load(open(out / "student" / "metrics.json"))
        assert "eval_accuracy" in final
        import yaml

        second = yaml.safe_load(open(out / "student" / "config.yaml"))
        assert second["student"] == str(first) and second["kd"]["mapping"] is None


def test_bad_recipes(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - name: one\n    kd: {temprature: 2}\n")
    assert main(["run", str(bad), "--teacher", "minilm", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "kd.temprature" in err and "stages[0]" in err and not os.path.exists(tmp_path / "o")
    bad.write_text("stages:\n  - {name: two, augment: {stages: [contextul]}}\n")  # found before any stage runs
    assert main(["run", str(bad), "--teacher", "minilm", "--output-dir", str(tmp_path / "o")]) == 2
    assert "contextul" in capsys.readouterr().err and not os.path.exists(tmp_path / "o")
    bad.write_text("teacher_finetune: {when: sometimes}\n")
    assert main(["run", str(bad), "--teacher", "minilm", "--output-dir", str(tmp_path / "o")]) == 2
    assert "teacher_finetune.when" in capsys.readouterr().err and not os.path.exists(tmp_path / "o")
