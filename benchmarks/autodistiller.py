#!/usr/bin/env python
"""Evidence for AutoDistiller: does the recommended pipeline beat the default on a dataset it has not seen?

Protocol (fixed before the first measured run):
- data: the shipped meta-dataset (``benchmarks/meta_dataset.py``: 8 datasets in 2 families, the same 20 pipelines
  on each, 2 seeds per pipeline); the candidates for a held-out dataset are the 20 pipelines that were actually run
  on it, so every recommendation has a measured outcome without new runs;
- hold-out: (1) one whole family at a time (fit on the other family only), (2) one dataset at a time inside its
  family (fit on every other dataset, its own family included);
- model: :class:`distiller_nlp.autodistiller.RatioModel` (scikit-learn gradient boosting, seed 0) on the records of
  the training part;
- per held-out dataset: the actual dev score (mean over the 2 seeds) of the predicted top-1 pipeline against
  (a) the default pipeline (logit KD only) and (b) the median of the other 19 pipelines (drawn at random from the
  space); also the top-1 among the pipelines at the default's lr (3e-4) against the default, which separates what the
  KD pipeline buys from what a better learning rate buys; a win / loss when the difference exceeds the dataset's
  seed noise (the mean over its pipelines of the two seeds' absolute difference / √2, i.e. the standard error of a
  2-seed mean), a tie otherwise; Spearman ρ
  between predicted and actual ratios over the 20 pipelines; whether ``recommend``'s nearness rule would have
  trusted the model (else it falls back to its rules).

Supplement (protocol fixed after the table above was first measured, before its own runs): ``recommend`` falls back
to its documented rules (:func:`distiller_nlp.autodistiller.rule_pipeline`) where the nearness rule does not trust
the model — with a whole family held out, on every dataset. The rule pipeline is not among the 20, so
``--run-rules`` runs it on each of the 8 datasets with the builder's base recipe and seeds (the rules given the
dataset's meta-features and the random + contextual stages the builder has; 16 runs, resumable, one process per
core; records in ``runs/meta/rule_records``, scores in ``benchmarks/results/autodistiller_rule_runs.csv``). The
evaluation then also scores the rules against the default and "recommend as it would act": the model's top-1 where
trusted, else the rules.

Usage: ``python benchmarks/autodistiller.py [--meta PATH] [--run-rules]``; writes
``benchmarks/results/autodistiller.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = {"augment": "none", "mixup": False, "pred_loss": "kd", "temperature": 1.0, "kd_weight": 1.0,
           "hard_label_weight": 0.0, "inter_loss": "none"}
BASE_LR = 3e-4  # benchmarks/meta_dataset.py's base recipe
RULE_RUNS = os.path.join(HERE, "results", "autodistiller_rule_runs.csv")


def _builder():
    """``benchmarks/meta_dataset.py`` as a module."""
    sys.path.insert(0, HERE)
    import meta_dataset

    return meta_dataset


def run_rules(meta) -> None:
    """Run the fallback rules' pipeline on every builder dataset (2 seeds) and write their scores to RULE_RUNS."""
    from distiller_nlp.autodistiller.recommender import available_stages, rule_pipeline
    from distiller_nlp.autodistiller.metadataset import dataset_name, load_meta_dataset
    from distiller_nlp.autodistiller.pipeline_space import default_pipeline

    builder = _builder()
    records = os.path.join(builder.WORK, "rule_records")

    def rules_of(base) -> list:
        ctx = meta[meta["dataset"] == dataset_name(base)].iloc[0].to_dict()
        return [rule_pipeline(ctx, available_stages(base), default_pipeline(base))[0]]

    builder.build(list(builder.DATASETS), records=records, pipelines_of=rules_of, per_dataset=1)
    runs = load_meta_dataset(records)
    cols = ["dataset", "seed", "pipeline_id", "pipeline", "student_score", "score_ratio"]
    runs[cols].sort_values(["dataset", "seed"]).to_csv(RULE_RUNS + ".tmp", index=False)
    os.replace(RULE_RUNS + ".tmp", RULE_RUNS)


def evaluate_holdout(meta, held: list, label: str, rules=None) -> list:
    """One row per dataset of ``held`` (the model fitted on every other dataset); ``rules``: the rule runs (columns
    dataset, student_score) to score the fallback and "recommend as it acts" too."""
    from scipy.stats import spearmanr

    from distiller_nlp.autodistiller.recommender import (MIN_NEAR_DATASETS, NEAR_DISTANCE, context_features,
                                                         rank_pipelines, dataset_distances)
    from distiller_nlp.autodistiller.pipeline_space import describe_pipeline

    train = meta[~meta["dataset"].isin(held)]
    rows = []
    for d in held:
        part = meta[meta["dataset"] == d]
        ctx = part.iloc[0].to_dict()
        by = part.groupby("pipeline_id")
        actual_ratio = by["score_ratio"].mean()
        actual_score = by["student_score"].mean()
        seeds_diff = by["student_score"].agg(lambda s: float(s.max() - s.min()) if len(s) > 1 else np.nan)
        noise = float(np.nanmean(seeds_diff) / np.sqrt(2))
        pipes = {pid: json.loads(g["pipeline"].iloc[0]) for pid, g in by}
        ids = list(actual_ratio.index)
        pred = rank_pipelines(train, ctx, [pipes[i] for i in ids], seed=0)  # exactly as ``recommend`` ranks
        top = ids[int(np.argmax(pred))]
        defaults = [i for i in ids if {k: pipes[i].get(k) for k in DEFAULT} == DEFAULT]
        # the builder's default is logit KD at the base recipe's lr (3e-4); another draw may share the rest
        default_id = next((i for i in defaults if pipes[i].get("lr") == BASE_LR), defaults[0])
        others = [i for i in ids if i != default_id]
        median_random = float(np.median([actual_score[i] for i in others]))
        rho = float(spearmanr(pred, [actual_ratio[i] for i in ids]).statistic)
        dists = dataset_distances(train, context_features(ctx) | ctx)
        near = [n for n, dist in dists if dist <= NEAR_DISTANCE]
        # the distance within which MIN_NEAR_DATASETS datasets lie: the threshold that would have trusted the model
        needed = dists[MIN_NEAR_DATASETS - 1][1] if len(dists) >= MIN_NEAR_DATASETS else float("inf")
        d_default = float(actual_score[top] - actual_score[default_id])
        # the same recommendation restricted to the base lr: what the KD pipeline buys apart from a better lr
        same_lr = [j for j, i in enumerate(ids) if pipes[i].get("lr") == BASE_LR]
        top_lr = ids[same_lr[int(np.argmax([pred[j] for j in same_lr]))]] if same_lr else default_id
        d_default_lr = float(actual_score[top_lr] - actual_score[default_id])
        d_random = float(actual_score[top] - median_random)

        def verdict(delta: float) -> str:
            return "win" if delta > noise else ("loss" if delta < -noise else "tie")

        rows.append({
            "holdout": label, "dataset": d, "family": part["family"].iloc[0], "train_records": len(train),
            "top1": describe_pipeline(pipes[top]), "top1_is_default": top == default_id,
            "top1_score": float(actual_score[top]), "default_score": float(actual_score[default_id]),
            "random_median_score": median_random, "best_score": float(actual_score.max()),
            "top1_rank_actual": int((actual_score > actual_score[top]).sum()) + 1,
            "delta_vs_default": d_default, "delta_vs_random_median": d_random, "seed_noise": noise,
            "vs_default": verdict(d_default), "vs_random": verdict(d_random), "spearman": rho,
            "top1_base_lr": describe_pipeline(pipes[top_lr]), "top1_base_lr_score": float(actual_score[top_lr]),
            "delta_base_lr_vs_default": d_default_lr, "vs_default_base_lr": verdict(d_default_lr),
            "trusted": len(near) >= MIN_NEAR_DATASETS, "near_datasets": len(near), "trust_distance": needed,
        })
        ran = rules[rules["dataset"] == d] if rules is not None else []
        if len(ran):
            rule_score, dflt = float(ran["student_score"].mean()), float(actual_score[default_id])
            acted = float(actual_score[top]) if rows[-1]["trusted"] else rule_score
            rows[-1].update({"rules": describe_pipeline(json.loads(ran["pipeline"].iloc[0])),
                             "rules_score": rule_score, "delta_rules_vs_default": rule_score - dflt,
                             "vs_default_rules": verdict(rule_score - dflt), "acted_score": acted,
                             "delta_acted_vs_default": acted - dflt, "vs_default_acted": verdict(acted - dflt)})
    return rows


def plot(rows: list, path: str) -> None:
    """Per held-out dataset (one panel per hold-out kind): dev accuracy of the default, the median random pipeline,
    the recommended top-1, the rules (when run) and the best of the 20, with the 2-seed noise as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [("family", "one family held out"), ("dataset", "one dataset held out")]
    bars = [("default_score", "default (logit KD)", "#999999"), ("random_median_score", "random median", "#c7c7c7"),
            ("top1_score", "recommended top-1", "#1f77b4"), ("rules_score", "fallback rules", "#ff7f0e"),
            ("best_score", "best of 20", "#2ca02c")]
    bars = [b for b in bars if all(b[0] in r for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for ax, (kind, title) in zip(axes, kinds):
        part = [r for r in rows if r["holdout"].startswith(kind)]
        x = np.arange(len(part))
        w = 0.8 / len(bars)
        for j, (key, label, color) in enumerate(bars):
            ax.bar(x + (j - (len(bars) - 1) / 2) * w, [r[key] for r in part], w, label=label, color=color,
                   yerr=[r["seed_noise"] for r in part], error_kw={"elinewidth": 0.6})
        ax.set_xticks(x, [r["dataset"].split("@")[0] for r in part], rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0.4, 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("dev accuracy (mean of 2 seeds)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center", ncol=len(bars), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _counts(verdicts) -> dict:
    """Wins, ties and losses among a column of verdicts."""
    return {k: int((verdicts == k).sum()) for k in ("win", "tie", "loss")}


def _wtl(c: dict) -> str:
    return f"{c['win']} / {c['tie']} / {c['loss']}"


def main(argv=None) -> int:
    import pandas as pd

    from distiller_nlp.autodistiller.recommender import MIN_NEAR_DATASETS, NEAR_DISTANCE
    from distiller_nlp.autodistiller.metadataset import load_meta_dataset
    from distiller_nlp.core.rundir import write_json_atomic

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--meta", default=None, help="meta-dataset (default: the shipped one)")
    p.add_argument("--run-rules", action="store_true", help="first run the fallback rules' pipeline on the builder's "
                   "datasets (resumable; start once per core)")
    args = p.parse_args(argv)
    meta = load_meta_dataset(args.meta)
    if args.run_rules:
        run_rules(meta)
    rules = pd.read_csv(RULE_RUNS) if os.path.isfile(RULE_RUNS) else None
    rows = []
    families = sorted(meta["family"].unique())
    for fam in families if len(families) > 1 else []:  # one family: nothing left to fit on when it is held out
        held = sorted(meta.loc[meta["family"] == fam, "dataset"].unique())
        rows += evaluate_holdout(meta, held, f"family {fam}", rules)
    if len(families) < 2:
        print(f"only one family ({families[0]}): the family hold-out is skipped", file=sys.stderr)
    for d in sorted(meta["dataset"].unique()):
        rows += evaluate_holdout(meta, [d], "dataset", rules)
    df = pd.DataFrame(rows)
    summary = {}
    for kind, g in df.groupby(df["holdout"].str.startswith("family").map({True: "family", False: "dataset"})):
        summary[kind] = {
            "datasets": len(g),
            "vs_default": _counts(g["vs_default"]),
            "vs_random_median": _counts(g["vs_random"]),
            "mean_delta_vs_default": float(g["delta_vs_default"].mean()),
            "vs_default_base_lr": _counts(g["vs_default_base_lr"]),
            "mean_delta_base_lr_vs_default": float(g["delta_base_lr_vs_default"].mean()),
            "mean_delta_vs_random_median": float(g["delta_vs_random_median"].mean()),
            "mean_spearman": float(g["spearman"].mean()),
            "spearman_std": float(g["spearman"].std(ddof=0)),
            "trusted": int(g["trusted"].sum()),
            "trust_distance_min": float(g["trust_distance"].min()),
            "trust_distance_max": float(g["trust_distance"].max()),
        }
        for what in ("rules", "acted") if "rules_score" in g else ():
            summary[kind][f"vs_default_{what}"] = _counts(g[f"vs_default_{what}"])
            summary[kind][f"mean_delta_{what}_vs_default"] = float(g[f"delta_{what}_vs_default"].mean())
    out = {"records": len(meta), "datasets": int(meta["dataset"].nunique()), "families": families,
           "summary": summary, "rows": rows}
    res = os.path.join(HERE, "results")
    os.makedirs(res, exist_ok=True)
    write_json_atomic(os.path.join(res, "autodistiller.json"), out)
    lines = ["# AutoDistiller hold-out evidence", "",
             f"Meta-dataset: {len(meta)} runs, {out['datasets']} datasets, families {', '.join(families)}. "
             "Protocol: `benchmarks/autodistiller.py`. Scores are dev accuracy, mean of 2 seeds; win/loss = beyond "
             "the dataset's 2-seed noise.", ""]
    for kind, s in summary.items():
        lines.append(f"**Hold out one {kind} at a time** ({s['datasets']} datasets): vs default "
                     f"{s['vs_default']['win']} wins / {s['vs_default']['tie']} ties / {s['vs_default']['loss']} "
                     f"losses (mean Δ {100 * s['mean_delta_vs_default']:+.2f} points); vs median random pipeline "
                     f"{s['vs_random_median']['win']} / {s['vs_random_median']['tie']} / "
                     f"{s['vs_random_median']['loss']} (mean Δ {100 * s['mean_delta_vs_random_median']:+.2f}); "
                     f"top-1 among the base-lr ({BASE_LR:g}) pipelines vs default {s['vs_default_base_lr']['win']} / "
                     f"{s['vs_default_base_lr']['tie']} / {s['vs_default_base_lr']['loss']} (mean Δ "
                     f"{100 * s['mean_delta_base_lr_vs_default']:+.2f}: the pipeline's share apart from the lr); "
                     f"Spearman ρ {s['mean_spearman']:.2f} ± {s['spearman_std']:.2f}; model trusted by the "
                     f"nearness rule on {s['trusted']} of {s['datasets']} (distance ≤ {NEAR_DISTANCE:g} for "
                     f"{MIN_NEAR_DATASETS} datasets; the distance within which {MIN_NEAR_DATASETS} lie here: "
                     f"{s['trust_distance_min']:.2f}–{s['trust_distance_max']:.2f}).")
        if "vs_default_rules" in s:
            lines[-1] += (f" The fallback rules vs default {_wtl(s['vs_default_rules'])} (mean Δ "
                          f"{100 * s['mean_delta_rules_vs_default']:+.2f}); recommend as it acts (the model's top-1 "
                          f"where trusted, else the rules) vs default {_wtl(s['vs_default_acted'])} (mean Δ "
                          f"{100 * s['mean_delta_acted_vs_default']:+.2f}).")
        lines.append("")
    with_rules = rules is not None
    lines += ["| hold-out | dataset | recommended top-1 | top-1 | default | random median | best of 20 | "
              "top-1 rank | noise | vs default | vs random | ρ | top-1 at base lr | its score | vs default |"
              + (" trusted (2nd-nearest distance) | rules' score | vs default | as it acts: vs default |"
                 if with_rules else ""),
              "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---|---:|---|"
              + ("---|---:|---|---|" if with_rules else "")]
    for r in rows:
        lines.append(f"| {r['holdout']} | {r['dataset']} | {r['top1']} | {r['top1_score']:.4f} | "
                     f"{r['default_score']:.4f} | {r['random_median_score']:.4f} | {r['best_score']:.4f} | "
                     f"{r['top1_rank_actual']} | {r['seed_noise']:.4f} | {r['vs_default']} | {r['vs_random']} | "
                     f"{r['spearman']:.2f} | {r['top1_base_lr']} | {r['top1_base_lr_score']:.4f} | "
                     f"{r['vs_default_base_lr']} |")
        if with_rules:
            lines[-1] += (f" {'yes' if r['trusted'] else 'no'} ({r['trust_distance']:.1f}) | "
                          f"{r.get('rules_score', float('nan')):.4f} | {r.get('vs_default_rules', '')} | "
                          f"{r.get('vs_default_acted', '')} |")
    if with_rules:
        lines += ["", f"Rules' pipeline on these datasets: {'; '.join(sorted({str(r.get('rules')) for r in rows}))} "
                  "(runs: `benchmarks/results/autodistiller_rule_runs.csv`)."]
    plot(rows, os.path.join(res, "autodistiller.png"))
    lines += ["", "![per-dataset scores](autodistiller.png)"]
    with open(os.path.join(res, "autodistiller.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
