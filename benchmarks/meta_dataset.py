#!/usr/bin/env python
"""Build the AutoDistiller meta-dataset shipped with the package, from real runs on this machine (resumable).

Protocol (fixed before the first measured run):
- datasets (8, two families; each a stratified training subset drawn with seed 0, dev and test capped at 500
  examples drawn from the corpus's own dev/test splits, seed 0):
  - family ``tweets`` (airline tweets, packaged): ``tweets3-500`` and ``tweets3-1000`` (negative / neutral /
    positive at 500 and 1,000 training examples), ``tweets-posneg-500`` and ``tweets-posneg-1000`` (positive vs
    negative), ``tweets-neutral-1000`` (neutral vs the rest);
  - family ``bbc`` (BBC News headlines, packaged): ``bbc5-1000`` (5 topics, 1,000 training headlines),
    ``bbc-business-tech``, ``bbc-sports-entertainment`` (topic pairs, every training headline of the two
    topics);
- teacher per dataset: the packaged MiniLM-L6-H384 fine-tuned on that dataset's training subset (3 epochs, lr 1e-4,
  batch 32, 64 tokens, seed 0), cached in ``runs/meta/teachers``;
- student: ``layers=2,hidden=128,heads=4,intermediate=512`` (teacher-slice initialisation), 64 tokens, batch 16,
  2 epochs (over the originals + augmented copies), lr 3e-4 unless the pipeline sets it, fp32, warm-up 10 %, best
  dev epoch;
- pipelines: the same 20 for every dataset — the default (logit KD only, T 1) and 19 drawn from
  ``recipes/spaces/distiller.yaml`` with seed 2026; contextual augmentation uses a masked LM fitted by
  ``train-mlm`` on the family's own training texts (240 steps; ``runs/mlm_tweets``, ``runs/meta/mlm_bbc``);
  augmented copies are made with augmentation seed 0;
- seeds 1 and 2 (student init + data order); teacher outputs cached (float16) wherever the pipeline allows — with
  MixUp for the originals, the teacher live on the mixed copies (the first 14 tweets3-1000 runs predate that and ran
  the teacher live on both halves).
8 × 20 × 2 = 320 runs (training sets of ≤ 1,000 examples keep the 9 MixUp pipelines, which run the teacher every
step, near the ≤ 4 CPU-hour budget: 4.15 CPU-hours measured over the 311 runs whose CPU time was logged); each
appends one record (``source: benchmark``) to the shard directory ``runs/meta/records``.

Usage: ``python benchmarks/meta_dataset.py [--datasets a,b] [--limit N]`` (builds what is missing; rerun to
continue; start it once per free core and the processes share the runs through per-run ``flock`` locks in
``runs/meta/locks``), ``--export`` writes the records to ``distiller_nlp/resources/meta_dataset.parquet`` and a
summary to ``benchmarks/results/meta_dataset.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(ROOT, "runs", "meta")
RECORDS = os.path.join(WORK, "records")
SHIPPED = os.path.join(ROOT, "distiller_nlp", "resources", "meta_dataset.parquet")
STUDENT = "layers=2,hidden=128,heads=4,intermediate=512"
SEEDS = (1, 2)
N_PIPELINES = 20
PIPELINE_SEED = 2026
MLM = {"tweets": os.path.join(ROOT, "runs", "mlm_tweets"), "bbc": os.path.join(WORK, "mlm_bbc")}
# name -> (family, corpus task, kept labels (None = all), training examples (None = all))
DATASETS = {
    "tweets3-1000": ("tweets", "tweets", None, 1000),
    "tweets3-500": ("tweets", "tweets", None, 500),
    "tweets-posneg-1000": ("tweets", "tweets", ["negative", "positive"], 1000),
    "tweets-posneg-500": ("tweets", "tweets", ["negative", "positive"], 500),
    "tweets-neutral-1000": ("tweets", "tweets", {"neutral": "neutral", "negative": "other", "positive": "other"},
                            1000),
    "bbc5-1000": ("bbc", "bbc-headlines", None, 1000),
    "bbc-business-tech": ("bbc", "bbc-headlines", ["business", "tech"], None),
    "bbc-sports-entertainment": ("bbc", "bbc-headlines", ["sports", "entertainment"], None),
}


@contextlib.contextmanager
def _lock(name: str, wait: bool = True):
    """An exclusive ``flock`` on ``runs/meta/locks/NAME``; yields False when ``wait`` is off and another process
    holds it. Builder processes started side by side share the work this way; a lock dies with its process, so a
    killed worker leaves nothing stale behind."""
    os.makedirs(os.path.join(WORK, "locks"), exist_ok=True)
    with open(os.path.join(WORK, "locks", name), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _once(lock: str, out: str, ready: str, make) -> str:
    """``out`` once ``out/ready`` exists; else ``make(out)`` under the lock (a worker that finds another one building
    it waits, then reuses it)."""
    if not os.path.isfile(os.path.join(out, ready)):
        with _lock(lock):
            if not os.path.isfile(os.path.join(out, ready)):
                make(out)
    return out


def write_dataset(name: str) -> str:
    """The dataset as a directory of ``train/dev/test.parquet`` (text, label name); written once."""
    return _once(f"data-{name}", os.path.join(WORK, "data", name), "test.parquet",
                 lambda out: _write_dataset(name, out))


def _write_dataset(name: str, out: str) -> None:
    import numpy as np
    import pandas as pd

    from distiller_nlp.tasks import load_task_data, stratified_subset

    family, corpus, keep, n_train = DATASETS[name]
    ds, task = load_task_data(corpus)
    names = task.label_names
    mapping = keep if isinstance(keep, dict) else {n: n for n in (keep or names)}
    tmp = out + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    splits = {"train": task.train_split, "dev": task.eval_splits[0], "test": task.test_splits[0]}
    for fname, split in splits.items():
        texts = list(ds[split]["text"])
        labels = [names[i] for i in ds[split]["label"]]
        idx = [i for i, lab in enumerate(labels) if lab in mapping]
        cap = n_train if fname == "train" else 500
        if cap is not None and len(idx) > cap:
            lab_ids = np.array([sorted(set(mapping.values())).index(mapping[labels[i]]) for i in idx])
            idx = [idx[j] for j in stratified_subset(lab_ids, cap, 0)]
        pd.DataFrame({"text": [texts[i] for i in idx], "label": [mapping[labels[i]] for i in idx]}).to_parquet(
            os.path.join(tmp, f"{fname}.parquet"), index=False)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def data_config(name: str):
    from distiller_nlp.config import DataConfig

    return DataConfig(task=name, data_dir=write_dataset(name), text_column="text", label_column="label")


def teacher_for(name: str) -> str:
    return _once(f"teacher-{name}", os.path.join(WORK, "teachers", name), "metrics.json",
                 lambda out: _train_teacher(name, out))


def _train_teacher(name: str, out: str) -> None:
    from distiller_nlp.config import FinetuneConfig
    from distiller_nlp.core.train_args import TrainArgs
    from distiller_nlp.kd.finetune import finetune_teacher

    resume = os.path.isdir(os.path.join(out, "checkpoints"))
    cfg = FinetuneConfig(model="minilm", output_dir=out, data=data_config(name),
                         train=TrainArgs(epochs=3, lr=1e-4, batch_size=32, max_length=64, seed=0, precision="no",
                                         report_to="none", warmup_ratio=0.1))
    print(f"[meta] teacher for {name} -> {out}")
    finetune_teacher(cfg, resume=resume, overwrite=not resume and os.path.isdir(out))


def mlm_for(family: str) -> str:
    return _once(f"mlm-{family}", MLM[family], "metrics.json", lambda out: _train_mlm(family, out))


def _train_mlm(family: str, out: str) -> None:
    from distiller_nlp.config import DataConfig
    from distiller_nlp.core.train_args import TrainArgs
    from distiller_nlp.augment.mlm import MLMConfig, train_mlm

    task = "tweets" if family == "tweets" else "bbc-headlines"
    cfg = MLMConfig(model="minilm", output_dir=out, data=DataConfig(task=task, max_eval_examples=1000),
                    train=TrainArgs(epochs=1, max_steps=240, batch_size=32, lr=1e-4, max_length=64, warmup_ratio=0.06,
                                    eval_steps=120, report_to="none", seed=42))
    print(f"[meta] masked LM for {family} -> {out}")
    resume = os.path.isdir(os.path.join(out, "checkpoints"))
    train_mlm(cfg, resume=resume, overwrite=not resume and os.path.isdir(out))


def base_config(name: str, teacher: str, seed: int):
    from distiller_nlp.config import AugmentConfig, DistillConfig
    from distiller_nlp.core.train_args import TrainArgs

    family = DATASETS[name][0]
    cfg = DistillConfig(teacher=teacher, student_shape=STUDENT, data=data_config(name),
                        train=TrainArgs(epochs=2, batch_size=16, max_length=64, lr=3e-4, seed=seed, precision="no",
                                        report_to="none", warmup_ratio=0.1, eval_batch_size=128),
                        augment=AugmentConfig(seed=0, params={"contextual": {"model": mlm_for(family)}}),
                        teacher_cache="auto", meta_dataset=RECORDS, meta_family=family)
    return cfg


def pipelines(cfg) -> list:
    from distiller_nlp.autodistiller.pipeline_space import default_pipeline, load_space

    return load_space().candidates(N_PIPELINES, seed=PIPELINE_SEED, include=[default_pipeline(cfg)])


def done_keys(records: str = "") -> set:
    records = records or RECORDS
    if not os.path.isdir(records) or not any(f.endswith(".parquet") for f in os.listdir(records)):
        return set()
    from distiller_nlp.autodistiller.metadataset import load_meta_dataset

    df = load_meta_dataset(records)
    return {(d, p, int(s)) for d, p, s in zip(df["dataset"], df["pipeline_id"], df["seed"])}


def build(names: list, limit: int = 0, records: str = "", pipelines_of=None,
          per_dataset: int = N_PIPELINES) -> int:
    """Run every missing (dataset, pipeline, seed); several processes may run this at once (per-run locks).

    ``pipelines_of(base_config)``: the ``per_dataset`` pipelines to run on a dataset (default :func:`pipelines`);
    ``records``: the shard directory the records go to (default ``runs/meta/records``)."""
    from distiller_nlp.autodistiller.metadataset import dataset_name
    from distiller_nlp.autodistiller.pipeline_space import pipeline_key

    records = records or RECORDS
    pipelines_of = pipelines_of or pipelines
    done = done_keys(records)
    ran = 0
    total = len(names) * len(SEEDS) * per_dataset
    print(f"[meta] {len(done)} of {total} runs already recorded in {records}")
    t0 = time.time()
    for name in names:
        for seed in SEEDS:
            base = base_config(name, teacher_for(name), seed)
            base.meta_dataset = records
            todo = pipelines_of(base)
            for i, p in enumerate(todo):
                key = (dataset_name(base), pipeline_key(p), seed)
                if key in done:
                    continue
                with _lock(f"run-{name}-{pipeline_key(p)}-s{seed}", wait=False) as mine:
                    if not mine:  # another worker is running it
                        continue
                    if key in done_keys(records):  # another worker finished it after this one started
                        done.add(key)
                        continue
                    ran += _run_one(base, p, key, seed, name, f"{i + 1}/{len(todo)}")
                done.add(key)
                done |= done_keys(records)  # the other workers' runs too, so the count below is the table's
                el = time.time() - t0
                print(f"[meta]   {len(done)}/{total} recorded; {el / max(ran, 1):.0f} s per run by this worker")
                if limit and ran >= limit:
                    return ran
    return ran


def _run_one(base, p, key, seed: int, name: str, which: str) -> int:
    """One distillation run appending its record; 1 when it ran, 0 when it failed (reported, recorded nowhere)."""
    from distiller_nlp.autodistiller.metadataset import meta_recorders
    from distiller_nlp.autodistiller.pipeline_space import apply_params, describe_pipeline, pipeline_key
    from distiller_nlp.kd.distillation import distill

    cfg = apply_params(base, p)
    cfg.output_dir = os.path.join(WORK, "runs", name, f"{pipeline_key(p)}-s{seed}")
    print(f"[meta] {name} seed {seed} pipeline {which}: {describe_pipeline(p)}")
    cpu0, wall0 = time.process_time(), time.time()
    try:
        metrics = distill(cfg, overwrite=True, on_finish=meta_recorders(cfg, "benchmark"))
        print(f"[meta]   dev {metrics.get('eval_accuracy', float('nan')):.4f}  ({metrics.get('train_runtime_s')} s)")
    except Exception as exc:  # a pipeline that cannot run here is recorded nowhere; report it and go on
        print(f"[meta]   FAILED: {type(exc).__name__}: {exc}")
        return 0
    finally:
        for sub in ("best", "checkpoints", "runs"):  # keep metrics/history only: 320 students would fill the disk
            shutil.rmtree(os.path.join(cfg.output_dir, sub), ignore_errors=True)
        for f in ("model.safetensors",):
            if os.path.exists(os.path.join(cfg.output_dir, f)):
                os.remove(os.path.join(cfg.output_dir, f))
    with open(os.path.join(WORK, "cpu_seconds.jsonl"), "a") as fh:  # CPU time: the budget's unit
        fh.write(json.dumps({"dataset": key[0], "pipeline_id": key[1], "seed": seed,
                             "cpu_s": round(time.process_time() - cpu0, 1),
                             "wall_s": round(time.time() - wall0, 1)}) + "\n")
    return 1


def export() -> dict:
    from distiller_nlp.autodistiller.metadataset import load_meta_dataset
    from distiller_nlp.core.rundir import write_json_atomic

    df = load_meta_dataset(RECORDS)
    df = df.sort_values(["family", "dataset", "pipeline_id", "seed"]).drop_duplicates(
        ["dataset", "pipeline_id", "seed"], keep="last").reset_index(drop=True)
    df = df.drop(columns=["config"])  # machine-local paths; the pipeline column holds what was searched
    os.makedirs(os.path.dirname(SHIPPED), exist_ok=True)
    tmp = SHIPPED + ".tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, SHIPPED)
    per = df.groupby(["family", "dataset"]).agg(runs=("score_ratio", "size"), teacher=("teacher_score", "mean"),
                                                ratio_mean=("score_ratio", "mean"), ratio_max=("score_ratio", "max"),
                                                ratio_min=("score_ratio", "min"), wall_s=("wall_s", "mean"))
    cpu = {}
    path = os.path.join(WORK, "cpu_seconds.jsonl")
    if os.path.isfile(path):
        with open(path) as fh:
            for line in fh:
                r = json.loads(line)
                cpu[(r["dataset"], r["pipeline_id"], r["seed"])] = r["cpu_s"]
    keys = list(zip(df["dataset"], df["pipeline_id"], df["seed"]))
    known = [cpu[k] for k in keys if k in cpu]
    summary = {"records": len(df), "datasets": int(df["dataset"].nunique()), "families": int(df["family"].nunique()),
               "pipelines": int(df["pipeline_id"].nunique()),
               "wall_hours": round(float(df["wall_s"].sum()) / 3600, 2),
               "cpu_hours": round(sum(known) / 3600, 2), "cpu_measured_runs": len(known),
               "per_dataset": per.reset_index().to_dict("records")}
    res = os.path.join(HERE, "results")
    write_json_atomic(os.path.join(res, "meta_dataset.json"), summary)
    lines = ["# Shipped AutoDistiller meta-dataset", "",
             f"{summary['records']} runs, {summary['datasets']} datasets in {summary['families']} families, "
             f"{summary['pipelines']} pipelines; {summary['cpu_hours']} CPU-hours of process time over the "
             f"{summary['cpu_measured_runs']} runs whose CPU time was logged (one thread each), "
             f"{summary['wall_hours']} hours of wall time on a shared 2-core machine. Protocol: "
             "`benchmarks/meta_dataset.py`.", "",
             "| family | dataset | runs | teacher dev acc | student/teacher ratio mean | min | max | s/run |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in summary["per_dataset"]:
        lines.append(f"| {r['family']} | {r['dataset']} | {r['runs']} | {r['teacher']:.4f} | {r['ratio_mean']:.4f} | "
                     f"{r['ratio_min']:.4f} | {r['ratio_max']:.4f} | {r['wall_s']:.0f} |")
    with open(os.path.join(res, "meta_dataset.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"[meta] exported {len(df)} records to {SHIPPED}")
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated dataset names")
    p.add_argument("--limit", type=int, default=0, help="stop after N new runs (0 = all)")
    p.add_argument("--export", action="store_true", help="write the shipped parquet and the summary, run nothing")
    args = p.parse_args(argv)
    if args.export:
        export()
        return 0
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        print(f"error: unknown dataset {unknown[0]} (known: {', '.join(DATASETS)})", file=sys.stderr)
        return 2
    build(names, args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
