"""``kd``: Hinton KD from a frozen teacher, ``hard_label_weight·CE + kd_weight·τ²·KL(p_t^τ‖p_s^τ)``.

Defaults are mdistiller's CIFAR ones (τ=4, CE 0.1, KD 0.9); its ImageNet config uses τ=1, 0.5/0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.losses import hard_ce_loss, kd_loss

from .base import METHODS, Method


@dataclass
class KDParams:
    """Hyper-parameters of ``kd``."""

    temperature: float = option(4.0, help="softmax temperature τ of the KL term")
    kd_weight: float = option(0.9, help="weight of the τ²-scaled KL term")
    hard_label_weight: float = option(0.1, help="weight of the cross-entropy on the labels")


@METHODS.register("kd")
class KD(Method):
    """Hinton KD: cross-entropy plus the tempered KL divergence to a frozen teacher."""

    Params = KDParams
    presets = {"imagenet": {"temperature": 1.0, "kd_weight": 0.5, "hard_label_weight": 0.5}}
    teacher_roles = ("teacher",)
    strategy = "offline"

    def loss_terms(self, batch):
        """``ce`` and ``kd`` (τ²·KL), weighted into ``loss``."""
        p = self.params
        logits = self.student_out(batch)["logits"]
        ce = hard_ce_loss(logits, batch["labels"])
        kd = kd_loss(logits, batch["teacher_logits"], p.temperature)
        return {"loss": p.hard_label_weight * ce + p.kd_weight * kd, "ce": ce, "kd": kd}
