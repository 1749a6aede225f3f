"""``autodistil``: thin command-line wrappers over the documented Python functions.

=====================  ===========================================================
command                Python function
=====================  ===========================================================
``train-superlm``      :func:`autodistil.train.train_superlm`
``search``             :func:`autodistil.search.search`
``extract``            :meth:`autodistil.superlm.SuperLM.extract` (+ ``save_student``)
``spaces``             :data:`autodistil.subspaces.BUILTIN_SPACES` (sizes and FLOPs ranges)
``flops``              :func:`distiller_nlp.core.flops.flops_report` (one shape, every FLOPs convention)
=====================  ===========================================================

``--flops-convention exact|autodistil`` (``search``, ``spaces``, ``flops``) picks how FLOPs are counted: ``exact``
(default) = 2 × the real multiply-adds; ``autodistil`` = the paper's formula in multiply-adds (attention counted
hidden × heads / 12 wide), the convention of the paper's budgets and reported FLOPs.

Every command but ``spaces`` and ``flops`` takes ``--config FILE.yaml``; flags override its keys, ``--set key.sub=value`` any key.
Bad input prints one line ``error: ...`` and exits 2. Also runs as ``python -m autodistil``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from distiller_nlp.core.cli import (add_common_flags, add_config_flags, add_run_flags, cli_main, load_from_args)
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import quiet_libraries

from .config import SearchConfig, TrainSuperLMConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``autodistil`` argument parser (config flags generated from the fields of :mod:`autodistil.config`)."""
    parser = argparse.ArgumentParser(prog="autodistil", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-superlm", help="train one weight-sharing SuperLM per sub-space (task-agnostic)")
    add_common_flags(p)
    add_run_flags(p)
    p.add_argument("--subspace", dest="subspace", default=None, help="one sub-space (built-in name or YAML file)")
    add_config_flags(p, TrainSuperLMConfig)

    p = sub.add_parser("search", help="pick the best inherited subnet under a FLOPs budget (no retraining)")
    add_common_flags(p)
    add_run_flags(p, resume=False)
    add_config_flags(p, SearchConfig)

    p = sub.add_parser("extract", help="extract one subnet of a SuperLM as a standalone Hugging Face model")
    p.add_argument("--superlm", required=True, help="SuperLM directory")
    p.add_argument("--arch", required=True, help="e.g. layers=4,hidden=192,heads=6,mlp_ratio=3 (head_dim = SuperLM's)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("spaces", help="list the built-in sub-spaces with their sizes and FLOPs ranges")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--flops-convention", default="exact", help=_CONVENTION_HELP)
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("flops", help="FLOPs of one student shape in every FLOPs convention (exact, autodistil)")
    p.add_argument("--arch", required=True,
                   help="e.g. layers=12,heads=9,hidden=544,mlp_ratio=3 (head_dim=64 unless given)")
    p.add_argument("--seq-len", "--max-length", dest="seq_len", type=int, default=128,
                   help="tokens of the one sequence counted (default 128)")
    p.add_argument("--flops-convention", default="exact", help=_CONVENTION_HELP)
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.add_argument("--verbose", action="store_true")
    return parser


_CONVENTION_HELP = ("exact | autodistil: exact = FLOPs = 2 x the real multiply-adds (default); autodistil = the "
                    "paper's formula, multiply-adds, attention hidden x heads/12 wide")


def arch_flops(arch: str, seq_len: int = 128, convention: str = "exact") -> dict:
    """``autodistil flops``: :func:`distiller_nlp.core.flops.flops_report` of ``arch`` (the ``--arch`` grammar of
    :func:`autodistil.subspaces.parse_arch`, head_dim 64 unless given) plus its ``arch`` string."""
    from distiller_nlp.core.flops import flops_report, get_flops_convention

    from .subspaces import parse_arch

    get_flops_convention(convention)  # an unknown name fails before the shape is read
    a = parse_arch(arch)
    return {"arch": str(a), **flops_report(a, seq_len, convention)}


def _format_flops_report(r: dict) -> str:
    lines = [f"{r['arch']} at {r['seq_len']} tokens"]
    main_macs = r["counts"][r["convention"]]["multiply_adds"]
    for name in [r["convention"]] + [n for n in r["counts"] if n != r["convention"]]:
        c = r["counts"][name]
        tail = "" if name == r["convention"] else f"  ({c['multiply_adds'] / main_macs:.3f}x in multiply-adds)"
        lines.append(f"{name:>10}: {c['flops']:,} ({c['unit']}; {c['multiply_adds'] / 1e9:.4g} G multiply-adds){tail}")
    return "\n".join(lines)


def _spaces_table(seq_len: int, convention: str = "exact") -> list[dict]:
    from distiller_nlp.core.flops import get_flops_convention

    from .subspaces import BUILTIN_SPACES

    conv = get_flops_convention(convention)
    rows = []
    for name, space in BUILTIN_SPACES.items():
        flops = [a.flops(seq_len, conv.name) for a in space]
        rows.append({"name": name, "subnets": len(space), "head_dim": space.head_dim,
                     "layers": list(space.layers), "heads": list(space.heads), "hidden": list(space.hidden),
                     "mlp_ratio": list(space.mlp_ratio), "min_flops": min(flops), "max_flops": max(flops),
                     "flops_convention": conv.name, "unit": conv.unit})
    return rows


def run_command(args: argparse.Namespace) -> int:
    """Dispatch one parsed ``autodistil`` command; returns the exit status."""
    if args.command == "train-superlm":
        from .train import train_superlm

        extra = {}
        if args.subspace:
            if args.subspaces is not None:
                raise DistillerError("give --subspace NAME or --subspaces LIST, not both")
            extra["subspaces"] = args.subspace
        cfg = load_from_args(TrainSuperLMConfig, args, extra=extra)
        results = train_superlm(cfg, resume=args.resume, overwrite=args.overwrite)
        for name, metrics in results.items():
            print(f"SuperLM {name}: {metrics.get('global_step')} steps, train_loss {metrics.get('train_loss'):.4g}, "
                  f"{metrics.get('train_runtime_s')} s")
        print(f"written to {cfg.output_dir}")
        return 0

    if args.command == "search":
        from .search import search

        cfg = load_from_args(SearchConfig, args)
        cfg.validate(args.config or "command-line flags")
        m = search(cfg, overwrite=args.overwrite)
        from distiller_nlp.core.flops import get_flops_convention

        symbol = get_flops_convention(m["flops_convention"]).symbol
        print(f"chosen student ({m['chosen_subspace']}): layers={m['chosen_layers']} hidden={m['chosen_hidden']} "
              f"heads={m['chosen_heads']} mlp_ratio={m['chosen_mlp_ratio']:g} head_dim={m['chosen_head_dim']}")
        print(f"  {symbol} {m['chosen_flops']:,} ({m['flops_ratio']:.3f} of the teacher's {m['teacher_flops']:,}; "
              f"budget {m['budget_flops']:,.0f}; {m['flops_convention']}: {m['unit']}), "
              f"params {m['chosen_params']:,}, score {m['chosen_score']:.5g}")
        print(f"  {m['candidates_scored']} candidates scored in {m['score_runtime_s']} s; "
              f"student in {os.path.join(cfg.output_dir, 'student')}")
        return 0

    if args.command == "extract":
        from distiller_nlp.core.rundir import check_output_dir
        from distiller_nlp.models import load_tokenizer, save_student

        from .subspaces import parse_arch
        from .superlm import load_superlm

        check_output_dir(args.output_dir, overwrite=args.overwrite)
        superlm, _, meta = load_superlm(args.superlm)
        arch = parse_arch(args.arch, head_dim=superlm.head_dim)
        superlm.check_fits(arch)
        tokenizer = load_tokenizer(args.superlm)
        if args.overwrite and os.path.isdir(args.output_dir):
            import shutil

            shutil.rmtree(args.output_dir)
        model = superlm.eval().extract(arch)
        save_student(model, tokenizer, args.output_dir, require_builtin=arch.is_plain_bert)
        from .card import write_student_card

        write_student_card(args.output_dir, model, arch, args.superlm, meta)
        kind = "plain BERT" if arch.is_plain_bert else "autodistil_bert (import autodistil to load)"
        print(f"extracted {arch} ({kind}, {arch.flops():,} FLOPs at 128 tokens) to {args.output_dir}")
        return 0

    if args.command == "spaces":
        print(json.dumps(_spaces_table(args.max_length, args.flops_convention), indent=1))
        return 0

    if args.command == "flops":
        report = arch_flops(args.arch, args.seq_len, args.flops_convention)
        print(json.dumps(report, indent=1) if args.json else _format_flops_report(report))
        return 0
    raise DistillerError(f"unknown command {args.command}")


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``autodistil`` console script; returns the exit status (2 on bad input)."""
    return cli_main(build_parser(), run_command, argv, quiet=quiet_libraries)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
