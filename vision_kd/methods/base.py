"""What every vision KD method is: a trainable ``nn.Module`` driven by the shared engine.

``forward(batch)`` returns ``{"loss": total, "<term>": value, ...}`` (terms are logged by name) and
``predict(batch)`` the student's outputs (class logits, or landmark coordinates). Frozen teachers are *not* part of the
module: the method declares the roles it needs in ``teacher_roles`` and reads their outputs from the batch
(``batch["teacher_logits"]``, ``batch["tough_logits"]`` ...), which :mod:`vision_kd.strategies` puts there (live, under
``no_grad``, or cached once). Everything a method trains besides the student (USKD's weak head, BD-KD's online teacher,
LW-KD's discriminator) lives inside the module, so the one engine optimises and checkpoints it; ``export`` writes the
student only (plus, for online co-training, the co-trained teacher in ``DIR/teacher``).

Hyper-parameters: a ``Params`` dataclass per method (unknown keys are errors), with per-dataset-family presets in
``presets`` (``"cifar"``, ``"imagenet"``) applied before the user's values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
import torch.nn as nn

from distiller_nlp.core.config import from_dict
from distiller_nlp.core.errors import DistillerError

from vision_kd.data import CLASSIFICATION


@dataclass
class NoParams:
    pass


class Method(nn.Module):
    """Base class; subclasses set ``name``, ``Params``, ``teacher_roles``, ``strategy`` and implement ``loss_terms``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    presets: ClassVar[dict] = {}
    teacher_roles: ClassVar[tuple] = ()  # frozen teachers read from the batch as f"{role}_logits"
    strategy: ClassVar[str] = "self"  # offline | self | online | adversarial (see vision_kd.strategies)
    tasks: ClassVar[tuple] = (CLASSIFICATION,)

    def __init__(self, student: nn.Module, params, ctx):
        super().__init__()
        self.student = student
        self.params = params
        self.task = ctx.data.task
        self.num_outputs = ctx.data.num_outputs
        self.steps_per_epoch = max(1, int(ctx.batches_per_epoch))

    @classmethod
    def resolve_params(cls, user: dict, family: str = "", source: str = "config"):
        merged = {**cls.presets.get(family, {}), **(user or {})}
        return from_dict(cls.Params, merged, source, prefix="params.")

    def params_dict(self) -> dict:
        return asdict(self.params)

    def student_out(self, batch) -> dict:
        return self.student(batch["pixel_values"])

    def predict(self, batch) -> torch.Tensor:
        return self.student(batch["pixel_values"])["logits"]

    def loss_terms(self, batch) -> dict:
        raise NotImplementedError

    def forward(self, batch) -> dict:
        terms = self.loss_terms(batch)
        if "loss" not in terms:
            raise DistillerError(f"method {self.name} returned no 'loss'")
        return terms

    def export(self, directory: str, extra: dict) -> None:
        from vision_kd.models import save_model

        save_model(self.student, directory, extra)


class WarmupCounter(nn.Module):
    """Counts training forward passes in a buffer (checkpointed, so ``--resume`` continues the warm-up) and returns
    ``min(1, batches / (epochs · batches_per_epoch))``: DKD's linear warm-up of its loss weight."""

    def __init__(self, epochs: float, batches_per_epoch: int):
        super().__init__()
        self.total = float(epochs) * max(1, batches_per_epoch)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def step(self, training: bool) -> float:
        if training:
            self.count += 1
        if self.total <= 0:
            return 1.0
        return min(1.0, float(self.count) / self.total)
