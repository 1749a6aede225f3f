"""``bdkd``: BD-KD, online KD with balanced divergences (Amara et al., arXiv 2212.12965) — teacher and student are
trained together inside one module (online co-training strategy).

Student: ``CE + kd_weight·τ²·mean_i[(1−λ_r,i)·KL(p_t‖p_s) + λ_r,i·KL(p_s‖p_t)]`` (``balanced_kl_loss``, teacher
detached), with the per-sample weights from the entropy gap ``H(p_s) − H(p_t)`` by a pluggable ``rule`` (``sigmoid``
with ``sharpness``, ``hard`` switch, or fixed ``forward``/``reverse``).
Teacher: ``CE + teacher_reg_weight·τ²·KL(p_t‖p_s)`` (reverse KL as a regulariser, student detached).
No public code exists; this is a reconstruction from the abstract, labelled as such. The online teacher is built by
:meth:`BDKD.prepare`: from ``--teacher`` when given (pre-trained, then co-trained), else ``teacher_arch`` from scratch
(the online setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import balanced_kl_loss, hard_ce_loss, kd_loss

from .base import METHODS, Method

RULES = ("sigmoid", "hard", "forward", "reverse")

#: added to ``train.seed`` to initialise a from-scratch online teacher (so it differs from the student's init)
TEACHER_SEED_OFFSET = 1000


@dataclass
class BDKDParams:
    """Hyper-parameters of ``bdkd``."""

    temperature: float = option(4.0, help="softmax temperature τ of both KL terms")
    kd_weight: float = option(1.0, help="weight of the student's balanced-KL term")
    rule: str = option("sigmoid", help="per-sample forward/reverse KL weight from the entropy gap: sigmoid (smooth, "
                                       "with sharpness), hard (switch), forward or reverse (fixed)")
    sharpness: float = option(1.0, help="slope of the sigmoid rule")
    teacher_reg_weight: float = option(1.0, help="weight of the teacher's reverse-KL regulariser towards the student")


@METHODS.register("bdkd")
class BDKD(Method):
    """Online BD-KD: student and teacher co-trained in one module; the teacher is exported to ``DIR/teacher``."""

    Params = BDKDParams
    strategy = "online"

    def __init__(self, student, params, ctx, online_teacher=None):
        super().__init__(student, params, ctx)
        if params.rule not in RULES:
            raise DistillerError(f"params.rule must be sigmoid, hard, forward or reverse, got '{params.rule}'")
        if online_teacher is None:
            raise DistillerError("bdkd needs an online teacher model")
        self.teacher = online_teacher

    @classmethod
    def prepare(cls, run) -> dict:
        """The online teacher: ``--teacher`` (checked against the data, recorded as the run's teacher), else a fresh
        ``teacher_arch`` (the dataset's default teacher architecture) seeded with ``train.seed + 1000``."""
        cfg = run.cfg
        if cfg.teacher:
            teacher = run.load_model(cfg.teacher, "teacher")
            run.record_teacher("teacher", cfg.teacher, with_metrics=False)
        else:
            teacher = run.build_model(run.teacher_arch, seed=cfg.train.seed + TEACHER_SEED_OFFSET)
        return {"online_teacher": teacher}

    def loss_terms(self, batch):
        """Student ``ce`` + ``bdkd`` and teacher ``teacher_ce`` + ``teacher_reg``, summed into one ``loss``."""
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
        """The student into ``directory`` and the co-trained teacher into ``directory/teacher``."""
        from vision_kd.models import save_model

        super().export(directory, extra)
        save_model(self.teacher, os.path.join(directory, "teacher"), {**extra, "role": "online teacher"})
