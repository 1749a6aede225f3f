"""What the three command lines (``distiller-nlp``, ``autodistil``, ``vision-kd``) share: flags generated from config
fields, one override mechanism, the common flags, and the entry point that turns bad input into one line + exit 2.

A flag is a config field declared with ``option(..., flag=True)`` (:mod:`distiller_nlp.core.config`);
:func:`add_config_flags` adds one ``--flag`` per such field of a config dataclass (recursively through its sections),
with the field's help, choices and default, and remembers which dotted key it sets. :func:`load_from_args` then
layers the recipe file (``--config``), the named flags and ``--set key.sub=value`` through
:func:`~distiller_nlp.core.config.load_config`. So adding a flag to every CLI whose config has that section is one
field.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from typing import Any, Callable, Iterable, Optional

from distiller_nlp.core.config import choices_of, iter_fields, load_config, to_dict
from distiller_nlp.core.errors import DistillerError

__all__ = ["add_config_flags", "add_common_flags", "add_run_flags", "config_overrides", "load_from_args",
           "flag_name", "print_metrics", "setup_logging", "cli_main"]

_TABLE = "_config_flags"


def flag_name(f: dataclasses.Field) -> Optional[str]:
    """The ``--flag`` name (without dashes) a field declares, or None."""
    flag = (f.metadata or {}).get("flag")
    if flag is True:
        return f.name.replace("_", "-")
    return flag or None


def _defaults(cls: type) -> dict:
    try:
        return to_dict(cls())
    except TypeError:  # a dataclass with required fields
        return {}


def _lookup(data: dict, dotted: str) -> Any:
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return dataclasses.MISSING
        cur = cur[part]
    return cur


def _show_default(value: Any) -> bool:
    return value is not dataclasses.MISSING and value not in (None, "", False, [], {}) and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0)


def _table(parser: argparse.ArgumentParser) -> dict:
    table = getattr(parser, _TABLE, None)
    if table is None:
        table = {}
        setattr(parser, _TABLE, table)
        parser.set_defaults(**{_TABLE: table})
    return table


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, prefix: str = "",
                     only: Optional[Iterable[str]] = None, exclude: Iterable[str] = ()) -> list[str]:
    """Add a ``--flag`` for every flagged field of config dataclass ``cls`` (and its sections) to ``parser``.

    ``prefix`` is prepended to the dotted keys (a section used on its own, e.g. ``DataConfig`` as ``data.``);
    ``only`` / ``exclude`` pick flags by name (``"max-length"``). Bool fields become switches (present → true);
    ``append`` fields repeat. The help text shows the field's choices and default. Returns the flag names added."""
    table = _table(parser)
    defaults = _defaults(cls)
    only = set(only) if only is not None else None
    added = []
    for dotted, f, tp in iter_fields(cls, flags_only=True):
        name = flag_name(f)
        if name is None or (only is not None and name not in only) or name in exclude:
            continue
        dest = name.replace("-", "_")
        if dest in table:
            raise DistillerError(f"flag --{name} is declared twice ({table[dest][0]} and {prefix}{dotted})")
        meta = f.metadata
        choices = choices_of(f)
        help_ = meta.get("help", "")
        if "{choices}" in help_:
            help_ = help_.replace("{choices}", " | ".join(str(c) for c in choices or ()))
        default = _lookup(defaults, dotted)
        if default is dataclasses.MISSING and f.default is not dataclasses.MISSING:
            default = f.default
        if _show_default(default) and "default" not in help_:
            shown = ",".join(map(str, default)) if isinstance(default, list) else f"{default:g}" if isinstance(
                default, float) else default
            help_ += f" (default {shown})"
        kwargs: dict = {"dest": dest, "default": None, "help": help_}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if tp is bool:  # --flag / --no-flag (a default-on option can be switched off from the command line)
            kwargs.update(action=argparse.BooleanOptionalAction)
        elif meta.get("append"):
            kwargs.update(action="append")
        elif meta.get("nargs"):
            kwargs.update(nargs=meta["nargs"])
        else:
            kwargs["type"] = meta.get("parse") or _scalar_type(tp)
        parser.add_argument("--" + name, **kwargs)
        table[dest] = (prefix + dotted, meta.get("overrides"), meta.get("parse") if meta.get("append") else None)
        added.append(name)
    return added


def _scalar_type(tp: Any) -> Callable[[str], Any]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if args else str
    return tp if tp in (int, float, str) else str


def config_overrides(args: argparse.Namespace) -> dict:
    """``{dotted key: value}`` of every generated flag given on the command line (one mechanism for all CLIs)."""
    out: dict = {}
    for dest, (dotted, expand, parse) in (getattr(args, _TABLE, None) or {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if parse is not None:
            value = [parse(v) for v in value]
        if expand is not None:
            parent = dotted.rsplit(".", 1)[0] + "." if "." in dotted else ""
            for key, v in expand(value).items():
                out[parent + key] = v
        else:
            out[dotted] = value
    return out


def add_common_flags(p: argparse.ArgumentParser, config: bool = True) -> None:
    """``--config FILE.yaml`` (optional), ``--set KEY=VALUE`` (repeatable) and ``--verbose``."""
    if config:
        p.add_argument("--config", default=None, help="YAML config; flags override its keys")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set kd.temperature=4 (repeatable)")
    p.add_argument("--verbose", action="store_true", help="info-level logging")


def add_run_flags(p: argparse.ArgumentParser, resume: bool = True) -> None:
    """``--resume`` (continue from the last checkpoint in the output directory) and ``--overwrite``."""
    if resume:
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --output-dir")


def load_from_args(cls: type, args: argparse.Namespace, path: Optional[str] = None,
                   extra: Optional[dict] = None):
    """Load config ``cls``: the recipe ``path`` (default ``--config``) < the generated flags < ``extra`` (dotted
    keys a command sets itself) < ``--set`` items."""
    overrides = config_overrides(args)
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_config(cls, path if path is not None else getattr(args, "config", None), overrides,
                       getattr(args, "set", None) or [])


def print_metrics(metrics: dict) -> None:
    """Print the headline metrics of a run (``eval_*``, ``test_*``, time, throughput), one per line."""
    keys = [k for k in metrics if k.startswith(("eval_", "test_", "validation_")) and not k.endswith("_examples")]
    keys += [k for k in ("train_runtime_s", "examples_per_s", "flops_ratio") if k in metrics]
    for k in keys:
        v = metrics[k]
        print(f"  {k:32s} {v:.4f}" if isinstance(v, float) else f"  {k:32s} {v}")


def setup_logging(verbose: bool = False) -> None:
    """Warnings only (info with ``verbose``), our own packages at info level."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in ("distiller_nlp", "autodistil", "vision_kd"):
        logging.getLogger(name).setLevel(logging.INFO)


def cli_main(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
             argv: Optional[list] = None, quiet: Optional[Callable[[], None]] = None) -> int:
    """The shared entry point of the toolkit's CLIs: parse, call ``quiet`` (silences library chatter) unless
    ``--verbose``, run; a :class:`DistillerError` prints one line ``error: ...`` to stderr and returns its exit code
    (2)."""
    args = parser.parse_args(argv)
    from distiller_nlp.core.card import set_invocation

    set_invocation(parser.prog, list(sys.argv[1:] if argv is None else argv))  # for the model cards, redacted
    setup_logging(getattr(args, "verbose", False))
    if quiet is not None and not getattr(args, "verbose", False):
        # Library chatter (load reports, per-map progress bars of small datasets) hides what matters; the training
        # progress bar and our own messages stay. --verbose brings it all back.
        quiet()
    try:
        return run(args)
    except DistillerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        set_invocation(None, [])
