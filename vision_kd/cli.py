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
from pathlib import Path
from typing import Optional

from distiller_nlp.core.cli import (add_common_flags, add_config_flags, add_run_flags, cli_main, load_from_args,
                                    print_metrics)
from distiller_nlp.core.resources import find_resource
from distiller_nlp.core.rundir import is_main_process

from vision_kd.config import VisionConfig

#: the shipped recipes (package data)
RECIPES = Path(__file__).resolve().parent / "recipes"


def build_parser() -> argparse.ArgumentParser:
    """The ``vision-kd`` argument parser (flags generated from the fields of :class:`~vision_kd.config.VisionConfig`)."""
    parser = argparse.ArgumentParser(prog="vision-kd", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a teacher (--method ce) or a student with a KD method")
    add_common_flags(p)
    add_run_flags(p)
    add_config_flags(p, VisionConfig)
    sub.add_parser("list", help="list methods, datasets and architectures")
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Dispatch one parsed ``vision-kd`` command; returns the exit status."""
    if args.command == "list":
        from vision_kd.data import VISION_DATASETS
        from vision_kd.methods import METHODS
        from vision_kd.models import ARCHS

        for name, cls in METHODS.items():
            print(f"method {name:12s} strategy={cls.strategy:12s} teachers={','.join(cls.teacher_roles) or '-'}")
        for name in VISION_DATASETS:
            print(f"dataset {name}")
        for name in ARCHS:
            print(f"arch   {name}")
        return 0
    from vision_kd.train import train_vision

    if args.config:  # a path, or a shipped recipe's name (nkd_digits)
        args.config = find_resource(args.config, [RECIPES], what="recipe")
    cfg = load_from_args(VisionConfig, args)
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
