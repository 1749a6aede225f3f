"""One config schema for YAML recipes and command-line flags: dataclasses whose fields carry their own help and range.

A config section is a dataclass; a field is declared with :func:`option`, the way Hugging Face's ``HfArgumentParser``
reads ``field(metadata={"help": ...})``::

    @dataclass
    class KDConfig:
        temperature: float = option(1.0, help="softmax temperature of the prediction loss", positive=True,
                                    flag=True)

``flag=True`` (or a flag name) makes the field a command-line flag in every CLI that uses the dataclass
(:mod:`distiller_nlp.core.cli` generates them); ``choices`` (a sequence, or a callable returning one, e.g. a
registry's names), ``positive``, ``min`` and ``max`` are checked by :func:`check_config` whenever a config is loaded.

Recipes are read with ``yaml.safe_load`` only. An unknown key, a value of the wrong type, a value outside its range or
a malformed file is a :class:`~distiller_nlp.core.errors.DistillerError` that names the key and the file.
``load_config`` layers: the file < ``overrides`` (dotted keys, e.g. the named flags) < ``--set key.sub=value``.

Depends on PyYAML and the standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import MISSING, field
from typing import Any, Callable, Iterator, Optional

import yaml

from distiller_nlp.core.errors import DistillerError

__all__ = [
    "option",
    "choices_of",
    "check_config",
    "iter_fields",
    "from_dict",
    "deep_merge",
    "to_dict",
    "read_yaml",
    "set_by_path",
    "parse_set_option",
    "load_config",
    "dump_yaml",
]


def option(default: Any = MISSING, *, help: str, default_factory: Any = MISSING, choices: Any = None,
           check: bool = True, positive: bool = False, min: Optional[float] = None,
           max: Optional[float] = None, flag: Any = None, append: bool = False, nargs: Optional[str] = None,
           parse: Optional[Callable[[str], Any]] = None,
           overrides: Optional[Callable[[Any], dict]] = None, metavar: Optional[str] = None) -> Any:
    """A dataclass field with its help text, range and (optionally) its command-line flag.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: one line shown by ``--help``; ``{choices}`` in it is replaced by the allowed values.
        choices: allowed values — a sequence or a zero-argument callable (read when checked, so a registry can grow).
        check: ``False`` when ``choices`` only feed the help text (the value is checked where it is used, e.g. by the
            registry that builds it, with its own message).
        positive / min / max: numeric range (``positive``: > 0; ``min``/``max`` inclusive).
        flag: ``True`` for a flag named after the field (``max_length`` → ``--max-length``), a string for another
            name (``"inter-loss"``), ``None``/``False`` for no flag (the key is still settable with ``--set``). On a
            section (a dataclass-typed field), ``False`` means none of the section's fields become flags (e.g. the
            ``train`` section of ``teacher_finetune``, whose keys would clash with the run's own ``train``).
        append: the flag may repeat; its value is the list of given strings.
        nargs: the flag takes several values at once (argparse ``nargs``, e.g. ``"+"``) into a list field.
        parse: converts the flag's string (default: the field's type).
        overrides: ``value -> {relative dotted key: value}`` when one flag sets several keys (``--teacher A
            --teacher B`` sets ``teacher`` and ``teachers``).
        metavar: shown in ``--help`` for the flag's value.
    """
    metadata = {"help": help, "choices": choices, "check": check, "positive": positive, "min": min, "max": max, "flag": flag,
                "append": append, "nargs": nargs, "parse": parse, "overrides": overrides, "metavar": metavar}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def choices_of(f: dataclasses.Field) -> Optional[tuple]:
    """The allowed values of a field (calling a callable ``choices``), or None."""
    choices = f.metadata.get("choices") if f.metadata else None
    if callable(choices):
        choices = choices()
    return tuple(choices) if choices is not None else None


def _section_type(tp: Any) -> Optional[type]:
    """The dataclass type of a (possibly Optional) section annotation, else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and dataclasses.is_dataclass(args[0]):
            return args[0]
    return None


def iter_fields(cls: type, prefix: str = "", flags_only: bool = False) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """Every leaf field of a config dataclass, recursively: ``(dotted key, field, annotation)``.

    Sub-sections (dataclass-typed fields, also ``Optional[...]``) are walked into, not yielded; with ``flags_only``,
    sections declared ``flag=False`` are skipped."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        sub = _section_type(tp)
        if sub is not None:
            if not (flags_only and (f.metadata or {}).get("flag") is False):
                yield from iter_fields(sub, f"{prefix}{f.name}.", flags_only)
        else:
            yield f"{prefix}{f.name}", f, tp


def check_config(cfg: Any, source: str = "config", prefix: str = "") -> None:
    """Check every field of ``cfg`` (recursively) against its ``choices`` / ``positive`` / ``min`` / ``max``.

    The first violation raises a one-line :class:`DistillerError` naming the dotted key and ``source``."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_config(value, source, key + ".")
            continue
        meta = f.metadata or {}
        if not meta or value is None:
            continue
        choices = choices_of(f) if meta.get("check", True) else None
        if choices is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item not in choices:
                    raise DistillerError(f"{key}: '{item}' in {source} is not one of "
                                         f"{', '.join(str(c) for c in choices)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if meta.get("positive") and value <= 0:
                raise DistillerError(f"{key} in {source} must be positive, got {value}")
            if meta.get("min") is not None and value < meta["min"]:
                raise DistillerError(f"{key} in {source} must be >= {meta['min']}, got {value}")
            if meta.get("max") is not None and value > meta["max"]:
                raise DistillerError(f"{key} in {source} must be <= {meta['max']}, got {value}")


# ------------------------------------------------------------------------------------------------ strict loading

def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DistillerError(f"key '{key}' in {source} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source, prefix=key + ".")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise DistillerError(f"key '{key}' in {source} must be a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DistillerError(f"key '{key}' in {source} must be a mapping, got {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):
            return {str(k): _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise DistillerError(f"key '{key}' in {source} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise DistillerError(f"key '{key}' in {source} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise DistillerError(f"key '{key}' in {source} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise DistillerError(f"key '{key}' in {source} must be a number, got {value!r}")
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None and not math.isfinite(number):
            raise DistillerError(f"key '{key}' in {source} must be a finite number, got {value!r}")
        if number is not None:
            return number
        raise DistillerError(f"key '{key}' in {source} must be a number, got {value!r}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise DistillerError(f"key '{key}' in {source} must be a string, got {value!r}")
    return value


def from_dict(cls, data: dict, source: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise DistillerError naming key and file.

    A section given in part keeps the section's defaults for the rest (``teacher_finetune.train.lr`` alone keeps
    that section's other training defaults)."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise DistillerError(f"unknown key '{prefix}{key}' in {source} (known keys here: {known})")
        factory = fields[key].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[key]) and factory is not dataclasses.MISSING:
            value = deep_merge(to_dict(factory()), value)
        parse = (fields[key].metadata or {}).get("parse")
        if parse is not None and isinstance(value, str):  # a recipe's string reads as the flag's would (lr: auto)
            try:
                value = parse(value)
            except (TypeError, ValueError):
                raise DistillerError(f"key '{prefix}{key}' in {source}: cannot read {value!r}") from None
        kwargs[key] = _coerce(value, hints[key], prefix + key, source)
    return cls(**kwargs)


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, recursively for mappings (lists and scalars are replaced)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj) -> dict:
    """The plain-dict form of a config (what a recipe file holds)."""
    return dataclasses.asdict(obj)


def read_yaml(path: str) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; a missing or malformed file is a one-line DistillerError."""
    if not os.path.isfile(path):
        raise DistillerError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DistillerError(f"malformed YAML in {path}{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise DistillerError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillerError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def set_by_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'`` (creating sub-mappings)."""
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise DistillerError(f"cannot set '{dotted}': '{p}' is not a mapping")
        cur = nxt
    cur[parts[-1]] = value


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse ``--set key.sub=value``; the value is read as YAML (so numbers, booleans and lists work)."""
    if "=" not in item:
        raise DistillerError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(cls, path: Optional[str] = None, overrides: Optional[dict] = None, sets: Optional[list] = None):
    """Load a recipe into dataclass ``cls``: YAML file (optional) < ``overrides`` (dotted keys) < ``--set`` items;
    then :func:`check_config` and the cross-field ``validate(source)`` of a ``train`` section."""
    source = path or "command-line flags"
    data = read_yaml(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_by_path(data, dotted, value)
    for item in sets or []:
        key, value = parse_set_option(item)
        set_by_path(data, key, value)
    cfg = from_dict(cls, data, source)
    check_config(cfg, source)
    train = getattr(cfg, "train", None)
    if train is not None and hasattr(train, "validate"):
        train.validate(source)
    return cfg


def dump_yaml(cfg, path: str) -> None:
    """Write a config as YAML atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, path)
