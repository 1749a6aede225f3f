#!/usr/bin/env python
"""Benchmark: what augmentation (random, contextual) and MixUp change for the demo student on the tweets.

Protocol (fixed before the first measured run):
- teacher: the demo's (packaged MiniLM-L6-H384 fine-tuned on 4,000 tweets, ``runs/demo/teacher``; run ``make demo``
  or ``distiller-nlp demo`` first);
- student: ``layers=3,hidden=256,heads=8,intermediate=1024`` initialised from teacher layers, lr 1e-4, batch 32,
  64 tokens, length-grouped batches, fp32; KD = the demo's "logit KD" (KL at T=2, weight 1, + CE on gold labels,
  weight 1);
- training sets: 500 and 5,000 tweets (a stratified subset drawn with the run's seed, so variants of one seed see
  the same originals); 6 epochs at 500, 2 epochs at 5,000 (over originals + augmented copies);
- variants: ``none``; ``random`` (EDA swap, aug_p 0.3, one copy per example); ``contextual`` (masked-LM
  substitution with the MiniLM masked LM fitted by ``distiller-nlp train-mlm`` on the training split of the tweets,
  aug_p 0.3, top-p 0.9, one copy); ``mixup`` (word-embedding MixUp, λ ~ Beta(0.4, 0.4)). aug_p 0.3 is Distiller's
  default; augmented copies are made with the augmentation seed = the run's seed;
- seeds 1, 2, 3; dev accuracy of the best epoch and test accuracy of that model, each on a 2,000-tweet subset
  of its split (drawn with the run's seed; evaluation every epoch on the full 3,724 would cost more than training
  at 500 examples).
Teacher outputs are cached (``teacher_cache: auto``) where the pipeline allows (all but MixUp).

Usage: ``python benchmarks/augmentation.py [--seeds 1,2,3] [--sizes 500,5000] [--variants none,random,contextual,mixup]
[--mlm runs/mlm_tweets]``. Every run is resumable and reused when its protocol is unchanged, so the benchmark can be
built up over several invocations. Writes ``benchmarks/results/augmentation.{json,md,png}``.
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

EPOCHS = {500: 6, 5000: 2}
VARIANTS = {
    "none": {},
    "random": {"augment": {"stages": ["random"], "aug_p": 0.3, "copies": 1}},
    "contextual": {"augment": {"stages": ["contextual"], "aug_p": 0.3, "copies": 1,
                               "params": {"contextual": {"top_p": 0.9}}}},
    "mixup": {"mixup": True},
}


def build_config(variant: str, size: int, seed: int, teacher: str, mlm: str, out: str):
    from distiller_nlp.config import AugmentConfig, DataConfig, DistillConfig, KDConfig
    from distiller_nlp.core.train_args import TrainArgs

    spec = VARIANTS[variant]
    kd = KDConfig(pred_loss="kd", temperature=2.0, kd_weight=1.0, hard_label_weight=1.0,
                  mixup=bool(spec.get("mixup")))
    aug = AugmentConfig()
    if "augment" in spec:
        a = json.loads(json.dumps(spec["augment"]))
        if "contextual" in a["stages"]:
            a["params"]["contextual"]["model"] = os.path.abspath(mlm)
        aug = AugmentConfig(stages=a["stages"], aug_p=a["aug_p"], copies=a["copies"], seed=seed,
                            params=a.get("params", {}))
    train = TrainArgs(epochs=EPOCHS[size], lr=1e-4, batch_size=32, seed=seed, precision="no", max_length=64,
                      report_to="none", logging_steps=10, group_by_length=True)
    return DistillConfig(teacher=teacher, student_shape="layers=3,hidden=256,heads=8,intermediate=1024",
                         student_init="teacher", output_dir=out, data=DataConfig(task="tweets", max_train_examples=size, max_eval_examples=2000),
                         kd=kd, train=train, augment=aug, teacher_cache="off" if spec.get("mixup") else "auto")


def summarize(rows: list) -> dict:
    out = {}
    for r in rows:
        out.setdefault(f"{r['size']}", {}).setdefault(r["variant"], []).append(r)
    summary = {}
    for size, by_v in out.items():
        base = {r["seed"]: r for r in by_v.get("none", [])}
        for v, rs in by_v.items():
            dev = np.array([r["eval_accuracy"] for r in rs])
            test = np.array([r["test_accuracy"] for r in rs])
            e = {"n": len(rs), "dev": float(dev.mean()), "dev_std": float(dev.std(ddof=1)) if len(rs) > 1 else 0.0,
                 "test": float(test.mean()), "test_std": float(test.std(ddof=1)) if len(rs) > 1 else 0.0,
                 "train_runtime_s": float(np.mean([r["train_runtime_s"] for r in rs])),
                 "train_examples": rs[0]["train_examples"]}
            paired = [r["eval_accuracy"] - base[r["seed"]]["eval_accuracy"] for r in rs if r["seed"] in base]
            if v != "none" and paired:
                d = np.array(paired)
                e["dev_minus_none"] = float(d.mean())
                e["dev_minus_none_std"] = float(d.std(ddof=1)) if len(d) > 1 else 0.0
                e["wins"] = int((d > 0).sum())
                e["pairs"] = len(d)
            summary.setdefault(size, {})[v] = e
    return summary


def plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(summary, key=int)
    variants = [v for v in VARIANTS if any(v in summary[s] for s in sizes)]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 3.8), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        vs = [v for v in variants if v in summary[size]]
        means = [summary[size][v]["dev"] * 100 for v in vs]
        stds = [summary[size][v]["dev_std"] * 100 for v in vs]
        ax.bar(vs, means, yerr=stds, capsize=4, color=["grey"] + ["tab:blue"] * (len(vs) - 1))
        lo = min(m - s for m, s in zip(means, stds))
        ax.set_ylim(lo - 2, max(m + s for m, s in zip(means, stds)) + 1)
        ax.set_title(f"{int(size):,} training tweets")
        ax.set_ylabel("dev accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Augmentation for the 3×256 student, logit KD (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    from bench_demo_kd import machine

    from distiller_nlp.demo import protocol_hash, run_or_resume
    from distiller_nlp.kd.distillation import distill

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--sizes", default="500,5000")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--teacher", default="runs/demo/teacher")
    p.add_argument("--mlm", default="runs/mlm_tweets", help="masked LM for the contextual stage (train-mlm)")
    p.add_argument("--workspace", default="runs/augmentation")
    p.add_argument("--out", default=os.path.join(HERE, "results", "augmentation"))
    p.add_argument("--report-only", action="store_true", help="write the tables from the runs finished so far")
    args = p.parse_args(argv)
    if not args.report_only and not os.path.isfile(os.path.join(args.teacher, "config.json")):
        print(f"error: no fine-tuned teacher at {args.teacher}: run `make demo` first", file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    if "contextual" in variants and not args.report_only and not os.path.isfile(os.path.join(args.mlm, "config.json")):
        print(f"error: no masked LM at {args.mlm}: run `distiller-nlp train-mlm --output-dir {args.mlm}` first",
              file=sys.stderr)
        return 2
    rows_path = os.path.join(args.workspace, "rows.json")
    rows = []
    if os.path.isfile(rows_path):
        with open(rows_path) as fh:
            rows = json.load(fh)
    done = {(r["variant"], r["size"], r["seed"]) for r in rows}
    from distiller_nlp.core.rundir import write_json_atomic

    for size in [] if args.report_only else [int(s) for s in args.sizes.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for v in variants:
                if (v, size, seed) in done:
                    continue
                out = os.path.join(args.workspace, f"{v}_n{size}_seed{seed}")
                cfg = build_config(v, size, seed, args.teacher, args.mlm, out)
                spec = {"variant": VARIANTS[v], "size": size, "seed": seed, "epochs": EPOCHS[size],
                        "teacher": os.path.abspath(args.teacher)}
                print(f"[augmentation] {v}, {size} examples, seed {seed}", flush=True)
                t = time.time()
                m = run_or_resume(distill, cfg, out, protocol_hash(spec), spec)
                rows.append({"variant": v, "size": size, "seed": seed, "eval_accuracy": m["eval_accuracy"],
                             "test_accuracy": m.get("test_accuracy"), "train_runtime_s": m["train_runtime_s"],
                             "train_examples": m.get("train_examples"), "wall_s": round(time.time() - t, 1)})
                os.makedirs(args.workspace, exist_ok=True)
                write_json_atomic(rows_path, rows)
    summary = summarize(rows)
    result = {"protocol": __doc__.split("Usage")[0].strip(), "rows": rows, "summary": summary,
              "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_json_atomic(args.out + ".json", result)
    plot(summary, args.out + ".png")
    lines = ["| training tweets | variant | seeds | train examples seen per epoch | dev accuracy | test accuracy | "
             "dev − none (paired) | wins | train time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for size in sorted(summary, key=int):
        for v in VARIANTS:
            e = summary[size].get(v)
            if e is None:
                continue
            diff = (f"{e['dev_minus_none'] * 100:+.2f} ± {e['dev_minus_none_std'] * 100:.2f} pts"
                    if "dev_minus_none" in e else "")
            wins = f"{e['wins']}/{e['pairs']}" if "wins" in e else ""
            lines.append(f"| {int(size):,} | {v} | {e['n']} | {e['train_examples']} | {e['dev']:.4f} ± "
                         f"{e['dev_std']:.4f} | {e['test']:.4f} ± {e['test_std']:.4f} | {diff} | {wins} | "
                         f"{e['train_runtime_s']:.0f} |")
    m = result["machine"]
    md = ["# Augmentation and MixUp for the demo student on the tweets (mean ± std over seeds)", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}; measured {result['date']}. MixUp batches "
          "hold originals + mixed copies (twice the examples per step). Times come from a shared machine.", "",
          "Planned: seeds 1, 2, 3 × {500, 5,000} tweets × the four variants; the `seeds` column counts the runs "
          "finished so far (the benchmark is resumable and was still running when this table was written if a "
          "row has fewer than 3). Protocol: see `benchmarks/augmentation.py`.", "",
          *lines, "", "![augmentation](augmentation.png)", ""]
    with open(args.out + ".md", "w") as fh:
        fh.write("\n".join(md))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
