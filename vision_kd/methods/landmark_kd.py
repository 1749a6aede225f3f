"""``landmark_kd``: KD-Loss for landmark regression (Fard & Mahoor, CVIU 2022) with two frozen teachers.

Tough teacher: trained on the ground-truth landmarks (``vision-kd train --method ce --dataset landmarks``); Tolerant
teacher: trained on ASM-smoothed landmarks (``--set params.target=asm``). Student loss
``2·main + ALoss_tough + ALoss_tol`` (``distiller_nlp.core.losses.landmark_kd_loss``; attraction 1.9/1.8,
repulsion −0.45/−0.4, band 15 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.losses import landmark_kd_loss, landmark_main_loss, logits_mse_loss

from vision_kd.data import LANDMARKS

from .base import Method


@dataclass
class LandmarkKDParams:
    main_weight: float = 2.0
    tough_weight: float = 1.0
    tolerant_weight: float = 1.0
    tough_attract: float = 1.9
    tough_repel: float = -0.45
    tolerant_attract: float = 1.8
    tolerant_repel: float = -0.4


class LandmarkKD(Method):
    name = "landmark_kd"
    Params = LandmarkKDParams
    teacher_roles = ("tough", "tolerant")
    strategy = "offline"
    tasks = (LANDMARKS,)

    def loss_terms(self, batch):
        p = self.params
        out = self.student_out(batch)["logits"]
        y = batch["labels"].to(out.dtype)
        tough, tol = batch["tough_logits"], batch["tolerant_logits"]
        loss = landmark_kd_loss(out, y, tough, tol, p.main_weight, p.tough_weight, p.tolerant_weight,
                                p.tough_attract, p.tough_repel, p.tolerant_attract, p.tolerant_repel)
        return {"loss": loss, "main": landmark_main_loss(out, y, tol).detach(),
                "mse": logits_mse_loss(out, y).detach()}
