"""``nkd``: Normalized KD (Yang et al., ICCV 2023): ``CE + nkd_loss`` with τ and γ per dataset family (class
default and ImageNet τ=1 γ=1.5, CIFAR-100 τ=3 γ=3.5, from cls_KD's configs). The loss is
``distiller_nlp.core.losses.nkd_loss`` (the target column is really removed: no cls_KD issue #16 mask bug). A soft/mixed
label is reduced to its argmax, as the official code does (cls_KD ``mmcls/models/dis_losses/nkd.py`` lines 25-26)."""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.losses import hard_ce_loss, nkd_loss

from .base import METHODS, Method


@dataclass
class NKDParams:
    """Hyper-parameters of ``nkd``."""

    temperature: float = option(1.0, help="softmax temperature τ of the non-target term")
    gamma: float = option(1.5, help="weight γ of the normalized non-target term")
    hard_label_weight: float = option(1.0, help="weight of the cross-entropy on the labels")


@METHODS.register("nkd")
class NKD(Method):
    """Normalized KD from a frozen teacher."""

    Params = NKDParams
    presets = {"cifar": {"temperature": 3.0, "gamma": 3.5}, "imagenet": {"temperature": 1.0, "gamma": 1.5}}
    teacher_roles = ("teacher",)
    strategy = "offline"

    def loss_terms(self, batch):
        """``ce`` and ``nkd``."""
        p = self.params
        logits = self.student_out(batch)["logits"]
        ce = hard_ce_loss(logits, batch["labels"])
        nkd = nkd_loss(logits, batch["teacher_logits"], batch["labels"], p.temperature, p.gamma)
        return {"loss": p.hard_label_weight * ce + nkd, "ce": ce, "nkd": nkd}
