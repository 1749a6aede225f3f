"""``vision-kd``: image-classification and landmark KD on the shared loss core and engine.

=================  ============================================================================
command            Python function
=================  ============================================================================
``train``          :func:`vision_kd.train.train_vision` (teachers too: ``--method ce``)
``list``           the methods and architectures (``vision_kd.methods.METHODS``, ``models.ARCHS``)
=================  ============================================================================

Examples::

    vision-kd train --method ce  --dataset digits --student cnn --output-dir runs/digits-teacher
    vision-kd train --method nkd --dataset digits --teacher runs/digits-teacher --output-dir runs/digits-nkd
    vision-kd train --method dkd --dataset digits --output-dir runs/dkd     # default teacher trained + cached
    vision-kd train --config recipes/vision/uskd_digits.yaml --output-dir runs/uskd --seed 3
    vision-kd train --method landmark_kd --dataset landmarks --output-dir runs/lmk

``--config FILE.yaml`` holds the same keys as the flags; flags override it, ``--set params.gamma=3.5`` sets any key.
Bad input prints one line ``error: ...`` and exits 2. Also runs as ``python -m vision_kd``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from distiller_nlp.cli import TRAIN_FLAGS as NLP_TRAIN_FLAGS
from distiller_nlp.cli import add_flags, cli_main, is_main_process, print_metrics  # distiller-nlp's conventions

# flag dest -> (dotted config key, type, help)
RUN_FLAGS = {
    "method": ("method", str, "ce | kd | dkd | nkd | uskd | bdkd | lwkd | landmark_kd"),
    "dataset": ("dataset", str, "digits | synthetic | landmarks | imagefolder | a datasets Hub name"),
    "task": ("task", str, "classification | landmarks (default: from dataset and method)"),
    "data_dir": ("data_dir", str, "directory of an imagefolder dataset"),
    "image_size": ("image_size", int, "resize images to this size (default: the dataset's)"),
    "augment": ("augment", bool, "random shift (+ flip) of training images"),
    "split_seed": ("split_seed", int, "seed of the train/validation/test split (default 0)"),
    "max_train_examples": ("max_train_examples", int, "cap on training examples"),
    "student": ("student", str, "architecture (mlp_small, cnn, resnet8x4, vit_tiny, ...) or a saved model dir"),
    "teacher": ("teacher", str, "saved teacher directory (default: train and cache the dataset's teacher)"),
    "tolerant_teacher": ("tolerant_teacher", str, "landmark_kd: the Tolerant teacher directory"),
    "teacher_arch": ("teacher_arch", str, "architecture of an auto-trained teacher"),
    "teacher_cache": ("teacher_cache", str, "directory of auto-trained teachers"),
    "threads": ("threads", int, "torch threads (default: torch's; 1 is fastest on a busy machine)"),
}
# The engine's flags, shared with distiller-nlp (same names, same config keys under train.).
TRAIN_FLAGS = {k: NLP_TRAIN_FLAGS[k] for k in (
    "epochs", "max_steps", "batch_size", "eval_batch_size", "lr", "weight_decay", "warmup_ratio", "grad_accum",
    "seed", "precision", "eval_steps", "save_steps", "logging_steps", "report_to")}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vision-kd", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a teacher (--method ce) or a student with a KD method")
    p.add_argument("--config", default=None, help="YAML recipe; flags override its keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any key, e.g. --set params.gamma=3.5 (repeatable)")
    p.add_argument("--output-dir", default=None, help="run directory (must be empty unless --resume/--overwrite)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    p.add_argument("--cpu", action="store_true", default=None, help="run on CPU even if a GPU is present")
    p.add_argument("--verbose", action="store_true", help="info-level logging")
    add_flags(p, RUN_FLAGS)
    add_flags(p, TRAIN_FLAGS)
    sub.add_parser("list", help="list methods and architectures")
    return parser


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    for table in (RUN_FLAGS, TRAIN_FLAGS):
        for dest, (key, _, _) in table.items():
            value = getattr(args, dest, None)
            if value is not None:
                out[key] = value
    if args.output_dir:
        out["output_dir"] = args.output_dir
    if args.cpu:
        out["train.cpu"] = True
    return out


def run_command(args: argparse.Namespace) -> int:
    if args.command == "list":
        from vision_kd.methods import METHODS
        from vision_kd.models import ARCHS

        for name, cls in METHODS.items():
            print(f"method {name:12s} strategy={cls.strategy:12s} teachers={','.join(cls.teacher_roles) or '-'}")
        for name in ARCHS:
            print(f"arch   {name}")
        return 0
    from distiller_nlp.config import load_config

    from vision_kd.config import VisionConfig
    from vision_kd.train import train_vision

    cfg = load_config(VisionConfig, args.config, _overrides(args), args.set)
    metrics = train_vision(cfg, resume=args.resume, overwrite=args.overwrite,
                           source=args.config or "command-line flags")
    if is_main_process():
        print(f"{cfg.method} model written to {cfg.output_dir}")
        print_metrics(metrics)  # the same summary lines as distiller-nlp
        print(f"  {'seconds_per_epoch':32s} {metrics['seconds_per_epoch']:.4f}")
    return 0


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``vision-kd`` console script; returns the exit status (2 on bad input)."""
    return cli_main(build_parser(), run_command, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
