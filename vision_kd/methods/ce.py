"""``ce``: plain supervised training (teachers and the no-KD baseline).

Classification: cross-entropy on the labels (``hard_ce``). Landmarks: MSE regression (``logits_mse``) on the ground
truth (``target: gt``, the Tough teacher of KD-Loss) or on ASM-smoothed landmarks (``target: asm``, the Tolerant one).
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.losses import hard_ce_loss, logits_mse_loss
from distiller_nlp.core.errors import DistillerError

from vision_kd.data import CLASSIFICATION, LANDMARKS

from .base import Method


@dataclass
class CEParams:
    target: str = "gt"  # landmarks only: gt | asm


class CE(Method):
    name = "ce"
    Params = CEParams
    tasks = (CLASSIFICATION, LANDMARKS)

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        if params.target not in ("gt", "asm"):
            raise DistillerError(f"params.target must be gt or asm, got '{params.target}'")
        if params.target == "asm" and self.task != LANDMARKS:
            raise DistillerError("params.target asm applies to landmark data only")

    def loss_terms(self, batch):
        out = self.student_out(batch)["logits"]
        if self.task == LANDMARKS:
            target = batch["asm_labels"] if self.params.target == "asm" else batch["labels"]
            mse = logits_mse_loss(out, target.to(out.dtype))
            return {"loss": mse, "mse": mse}
        ce = hard_ce_loss(out, batch["labels"])
        return {"loss": ce, "ce": ce}
