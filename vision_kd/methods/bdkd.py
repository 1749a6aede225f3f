"""``bdkd``: BD-KD, online KD with balanced divergences (Amara et al., arXiv 2212.12965) — teacher and student are
trained together inside one module (online co-training strategy).

Student: ``CE + kd_weight·τ²·mean_i[(1−λ_r,i)·KL(p_t‖p_s) + λ_r,i·KL(p_s‖p_t)]`` (``balanced_kl_loss``, teacher
detached), with the per-sample weights from the entropy gap ``H(p_s) − H(p_t)`` by a pluggable ``rule`` (``sigmoid``
with ``sharpness``, ``hard`` switch, or fixed ``forward``/``reverse``).
Teacher: ``CE + teacher_reg_weight·τ²·KL(p_t‖p_s)`` (reverse KL as a regulariser, student detached).
No public code exists; this is a reconstruction from the abstract, labelled as such. The teacher starts from
``--teacher`` when given (pre-trained, then co-trained), else from scratch (the online setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from distiller_nlp.core.losses import balanced_kl_loss, hard_ce_loss, kd_loss
from distiller_nlp.core.errors import DistillerError

from .base import Method


@dataclass
class BDKDParams:
    temperature: float = 4.0
    kd_weight: float = 1.0
    rule: str = "sigmoid"  # sigmoid | hard | forward | reverse
    sharpness: float = 1.0
    teacher_reg_weight: float = 1.0


class BDKD(Method):
    name = "bdkd"
    Params = BDKDParams
    strategy = "online"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        if params.rule not in ("sigmoid", "hard", "forward", "reverse"):
            raise DistillerError(f"params.rule must be sigmoid, hard, forward or reverse, got '{params.rule}'")
        if ctx.online_teacher is None:
            raise DistillerError("bdkd needs an online teacher model")
        self.teacher = ctx.online_teacher

    def loss_terms(self, batch):
        p = self.params
        x, labels = batch["pixel_values"], batch["labels"]
        s = self.student(x)["logits"]
        t = self.teacher(x)["logits"]
        ce = hard_ce_loss(s, labels)
        bd = balanced_kl_loss(s, t.detach(), p.temperature, p.rule, p.sharpness)
        teacher_ce = hard_ce_loss(t, labels)
        teacher_reg = kd_loss(s.detach(), t, p.temperature)  # τ²·KL(p_t ‖ p_s), gradient to the teacher only
        student_loss = ce + p.kd_weight * bd
        teacher_loss = teacher_ce + p.teacher_reg_weight * teacher_reg
        return {"loss": student_loss + teacher_loss, "ce": ce, "bdkd": bd, "teacher_ce": teacher_ce,
                "teacher_reg": teacher_reg}

    def export(self, directory, extra):
        from vision_kd.models import save_model

        super().export(directory, extra)
        save_model(self.teacher, os.path.join(directory, "teacher"), {**extra, "role": "online teacher"})
