"""One registry type for everything the toolkit looks up by name.

Losses, augmentation stages, text tasks, layer-mapping strategies, vision methods, vision datasets, supernet sampling
strategies, Optuna pruners: each is a :class:`Registry` of ``name -> object`` with per-entry metadata. Adding one is
one decorated object in one file::

    from distiller_nlp.core.losses import LOSSES

    @LOSSES.register("my_l1", kind="hidden")
    def my_l1(h_s, h_t, mask=None):
        ...

Everything else (recipe validation, ``--help`` texts, the lists a search space may draw from) reads the registry, so
nothing has to be kept in sync by hand. An unknown name is a one-line
:class:`~distiller_nlp.core.errors.DistillerError` that lists the known ones.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from distiller_nlp.core.errors import DistillerError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """``name -> object`` with metadata, in registration order.

    Args:
        kind: what an entry is, for messages (``"loss"``, ``"augmentation stage"``, ``"task"``).
        plural: its plural (default ``kind + "s"``).
        hint: appended to the unknown-name error (e.g. how to use custom data).
        normalize: maps a user-typed name to its key (e.g. lower-casing, aliases); keys are stored normalized.
        check: ``(name, obj, meta) -> None`` called before an entry is stored; raises to refuse it.
    """

    def __init__(self, kind: str, *, plural: Optional[str] = None, hint: str = "",
                 normalize: Optional[Callable[[str], str]] = None,
                 check: Optional[Callable[[str, Any, dict], None]] = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.hint = hint
        self._normalize = normalize
        self._check = check
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict] = {}

    # ------------------------------------------------------------------------------------------------ writing

    def key(self, name: Any) -> str:
        """The registry key of a user-typed name (normalized when the registry normalizes names)."""
        if not isinstance(name, str) or not name.strip() or (self._normalize is None and name != name.strip()):
            raise DistillerError(f"{self.kind} name must be a non-empty string without surrounding spaces, "
                                 f"got {name!r}")
        return self._normalize(name) if self._normalize else name

    def register(self, name: str, obj: Any = None, *, override: bool = False, **meta: Any):
        """Register ``obj`` under ``name`` with metadata ``meta``; without ``obj``, return a decorator.

        Registering a taken name raises :class:`DistillerError` unless ``override=True`` (re-registering the very
        same object is a no-op). The object is returned unchanged, so the decorator stacks."""
        key = self.key(name)

        def store(target: Any) -> Any:
            if key in self._entries and not override and self._entries[key] is not target:
                raise DistillerError(f"{self.kind} {name!r} is already registered (by {_describe(self._entries[key])}); "
                                     "pass override=True to replace it")
            if self._check is not None:
                self._check(key, target, meta)
            self._entries[key] = target
            self._meta[key] = dict(meta)
            return target

        return store if obj is None else store(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return what was registered (unknown name → :class:`DistillerError`)."""
        key = self._known(name)
        self._meta.pop(key, None)
        return self._entries.pop(key)

    @contextlib.contextmanager
    def scope(self):
        """Registrations made inside the ``with`` block are undone when it ends (tests, experiments)."""
        entries, meta = dict(self._entries), dict(self._meta)
        try:
            yield self
        finally:
            self._entries.clear()
            self._entries.update(entries)
            self._meta.clear()
            self._meta.update(meta)

    # ------------------------------------------------------------------------------------------------ reading

    def _known(self, name: Any) -> str:
        key = self._normalize(name) if (self._normalize and isinstance(name, str)) else name
        if not isinstance(key, str) or key not in self._entries:
            known = ", ".join(self.names()) or "(none)"
            raise DistillerError(f"unknown {self.kind} {name!r}; known {self.plural}: {known}{self.hint}")
        return key

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises :class:`DistillerError` listing the known."""
        return self._entries[self._known(name)]

    def meta(self, name: str) -> dict:
        """The metadata ``name`` was registered with (a copy)."""
        return dict(self._meta[self._known(name)])

    def names(self, **where: Any) -> list[str]:
        """Registered names in registration order; ``where`` keeps those whose metadata has these values
        (a callable value is a predicate on the metadata value)."""
        out = []
        for key, meta in self._meta.items():
            if all((want(meta.get(k)) if callable(want) else meta.get(k) == want) for k, want in where.items()):
                out.append(key)
        return out

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` pairs in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = self._normalize(name) if self._normalize else name
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}"
