"""``distiller-nlp``: thin command-line wrappers over the documented Python functions.

=====================  ===========================================================
command                Python function
=====================  ===========================================================
``finetune-teacher``   :func:`distiller_nlp.teacher.finetune_teacher`
``distill``            :func:`distiller_nlp.distill.distill`
``run RECIPE``         :func:`distiller_nlp.pipeline.run_recipe` (every stage of the recipe)
``train-mlm``          :func:`distiller_nlp.mlm.train_mlm` (a masked LM for the ``contextual`` augmenter)
``hpo``                :func:`distiller_nlp.hpo.run_hpo` (Optuna over the pipeline space)
``recommend``          :func:`distiller_nlp.autodistiller.recommend` (AutoDistiller)
``cache-teacher``      :func:`distiller_nlp.distill.cache_teacher`
``evaluate``           :func:`distiller_nlp.predict.evaluate_model`
``predict``            :func:`distiller_nlp.predict.predict_split`
``demo``               :func:`distiller_nlp.demo.run_demo`
``flops``              :func:`distiller_nlp.core.flops.encoder_flops`
``make-tweets-sst2``   :func:`distiller_nlp.data.make_tweets_sst2`
=====================  ===========================================================

``run RECIPE`` takes the recipe as its argument; every other command takes ``--config FILE.yaml``. Flags override
the file's keys, ``--set key.sub=value`` overrides any key. Bad input prints one line ``error: ...`` and exits 2.
Works the same under ``python -m distiller_nlp``, ``accelerate launch -m distiller_nlp`` and ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Optional

from distiller_nlp.errors import DistillerError
from distiller_nlp.mlm import add_train_mlm_parser, run_train_mlm
from distiller_nlp.runs import is_main_process  # noqa: F401  (re-exported: vision_kd and autodistil use it)

# flag dest -> dotted config key
TRAIN_FLAGS = {
    "epochs": ("train.epochs", float, "training epochs"),
    "max_steps": ("train.max_steps", int, "optimizer steps (overrides --epochs)"),
    "batch_size": ("train.batch_size", int, "per-process train batch size"),
    "eval_batch_size": ("train.eval_batch_size", int, "per-process eval batch size"),
    "lr": ("train.lr", float, "peak learning rate"),
    "weight_decay": ("train.weight_decay", float, "AdamW weight decay"),
    "warmup_ratio": ("train.warmup_ratio", float, "fraction of steps with linear warm-up"),
    "grad_accum": ("train.grad_accum", int, "gradient accumulation steps"),
    "seed": ("train.seed", int, "random seed"),
    "max_length": ("train.max_length", int, "max tokens per example (default 128)"),
    "precision": ("train.precision", str, "auto | no | bf16 | fp16 (auto = bf16 where fast)"),
    "eval_steps": ("train.eval_steps", int, "evaluate every N steps (default: every epoch)"),
    "save_steps": ("train.save_steps", int, "checkpoint every N steps (default: every epoch)"),
    "logging_steps": ("train.logging_steps", int, "log every N steps"),
    "report_to": ("train.report_to", str, "tensorboard | none"),
    "group_by_length": ("train.group_by_length", bool, "batch examples of similar length (less padding)"),
    "optim": ("train.optim", str, "auto (fused AdamW) | adamw_fused | adamw_foreach | adamw"),
}
DATA_FLAGS = {
    "task": ("data.task", str, "task name: GLUE (sst2, mnli, ...), tweets, bbc-headlines, or a custom name"),
    "data_dir": ("data.data_dir", str, "directory with local train/dev files (TSV/CSV/JSON/parquet)"),
    "text_column": ("data.text_column", str, "text column of custom data"),
    "text_pair_column": ("data.text_pair_column", str, "second text column of custom pair data"),
    "label_column": ("data.label_column", str, "label column of custom data"),
    "max_train_examples": ("data.max_train_examples", int, "cap on training examples (seeded subset)"),
    "max_eval_examples": ("data.max_eval_examples", int, "cap on examples of each evaluation split"),
}
DISTILL_FLAGS = {
    "teacher": ("teacher", "append", "fine-tuned teacher: a directory, 'minilm', or a Hub name; repeat it for "
                "several teachers whose soft targets are averaged"),
    "student": ("student", str, "student checkpoint (directory or Hub name)"),
    "student_shape": ("student_shape", str, "e.g. layers=3,hidden=256,heads=8,intermediate=1024"),
    "student_init": ("student_init", str, "auto | teacher | random"),
    "pred_loss": ("kd.pred_loss", str, "kd | soft_ce | logits_mse | nkd | dkd | none"),
    "temperature": ("kd.temperature", float, "softmax temperature of the prediction loss"),
    "kd_weight": ("kd.kd_weight", float, "weight of the prediction-layer KD loss"),
    "hard_label_weight": ("kd.hard_label_weight", float, "weight of the cross-entropy on gold labels"),
    "mapping": ("kd.mapping.strategy", str, "intermediate layer mapping: skip | last | emd"),
    "inter_loss": ("kd.mapping.loss", str, "intermediate loss of the mapping (hidden_mse, mi_alpha, ...)"),
    "inter_weight": ("kd.mapping.weight", float, "weight of each intermediate match"),
    "teacher_cache": ("teacher_cache", str, "off | auto (compute teacher outputs once) | DIR from cache-teacher"),
    "augment": ("augment.stages", lambda v: [x.strip() for x in v.split(",") if x.strip()],
                "augmentation pipeline, comma-separated stages in order (e.g. random)"),
    "aug_p": ("augment.aug_p", float, "fraction of words an augmentation stage changes, in (0, 1]"),
    "aug_copies": ("augment.copies", int, "augmented copies per training example"),
    "reaug_every": ("augment.reaug_every", int, "regenerate the augmented copies every N epochs (0 = once)"),
    "repeated_aug": ("augment.repeated_aug", int, "k > 1: each batch holds examples with k - 1 augmented copies"),
    "aug_param": ("augment.params", "append", "stage parameter STAGE.KEY=VALUE, e.g. contextual.model=runs/mlm "
                  "(repeatable)"),
    "mixup": ("kd.mixup", bool, "MixUp on word embeddings (batch = originals + mixed copies)"),
    "meta_dataset": ("meta_dataset", str, "append this run's record to an AutoDistiller meta-dataset (FILE.parquet "
                     "or a directory of shards)"),
    "meta_family": ("meta_family", str, "dataset family of the meta-dataset record (default: the task's)"),
}


def add_flags(p: argparse.ArgumentParser, flags: dict) -> None:
    """Add ``--flag`` options from a table ``{dest: (dotted config key, type, help)}`` (bool → store_const True)."""
    for dest, (_, typ, help_) in flags.items():
        if typ is bool:
            p.add_argument("--" + dest.replace("_", "-"), dest=dest, action="store_const", const=True, default=None,
                           help=help_)
        elif typ == "append":
            p.add_argument("--" + dest.replace("_", "-"), dest=dest, action="append", default=None, help=help_)
        else:
            p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=typ, default=None, help=help_)


def _add_common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument("--config", default=None, help="YAML config; flags override its keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set kd.temperature=4 (repeatable)")
    p.add_argument("--cpu", action="store_true", default=None, help="run on CPU even if a GPU is present")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow custom model code from checkpoints (off by default)")
    p.add_argument("--verbose", action="store_true", help="info-level logging")


def _add_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", default=None, help="run directory (must be empty unless --resume/--overwrite)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distiller-nlp", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("finetune-teacher", help="fine-tune an encoder (default the packaged MiniLM) on a task")
    p.add_argument("--model", default=None, help="encoder checkpoint: directory, 'minilm' (default) or Hub name")
    _add_common(p)
    _add_output(p)
    add_flags(p, DATA_FLAGS)
    add_flags(p, TRAIN_FLAGS)

    for name, help_ in (("distill", "distil a fine-tuned teacher into a student"),
                        ("run", "run every stage of a recipe (YAML): teacher fine-tune if needed, augmentation, distillation "
                                "stage(s), evaluation, GLUE-format test predictions, report"),
                        ("cache-teacher", "compute the teacher outputs a KD config needs, once, into --output-dir")):
        p = sub.add_parser(name, help=help_)
        if name == "run":
            p.add_argument("recipe", help="recipe YAML file")
            _add_common(p, config=False)
        else:
            _add_common(p)
        _add_output(p)
        add_flags(p, DATA_FLAGS)
        add_flags(p, DISTILL_FLAGS)
        add_flags(p, TRAIN_FLAGS)

    p = sub.add_parser("hpo", help="Optuna search over the KD pipeline space (pruning, shared storage, resume)")
    _add_common(p)
    _add_output(p)
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    p.add_argument("--space", default=None, help="search space YAML (default recipes/spaces/distiller.yaml)")
    p.add_argument("--storage", default=None, help="Optuna RDB URL shared by workers (default sqlite:///DIR/hpo.db)")
    p.add_argument("--study", default=None, help="study name (default distiller-<dataset>)")
    p.add_argument("--pruner", default="successive_halving",
                   help="successive_halving (default) | hyperband | median | none")
    p.add_argument("--hpo-seed", type=int, default=0, help="sampler seed")
    p.add_argument("--enqueue-recipe", action="store_true",
                   help="make the base recipe's own pipeline the study's first trial (a reference point)")
    add_flags(p, DATA_FLAGS)
    add_flags(p, DISTILL_FLAGS)
    add_flags(p, TRAIN_FLAGS)

    p = sub.add_parser("recommend", help="AutoDistiller: rank KD pipelines for a dataset from a meta-dataset of runs")
    _add_common(p)
    _add_output(p)
    p.add_argument("--top-k", type=int, default=5, help="pipelines to print (and run with --verify)")
    p.add_argument("--verify", action="store_true", help="run the top-k and the default pipeline; report actual scores")
    p.add_argument("--verify-seeds", type=int, default=1, help="seeds per pipeline with --verify")
    p.add_argument("--space", default=None, help="search space YAML (default recipes/spaces/distiller.yaml)")
    p.add_argument("--candidates", type=int, default=300, help="candidate pipelines drawn from the space")
    p.add_argument("--record-to", default=None, help="append the --verify runs to this meta-dataset")
    add_flags(p, DATA_FLAGS)
    add_flags(p, {**DISTILL_FLAGS, "meta_dataset": ("meta_dataset", str, "meta-dataset to learn from (FILE.parquet or "
                                                    "directory; default the one shipped with the package)")})
    add_flags(p, TRAIN_FLAGS)

    p = sub.add_parser("evaluate", help="evaluate a saved model on a task; writes DIR/metrics.json")
    p.add_argument("--model", required=True, help="model directory or name")
    p.add_argument("--split", action="append", default=None, help="split(s) to evaluate (default: dev [+ test])")
    _add_common(p)
    p.add_argument("--output-dir", default=None, help="write metrics.json here (optional)")
    p.add_argument("--overwrite", action="store_true")
    add_flags(p, DATA_FLAGS)
    add_flags(p, {k: TRAIN_FLAGS[k] for k in ("eval_batch_size", "max_length", "precision", "seed")})

    p = sub.add_parser("predict", help="write predictions of a saved model for one split (TSV)")
    p.add_argument("--model", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, help="TSV file to write")
    _add_common(p)
    add_flags(p, DATA_FLAGS)
    add_flags(p, {k: TRAIN_FLAGS[k] for k in ("eval_batch_size", "max_length", "seed")})

    p = sub.add_parser("demo", help="the offline demo: teacher, TF-IDF baseline, students with and without KD")
    p.add_argument("--output-dir", default="runs/demo", help="workspace; finished runs are reused, cut ones resumed")
    p.add_argument("--seeds", default=None, help="comma-separated student seeds (default: the protocol's)")
    p.add_argument("--precision", default="auto", help="auto | no | bf16")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("make-tweets-sst2", help="write the packaged tweets as a GLUE SST-2 directory (train/dev/test TSV)")
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


def _overrides(args: argparse.Namespace, *tables: dict) -> dict:
    out = {}
    for table in tables:
        for dest, (key, _, _) in table.items():
            value = getattr(args, dest, None)
            if value is not None:
                out[key] = value
    for item in out.pop("augment.params", None) or []:
        from distiller_nlp.config import parse_set_option

        key, value = parse_set_option(item)
        if "." not in key:
            raise DistillerError(f"--aug-param expects STAGE.KEY=VALUE, got '{item}'")
        out[f"augment.params.{key}"] = value
    if isinstance(out.get("teacher"), list):  # --teacher A --teacher B: A, plus B averaged with it
        teachers = out.pop("teacher")
        out["teacher"] = teachers[0]
        if teachers[1:]:
            out["teachers"] = teachers[1:]
    if "student_shape" in out and "student" not in out:
        out["student"] = ""  # a shape on the command line replaces a recipe's student checkpoint
    if getattr(args, "cpu", None):
        out["train.cpu"] = True
    if getattr(args, "trust_remote_code", None):
        out["trust_remote_code"] = True
    return out


def print_metrics(metrics: dict) -> None:
    """Print the headline metrics of a run (``eval_*``, ``test_*``, time, throughput), one per line."""
    keys = [k for k in metrics if k.startswith(("eval_", "test_", "validation_")) and not k.endswith("_examples")]
    keys += [k for k in ("train_runtime_s", "examples_per_s", "flops_ratio") if k in metrics]
    for k in keys:
        v = metrics[k]
        print(f"  {k:32s} {v:.4f}" if isinstance(v, float) else f"  {k:32s} {v}")


def run_command(args: argparse.Namespace) -> int:
    if args.command == "train-mlm":
        return run_train_mlm(args)
    from distiller_nlp.config import DataConfig, DistillConfig, FinetuneConfig, TrainArgs, load_config

    if args.command == "finetune-teacher":
        from distiller_nlp.teacher import finetune_teacher

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS)
        if args.model:
            ov["model"] = args.model
        if args.output_dir:
            ov["output_dir"] = args.output_dir
        cfg = load_config(FinetuneConfig, args.config, ov, args.set)
        metrics = finetune_teacher(cfg, resume=args.resume, overwrite=args.overwrite)
        if is_main_process():
            print(f"fine-tuned teacher written to {cfg.output_dir}")
            print_metrics(metrics)
        return 0

    if args.command == "cache-teacher":
        from distiller_nlp.distill import cache_teacher

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS, DISTILL_FLAGS)
        cfg = load_config(DistillConfig, args.config, ov, args.set)
        if not args.output_dir:
            raise DistillerError("--output-dir is required")
        info = cache_teacher(cfg, args.output_dir, overwrite=args.overwrite)
        print(f"cached teacher outputs of {info['examples']} examples (hidden layers {info['hidden_layers']}) "
              f"in {args.output_dir}; key {info['key']}")
        return 0

    if args.command in ("distill", "run"):
        from distiller_nlp.distill import distill

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS, DISTILL_FLAGS)
        if args.output_dir:
            ov["output_dir"] = args.output_dir
        if any(k.startswith("kd.mapping.") for k in ov) and "kd.mapping.strategy" not in ov:
            raise DistillerError("--inter-loss/--inter-weight need --mapping skip|last")
        path = args.recipe if args.command == "run" else args.config
        cfg = load_config(DistillConfig, path, ov, args.set)
        if args.command == "run":
            from distiller_nlp.pipeline import run_recipe

            summary = run_recipe(cfg, resume=args.resume, overwrite=args.overwrite)
            if is_main_process():
                print(f"student written to {summary['student']}; report in {os.path.join(cfg.output_dir, 'report.md')}")
                for who in ("teacher", "student"):
                    for split in ("eval", "test"):
                        v = summary[f"{who}_{split}"]
                        if v is not None:
                            print(f"  {who} {split}_{summary['main_metric']:24s} {v:.4f}")
            return 0
        if cfg.stages:
            raise DistillerError("this config has stages: run it with `distiller-nlp run RECIPE`")
        metrics = distill(cfg, resume=args.resume, overwrite=args.overwrite)
        if is_main_process():
            print(f"student written to {cfg.output_dir}")
            print_metrics(metrics)
        return 0

    if args.command == "hpo":
        from distiller_nlp.hpo import run_hpo
        from distiller_nlp.space import pipeline_params

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS, DISTILL_FLAGS)
        if args.output_dir:
            ov["output_dir"] = args.output_dir
        cfg = load_config(DistillConfig, args.config, ov, args.set)
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

    if args.command == "recommend":
        from distiller_nlp.autodistiller import recommend

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS, DISTILL_FLAGS)
        table = ov.pop("meta_dataset", None)
        ov["meta_dataset"] = args.record_to or ""
        cfg = load_config(DistillConfig, args.config, ov, args.set)
        if not args.output_dir:
            raise DistillerError("--output-dir is required")
        recommend(cfg, args.output_dir, top_k=args.top_k, verify=args.verify, meta_dataset=table, space=args.space,
                  n_candidates=args.candidates, overwrite=args.overwrite, resume=args.resume,
                  verify_seeds=args.verify_seeds)
        print(f"recommended recipe: {os.path.join(args.output_dir, 'recommended.yaml')} "
              f"(run it: distiller-nlp run {os.path.join(args.output_dir, 'recommended.yaml')} --output-dir DIR)")
        return 0

    if args.command == "evaluate":
        from distiller_nlp.predict import evaluate_model

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS)
        data = load_config(DataConfig, None, {k[5:]: v for k, v in ov.items() if k.startswith("data.")})
        cfg_path = args.config
        if cfg_path:
            data = load_config(FinetuneConfig, cfg_path, ov, args.set).data
        train = load_config(TrainArgs, None, {k[6:]: v for k, v in ov.items() if k.startswith("train.")})
        metrics = evaluate_model(args.model, data, train, output_dir=args.output_dir, splits=args.split,
                                 overwrite=args.overwrite, trust_remote_code=bool(args.trust_remote_code))
        if is_main_process():
            print_metrics(metrics)
        return 0

    if args.command == "predict":
        from distiller_nlp.predict import predict_split

        ov = _overrides(args, DATA_FLAGS, TRAIN_FLAGS)
        data = load_config(DataConfig, None, {k[5:]: v for k, v in ov.items() if k.startswith("data.")})
        train = load_config(TrainArgs, None, {k[6:]: v for k, v in ov.items() if k.startswith("train.")})
        n = predict_split(args.model, data, args.output, split=args.split, train=train,
                          trust_remote_code=bool(args.trust_remote_code))
        print(f"wrote {n} predictions to {args.output}")
        return 0

    if args.command == "demo":
        from distiller_nlp.demo import run_demo

        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else None
        run_demo(args.output_dir, seeds=seeds, precision=args.precision)
        return 0

    if args.command == "make-tweets-sst2":
        from distiller_nlp.data import make_tweets_sst2

        counts = make_tweets_sst2(args.out_dir, overwrite=args.overwrite)
        print(f"wrote {args.out_dir}: train.tsv {counts['train']} rows, dev.tsv {counts['dev']} rows")
        return 0

    if args.command == "flops":
        from distiller_nlp.core.flops import encoder_flops, encoder_flops_from_config
        from distiller_nlp.models import parse_student_shape, resolve_model_path
        from transformers import AutoConfig

        tcfg = AutoConfig.from_pretrained(resolve_model_path(args.teacher))
        shape = parse_student_shape(args.student_shape)
        t = encoder_flops_from_config(tcfg, args.seq_len)
        s = encoder_flops(shape.layers, shape.hidden, shape.heads, shape.intermediate, args.seq_len,
                          head_dim=shape.head_dim)
        print(json.dumps({"teacher_encoder_flops": t, "student_encoder_flops": s, "ratio": round(s / t, 4),
                          "seq_len": args.seq_len, "unit": "FLOPs = 2 x multiply-adds"}, indent=2))
        return 0
    raise DistillerError(f"unknown command {args.command}")


def cli_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
             argv: Optional[list] = None) -> int:
    """The shared entry point of the toolkit's CLIs: parse, quiet library chatter unless ``--verbose``, run; a
    :class:`DistillerError` prints one line ``error: ...`` to stderr and returns its exit code (2)."""
    args = parser.parse_args(argv)
    from distiller_nlp.runs import setup_logging

    setup_logging(getattr(args, "verbose", False))
    if not getattr(args, "verbose", False):
        # Library chatter (load reports, per-map progress bars of small datasets) hides what matters; the training
        # progress bar and our own messages stay. --verbose brings it all back.
        try:
            import datasets
            import transformers

            transformers.logging.set_verbosity_error()
            datasets.disable_progress_bars()
        except ImportError:  # pragma: no cover
            pass
    try:
        return run(args)
    except DistillerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``distiller-nlp`` console script; returns the exit status (2 on bad input)."""
    return cli_main(build_parser(), run_command, argv)


# kept for callers written against the first layout
_add_flags, _print_metrics, _is_main_process = add_flags, print_metrics, is_main_process


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
