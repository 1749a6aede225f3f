#!/usr/bin/env python
"""Benchmark: distillation with the live teacher vs. with cached teacher outputs, side by side in one run.

Protocol (fixed before the first measured run): the demo's fine-tuned MiniLM-L6-H384 teacher (``runs/demo/teacher``,
made by ``make demo``) and student shape ``layers=3,hidden=256,heads=8,intermediate=1024`` (teacher-initialised);
tweets, 2,000 training examples (seeded stratified subset), 500 dev examples, max length 64, batch 32,
length-grouped batches, fp32 (``--precision no``), 2 epochs; two KD configs — logit KD (T=2) and logit KD + hidden
MSE on skip-mapped layers; for each config and seed (1, 2, 3) one run with the live teacher and one with
``teacher_cache: auto`` (a fresh cache directory per seed, so the one-time caching pass is timed too), the two runs
of a pair back to back. Reported: training time (s), the caching pass (s), speed-up = live / (cached + caching),
dev accuracy of both (they should agree up to fp16 rounding of the teacher's outputs).

Usage: ``python benchmarks/bench_teacher_cache.py [--teacher runs/demo/teacher] [--seeds 1,2,3]``.
Writes ``benchmarks/results/teacher_cache.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

CONFIGS = {
    "logit KD": {"kd.pred_loss": "kd", "kd.temperature": 2.0, "kd.hard_label_weight": 1.0},
    "logit KD + hidden MSE": {"kd.pred_loss": "kd", "kd.temperature": 2.0, "kd.hard_label_weight": 1.0,
                              "kd.mapping.strategy": "skip", "kd.mapping.loss": "hidden_mse"},
}


def one_run(teacher, overrides, seed, cache, workdir, tag):
    from distiller_nlp.config import DistillConfig
    from distiller_nlp.core.config import load_config
    from distiller_nlp.kd.distillation import distill

    ov = {"teacher": teacher, "data.task": "tweets", "data.max_train_examples": 2000, "data.max_eval_examples": 500,
          "student_shape": "layers=3,hidden=256,heads=8,intermediate=1024", "student_init": "teacher",
          "train.epochs": 2, "train.batch_size": 32, "train.max_length": 64, "train.group_by_length": True,
          "train.precision": "no", "train.report_to": "none", "train.seed": seed, "train.lr": 1e-4,
          "output_dir": os.path.join(workdir, f"run-{tag}-{seed}-{cache}"), **overrides}
    if cache:
        os.environ["DISTILLER_NLP_CACHE"] = os.path.join(workdir, f"cache-{tag}-{seed}")
        ov["teacher_cache"] = "auto"
    else:
        ov["teacher_cache"] = "off"
    cfg = load_config(DistillConfig, None, ov)
    t0 = time.perf_counter()
    m = distill(cfg)
    wall = time.perf_counter() - t0
    return {"train_runtime_s": m["train_runtime_s"], "wall_s": round(wall, 2), "eval_accuracy": m["eval_accuracy"],
            "teacher_cached": m["teacher_cached"], "teacher_cache_s": m["teacher_cache_s"]}


def main(argv=None) -> int:
    from bench_demo_kd import machine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="runs/demo/teacher")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", default=os.path.join(HERE, "results", "teacher_cache"))
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.teacher, "config.json")):
        print(f"error: no fine-tuned teacher in {args.teacher}: run `make demo` first", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    work = tempfile.mkdtemp(prefix="bench-cache-")
    try:
        for tag, (name, ov) in enumerate(CONFIGS.items()):
            for seed in seeds:
                live = one_run(args.teacher, ov, seed, False, work, tag)
                cached = one_run(args.teacher, ov, seed, True, work, tag)
                caching = cached["teacher_cache_s"]  # the one-time teacher pass over the training set
                rows.append({"config": name, "seed": seed, "live": live, "cached": cached,
                             "caching_pass_s": round(caching, 2),
                             "speedup_train": live["train_runtime_s"] / cached["train_runtime_s"],
                             "speedup_incl_caching": live["train_runtime_s"] / (cached["train_runtime_s"] + caching)})
                print(json.dumps(rows[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ms(vals):
        vals = np.asarray(vals, dtype=float)
        return f"{vals.mean():.2f} ± {vals.std(ddof=1) if len(vals) > 1 else 0.0:.2f}"

    lines = ["| KD config | live teacher: train s | cached: train s | caching pass s | speed-up (train) | "
             "speed-up incl. caching | dev acc live | dev acc cached |", "|---|---|---|---|---|---|---|---|"]
    for name in CONFIGS:
        rs = [r for r in rows if r["config"] == name]
        lines.append(f"| {name} | {ms([r['live']['train_runtime_s'] for r in rs])} | "
                     f"{ms([r['cached']['train_runtime_s'] for r in rs])} | {ms([r['caching_pass_s'] for r in rs])} | "
                     f"{ms([r['speedup_train'] for r in rs])}× | {ms([r['speedup_incl_caching'] for r in rs])}× | "
                     f"{ms([r['live']['eval_accuracy'] for r in rs])} | {ms([r['cached']['eval_accuracy'] for r in rs])} |")
    result = {"protocol": __doc__.split("Usage")[0].strip(), "seeds": seeds, "rows": rows, "machine": machine(),
              "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump(result, fh, indent=2)
    m = result["machine"]
    md = [f"# Live teacher vs cached teacher outputs ({len(seeds)} seeds, mean ± std)", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; measured {result['date']}; fp32; 2 epochs "
          "of 2,000 tweets, 500 dev, batch 32, max length 64.", "", *lines, ""]
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
