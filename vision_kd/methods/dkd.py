"""``dkd``: Decoupled KD (Zhao et al., CVPR 2022): ``CE + w(step)·(α·TCKD + β·NCKD)·τ²`` with the loss weight
``w`` warmed up linearly over ``warmup_epochs``. Defaults are mdistiller's CIFAR-100 ones (megvii-research/mdistiller
@a08d46f, ``mdistiller/engine/cfg.py`` lines 162-167: CE weight 1, α=1, β=8, τ=4, ``WARMUP = 20`` epochs of the
240-epoch schedule, which no ``configs/cifar100/dkd/*.yaml`` overrides; ``mdistiller/distillers/DKD.py`` line 72:
``min(epoch / warmup, 1)``, here counted per batch); the ``imagenet`` preset is
``configs/imagenet/r34_r18/dkd.yaml`` (β=0.5, τ=1, ``WARMUP: 1`` of 100 epochs). A short schedule must set its own
warm-up (the 30-epoch ``recipes/vision/dkd_digits.yaml`` keeps 5). The loss itself is
``distiller_nlp.core.losses.dkd_loss``."""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.losses import dkd_loss, hard_ce_loss

from .base import METHODS, Method, WarmupCounter


@dataclass
class DKDParams:
    """Hyper-parameters of ``dkd``."""

    alpha: float = option(1.0, help="weight α of the target-class term TCKD")
    beta: float = option(8.0, help="weight β of the non-target-class term NCKD")
    temperature: float = option(4.0, help="softmax temperature τ")
    warmup_epochs: float = option(20.0, help="epochs over which the DKD weight rises linearly from 0 to 1 "
                                             "(mdistiller: 20 of 240; 0 = full weight from the start)")
    hard_label_weight: float = option(1.0, help="weight of the cross-entropy on the labels")


@METHODS.register("dkd")
class DKD(Method):
    """Decoupled KD from a frozen teacher, with a linear warm-up of the DKD weight."""

    Params = DKDParams
    presets = {"imagenet": {"beta": 0.5, "temperature": 1.0, "warmup_epochs": 1.0}}
    teacher_roles = ("teacher",)
    strategy = "offline"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        self.warmup = WarmupCounter(params.warmup_epochs, self.steps_per_epoch)

    def loss_terms(self, batch):
        """``ce``, ``dkd`` and the current warm-up factor ``dkd_warmup``."""
        p = self.params
        logits = self.student_out(batch)["logits"]
        ce = hard_ce_loss(logits, batch["labels"])
        dkd = dkd_loss(logits, batch["teacher_logits"], batch["labels"], p.alpha, p.beta, p.temperature)
        w = self.warmup.step(self.training)
        return {"loss": p.hard_label_weight * ce + w * dkd, "ce": ce, "dkd": dkd,
                "dkd_warmup": w}
