#!/usr/bin/env python
"""Benchmark: the reliability figures of issue #20 — faults injected into real training runs, counted by outcome.

Protocol (fixed before the first measured run). The engine's toy run of ``tests/test_engine.py`` (a 2-layer MLP on a
fixed 3-class rule, 36 optimizer steps, a checkpoint every 5 steps, 2 kept), so that hundreds of faults fit in
minutes; everything below goes through the same engine every training command uses. An uninterrupted run is the
reference. Random choices come from ``numpy.random.default_rng(0)``.

* **signals**: 20 runs; a real SIGTERM or SIGINT (alternating) delivered to this process after a random step in
  1..35; then ``--resume``. As designed = the run stopped with ``RunInterrupted`` (exit 75) after a checkpoint of
  that very step, and the resumed run ended bit-identical to the reference.
* **corruptions**: 12 runs killed (an exception in the batch hook) at a random step in 12..35, then the newest
  checkpoint damaged: a random file truncated, one byte flipped, a file deleted, or the manifest garbled (in turn);
  then ``--resume``. As designed = the damage was reported in one line, an older checkpoint was used, and the run
  ended bit-identical to the reference.
* **disk-full saves**: 10 runs with ``OSError(ENOSPC)`` raised by the n-th save (n random in 1..6; after half the
  files were written on odd runs, before any on even ones). As designed = ``DiskFullError`` (exit 74), no temp
  directory left, the previous checkpoint intact, and ``--resume`` ended bit-identical to the reference.
* **non-finite losses**: 6 runs whose loss turns NaN at a random step in 2..35. As designed = ``NonFiniteError``
  (exit 3) naming that step, no ``metrics.json``, every kept checkpoint from before it and intact.
* **lock collisions**: 5 times, a second writer on a directory another process holds (fails naming the holder's
  pid), then the holder SIGKILLed and its stale lock taken over.
* **fuzzed recipes and data files**: ``tests/test_fuzz_inputs.py`` run with more examples (``--fuzz-recipes``,
  ``--fuzz-data``; seeded by hypothesis' ``derandomize``), counted by outcome (ran / exit 2 / exit 3).

"Lost data" = a run that could not be resumed to the reference result; "traceback" = an exception other than the
designed one. Usage: ``python benchmarks/reliability.py [--quick]`` → ``benchmarks/results/reliability.{json,md}``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "tests")]


def _weights(out):
    import torch

    return torch.load(os.path.join(out, "best", "w.pt"), weights_only=True)


def _same(a, b) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Tally:
    def __init__(self):
        self.rows = {}

    def add(self, kind, outcome, detail=""):
        row = self.rows.setdefault(kind, {"tried": 0, "as designed": 0, "lost data": 0, "traceback": 0,
                                          "other": 0, "failures": []})
        row["tried"] += 1
        row[outcome] += 1
        if outcome != "as designed" and len(row["failures"]) < 5:
            row["failures"].append(detail[:300])


def _guard(tally, kind, fn):
    try:
        outcome, detail = fn()
    except Exception as exc:  # noqa: BLE001 - counted, not raised: the table is the result
        outcome, detail = "traceback", f"{type(exc).__name__}: {exc}"
    tally.add(kind, outcome, detail)


def signals(tally, rng, ref, work, n):
    from test_engine import make_engine
    from test_reliability import SignalAt

    from distiller_nlp.core.engine import list_checkpoints
    from distiller_nlp.core.errors import RunInterrupted

    for i in range(n):
        step, sig = int(rng.integers(1, 36)), (signal.SIGTERM, signal.SIGINT)[i % 2]

        def case():
            out = os.path.join(work, f"sig{i}")
            eng = make_engine(out)
            eng.callbacks.append(SignalAt(step, sig))
            try:
                eng.train()
                return "other", f"step {step}: the run was not interrupted"
            except RunInterrupted:
                pass
            last = list_checkpoints(out)[-1]
            if not last.endswith(f"{step:08d}"):
                return "other", f"step {step}: newest checkpoint {last}"
            make_engine(out, resume=True).train()
            return ("as designed", "") if _same(_weights(out), ref) else ("lost data", f"step {step}: differs")

        _guard(tally, "signal at a random step (SIGTERM/SIGINT), then --resume", case)


def corruptions(tally, rng, ref, work, n):
    import contextlib
    import io

    from test_engine import make_engine

    from distiller_nlp.core.engine import list_checkpoints
    from distiller_nlp.core.engine.checkpoints import MANIFEST_FILE

    kinds = ("truncate", "flip a byte", "delete a file", "garble the manifest")
    for i in range(n):
        step, kind = int(rng.integers(12, 36)), kinds[i % len(kinds)]

        def case():
            out = os.path.join(work, f"cor{i}")
            try:
                make_engine(out, fail_at=step).train()
            except KeyboardInterrupt:
                pass
            newest = list_checkpoints(out)[-1]
            files = sorted(f for f in os.listdir(newest) if f not in ("trainer_state.json", MANIFEST_FILE))
            victim = os.path.join(newest, files[int(rng.integers(len(files)))])
            if kind == "truncate":
                with open(victim, "r+b") as fh:
                    fh.truncate(max(0, os.path.getsize(victim) // 2))
            elif kind == "flip a byte":
                with open(victim, "r+b") as fh:
                    pos = int(rng.integers(os.path.getsize(victim)))
                    fh.seek(pos)
                    b = fh.read(1)
                    fh.seek(pos)
                    fh.write(bytes([b[0] ^ 0xFF]))
            elif kind == "delete a file":
                os.remove(victim)
            else:
                with open(os.path.join(newest, MANIFEST_FILE), "w") as fh:
                    fh.write("{not json")
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                make_engine(out, resume=True).train()
            if "is damaged" not in buf.getvalue():
                return "other", f"{kind} of {os.path.basename(victim)}: not reported"
            return ("as designed", "") if _same(_weights(out), ref) else ("lost data", f"{kind}: differs")

        _guard(tally, "corrupt newest checkpoint (truncate / flip / delete / manifest), then --resume", case)


def disk_full(tally, rng, ref, work, n):
    from test_engine import make_engine

    from distiller_nlp.core.engine import list_checkpoints
    from distiller_nlp.core.engine.checkpoints import verify_checkpoint
    from distiller_nlp.core.errors import DiskFullError

    for i in range(n):
        nth, partial = int(rng.integers(1, 7)), i % 2 == 1

        def case():
            out = os.path.join(work, f"full{i}")
            eng = make_engine(out)
            real, calls = eng.accelerator.save_state, {"n": 0}

            def save_state(path, *a, **kw):
                calls["n"] += 1
                if calls["n"] == nth:
                    if partial:
                        real(path, *a, **kw)
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real(path, *a, **kw)

            eng.accelerator.save_state = save_state
            try:
                eng.train()
                return "other", f"save {nth}: no error"
            except DiskFullError:
                pass
            left = [f for f in os.listdir(os.path.join(out, "checkpoints")) if f.startswith(".tmp")]
            ckpts = list_checkpoints(out)
            if left or (ckpts and verify_checkpoint(ckpts[-1]) is not None):
                return "lost data", f"save {nth}: temp {left} / previous damaged"
            make_engine(out, resume=bool(ckpts)).train() if ckpts else make_engine(out + "-b").train()
            final = _weights(out if ckpts else out + "-b")
            return ("as designed", "") if _same(final, ref) else ("lost data", f"save {nth}: differs")

        _guard(tally, "disk full (ENOSPC) during a checkpoint save, then --resume", case)


def nonfinite(tally, rng, work, n):
    from test_engine import make_engine
    from test_reliability import NaNAt

    from distiller_nlp.core.engine import list_checkpoints
    from distiller_nlp.core.engine.checkpoints import verify_checkpoint
    from distiller_nlp.core.errors import NonFiniteError

    for i in range(n):
        step = int(rng.integers(2, 36))

        def case():
            out = os.path.join(work, f"nan{i}")
            eng = make_engine(out)
            eng.callbacks.append(NaNAt(step))
            try:
                eng.train()
                return "other", f"step {step}: finished"
            except NonFiniteError as exc:
                if f"at step {step}" not in str(exc):
                    return "other", str(exc)
            ok = not os.path.exists(os.path.join(out, "metrics.json")) and all(
                verify_checkpoint(c) is None and int(c.rsplit("-", 1)[1]) < step for c in list_checkpoints(out))
            return ("as designed", "") if ok else ("lost data", f"step {step}: bad checkpoint kept")

        _guard(tally, "NaN loss at a random step (default --on-nonfinite stop)", case)


HOLDER = ("import sys, time\nfrom distiller_nlp.core.run import TrainingRun\nr = TrainingRun(sys.argv[1])\nr.start()\n"
          "print('locked', flush=True)\ntime.sleep(120)\n")


def locks(tally, work, n):
    from distiller_nlp.core.errors import DistillerError
    from distiller_nlp.core.run import TrainingRun

    for i in range(n):
        def case():
            out = os.path.join(work, f"lock{i}")
            proc = subprocess.Popen([sys.executable, "-c", HOLDER, out], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": ROOT})
            try:
                if proc.stdout.readline().strip() != "locked":
                    return "other", "holder did not start"
                try:
                    TrainingRun(out, resume=True)
                    return "lost data", "a second writer got the directory"
                except DistillerError as exc:
                    if f"process {proc.pid}" not in str(exc):
                        return "other", str(exc)
            finally:
                proc.kill()
                proc.wait()
            run = TrainingRun(out, resume=True)  # the stale lock of the killed holder is taken over
            held = run.lock.held
            run.lock.release()
            return ("as designed", "") if held else ("other", "stale lock not taken over")

        _guard(tally, "second writer on a locked output dir; stale lock after SIGKILL", case)


def fuzz(tally, recipes, data, work):
    path = os.path.join(work, "fuzz.json")
    env = {**os.environ, "FUZZ_RECIPES": str(recipes), "FUZZ_DATA": str(data), "FUZZ_OUTCOMES": path,
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", os.path.join(ROOT, "tests",
                                                                                 "test_fuzz_inputs.py")],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    counts = json.load(open(path)) if os.path.exists(path) else {}
    examples = counts.pop("examples", {})
    for kind, label in (("recipe", "fuzzed recipe (random keys, values, types, nesting, broken YAML)"),
                        ("data", "fuzzed data files (bytes, ragged rows, labels, columns, empty splits)")):
        c = counts.get(kind, {})
        row = tally.rows.setdefault(label, {"tried": 0, "as designed": 0, "lost data": 0, "traceback": 0,
                                            "other": 0, "failures": []})
        designed = sum(v for k, v in c.items() if k != "traceback")
        row["tried"] += designed + c.get("traceback", 0)
        row["as designed"] += designed
        row["traceback"] += c.get("traceback", 0)
        row["outcomes"] = {k: v for k, v in c.items()}
        row["examples"] = examples.get(kind, [])[:6]
    if res.returncode != 0:
        tally.rows.setdefault("fuzz run", {"tried": 1, "as designed": 0, "lost data": 0, "traceback": 1,
                                           "other": 0, "failures": [res.stdout[-1500:]]})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fifth of every count (a smoke run)")
    ap.add_argument("--fuzz-recipes", type=int, default=600)
    ap.add_argument("--fuzz-data", type=int, default=250)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "reliability"))
    args = ap.parse_args(argv)
    from bench_demo_kd import machine, machine_line

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from test_engine import make_engine

    k = 5 if args.quick else 1
    rng = np.random.default_rng(0)
    tally = _Tally()
    t0 = time.time()
    work = tempfile.mkdtemp(prefix="reliability-")
    try:
        make_engine(os.path.join(work, "ref")).train()
        ref = _weights(os.path.join(work, "ref"))
        signals(tally, rng, ref, work, 20 // k)
        corruptions(tally, rng, ref, work, 12 // k)
        disk_full(tally, rng, ref, work, 10 // k)
        nonfinite(tally, rng, work, 6 // k)
        locks(tally, work, max(1, 5 // k))
        fuzz(tally, args.fuzz_recipes // k, args.fuzz_data // k, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    m = machine(peaks=False)
    result = {"machine": m, "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.time() - t0, 1),
              "quick": args.quick, "rows": tally.rows}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    lines = ["# Reliability: faults injected into real runs, by outcome", "",
             f"{machine_line(m)}; measured {result['date']}; {result['wall_s']:.0f} s"
             + (" (--quick)" if args.quick else "") + ". Protocol: `benchmarks/reliability.py` docstring.", "",
             "| fault | tried | as designed | lost data | traceback | other |", "|---|---|---|---|---|---|"]
    for kind, r in tally.rows.items():
        lines.append(f"| {kind} | {r['tried']} | {r['as designed']} | {r['lost data']} | {r['traceback']} | "
                     f"{r['other']} |")
    lines.append("")
    for kind, r in tally.rows.items():
        if r.get("outcomes"):
            lines.append(f"- {kind}: " + ", ".join(f"{v} {k}" for k, v in sorted(r["outcomes"].items())))
        for ex in r.get("examples", []):
            lines.append(f"  - e.g. `{ex}`")
        for f in r["failures"]:
            lines.append(f"  - NOT as designed: {f}")
    total = {c: sum(r[c] for r in tally.rows.values()) for c in ("tried", "as designed", "lost data", "traceback")}
    lines += ["", f"Total: {total['tried']} faults, {total['as designed']} as designed, {total['lost data']} lost "
              f"data, {total['traceback']} tracebacks (goal: zero and zero).", ""]
    with open(args.out + ".md.tmp", "w") as fh:
        fh.write("\n".join(lines))
    os.replace(args.out + ".md.tmp", args.out + ".md")
    print("\n".join(lines))
    return 0 if total["lost data"] == 0 and total["traceback"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
