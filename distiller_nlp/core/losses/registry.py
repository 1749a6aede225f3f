"""The loss registry (:data:`LOSSES`), shared by recipes, search spaces, the vision methods and user code.

A loss is registered once under its canonical name and declares what it compares (``kind``) and which inputs it takes
beside the student's (``takes``)::

    from distiller_nlp.core.losses import register_loss

    @register_loss("my_kd", kind="logits", takes=("teacher_logits",), probabilities=True)
    def my_kd(student_logits, teacher_logits, temperature=1.0):
        ...

    @register_loss("my_critic", kind="hidden")          # stateful losses are nn.Module classes
    class MyCritic(torch.nn.Module):
        ...

From the declarations the rest is derived: :func:`prediction_losses` (``kind="logits"`` and ``teacher_logits`` in
``takes``) is what ``kd.pred_loss`` accepts and lists in ``--help``; ``"labels" in takes`` is what makes the pipeline
pass gold labels (NKD, DKD); ``probabilities`` says the loss compares class distributions (so it needs a
classification task, and several teachers are averaged in probability space).

``get_loss(name)`` returns the function, or the *class* for a stateful loss (the caller instantiates it and owns its
parameters, e.g. adds them to the optimizer); ``is_stateful(name)`` tells the two apart.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, TypeVar, Union

import torch.nn as nn

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

LossObject = Union[Callable[..., "object"], type]
_T = TypeVar("_T")

#: what a loss compares: prediction-layer ``logits``, causal-LM next-token ``token_logits`` (``(B, T, V)`` with a
#: response mask; ``distiller_nlp.lm``), ``hidden`` states (``(h_s, h_t, mask=...)``), attention ``qkv``, regression
#: ``landmarks``, or ``any`` (user losses registered without a kind: trusted wherever used)
KINDS = ("any", "logits", "token_logits", "hidden", "qkv", "landmarks")
#: inputs a loss may take beside the student's output
INPUTS = ("teacher_logits", "labels", "weak_logits", "teacher", "target")


def _check(name: str, obj: object, meta: dict) -> None:
    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise DistillerError(f"loss {name!r}: a registered class must subclass torch.nn.Module, got {obj!r}")
    elif not callable(obj):
        raise DistillerError(f"loss {name!r}: registered object must be a function or an nn.Module class")
    if meta.get("kind", "any") not in KINDS:
        raise DistillerError(f"loss {name!r}: kind {meta['kind']!r} must be one of {', '.join(KINDS)}")
    unknown = [t for t in meta.get("takes", ()) if t not in INPUTS]
    if unknown:
        raise DistillerError(f"loss {name!r}: takes {unknown[0]!r} is not one of {', '.join(INPUTS)}")


#: Every distillation loss, by canonical name.
LOSSES: Registry[LossObject] = Registry("loss", plural="losses", check=_check)


def register_loss(name: str, *, override: bool = False, kind: str = "any", takes: tuple = (),
                  probabilities: bool = False, recipe_defaults: Optional[dict] = None) -> Callable[[_T], _T]:
    """Decorator registering a loss function or an ``nn.Module`` loss class under ``name``.

    ``kind``: what the loss compares (:data:`KINDS`), so pipelines reject a misplaced loss early. ``takes``: the
    inputs beside the student's output, in call order (``("teacher_logits",)`` for ``kd``, ``("teacher_logits",
    "labels")`` for ``nkd``/``dkd``, ``("labels",)`` for ``hard_ce``). ``probabilities``: the loss compares class
    distributions. ``recipe_defaults``: for a prediction loss, the values the KD recipe takes when it leaves them
    unset, as the loss's paper trains it (``{"temperature": 4.0, "hard_label_weight": 1.0, "kd_warmup": 1/12}``
    for ``dkd``; see :func:`distiller_nlp.config.resolve_kd_defaults`). Registering a name twice raises
    :class:`DistillerError` unless ``override=True``.
    """
    if kind not in KINDS:  # checked now, not when the decorator is applied
        raise DistillerError(f"loss {name!r}: kind {kind!r} must be one of {', '.join(KINDS)}")
    return LOSSES.register(name, override=override, kind=kind, takes=tuple(takes), probabilities=probabilities,
                           recipe_defaults=dict(recipe_defaults or {}))


def unregister_loss(name: str) -> LossObject:
    """Remove ``name`` from the registry and return what was registered (unknown name -> :class:`DistillerError`)."""
    return LOSSES.unregister(name)


def get_loss(name: str) -> LossObject:
    """Return the loss registered as ``name``: a function, or an ``nn.Module`` class for stateful losses.

    An unknown name raises :class:`DistillerError` listing the known names.
    """
    return LOSSES.get(name)


def list_losses() -> list[str]:
    """Sorted list of every registered loss name."""
    return sorted(LOSSES)


def loss_kind(name: str) -> str:
    """What a registered loss compares: ``logits``, ``hidden``, ``qkv``, ``landmarks`` or ``any``."""
    return LOSSES.meta(name).get("kind", "any")


def loss_takes(name: str) -> tuple:
    """The inputs a registered loss takes beside the student's output (see :func:`register_loss`)."""
    return tuple(LOSSES.meta(name).get("takes", ()))


def prediction_losses() -> list[str]:
    """Losses usable as ``kd.pred_loss``: they compare student with teacher logits (registration order)."""
    return LOSSES.names(kind="logits", takes=lambda t: bool(t) and "teacher_logits" in t)


def is_stateful(name: str) -> bool:
    """True when ``name`` is registered as an ``nn.Module`` class (it has parameters/state to instantiate and train)."""
    obj = get_loss(name)
    return inspect.isclass(obj) and issubclass(obj, nn.Module)


__all__ = ["LOSSES", "KINDS", "register_loss", "unregister_loss", "get_loss", "list_losses", "loss_kind",
           "loss_takes", "prediction_losses", "is_stateful"]
