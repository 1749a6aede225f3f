"""``autodistil``: thin command-line wrappers over the documented Python functions.

=====================  ===========================================================
command                Python function
=====================  ===========================================================
``train-superlm``      :func:`autodistil.train.train_superlm`
``search``             :func:`autodistil.search.search`
``extract``            :meth:`autodistil.superlm.SuperLM.extract` (+ ``save_student``)
``spaces``             :data:`autodistil.space.BUILTIN_SPACES` (sizes and FLOPs ranges)
=====================  ===========================================================

Every command but ``spaces`` takes ``--config FILE.yaml``; flags override its keys, ``--set key.sub=value`` any key.
Bad input prints one line ``error: ...`` and exits 2. Also runs as ``python -m autodistil``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from distiller_nlp.cli import TRAIN_FLAGS as _NLP_TRAIN_FLAGS
from distiller_nlp.cli import add_flags, cli_main
from distiller_nlp.errors import DistillerError

# the engine flags are distiller-nlp's (same names, same keys)
TRAIN_FLAGS = {k: v for k, v in _NLP_TRAIN_FLAGS.items()
               if k in ("max_steps", "epochs", "batch_size", "lr", "warmup_ratio", "grad_accum", "seed", "max_length",
                        "precision", "save_steps", "logging_steps", "report_to")}
DATA_FLAGS = {
    "task": ("data.task", str, "text source: tweets, bbc-headlines, a GLUE name with --data-dir"),
    "data_dir": ("data.data_dir", str, "directory with local task files"),
    "text_column": ("data.text_column", str, "text column (custom or Hub data)"),
    "hub_dataset": ("data.hub_dataset", str, "any Hub text corpus (online)"),
    "hub_config": ("data.hub_config", str, "configuration name of --hub-dataset"),
    "max_train_examples": ("data.max_train_examples", int, "cap on training texts"),
    "heldout_examples": ("data.heldout_examples", int, "held-out sequences that score candidates (default 256)"),
}
OBJECTIVE_FLAGS = {
    "relation_heads": ("objective.relation_heads", int, "relation heads of the MiniLMv2 loss (default 12)"),
    "relation_kind": ("objective.kind", str, "kl (MiniLMv2) | mse (AutoDistil's released code)"),
    "teacher_layer": ("objective.teacher_layer", int, "teacher layer 1..L (default 0 = last)"),
}
SUPERLM_FLAGS = {
    "teacher": ("teacher", str, "BERT teacher: directory, 'minilm' (default) or Hub id"),
    "subspaces": ("subspaces", str, "comma list of sub-spaces (built-in names or YAML files); all = K=3, oneshot = K=1"),
    "layer_selection": ("layer_selection", str, "uniform (keep floor(i*Lmax/L)) | first"),
    "sampling": ("sampling", str, "sandwich | uniform"),
    "num_random": ("num_random", int, "random subnets per sandwich step (default 2)"),
}
SEARCH_FLAGS = {
    "budget": ("budget", float, "FLOPs budget (2 x multiply-adds, one sequence of --max-length tokens)"),
    "budget_ratio": ("budget_ratio", float, "budget as a fraction of the teacher's encoder FLOPs"),
    "score": ("score", str, "task-agnostic (held-out relation loss) | task-proxy (short k-shot fine-tune)"),
    "proxy_task": ("proxy.task", str, "task-proxy: labelled task (default tweets)"),
    "proxy_k": ("proxy.k", int, "task-proxy: labelled examples per class (default 16)"),
    "proxy_steps": ("proxy.steps", int, "task-proxy: fine-tuning steps per candidate (default 20)"),
    "max_length": ("max_length", int, "sequence length of FLOPs and scoring (default 128)"),
    "batch_size": ("batch_size", int, "scoring batch size"),
    "precision": ("precision", str, "auto | no | bf16"),
    "max_evals": ("max_evals", int, "exhaustive up to N fitting candidates per SuperLM, else N Optuna trials"),
    "seed": ("seed", int, "seed of the held-out subset and Optuna"),
}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config; flags override its keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key")
    p.add_argument("--output-dir", default=None, help="output directory (must be empty unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")
    p.add_argument("--plain-bert", action="store_const", const=True, default=None,
                   help="restrict sub-spaces to shapes that export as plain BERT (heads x head_dim = hidden)")
    p.add_argument("--cpu", action="store_const", const=True, default=None, help="run on CPU")
    p.add_argument("--verbose", action="store_true", help="info-level logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autodistil", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train-superlm", help="train one weight-sharing SuperLM per sub-space (task-agnostic)")
    _add_common(p)
    p.add_argument("--subspace", dest="subspace", default=None, help="one sub-space (built-in name or YAML file)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoints in --output-dir")
    add_flags(p, SUPERLM_FLAGS)
    add_flags(p, DATA_FLAGS)
    add_flags(p, OBJECTIVE_FLAGS)
    add_flags(p, TRAIN_FLAGS)

    p = sub.add_parser("search", help="pick the best inherited subnet under a FLOPs budget (no retraining)")
    _add_common(p)
    p.add_argument("--superlm", nargs="+", default=None, help="SuperLM directories (or directories holding them)")
    add_flags(p, SEARCH_FLAGS)
    add_flags(p, DATA_FLAGS)
    add_flags(p, OBJECTIVE_FLAGS)

    p = sub.add_parser("extract", help="extract one subnet of a SuperLM as a standalone Hugging Face model")
    p.add_argument("--superlm", required=True, help="SuperLM directory")
    p.add_argument("--arch", required=True, help="e.g. layers=4,hidden=192,heads=6,mlp_ratio=3 (head_dim = SuperLM's)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--verbose", action="store_true")

    p = sub.add_parser("spaces", help="list the built-in sub-spaces with their sizes and FLOPs ranges")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--verbose", action="store_true")
    return parser


def _overrides(args: argparse.Namespace, *tables: dict) -> dict:
    out = {}
    for table in tables:
        for dest, (key, _, _) in table.items():
            value = getattr(args, dest, None)
            if value is not None:
                out[key] = value
    return out


def _spaces_table(seq_len: int) -> list[dict]:
    from .space import BUILTIN_SPACES

    rows = []
    for name, space in BUILTIN_SPACES.items():
        flops = [a.flops(seq_len) for a in space]
        rows.append({"name": name, "subnets": len(space), "head_dim": space.head_dim,
                     "layers": list(space.layers), "heads": list(space.heads), "hidden": list(space.hidden),
                     "mlp_ratio": list(space.mlp_ratio), "min_flops": min(flops), "max_flops": max(flops)})
    return rows


def run_command(args: argparse.Namespace) -> int:
    from distiller_nlp.config import load_config

    from .config import SearchConfig, TrainSuperLMConfig

    if args.command == "train-superlm":
        from .train import train_superlm

        ov = _overrides(args, SUPERLM_FLAGS, DATA_FLAGS, OBJECTIVE_FLAGS, TRAIN_FLAGS)
        if args.subspace:
            if "subspaces" in ov:
                raise DistillerError("give --subspace NAME or --subspaces LIST, not both")
            ov["subspaces"] = args.subspace
        for key, value in (("output_dir", args.output_dir), ("plain_bert", args.plain_bert),
                           ("train.cpu", args.cpu)):
            if value is not None:
                ov[key] = value
        cfg = load_config(TrainSuperLMConfig, args.config, ov, args.set)
        results = train_superlm(cfg, resume=args.resume, overwrite=args.overwrite)
        for name, metrics in results.items():
            print(f"SuperLM {name}: {metrics.get('global_step')} steps, train_loss {metrics.get('train_loss'):.4g}, "
                  f"{metrics.get('train_runtime_s')} s")
        print(f"written to {cfg.output_dir}")
        return 0

    if args.command == "search":
        from .search import search

        ov = _overrides(args, SEARCH_FLAGS, DATA_FLAGS, OBJECTIVE_FLAGS)
        for key, value in (("superlm", args.superlm), ("output_dir", args.output_dir),
                           ("plain_bert", args.plain_bert), ("cpu", args.cpu)):
            if value is not None:
                ov[key] = value
        cfg = load_config(SearchConfig, args.config, ov, args.set)
        cfg.validate(args.config or "command-line flags")
        m = search(cfg, overwrite=args.overwrite)
        print(f"chosen student ({m['chosen_subspace']}): layers={m['chosen_layers']} hidden={m['chosen_hidden']} "
              f"heads={m['chosen_heads']} mlp_ratio={m['chosen_mlp_ratio']:g} head_dim={m['chosen_head_dim']}")
        print(f"  FLOPs {m['chosen_flops']:,} ({m['flops_ratio']:.3f} of the teacher's {m['teacher_flops']:,}; "
              f"budget {m['budget_flops']:,.0f}), params {m['chosen_params']:,}, score {m['chosen_score']:.5g}")
        print(f"  {m['candidates_scored']} candidates scored in {m['score_runtime_s']} s; "
              f"student in {os.path.join(cfg.output_dir, 'student')}")
        return 0

    if args.command == "extract":
        from distiller_nlp.models import load_tokenizer, save_student
        from distiller_nlp.runs import check_output_dir

        from .space import parse_arch
        from .superlm import load_superlm

        check_output_dir(args.output_dir, overwrite=args.overwrite)
        superlm, _, _ = load_superlm(args.superlm)
        arch = parse_arch(args.arch, head_dim=superlm.head_dim)
        superlm.check_fits(arch)
        tokenizer = load_tokenizer(args.superlm)
        if args.overwrite and os.path.isdir(args.output_dir):
            import shutil

            shutil.rmtree(args.output_dir)
        model = superlm.eval().extract(arch)
        save_student(model, tokenizer, args.output_dir, require_builtin=arch.is_plain_bert)
        kind = "plain BERT" if arch.is_plain_bert else "autodistil_bert (import autodistil to load)"
        print(f"extracted {arch} ({kind}, {arch.flops():,} FLOPs at 128 tokens) to {args.output_dir}")
        return 0

    if args.command == "spaces":
        print(json.dumps(_spaces_table(args.max_length), indent=1))
        return 0
    raise DistillerError(f"unknown command {args.command}")


def main(argv: Optional[list] = None) -> int:
    """Entry point of the ``autodistil`` console script; returns the exit status (2 on bad input)."""
    return cli_main(build_parser(), run_command, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
