"""``landmark_kd``: KD-Loss for landmark regression (Fard & Mahoor, CVIU 2022) with two frozen teachers.

Tough teacher: trained on the ground-truth landmarks (``vision-kd train --method ce --dataset landmarks``); Tolerant
teacher: trained on ASM-smoothed landmarks (``--set params.target=asm``). Unless ``--teacher`` / ``--tolerant-teacher``
are given, both are trained once and cached (:meth:`LandmarkKD.teacher_path`). Student loss
``2·main + ALoss_tough + ALoss_tol`` (``distiller_nlp.core.losses.landmark_kd_loss``; attraction 1.9/1.8,
repulsion −0.45/−0.4, band 15 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.losses import landmark_kd_loss, landmark_main_loss, logits_mse_loss

from vision_kd.data import LANDMARKS

from .base import METHODS, Method

#: the ``ce`` target each default teacher regresses
TEACHER_TARGETS = {"tough": "gt", "tolerant": "asm"}


@dataclass
class LandmarkKDParams:
    """Hyper-parameters of ``landmark_kd``."""

    main_weight: float = option(2.0, help="weight of the main loss (bounded by the Tolerant teacher)")
    tough_weight: float = option(1.0, help="weight of the Tough teacher's assistive loss")
    tolerant_weight: float = option(1.0, help="weight of the Tolerant teacher's assistive loss")
    tough_attract: float = option(1.9, help="Tough ALoss weight beyond the teacher (attraction)")
    tough_repel: float = option(-0.45, help="Tough ALoss weight between the band and the teacher (repulsion)")
    tolerant_attract: float = option(1.8, help="Tolerant ALoss weight beyond the teacher (attraction)")
    tolerant_repel: float = option(-0.4, help="Tolerant ALoss weight between the band and the teacher (repulsion)")


@METHODS.register("landmark_kd")
class LandmarkKD(Method):
    """KD-Loss: a landmark regression student guided by a Tough and a Tolerant frozen teacher."""

    Params = LandmarkKDParams
    teacher_roles = ("tough", "tolerant")
    strategy = "offline"
    tasks = (LANDMARKS,)

    @classmethod
    def teacher_path(cls, role: str, run) -> str:
        """``--teacher`` (Tough) / ``--tolerant-teacher``, else a cached ``ce`` landmark teacher regressing the
        ground truth (Tough) or the ASM-smoothed shapes (Tolerant)."""
        given = run.cfg.tolerant_teacher if role == "tolerant" else run.cfg.teacher
        return given or run.default_teacher(role, task=run.cfg.task or LANDMARKS,
                                            params={"target": TEACHER_TARGETS[role]})

    def loss_terms(self, batch):
        """``loss`` (KD-Loss) and, for logging, the detached ``main`` term and plain ``mse``."""
        p = self.params
        out = self.student_out(batch)["logits"]
        y = batch["labels"].to(out.dtype)
        tough, tol = batch["tough_logits"], batch["tolerant_logits"]
        loss = landmark_kd_loss(out, y, tough, tol, p.main_weight, p.tough_weight, p.tolerant_weight,
                                p.tough_attract, p.tough_repel, p.tolerant_attract, p.tolerant_repel)
        return {"loss": loss, "main": landmark_main_loss(out, y, tol).detach(),
                "mse": logits_mse_loss(out, y).detach()}
