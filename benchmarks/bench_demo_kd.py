#!/usr/bin/env python
"""Benchmark: what logit KD and MI-α buy on the demo protocol, mean ± std over several student seeds.

Protocol (fixed before the first measured run; it is ``distiller_nlp.demo.PROTOCOL``): the packaged MiniLM-L6-H384
fine-tuned on a seeded stratified subset of 4,000 training tweets (2 epochs, 64 tokens); the student
``layers=3,hidden=256,heads=8,intermediate=1024`` (0.23 of the teacher's encoder FLOPs at 128 tokens), initialised
from teacher layers 2/4/6, trained 2 epochs (length-grouped batches) three ways (no KD; logit KD T=2; logit KD + MI-α α=0.9 on skip-mapped
hidden states), each with the seeds below; a TF-IDF + logistic-regression baseline on the same examples. Dev (3,724
tweets after de-duplication) and test (3,724) accuracies of the best-dev checkpoint.

Usage::

    python benchmarks/bench_demo_kd.py [--seeds 1,2,3] [--workspace runs/demo] [--precision auto]

The workspace is the demo's: finished runs of the same protocol are reused (so ``make demo`` followed by this script
trains only the extra seeds), interrupted ones resume. Writes ``benchmarks/results/demo_kd.json`` and ``.md``.
Timing columns come from whichever run produced each row; compare speed only within one run (see bench_*speed*).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            flags = set(next(line.split(":", 1)[1].split() for line in fh if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads(),
            "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags, "avx2": "avx2" in flags}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--workspace", default="runs/demo")
    p.add_argument("--precision", default="auto")
    p.add_argument("--out", default=os.path.join(HERE, "results", "demo_kd"))
    args = p.parse_args(argv)

    from distiller_nlp.demo import format_table, run_demo

    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    result = run_demo(args.workspace, seeds=seeds, precision=args.precision,
                      table_path=os.path.join(args.workspace, "BENCH_TABLE.md"))
    result["machine"] = machine()
    result["wall_s"] = round(time.time() - t0, 1)
    result["date"] = time.strftime("%Y-%m-%d")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(result, fh, indent=2, default=str)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    m = result["machine"]
    md = [f"# KD vs no KD on the demo protocol ({len(seeds)} student seeds: {args.seeds})", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; measured {result['date']}.", "",
          format_table(result), ""]
    with open(args.out + ".md.tmp", "w") as fh:
        fh.write("\n".join(md))
    os.replace(args.out + ".md.tmp", args.out + ".md")
    print(f"wrote {args.out}.json and {args.out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
