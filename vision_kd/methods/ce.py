"""``ce``: plain supervised training (teachers and the no-KD baseline).

Classification: cross-entropy on the labels (``hard_ce``). Landmarks: MSE regression (``logits_mse``) on the ground
truth (``target: gt``, the Tough teacher of KD-Loss) or on ASM-smoothed landmarks (``target: asm``, the Tolerant one).
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import hard_ce_loss, logits_mse_loss

from vision_kd.data import CLASSIFICATION, LANDMARKS

from .base import METHODS, Method


@dataclass
class CEParams:
    """Hyper-parameters of ``ce``."""

    target: str = option("gt", help="landmarks only: regress the ground truth (gt) or the ASM-smoothed shapes (asm)")


@METHODS.register("ce")
class CE(Method):
    """Supervised training of the model alone: cross-entropy, or MSE on landmark coordinates."""

    Params = CEParams
    tasks = (CLASSIFICATION, LANDMARKS)

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        if params.target not in ("gt", "asm"):
            raise DistillerError(f"params.target must be gt or asm, got '{params.target}'")
        if params.target == "asm" and self.task != LANDMARKS:
            raise DistillerError("params.target asm applies to landmark data only")

    def loss_terms(self, batch):
        """``ce`` (classification) or ``mse`` against the chosen landmark target."""
        out = self.student_out(batch)["logits"]
        if self.task == LANDMARKS:
            target = batch["asm_labels"] if self.params.target == "asm" else batch["labels"]
            mse = logits_mse_loss(out, target.to(out.dtype))
            return {"loss": mse, "mse": mse}
        ce = hard_ce_loss(out, batch["labels"])
        return {"loss": ce, "ce": ce}
