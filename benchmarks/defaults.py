#!/usr/bin/env python
"""Benchmark: old defaults vs the opt-in new ones (``--lr auto``, ``--min-steps``) for teacher and student (#22).

Protocol (fixed before the first measured run, 2026-12-04):

* Task: tweets (3 classes), the demo's data: the seeded 3,000-example training subset, 2,000-example dev and test
  subsets (``subset_seed`` 42). Max length 64 and length-grouped batches in both arms, for CPU time only: neither
  is what is being compared.
* Teacher: the packaged MiniLM-L6-H384, ``finetune-teacher`` with the defaults of each arm. Student: the 3 × 256
  shape initialised from the teacher, ``distill`` with the defaults of each arm (``--pred-loss kd``, its paper
  temperature and CE weight), distilled from the same arm's teacher, with the teacher read from its output cache.
* Arm "old": the current defaults (3 epochs, lr 5e-5). Arm "new": ``--lr auto --min-steps 300`` (3 epochs).
* Seeds 1, 2, 3: the same seed for the teacher and its student.
* Reported: dev/test accuracy mean ± std for teacher and student, the student/teacher ratio of dev accuracy, the
  chosen learning rates, the floors (majority class and TF-IDF, recorded by every run), and each run's training
  time plus its LR choice (from ``metrics.json``, so a rerun that reuses finished runs reports the same).

The goals of issue #22 (new teacher > TF-IDF floor; student ≥ 0.97 of the teacher) are checked for the new arm.
BBC headlines and a BBC-derived pair task are not measured yet. Usage: ``python benchmarks/defaults.py [--seeds
1,2,3]`` → ``benchmarks/results/defaults.{json,md}``. Finished runs are reused and interrupted ones resume
(workspace ``runs/defaults``).
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

PROTOCOL = {"task": "tweets", "train_examples": 3000, "eval_examples": 2000, "subset_seed": 42, "max_length": 64,
            "student_shape": "layers=3,hidden=256,heads=8,intermediate=1024",
            "arms": {"old": {}, "new": {"lr": 0.0, "min_steps": 300}}}


def _train(arm: dict, seed: int):
    from distiller_nlp.core.train_args import TrainArgs

    return TrainArgs(seed=seed, max_length=PROTOCOL["max_length"], group_by_length=True, report_to="none", **arm)


def run_arm(name: str, seed: int, workspace: str) -> dict:
    from distiller_nlp.config import DataConfig, DistillConfig, FinetuneConfig
    from distiller_nlp.demo import protocol_hash, run_or_resume
    from distiller_nlp.kd.distillation import distill
    from distiller_nlp.kd.finetune import finetune_teacher

    p, arm = PROTOCOL, PROTOCOL["arms"][name]
    data = DataConfig(task=p["task"], max_train_examples=p["train_examples"], max_eval_examples=p["eval_examples"],
                      subset_seed=p["subset_seed"])
    t_dir = os.path.join(workspace, f"{name}_teacher_seed{seed}")
    key = protocol_hash({"p": p, "arm": name, "seed": seed, "role": "teacher"})
    t0 = time.perf_counter()
    teacher = run_or_resume(finetune_teacher, FinetuneConfig(output_dir=t_dir, data=data, train=_train(arm, seed)),
                            t_dir, key, {"arm": name, "seed": seed})
    t_wall = time.perf_counter() - t0
    s_dir = os.path.join(workspace, f"{name}_student_seed{seed}")
    key = protocol_hash({"p": p, "arm": name, "seed": seed, "role": "student"})
    t0 = time.perf_counter()
    student = run_or_resume(distill, DistillConfig(teacher=t_dir, student_shape=p["student_shape"], output_dir=s_dir,
                                                   data=data, train=_train(arm, seed), teacher_cache="auto"),
                            s_dir, key, {"arm": name, "seed": seed})
    s_wall = time.perf_counter() - t0
    return {"teacher": teacher, "student": student, "teacher_wall_s": t_wall, "student_wall_s": s_wall}


def _ms(values) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}"


def _s(values) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.0f} ± {v.std(ddof=1):.0f}" if len(v) > 1 else f"{v.mean():.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workspace", default="runs/defaults")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "defaults"))
    args = ap.parse_args(argv)
    from bench_demo_kd import machine, machine_line

    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    runs = {arm: {s: run_arm(arm, s, args.workspace) for s in seeds} for arm in PROTOCOL["arms"]}
    rows, goals = [], []
    for arm, by_seed in runs.items():
        t = [r["teacher"] for r in by_seed.values()]
        s = [r["student"] for r in by_seed.values()]
        ratio = [b["eval_accuracy"] / a["eval_accuracy"] for a, b in zip(t, s)]
        rows.append({
            "arm": arm, "teacher_dev": _ms([m["eval_accuracy"] for m in t]),
            "teacher_test": _ms([m["test_accuracy"] for m in t]),
            "student_dev": _ms([m["eval_accuracy"] for m in s]), "student_test": _ms([m["test_accuracy"] for m in s]),
            "ratio": _ms(ratio),
            "teacher_lr": ", ".join(f"{m.get('lr_auto_chosen', 5e-5):.2g}" for m in t),
            "student_lr": ", ".join(f"{m.get('lr_auto_chosen', 5e-5):.2g}" for m in s),
            "teacher_steps": t[0]["global_step"], "student_steps": s[0]["global_step"],
            "wall_teacher_s": _s([m["train_runtime_s"] + m.get("lr_auto_s", 0) for m in t]),
            "wall_student_s": _s([m["train_runtime_s"] + m.get("lr_auto_s", 0) for m in s]),
            "floor_tfidf_dev": t[0].get("floor_tfidf_eval_accuracy"),
            "floor_majority_dev": t[0].get("floor_majority_eval_accuracy"),
            "teacher_beats_tfidf": all(m["eval_accuracy"] > m.get("floor_tfidf_eval_accuracy", 1) for m in t),
            "min_ratio": min(ratio)})
    new = next(r for r in rows if r["arm"] == "new")
    goals.append(f"new teacher beats the TF-IDF floor in every seed: {'met' if new['teacher_beats_tfidf'] else 'NOT met'}")
    goals.append(f"new student keeps ≥ 0.97 of the teacher's dev accuracy in every seed (min {new['min_ratio']:.3f}): "
                 f"{'met' if new['min_ratio'] >= 0.97 else 'NOT met'}")
    m = machine(peaks=False)
    result = {"protocol": PROTOCOL, "seeds": seeds, "machine": m, "date": time.strftime("%Y-%m-%d"),
              "wall_s": round(time.time() - t0, 1), "rows": rows, "goals": goals,
              "runs": {a: {str(s): {k: v for k, v in r.items()} for s, r in bs.items()} for a, bs in runs.items()}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    lines = [f"# Old vs new defaults, tweets ({len(seeds)} seeds: {args.seeds})", "",
             f"{machine_line(m)}; measured {result['date']}; {result['wall_s']:.0f} s (finished runs reused).", "",
             "| arm | teacher dev | teacher test | student dev | student test | student / teacher (dev) | "
             "teacher lr | student lr | steps T / S | train + LR choice T / S (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['teacher_dev']} | {r['teacher_test']} | {r['student_dev']} | "
                     f"{r['student_test']} | {r['ratio']} | {r['teacher_lr']} | {r['student_lr']} | "
                     f"{r['teacher_steps']} / {r['student_steps']} | {r['wall_teacher_s']} / {r['wall_student_s']} |")
    lines += ["", f"Floors on the same training split (dev accuracy): majority class {rows[0]['floor_majority_dev']}, "
              f"TF-IDF + logistic regression {rows[0]['floor_tfidf_dev']}.", ""]
    lines += [f"- {g}" for g in goals]
    lines += ["", "Protocol: `benchmarks/defaults.py` docstring (old = 3 epochs at lr 5e-5; new = `--lr auto "
              "--min-steps 300`).", ""]
    with open(args.out + ".md.tmp", "w") as fh:
        fh.write("\n".join(lines))
    os.replace(args.out + ".md.tmp", args.out + ".md")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
