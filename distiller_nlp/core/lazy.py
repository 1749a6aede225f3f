"""Lazy package exports: a package lists ``name -> module`` and loads the module when the name is first used, so
importing the package stays light (PEP 562 module ``__getattr__``)."""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of package ``package`` that resolves each name of ``exports`` from its module."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
