"""One registry for every distillation loss, shared by recipes, search spaces, the vision methods and user code.

A loss is registered once under its canonical name with a decorator::

    from distiller_nlp.core.losses import register_loss

    @register_loss("my_cosine")
    def my_cosine(h_s, h_t, mask=None):
        ...

    @register_loss("my_critic")          # stateful losses are nn.Module classes
    class MyCritic(torch.nn.Module):
        ...

``get_loss(name)`` returns the function, or the *class* for a stateful loss (the caller instantiates it and owns its
parameters, e.g. adds them to the optimizer); ``is_stateful(name)`` tells the two apart.
"""

from __future__ import annotations

import inspect
from typing import Callable, TypeVar, Union

import torch.nn as nn

from distiller_nlp.errors import DistillerError

LossObject = Union[Callable[..., "object"], type]
_T = TypeVar("_T")

_REGISTRY: dict[str, LossObject] = {}
_KINDS: dict[str, str] = {}
KINDS = ("any", "logits", "hidden", "qkv", "landmarks")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise DistillerError(f"loss name must be a non-empty string without surrounding spaces, got {name!r}")
    return name


def register_loss(name: str, *, override: bool = False, kind: str = "any") -> Callable[[_T], _T]:
    """Decorator registering a loss function or an ``nn.Module`` loss class under ``name``.

    ``kind`` says what the loss compares, so pipelines can reject a misplaced loss early: ``logits`` (prediction
    layer), ``hidden`` (``(h_s, h_t, mask=...)`` hidden states), ``qkv`` (attention queries/keys/values),
    ``landmarks`` (regression outputs) or ``any`` (the default for user losses: trusted wherever it is used).

    Registering a name twice raises :class:`DistillerError` unless ``override=True`` (then the new object replaces the
    old one). The decorated object is returned unchanged, so the decorator can be stacked or used as
    ``register_loss("x")(fn)``.
    """
    _check_name(name)
    if kind not in KINDS:
        raise DistillerError(f"loss {name!r}: kind {kind!r} must be one of {', '.join(KINDS)}")

    def decorator(obj: _T) -> _T:
        if inspect.isclass(obj):
            if not issubclass(obj, nn.Module):
                raise DistillerError(f"loss {name!r}: a registered class must subclass torch.nn.Module, got {obj!r}")
        elif not callable(obj):
            raise DistillerError(f"loss {name!r}: registered object must be a function or an nn.Module class")
        if name in _REGISTRY and not override and _REGISTRY[name] is not obj:
            raise DistillerError(
                f"loss {name!r} is already registered (by {_describe(_REGISTRY[name])}); "
                "pass override=True to replace it"
            )
        _REGISTRY[name] = obj
        _KINDS[name] = kind
        return obj

    return decorator


def unregister_loss(name: str) -> LossObject:
    """Remove ``name`` from the registry and return what was registered (unknown name -> :class:`DistillerError`)."""
    get_loss(name)
    _KINDS.pop(name, None)
    return _REGISTRY.pop(name)


def loss_kind(name: str) -> str:
    """What a registered loss compares: ``logits``, ``hidden``, ``qkv``, ``landmarks`` or ``any``."""
    get_loss(name)
    return _KINDS.get(name, "any")


def get_loss(name: str) -> LossObject:
    """Return the loss registered as ``name``: a function, or an ``nn.Module`` class for stateful losses.

    An unknown name raises :class:`DistillerError` listing the known names.
    """
    if not isinstance(name, str) or name not in _REGISTRY:
        known = ", ".join(list_losses()) or "(none)"
        raise DistillerError(f"unknown loss {name!r}; known losses: {known}")
    return _REGISTRY[name]


def list_losses() -> list[str]:
    """Sorted list of every registered loss name."""
    return sorted(_REGISTRY)


def is_stateful(name: str) -> bool:
    """True when ``name`` is registered as an ``nn.Module`` class (it has parameters/state to instantiate and train)."""
    obj = get_loss(name)
    return inspect.isclass(obj) and issubclass(obj, nn.Module)


def _describe(obj: object) -> str:
    module = getattr(obj, "__module__", "?")
    qualname = getattr(obj, "__qualname__", repr(obj))
    return f"{module}.{qualname}"


__all__ = ["register_loss", "unregister_loss", "get_loss", "list_losses", "is_stateful"]
