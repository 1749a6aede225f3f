"""``distiller-nlp``: thin command-line wrappers over the documented Python functions.

=====================  ===========================================================
command                Python function
=====================  ===========================================================
``finetune-teacher``   :func:`distiller_nlp.kd.finetune.finetune_teacher`
``distill``            :func:`distiller_nlp.kd.distillation.distill`
``run RECIPE``         :func:`distiller_nlp.kd.recipe.run_recipe` (every stage of the recipe)
``train-mlm``          :func:`distiller_nlp.augment.mlm.train_mlm` (a masked LM for the ``contextual`` augmenter)
``distill-lm``         :func:`distiller_nlp.lm.distill.distill_lm` (causal LMs: divergences, on-policy, SKD)
``hpo``                :func:`distiller_nlp.autodistiller.hpo.run_hpo` (Optuna over the pipeline space)
``recommend``          :func:`distiller_nlp.autodistiller.recommender.recommend` (AutoDistiller)
``cache-teacher``      :func:`distiller_nlp.kd.distillation.cache_teacher`
``evaluate``           :func:`distiller_nlp.predict.evaluate_model`
``predict``            :func:`distiller_nlp.predict.predict_split`
``demo``               :func:`distiller_nlp.demo.run_demo`
``flops``              :func:`distiller_nlp.core.flops.encoder_flops`
``make-tweets-sst2``   :func:`distiller_nlp.tasks.export.make_tweets_sst2`
=====================  ===========================================================

``run RECIPE`` takes the recipe as its argument (a YAML path or a shipped recipe's name, e.g. ``glue/sst2``); every
other command takes ``--config FILE.yaml``. The flags are generated from the config fields
(:mod:`distiller_nlp.core.cli`); they override the file's keys, ``--set key.sub=value`` overrides any key. Bad input
prints one line ``error: ...`` and exits 2. Works the same under ``python -m distiller_nlp``, ``accelerate launch -m
distiller_nlp`` and ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional

from distiller_nlp.augment.mlm import MLMConfig
from distiller_nlp.config import DataConfig, DistillConfig, FinetuneConfig
from distiller_nlp.core.cli import (add_common_flags, add_config_flags, add_run_flags, cli_main, config_overrides,
                                    load_from_args, print_metrics)
from distiller_nlp.core.config import load_config
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.rundir import is_main_process
from distiller_nlp.core.train_args import TrainArgs
from distiller_nlp.env import quiet_libraries
from distiller_nlp.lm.distill import DistillLMConfig

#: the training flags of ``evaluate`` and ``predict`` (no training happens there)
EVAL_TRAIN_FLAGS = ("eval-batch-size", "max-length", "precision", "seed", "cpu")


def add_train_mlm_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train-mlm`` (flags from :class:`~distiller_nlp.augment.mlm.MLMConfig`) to the subcommands."""
    p = subparsers.add_parser("train-mlm", help="fit a masked-LM head (continued MLM training) for the contextual "
                                                "augmenter; default the packaged MiniLM on the tweets")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, MLMConfig)
    return p


def run_train_mlm(args: argparse.Namespace) -> int:
    """Run ``train-mlm`` from parsed arguments; prints the perplexity before/after. Returns 0."""
    from distiller_nlp.augment.mlm import train_mlm

    cfg = load_from_args(MLMConfig, args)
    metrics = train_mlm(cfg, resume=bool(args.resume), overwrite=bool(args.overwrite))
    if is_main_process():
        print(f"masked LM written to {cfg.output_dir}")
        print(f"  held-out perplexity {metrics['eval_perplexity_before']:.2f} -> {metrics['eval_perplexity']:.2f} "
              f"(masked-LM loss {metrics['eval_loss_before']:.4f} -> {metrics['eval_loss']:.4f})")
        print(f"  {'train_runtime_s':32s} {metrics['train_runtime_s']}")
        print(f"  {'examples_per_s':32s} {metrics['examples_per_s']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``distiller-nlp`` argument parser (every config flag generated from its field)."""
    parser = argparse.ArgumentParser(prog="distiller-nlp", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune-teacher", help="fine-tune an encoder (default the packaged MiniLM) on a task")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, FinetuneConfig)

    for name, help_ in (("distill", "distil a fine-tuned teacher into a student"),
                        ("run", "run every stage of a recipe (YAML): teacher fine-tune if needed, augmentation, "
                                "distillation stage(s), evaluation, GLUE-format test predictions, report"),
                        ("cache-teacher", "compute the teacher outputs a KD config needs, once, into --output-dir")):
        p = sub.add_parser(name, help=help_)
        if name == "run":
            p.add_argument("recipe", help="recipe: a YAML file, or a shipped recipe's name (e.g. glue/sst2)")
        add_common_flags(p, config=name != "run")
        add_run_flags(p, resume=name != "cache-teacher")
        add_config_flags(p, DistillConfig)

    p = sub.add_parser("distill-lm", help="distil a causal LM (default the packaged SmolLM2-135M-Instruct) into a "
                                          "smaller one: supervised, seqkd, on_policy (GKD) or skd data")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, DistillLMConfig)

    p = sub.add_parser("hpo", help="Optuna search over the KD pipeline space (pruning, shared storage, resume)")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, DistillConfig)
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--space", default=None, help="search space YAML (default: the shipped spaces/distiller.yaml)")
    p.add_argument("--storage", default=None, help="Optuna RDB URL shared by workers (default sqlite:///DIR/hpo.db)")
    p.add_argument("--study", default=None, help="study name (default distiller-<dataset>)")
    p.add_argument("--pruner", default="successive_halving", help="{} (default successive_halving)".format(
        " | ".join(_pruners())))
    p.add_argument("--hpo-seed", type=int, default=0, help="sampler seed")
    p.add_argument("--enqueue-recipe", action="store_true",
                   help="make the base recipe's own pipeline the study's first trial (a reference point)")

    p = sub.add_parser("recommend", help="AutoDistiller: rank KD pipelines for a dataset from a meta-dataset of runs")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, DistillConfig, exclude=("meta-dataset",))
    p.add_argument("--meta-dataset", default=None,
                   help="meta-dataset to learn from (FILE.parquet or directory; default the one shipped)")
    p.add_argument("--top-k", type=int, default=5, help="pipelines to print (and run with --verify)")
    p.add_argument("--verify", action="store_true", help="run the top-k and the default pipeline; report actual scores")
    p.add_argument("--verify-seeds", type=int, default=1, help="seeds per pipeline with --verify")
    p.add_argument("--space", default=None, help="search space YAML (default: the shipped spaces/distiller.yaml)")
    p.add_argument("--candidates", type=int, default=300, help="candidate pipelines drawn from the space")
    p.add_argument("--record-to", default=None, help="append the --verify runs to this meta-dataset")

    for name, help_ in (("evaluate", "evaluate a saved model on a task; writes DIR/metrics.json"),
                        ("predict", "write predictions of a saved model for one split (TSV)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--model", required=True, help="model directory or name")
        add_common_flags(p)
        p.add_argument("--trust-remote-code", action="store_true", default=None,
                       help="allow custom model code from checkpoints (off by default)")
        if name == "evaluate":
            p.add_argument("--split", action="append", default=None,
                           help="split(s) to evaluate (default: dev [+ test])")
            p.add_argument("--output-dir", default=None, help="write metrics.json here (optional)")
            p.add_argument("--overwrite", action="store_true")
        else:
            p.add_argument("--split", default="test")
            p.add_argument("--output", required=True, help="TSV file to write")
        add_config_flags(p, DataConfig, prefix="data.")
        add_config_flags(p, TrainArgs, prefix="train.", only=EVAL_TRAIN_FLAGS)

    p = sub.add_parser("demo", help="the offline demo: teacher, TF-IDF baseline, students with and without KD")
    p.add_argument("--output-dir", default="runs/demo", help="workspace; finished runs are reused, cut ones resumed")
    p.add_argument("--seeds", default=None, help="comma-separated student seeds (default: the protocol's)")
    p.add_argument("--precision", default="auto", help="auto | no | bf16")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("make-tweets-sst2", help="write the packaged tweets as a GLUE SST-2 directory (train/dev/test "
                                                "TSV)")
    p.add_argument("out_dir", help="directory to write train.tsv, dev.tsv and test.tsv into (created if missing)")
    p.add_argument("--overwrite", action="store_true", help="replace existing train.tsv/dev.tsv")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("flops", help="encoder FLOPs (2 x multiply-adds) of a teacher and a student shape")
    p.add_argument("--teacher", default="minilm")
    p.add_argument("--student-shape", default="layers=3,hidden=256,heads=8,intermediate=1024")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--verbose", action="store_true")
    add_train_mlm_parser(sub)
    return parser


def _pruners() -> list:
    from distiller_nlp.autodistiller.hpo import PRUNERS

    return PRUNERS.names()


def _distill_config(args: argparse.Namespace, path: Optional[str], extra: Optional[dict] = None) -> DistillConfig:
    """The DistillConfig of ``distill`` / ``run`` / ``cache-teacher`` / ``hpo`` / ``recommend``."""
    ov = config_overrides(args)
    if any(k.startswith("kd.mapping.") for k in ov) and "kd.mapping.strategy" not in ov:
        raise DistillerError("--inter-loss/--inter-weight need --mapping (e.g. --mapping skip)")
    extra = dict(extra or {})
    if "student_shape" in ov and "student" not in ov:
        extra["student"] = ""  # a shape on the command line replaces a recipe's student checkpoint
    return load_from_args(DistillConfig, args, path=path, extra=extra)


def _section(args: argparse.Namespace, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in config_overrides(args).items() if k.startswith(prefix)}


def _finetune_teacher(args: argparse.Namespace) -> int:
    """``finetune-teacher``: a teacher for the task."""
    from distiller_nlp.kd.finetune import finetune_teacher

    cfg = load_from_args(FinetuneConfig, args)
    metrics = finetune_teacher(cfg, resume=args.resume, overwrite=args.overwrite)
    if is_main_process():
        print(f"fine-tuned teacher written to {cfg.output_dir}")
        print_metrics(metrics)
    return 0


def _distill_lm(args: argparse.Namespace) -> int:
    """``distill-lm``: a causal-LM student."""
    from distiller_nlp.lm.distill import distill_lm

    cfg = load_from_args(DistillLMConfig, args)
    if not cfg.output_dir:
        raise DistillerError("--output-dir is required")
    metrics = distill_lm(cfg, resume=args.resume, overwrite=args.overwrite)
    if is_main_process():
        print(f"distilled causal LM written to {cfg.output_dir}")
        print_metrics(metrics)
    return 0


def _cache_teacher(args: argparse.Namespace) -> int:
    """``cache-teacher``: the teacher outputs a KD config needs, computed once."""
    from distiller_nlp.kd.distillation import cache_teacher

    cfg = _distill_config(args, args.config)
    if not cfg.output_dir:
        raise DistillerError("--output-dir is required")
    info = cache_teacher(cfg, cfg.output_dir, overwrite=args.overwrite)
    print(f"cached teacher outputs of {info['examples']} examples (hidden layers {info['hidden_layers']}) "
          f"in {cfg.output_dir}; key {info['key']}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """``run RECIPE``: every stage of a recipe (a path or a shipped recipe's name)."""
    import os

    from distiller_nlp.autodistiller.metadataset import meta_recorders
    from distiller_nlp.kd.recipe import run_recipe
    from distiller_nlp.resources import resolve_recipe

    cfg = _distill_config(args, resolve_recipe(args.recipe))
    summary = run_recipe(cfg, resume=args.resume, overwrite=args.overwrite, on_finish=meta_recorders(cfg, "run"))
    if is_main_process():
        print(f"student written to {summary['student']}; report in {os.path.join(cfg.output_dir, 'report.md')}")
        for who in ("teacher", "student"):
            for split in ("eval", "test"):
                v = summary[f"{who}_{split}"]
                if v is not None:
                    print(f"  {who} {split}_{summary['main_metric']:24s} {v:.4f}")
    return 0


def _distill(args: argparse.Namespace) -> int:
    """``distill``: one distillation run."""
    from distiller_nlp.autodistiller.metadataset import meta_recorders
    from distiller_nlp.kd.distillation import distill

    cfg = _distill_config(args, args.config)
    if cfg.stages:
        raise DistillerError("this config has stages: run it with `distiller-nlp run RECIPE`")
    metrics = distill(cfg, resume=args.resume, overwrite=args.overwrite, on_finish=meta_recorders(cfg, "distill"))
    if is_main_process():
        print(f"student written to {cfg.output_dir}")
        print_metrics(metrics)
    return 0


def _hpo(args: argparse.Namespace) -> int:
    """``hpo``: Optuna over the pipeline space."""
    from distiller_nlp.autodistiller.hpo import run_hpo
    from distiller_nlp.autodistiller.pipeline_space import pipeline_params

    cfg = _distill_config(args, args.config)
    summary = run_hpo(cfg, args.trials, space=args.space, storage=args.storage, study_name=args.study,
                      pruner=args.pruner, resume=args.resume, overwrite=args.overwrite, seed=args.hpo_seed,
                      enqueue=[pipeline_params(cfg)] if args.enqueue_recipe else None)
    t = summary["trials"]
    print(f"study {summary['study']}: {t['complete']} complete, {t['pruned']} pruned, {t['fail']} failed")
    if "best_value" in summary:
        print(f"best trial {summary['best_trial']}: {summary['metric']} {summary['best_value']:.4f} -- "
              f"{summary['best_pipeline_text']}")
        print(f"best recipe: {summary['best_recipe']}")
    return 0


def _recommend(args: argparse.Namespace) -> int:
    """``recommend``: AutoDistiller's ranking of pipelines for the dataset."""
    import os

    from distiller_nlp.autodistiller.recommender import recommend

    cfg = _distill_config(args, args.config, extra={"meta_dataset": args.record_to or ""})
    if not cfg.output_dir:
        raise DistillerError("--output-dir is required")
    recommend(cfg, cfg.output_dir, top_k=args.top_k, verify=args.verify, meta_dataset=args.meta_dataset,
              space=args.space, n_candidates=args.candidates, overwrite=args.overwrite, resume=args.resume,
              verify_seeds=args.verify_seeds)
    path = os.path.join(cfg.output_dir, "recommended.yaml")
    print(f"recommended recipe: {path} (run it: distiller-nlp run {path} --output-dir DIR)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """``evaluate`` and ``predict``: a saved model on a task."""
    from distiller_nlp.predict import evaluate_model, predict_split

    data = load_config(DataConfig, None, _section(args, "data."))
    if args.config:
        data = load_from_args(FinetuneConfig, args).data
    train = load_config(TrainArgs, None, _section(args, "train."))
    if args.command == "evaluate":
        metrics = evaluate_model(args.model, data, train, output_dir=args.output_dir, splits=args.split,
                                 overwrite=args.overwrite, trust_remote_code=bool(args.trust_remote_code))
        if is_main_process():
            print_metrics(metrics)
        return 0
    n = predict_split(args.model, data, args.output, split=args.split, train=train,
                      trust_remote_code=bool(args.trust_remote_code))
    print(f"wrote {n} predictions to {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """``demo``: the offline demo protocol."""
    from distiller_nlp.demo import run_demo

    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
    run_demo(args.output_dir, seeds=seeds, precision=args.precision)
    return 0


def _make_tweets_sst2(args: argparse.Namespace) -> int:
    """``make-tweets-sst2``: the packaged tweets as a GLUE SST-2 directory."""
    from distiller_nlp.tasks import make_tweets_sst2

    counts = make_tweets_sst2(args.out_dir, overwrite=args.overwrite)
    print(f"wrote {args.out_dir}: train.tsv {counts['train']} rows, dev.tsv {counts['dev']} rows")
    return 0


def _flops(args: argparse.Namespace) -> int:
    """``flops``: encoder FLOPs of a teacher and a student shape."""
    from transformers import AutoConfig

    from distiller_nlp.core.flops import encoder_flops, encoder_flops_from_config
    from distiller_nlp.models import parse_student_shape, resolve_model_path

    tcfg = AutoConfig.from_pretrained(resolve_model_path(args.teacher))
    shape = parse_student_shape(args.student_shape)
    t = encoder_flops_from_config(tcfg, args.seq_len)
    s = encoder_flops(shape.layers, shape.hidden, shape.heads, shape.intermediate, args.seq_len,
                      head_dim=shape.head_dim)
    print(json.dumps({"teacher_encoder_flops": t, "student_encoder_flops": s, "ratio": round(s / t, 4),
                      "seq_len": args.seq_len, "unit": "FLOPs = 2 x multiply-adds"}, indent=2))
    return 0


#: command name -> handler(args) -> exit status
COMMANDS = {
    "finetune-teacher": _finetune_teacher, "distill": _distill, "run": _run, "cache-teacher": _cache_teacher,
    "train-mlm": run_train_mlm, "distill-lm": _distill_lm, "hpo": _hpo, "recommend": _recommend, "evaluate": _evaluate, "predict": _evaluate,
    "demo": _demo, "make-tweets-sst2": _make_tweets_sst2, "flops": _flops,
}


def run_command(args: argparse.Namespace) -> int:
    """Dispatch one parsed ``distiller-nlp`` command to its handler; returns the exit status."""
    if args.command not in COMMANDS:
        raise DistillerError(f"unknown command {args.command}")
    return COMMANDS[args.command](args)


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``distiller-nlp`` console script; returns the exit status (2 on bad input)."""
    return cli_main(build_parser(), run_command, argv, quiet=quiet_libraries)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
