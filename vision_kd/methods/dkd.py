"""``dkd``: Decoupled KD (Zhao et al., CVPR 2022): ``CE + w(step)·(α·TCKD + β·NCKD)·τ²`` with the loss weight
``w`` warmed up linearly over ``warmup_epochs`` (mdistiller: α=1, β=8, τ=4, 20 warm-up epochs of 240; on the short
digits schedule we warm up over 5 epochs). The loss itself is ``distiller_nlp.core.losses.dkd_loss``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distiller_nlp.core.losses import dkd_loss, hard_ce_loss

from .base import Method, WarmupCounter


@dataclass
class DKDParams:
    alpha: float = 1.0
    beta: float = 8.0
    temperature: float = 4.0
    warmup_epochs: float = 5.0
    hard_label_weight: float = 1.0


class DKD(Method):
    name = "dkd"
    Params = DKDParams
    presets = {"imagenet": {"beta": 0.5, "temperature": 1.0, "warmup_epochs": 1.0}}
    teacher_roles = ("teacher",)
    strategy = "offline"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        self.warmup = WarmupCounter(params.warmup_epochs, self.steps_per_epoch)

    def loss_terms(self, batch):
        p = self.params
        logits = self.student_out(batch)["logits"]
        ce = hard_ce_loss(logits, batch["labels"])
        dkd = dkd_loss(logits, batch["teacher_logits"], batch["labels"], p.alpha, p.beta, p.temperature)
        w = self.warmup.step(self.training)
        return {"loss": p.hard_label_weight * ce + w * dkd, "ce": ce, "dkd": dkd,
                "dkd_warmup": torch.tensor(w)}
