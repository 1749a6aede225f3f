"""Shipped resources (recipes, search spaces) found by name inside an installed package, or by path.

Each package keeps its YAML files beside its code (package data), so a wheel carries them and a non-editable install
finds them: ``distiller-nlp run glue/sst2`` and ``vision-kd train --config nkd_digits`` work from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from distiller_nlp.core.errors import DistillerError

__all__ = ["find_resource", "list_resources"]


def list_resources(root: Path, suffix: str = ".yaml") -> list[str]:
    """Names (relative paths without ``suffix``) of the files under ``root``, sorted."""
    if not root.is_dir():
        return []
    return sorted(str(p.relative_to(root))[: -len(suffix)] for p in root.rglob(f"*{suffix}"))


def find_resource(name_or_path: str, roots: Iterable[Path], what: str = "recipe", suffix: str = ".yaml") -> str:
    """``name_or_path`` when it is an existing file, else the shipped file it names under one of ``roots``
    (``glue/sst2`` or ``glue/sst2.yaml``). Neither → a one-line :class:`DistillerError` listing the shipped names."""
    if not name_or_path:
        raise DistillerError(f"no {what} given")
    path = os.path.expanduser(str(name_or_path))
    if os.path.isfile(path):
        return path
    roots = [Path(r) for r in roots]
    stem = path[: -len(suffix)] if path.endswith(suffix) else path
    for root in roots:
        candidate = (root / f"{stem}{suffix}").resolve()
        if root.resolve() not in candidate.parents:  # a name never leaves the shipped tree (``../../x``)
            raise DistillerError(f"{what} name {name_or_path} points outside the shipped {what}s; give a path to "
                                 "an existing file instead")
        if candidate.is_file():
            return str(root / f"{stem}{suffix}")
    shipped = [n for root in roots for n in list_resources(root, suffix)]
    raise DistillerError(f"{what} not found: {name_or_path} is neither a file nor a shipped {what} "
                         f"(shipped: {', '.join(shipped) or 'none'})")
