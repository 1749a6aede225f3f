#!/usr/bin/env python
"""Benchmark: the accuracy cost of bf16 autocast — logit KD and logit KD + MI-α students, fp32 vs bf16, paired by seed.

Protocol (fixed before the first measured run): the tweets protocol the demo had then (``distiller_nlp.demo.
PROTOCOL_V2``; ``bench_demo_kd.py --protocol v2`` runs it too): the packaged MiniLM-L6-H384 teacher fine-tuned once (``precision: auto``) on
the seeded 3,000-example training subset; students ``layers=3,hidden=256,heads=8,intermediate=1024``, initialised
from teacher layers, 2 epochs, lr 1e-4, batch 32, 64 tokens, length-grouped batches, the teacher read from its
float16 output cache (the same cached outputs for both precisions, so only the student's arithmetic differs); two
variants (logit KD T=2 + CE; the same + MI-α α=0.9 on skip-mapped hidden states); each with ``--precision no``
(fp32) and ``--precision bf16`` (autocast; the losses in fp32), seeds 1, 2, 3. Same seed = same initialisation,
data order and dropout stream, so the bf16 − fp32 differences are paired. Reported per variant: the mean difference
in dev and test accuracy (2,000 seeded examples each) with a 95 % t-interval over seeds, and the speed ratio of
the two precisions' training (examples/s). Goal (issue #18): |mean difference| ≤ 0.5 points.

Usage: ``python benchmarks/bf16_cost.py [--seeds 1,2,3] [--workspace runs/demo]`` → ``benchmarks/results/
bf16_cost.{json,md,png}``. Finished runs are reused (the workspace is ``bench_demo_kd.py --protocol v2``'s); interrupted ones resume. On a CPU
without fast bf16 the bf16 runs are slow (hundreds of times on AVX2-only); the script then says so in the table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
VARIANTS = ("logit KD", "logit KD + MI-α")
PRECISIONS = ("no", "bf16")


def t_interval(d: np.ndarray) -> tuple:
    """Mean and 95 % two-sided t-interval half-width of paired differences (n - 1 degrees of freedom)."""
    from scipy import stats

    if len(d) < 2:
        return float(d.mean()), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean()), float(half)


def plot(pairs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    labels = []
    for i, ((variant, split), e) in enumerate(pairs.items()):
        ax.scatter([i] * len(e["per_seed"]), np.array(e["per_seed"]) * 100, color="tab:blue", s=18, zorder=3)
        ax.errorbar(i + 0.15, e["mean"] * 100, yerr=e["ci95"] * 100, fmt="s", color="black", capsize=4)
        labels.append(f"{variant}\n{split}")
    ax.axhline(0, color="grey", lw=1)
    for y in (-0.5, 0.5):
        ax.axhline(y, color="tab:red", lw=0.8, ls="--")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("bf16 − fp32 accuracy (points)")
    ax.set_title("bf16 autocast vs fp32: per-seed differences, mean ± 95 % CI (goal band ±0.5)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from bench_demo_kd import machine, machine_line

    from distiller_nlp.demo import PROTOCOL_V2, run_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--workspace", default="runs/demo_v2")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "bf16_cost"))
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    protocol = copy.deepcopy(PROTOCOL_V2)
    protocol["variants"] = {v: protocol["variants"][v] for v in VARIANTS}
    results = {}
    for precision in PRECISIONS:
        results[precision] = run_demo(args.workspace, seeds=seeds, precision=precision, protocol=protocol,
                                      teacher_precision="auto",
                                      table_path=os.path.join(args.workspace, f"BF16_COST_{precision}.md"))
    by = {prec: {(r["model"][9:], r["seed"]): r for r in res["rows"] if r["model"].startswith("student: ")}
          for prec, res in results.items()}
    pairs, speed = {}, {}
    for variant in VARIANTS:
        for split in ("eval_accuracy", "test_accuracy"):
            d = np.array([by["bf16"][(variant, s)][split] - by["no"][(variant, s)][split] for s in seeds])
            mean, half = t_interval(d)
            pairs[(variant, split.split("_")[0])] = {"per_seed": d.tolist(), "mean": mean, "ci95": half,
                                                     "fp32": float(np.mean([by["no"][(variant, s)][split]
                                                                            for s in seeds])),
                                                     "bf16": float(np.mean([by["bf16"][(variant, s)][split]
                                                                            for s in seeds]))}
        speed[variant] = float(np.mean([by["bf16"][(variant, s)]["examples_per_s"]
                                        / by["no"][(variant, s)]["examples_per_s"] for s in seeds]))
    m = machine()
    fast = m.get("avx512_bf16") or m.get("amx_bf16")
    rows = ["| variant | split | fp32 (mean) | bf16 (mean) | bf16 − fp32 (points) | 95 % CI | per seed | goal |",
            "|---|---|---|---|---|---|---|---|"]
    for (variant, split), e in pairs.items():
        ok = abs(e["mean"]) * 100 <= 0.5
        rows.append(f"| {variant} | {split} | {e['fp32']:.4f} | {e['bf16']:.4f} | {e['mean'] * 100:+.2f} | "
                    f"±{e['ci95'] * 100:.2f} | {', '.join(f'{x * 100:+.2f}' for x in e['per_seed'])} | "
                    f"{'met' if ok else 'NOT met'} (|mean| ≤ 0.5) |")
    speed_lines = [f"- {v}: bf16 trains at {r:.2f} × the examples/s of fp32 (mean over seeds; per-run times "
                   "include nothing but training)" for v, r in speed.items()]
    out = {"protocol": __doc__.split("Usage")[0].strip(), "seeds": seeds, "machine": m,
           "date": time.strftime("%Y-%m-%d"), "pairs": {f"{k[0]} | {k[1]}": v for k, v in pairs.items()},
           "speed_ratio_bf16_over_fp32": speed, "rows": {p: r["rows"] for p, r in results.items()}}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(out, fh, indent=2, default=str)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    plot(pairs, args.out + ".png")
    md = [f"# Accuracy cost of bf16 autocast (students, {len(seeds)} paired seeds: {args.seeds})", "",
          f"{machine_line(m)}; measured {out['date']}."
          + ("" if fast else " This CPU has no fast bf16: the bf16 runs were slow and are reported as far as they "
             "went."), "",
          "Protocol: the demo's (3,000 training tweets, dev/test 2,000 each, students 3 × 256 for 2 epochs, "
          "teacher outputs from the float16 cache shared by both precisions); bf16 = autocast with fp32 master "
          "weights and fp32 losses.", "", *rows, "", *speed_lines, "", f"![bf16 − fp32]({os.path.basename(args.out)}.png)",
          ""]
    with open(args.out + ".md.tmp", "w") as fh:
        fh.write("\n".join(md))
    os.replace(args.out + ".md.tmp", args.out + ".md")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
