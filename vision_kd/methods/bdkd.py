"""``bdkd``: BD-KD, online KD with balanced divergences (Amara, Sepahvand, Meyer, Gross & Clark, "BD-KD: Balancing
the Divergences for Online Knowledge Distillation", arXiv 2212.12965) — teacher and student are trained together
inside one module (online co-training strategy).

With ``D_g(a‖b) = τ²·mean_n[(1 − λ_n)·KL(p_b‖p_a)_n + λ_n·KL(p_a‖p_b)_n]``, ``λ_n = g(H(p_a,n) − H(p_b,n))``
(detached; ``balanced_kl_loss(a, b)``, the network ``a`` learning from ``b``):

- Student: ``L_S = CE(y, z_s) + kd_weight·D_g(z_s ‖ sg(z_t))`` — forward ``KL(p_t‖p_s)`` and reverse ``KL(p_s‖p_t)``
  weighted per sample by the entropy gap ``H(p_s) − H(p_t)`` (``rule``: ``sigmoid`` with ``sharpness``, ``hard``
  switch, fixed ``forward``/``reverse``);
- Teacher: ``L_T = CE(y, z_t) + teacher_reg_weight·D_g'(z_t ‖ sg(z_s))`` — the same balance with the roles swapped:
  ``(1 − λ'_n)·KL(p_s‖p_t) + λ'_n·KL(p_t‖p_s)``, ``λ'_n = g'(H(p_t) − H(p_s))``, gradient to the teacher only
  (``sg`` = stop-gradient); ``g' = g`` unless ``teacher_rule`` names another rule.

Sources and how sure this is: no code is public and the paper's method section (its equations) could not be
retrieved here, so the form is read from the abstracts. v2 (arXiv 2212.12965v2, ECCV-format revision): "adjusting the
conventional online distillation loss on both the student and teacher losses, employing sample-wise weighting of
forward and reverse Kullback-Leibler divergence" — so the teacher term is balanced too; this is the symmetric reading
(the teacher's term is the student's with the roles swapped), a reconstruction, not a transcription. v1 put the
balance "at the level of the student distillation loss" only, and a third-party summary of v2 (sciencestack.ai) says
"the teacher objective uses reverse KL as a regularizer": ``teacher_rule: reverse`` gives exactly that earlier
reading, ``τ²·KL(p_t‖p_s)`` with gradient to the teacher. Under the ``sigmoid`` rule ``λ' = 1 − λ`` (σ(−x) = 1 − σ(x)),
so per sample the teacher's term has the student's value and the pair is one balanced divergence whose gradient is
routed to each network; under ``forward`` the teacher's term is DML's ``KL(p_s‖p_t)``.

The online teacher is built by :meth:`BDKD.prepare`: from ``--teacher`` when given (pre-trained, then co-trained), else
``teacher_arch`` from scratch (the online setting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import balanced_kl_loss, hard_ce_loss

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
    teacher_reg_weight: float = option(1.0, help="weight of the teacher's balanced-KL term towards the student")
    teacher_rule: str = option("same", help="forward/reverse weighting of the teacher's term (roles swapped: its "
                                            "entropy gap is H_t - H_s): same (the student's rule), sigmoid, hard, "
                                            "forward or reverse (reverse = the plain KL(p_t||p_s) regulariser)")


@METHODS.register("bdkd")
class BDKD(Method):
    """Online BD-KD: student and teacher co-trained in one module; the teacher is exported to ``DIR/teacher``."""

    Params = BDKDParams
    strategy = "online"

    def __init__(self, student, params, ctx, online_teacher=None):
        super().__init__(student, params, ctx)
        if params.rule not in RULES:
            raise DistillerError(f"params.rule must be sigmoid, hard, forward or reverse, got '{params.rule}'")
        if params.teacher_rule not in ("same", *RULES):
            raise DistillerError("params.teacher_rule must be same, sigmoid, hard, forward or reverse, got "
                                 f"'{params.teacher_rule}'")
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
        """Student ``ce`` + ``bdkd`` and teacher ``teacher_ce`` + ``teacher_reg`` (its balanced term), summed into
        one ``loss``; each KD term's gradient reaches only the network it trains."""
        p = self.params
        x, labels = batch["pixel_values"], batch["labels"]
        s = self.student(x)["logits"]
        t = self.teacher(x)["logits"]
        ce = hard_ce_loss(s, labels)
        bd = balanced_kl_loss(s, t.detach(), p.temperature, p.rule, p.sharpness)  # gradient to the student only
        teacher_ce = hard_ce_loss(t, labels)
        teacher_rule = p.rule if p.teacher_rule == "same" else p.teacher_rule
        # roles swapped: the teacher learns from the (detached) student, its own entropy gap H_t − H_s
        teacher_reg = balanced_kl_loss(t, s.detach(), p.temperature, teacher_rule, p.sharpness)
        student_loss = ce + p.kd_weight * bd
        teacher_loss = teacher_ce + p.teacher_reg_weight * teacher_reg
        return {"loss": student_loss + teacher_loss, "ce": ce, "bdkd": bd, "teacher_ce": teacher_ce,
                "teacher_reg": teacher_reg}

    def export(self, directory, extra):
        """The student into ``directory`` and the co-trained teacher into ``directory/teacher``."""
        from vision_kd.models import save_model

        super().export(directory, extra)
        save_model(self.teacher, os.path.join(directory, "teacher"), {**extra, "role": "online teacher"})
