#!/usr/bin/env python
"""Benchmark: the old defaults vs the new ones (``--lr auto``, ``--epochs auto``) for teacher and student (#22).

Protocol v2 (fixed 2026-12-04 before its first measured run; v1, the opt-in flags on tweets only, is kept in
``results/defaults_optin_2026-12-04.md``):

* Tasks, each with its fixed 80/10/10 split (split seed 42):
  - ``tweets`` (3 classes): the demo's seeded 3,000-example training subset, 2,000-example dev and test subsets
    (``subset_seed`` 42), max length 64;
  - ``bbc-headlines`` (5 topics): the whole split, 1,678 train / 209 dev / 209 test headlines, max length 32;
  - ``bbc-pairs`` (2 classes, derived from the same BBC corpus, see ``distiller_nlp.tasks.corpora.build_bbc_pairs``):
    does this lead paragraph (first 40 words after the headline) belong to the article of this headline? One positive
    and one same-topic negative per article, articles split 80/10/10 by topic: 3,150 train / 392 dev / 392 test pairs,
    max length 128.
  Length-grouped batches in both arms (CPU time only; not what is compared).
* Teacher: the packaged MiniLM-L6-H384, ``finetune-teacher``. Student: the 3 × 256 shape initialised from the
  teacher (0.228 of its encoder FLOPs), ``distill`` with ``--pred-loss kd`` (its paper temperature and CE weight),
  distilled from the same arm's teacher, read from its output cache.
* Arm "old": the defaults before #22, given explicitly: ``--epochs 3 --lr 5e-5`` (no minimum length, no early
  stopping). Arm "new": the defaults as shipped (no training flag at all): ``--lr auto`` (range test, a tenth of the
  run's steps) and ``--epochs auto`` (3 epochs, at least 300 optimizer steps, early stopping after 3 evaluations
  without improvement, best model kept).
* Seeds 1, 2, 3: the same seed for the teacher and its student.
* Reported per task: dev/test accuracy mean ± std for teacher and student, the student/teacher ratio of dev
  accuracy, the chosen learning rates, optimizer steps, the floors (majority class and TF-IDF + logistic regression,
  fitted by every run on its own training split) and each run's training time plus its LR choice (from
  ``metrics.json``, so a rerun that reuses finished runs reports the same).
* Goals of #22, checked for the new arm per task: the teacher beats the TF-IDF floor (dev) in every seed; the student
  keeps >= 0.97 of the teacher's dev accuracy (at <= 1/4 of its FLOPs).

Usage: ``python benchmarks/defaults.py [--tasks tweets,bbc-headlines,bbc-pairs] [--seeds 1,2,3]`` →
``benchmarks/results/defaults.{json,md}`` (rewritten after each task). Finished runs are reused and interrupted ones
resume (workspace ``runs/defaults``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

TASKS = {
    "tweets": {"train_examples": 3000, "eval_examples": 2000, "subset_seed": 42, "max_length": 64},
    "bbc-headlines": {"train_examples": 0, "eval_examples": 0, "subset_seed": 42, "max_length": 32},
    "bbc-pairs": {"train_examples": 0, "eval_examples": 0, "subset_seed": 42, "max_length": 128},
}
PROTOCOL = {"version": 2, "tasks": TASKS, "student_shape": "layers=3,hidden=256,heads=8,intermediate=1024",
            "arms": {"old": {"epochs": 3.0, "lr": 5e-5, "min_steps": 0, "early_stopping": 0}, "new": {}}}


def _train(arm: dict, seed: int, max_length: int):
    from distiller_nlp.core.train_args import TrainArgs

    return TrainArgs(seed=seed, max_length=max_length, group_by_length=True, report_to="none", **arm)


def run_arm(task: str, name: str, seed: int, workspace: str) -> dict:
    from distiller_nlp.config import DataConfig, DistillConfig, FinetuneConfig
    from distiller_nlp.demo import protocol_hash, run_or_resume
    from distiller_nlp.kd.distillation import distill
    from distiller_nlp.kd.finetune import finetune_teacher

    p, arm, t = PROTOCOL, PROTOCOL["arms"][name], TASKS[task]
    data = DataConfig(task=task, max_train_examples=t["train_examples"], max_eval_examples=t["eval_examples"],
                      subset_seed=t["subset_seed"])
    spec = {"task": task, "arm": name, "seed": seed}
    t_dir = os.path.join(workspace, f"{task}_{name}_teacher_seed{seed}")
    key = protocol_hash({"p": p, **spec, "role": "teacher"})
    teacher = run_or_resume(finetune_teacher, FinetuneConfig(output_dir=t_dir, data=data,
                                                             train=_train(arm, seed, t["max_length"])),
                            t_dir, key, spec)
    s_dir = os.path.join(workspace, f"{task}_{name}_student_seed{seed}")
    key = protocol_hash({"p": p, **spec, "role": "student"})
    student = run_or_resume(distill, DistillConfig(teacher=t_dir, student_shape=p["student_shape"], output_dir=s_dir,
                                                   data=data, train=_train(arm, seed, t["max_length"]),
                                                   teacher_cache="auto"),
                            s_dir, key, spec)
    return {"teacher": teacher, "student": student}


def _ms(values) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def _s(values) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.0f} ± {v.std(ddof=1):.0f}" if len(v) > 1 else f"{v.mean():.0f}"


def task_rows(runs: dict) -> tuple[list, list]:
    """Table rows and goal lines of one task's runs ``{arm: {seed: {"teacher": metrics, "student": metrics}}}``."""
    rows = []
    for arm, by_seed in runs.items():
        t = [r["teacher"] for r in by_seed.values()]
        s = [r["student"] for r in by_seed.values()]
        ratio = [b["eval_accuracy"] / a["eval_accuracy"] for a, b in zip(t, s)]
        lr = lambda m: m.get("lr_auto_chosen", 5e-5)  # noqa: E731
        rows.append({
            "arm": arm, "teacher_dev": _ms([m["eval_accuracy"] for m in t]),
            "teacher_test": _ms([m["test_accuracy"] for m in t]),
            "student_dev": _ms([m["eval_accuracy"] for m in s]), "student_test": _ms([m["test_accuracy"] for m in s]),
            "ratio": _ms(ratio), "min_ratio": min(ratio),
            "teacher_lr": ", ".join(f"{lr(m):.2g}" for m in t), "student_lr": ", ".join(f"{lr(m):.2g}" for m in s),
            "teacher_steps": ", ".join(str(m["global_step"]) for m in t),
            "student_steps": ", ".join(str(m["global_step"]) for m in s),
            "wall_teacher_s": _s([m["train_runtime_s"] + m.get("lr_auto_s", 0) for m in t]),
            "wall_student_s": _s([m["train_runtime_s"] + m.get("lr_auto_s", 0) for m in s]),
            "lr_choice_s": _s([m.get("lr_auto_s", 0) for m in t + s]),
            "floor_tfidf_dev": t[0].get("floor_tfidf_eval_accuracy"),
            "floor_majority_dev": t[0].get("floor_majority_eval_accuracy"),
            "flops_ratio": s[0].get("flops_ratio"),
            "teacher_beats_tfidf": all(m["eval_accuracy"] > m.get("floor_tfidf_eval_accuracy", 1) for m in t),
            "teacher_margin": _ms([m["eval_accuracy"] - m.get("floor_tfidf_eval_accuracy", 1) for m in t])})
    goals = []
    for r in rows:
        goals.append(f"{r['arm']}: teacher beats the TF-IDF floor in every seed (dev, margin {r['teacher_margin']}): "
                     f"{'met' if r['teacher_beats_tfidf'] else 'NOT met'}; student keeps >= 0.97 of the teacher "
                     f"(min over seeds {r['min_ratio']:.3f}, at {r['flops_ratio']} of its FLOPs): "
                     f"{'met' if r['min_ratio'] >= 0.97 else 'NOT met'}")
    return rows, goals


def write_results(out: str, result: dict) -> list:
    from bench_demo_kd import machine_line

    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".json.tmp", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    os.replace(out + ".json.tmp", out + ".json")
    seeds = ",".join(map(str, result["seeds"]))
    lines = [f"# Old vs new defaults ({len(result['seeds'])} seeds: {seeds})", "",
             f"{machine_line(result['machine'])}; measured {result['date']}; {result['wall_s']:.0f} s "
             "(finished runs reused). Protocol v2: `benchmarks/defaults.py` docstring (old = `--epochs 3 --lr 5e-5`; "
             "new = the shipped defaults, `--lr auto --epochs auto`).", ""]
    for task, block in result["tasks"].items():
        rows = block["rows"]
        lines += [f"## {task}", "",
                  "| arm | teacher dev | teacher test | student dev | student test | student / teacher (dev) | "
                  "teacher lr | student lr | steps T | steps S | train + LR choice T / S (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['arm']} | {r['teacher_dev']} | {r['teacher_test']} | {r['student_dev']} | "
                         f"{r['student_test']} | {r['ratio']} | {r['teacher_lr']} | {r['student_lr']} | "
                         f"{r['teacher_steps']} | {r['student_steps']} | {r['wall_teacher_s']} / "
                         f"{r['wall_student_s']} |")
        lines += ["", f"Floors on the same training split (dev accuracy): majority class "
                  f"{rows[0]['floor_majority_dev']:.4f}, TF-IDF + logistic regression {rows[0]['floor_tfidf_dev']:.4f}."
                  f" LR choice (new arm, per run): {rows[-1]['lr_choice_s']} s.", ""]
        lines += [f"- {g}" for g in block["goals"]] + [""]
    with open(out + ".md.tmp", "w") as fh:
        fh.write("\n".join(lines))
    os.replace(out + ".md.tmp", out + ".md")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="bbc-headlines,bbc-pairs,tweets")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workspace", default="runs/defaults")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "defaults"))
    args = ap.parse_args(argv)
    from bench_demo_kd import machine

    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        ap.error(f"unknown task {unknown[0]!r}; expected one of {', '.join(TASKS)}")
    t0 = time.time()
    result = {"protocol": PROTOCOL, "seeds": seeds, "machine": machine(peaks=False), "date": time.strftime("%Y-%m-%d"),
              "tasks": {}}
    for task in tasks:
        runs = {arm: {s: run_arm(task, arm, s, args.workspace) for s in seeds} for arm in PROTOCOL["arms"]}
        rows, goals = task_rows(runs)
        result["tasks"][task] = {"rows": rows, "goals": goals,
                                 "runs": {a: {str(s): r for s, r in bs.items()} for a, bs in runs.items()}}
        result["wall_s"] = round(time.time() - t0, 1)
        lines = write_results(args.out, result)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
