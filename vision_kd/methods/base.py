"""What every vision KD method is: a trainable ``nn.Module`` driven by the shared engine, registered in
:data:`METHODS`.

``forward(batch)`` returns ``{"loss": total, "<term>": value, ...}`` (terms are logged by name) and
``predict(batch)`` the student's outputs (class logits, or landmark coordinates). Frozen teachers are *not* part of the
module: the method declares the roles it needs in ``teacher_roles`` and reads their outputs from the batch
(``batch["teacher_logits"]``, ``batch["tough_logits"]`` ...), which :mod:`vision_kd.strategies` puts there (live, under
``no_grad``, or cached once). Everything a method trains besides the student (USKD's weak head, BD-KD's online teacher,
LW-KD's discriminator) lives inside the module, so the one engine optimises and checkpoints it; ``export`` writes the
student only (plus, for online co-training, the co-trained teacher in ``DIR/teacher``).

A method owns what it needs besides its student and frozen teachers: :meth:`Method.prepare` builds it (BD-KD's online
teacher, LW-KD's synthetic-data teacher outputs) with the services of the run context
(:class:`vision_kd.train.RunContext`) and returns it as keyword arguments of the constructor. Where a frozen teacher
comes from is :meth:`Method.teacher_path` (``--teacher``, else the cached default teacher).

Hyper-parameters: a ``Params`` dataclass per method whose fields are declared with
:func:`~distiller_nlp.core.config.option` (so each carries its help; unknown keys are errors), with per-dataset-family
presets in ``presets`` (``"cifar"``, ``"imagenet"``) applied before the user's values (``--set params.X=...``).

A new method is one class in one file::

    @METHODS.register("my_kd")
    class MyKD(Method):
        \"\"\"...\"\"\"
        Params = MyKDParams
        teacher_roles = ("teacher",)
        strategy = "offline"

        def loss_terms(self, batch): ...

plus its import in :mod:`vision_kd.methods` (the registration order is the order of ``vision-kd list``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from distiller_nlp.core.config import from_dict
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

from vision_kd.data import CLASSIFICATION, VisionData


@dataclass
class NoParams:
    """The ``Params`` of a method without hyper-parameters."""


@dataclass(frozen=True)
class MethodContext:
    """What a method's constructor knows about the run besides its student, params and :meth:`Method.prepare` extras.

    Attributes:
        data: the loaded dataset (its ``task``, ``num_outputs`` and image shape).
        batches_per_epoch: training batches per epoch seen by one process (DKD's warm-up is counted in them).
    """

    data: VisionData
    batches_per_epoch: int


class Method(nn.Module):
    """Base class of the vision KD methods.

    A subclass is registered with ``@METHODS.register(name)`` (which sets ``name``), sets ``Params``, ``presets``,
    ``teacher_roles``, ``strategy`` and ``tasks`` as needed, and implements :meth:`loss_terms`. Constructor:
    ``(student, params, ctx, **extras)`` where ``ctx`` is a :class:`MethodContext` and ``extras`` what
    :meth:`prepare` returned.
    """

    #: the ``--method`` name (set by ``METHODS.register``)
    name: ClassVar[str] = ""
    #: the hyper-parameter dataclass (``--set params.X=...``)
    Params: ClassVar[type] = NoParams
    #: ``family -> {param: value}`` applied before the user's params (``cifar``, ``imagenet``)
    presets: ClassVar[dict] = {}
    #: frozen teachers read from the batch as ``f"{role}_logits"``
    teacher_roles: ClassVar[tuple] = ()
    #: offline | self | online | adversarial (see :mod:`vision_kd.strategies`)
    strategy: ClassVar[str] = "self"
    #: the data tasks the method applies to
    tasks: ClassVar[tuple] = (CLASSIFICATION,)

    def __init__(self, student: nn.Module, params, ctx: MethodContext):
        super().__init__()
        self.student = student
        self.params = params
        self.task = ctx.data.task
        self.num_outputs = ctx.data.num_outputs
        self.steps_per_epoch = max(1, int(ctx.batches_per_epoch))

    # ------------------------------------------------------------------------------------------------ run setup

    @classmethod
    def resolve_params(cls, user: dict, family: str = "", source: str = "config"):
        """The method's ``Params`` from its ``presets[family]`` updated by ``user`` (unknown keys raise a
        :class:`DistillerError` naming ``params.<key>`` and ``source``)."""
        merged = {**cls.presets.get(family, {}), **(user or {})}
        return from_dict(cls.Params, merged, source, prefix="params.")

    @classmethod
    def teacher_path(cls, role: str, run) -> str:
        """The directory of the frozen teacher for ``role`` (one of ``teacher_roles``): ``--teacher``, else the
        dataset's default teacher (trained once and cached, ``run.default_teacher(role)``).

        ``run`` is the run context (:class:`vision_kd.train.RunContext`). Override when a role has its own flag or
        its default teacher trains differently (``landmark_kd``'s Tough and Tolerant teachers)."""
        return run.cfg.teacher or run.default_teacher(role)

    @classmethod
    def prepare(cls, run) -> dict:
        """Build what the method needs besides its student and frozen teachers; returns keyword arguments for the
        constructor (default: none).

        Called once per run, after the data, params (``run.params``) and frozen teachers are loaded and before the
        student is built. ``run`` (:class:`vision_kd.train.RunContext`) offers ``load_model`` (a saved model checked
        against the data), ``build_model`` (a fresh architecture for the data), ``default_teacher`` (the cache of
        auto-trained teachers) and ``record_teacher`` (a teacher path and its metrics into ``metrics.json``)."""
        return {}

    # ------------------------------------------------------------------------------------------------ training

    def params_dict(self) -> dict:
        """The resolved hyper-parameters as a plain dict (``metrics.json``'s ``method_params``)."""
        return asdict(self.params)

    def student_out(self, batch) -> dict:
        """The student's output dict (``logits``, ``feature``, ``mid``) on the batch's images."""
        return self.student(batch["pixel_values"])

    def predict(self, batch) -> torch.Tensor:
        """What the engine evaluates: the student's logits (or landmark coordinates)."""
        return self.student(batch["pixel_values"])["logits"]

    def loss_terms(self, batch) -> dict:
        """``{"loss": total, "<term>": value, ...}`` for one training batch (each term is logged by name)."""
        raise NotImplementedError

    def forward(self, batch) -> dict:
        """:meth:`loss_terms`, checked to hold a ``loss``."""
        terms = self.loss_terms(batch)
        if "loss" not in terms:
            raise DistillerError(f"method {self.name} returned no 'loss'")
        return terms

    def export(self, directory: str, extra: dict) -> None:
        """Save the student (``model.safetensors`` + ``vision_model.json`` with ``extra``) into ``directory``."""
        from vision_kd.models import save_model

        save_model(self.student, directory, extra)


def _check_method(name: str, obj, meta: dict) -> None:
    """Refuse what is not a :class:`Method` subclass, then name the class after its registry key."""
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise DistillerError(f"method {name!r} must be a Method subclass, got {obj!r}")
    declared = obj.__dict__.get("name")
    if declared and declared != name:
        raise DistillerError(f"method class {obj.__qualname__} declares name {declared!r} but is registered as "
                             f"{name!r}")
    obj.name = name


#: ``--method name -> Method subclass`` (``vision-kd list`` and the ``--method`` help read it)
METHODS: Registry[type] = Registry("method", check=_check_method)


def get_method(name: str) -> type:
    """The :class:`Method` subclass registered as ``name``; an unknown name is a :class:`DistillerError` listing the
    known methods."""
    return METHODS.get(name)


class WarmupCounter(nn.Module):
    """Counts training forward passes in a buffer (checkpointed, so ``--resume`` continues the warm-up) and returns
    ``min(1, batches / (epochs · batches_per_epoch))``: DKD's linear warm-up of its loss weight."""

    def __init__(self, epochs: float, batches_per_epoch: int):
        super().__init__()
        self.total = float(epochs) * max(1, batches_per_epoch)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def step(self, training: bool) -> torch.Tensor:
        """Count one batch when ``training``; return the current warm-up factor in [0, 1] as a 0-dim fp32 tensor on
        the counter's device (no host sync per step)."""
        if training:
            self.count += 1
        if self.total <= 0:
            return torch.ones((), device=self.count.device)
        return torch.clamp(self.count.float() / self.total, max=1.0)


__all__ = ["METHODS", "Method", "MethodContext", "NoParams", "WarmupCounter", "get_method"]
