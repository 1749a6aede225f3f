"""``uskd``: Universal Self-KD (Yang et al., ICCV 2023), no teacher.

``CE + α·L_t + β·L_non + μ·L_weak`` (``distiller_nlp.core.losses.uskd_terms``): a soft target weight on the student's
target log-probability, Zipf non-target labels from the ranking of the weak head's and the student's predictions, and
a weak linear head on the student's middle-stage feature (``mid``) trained with label-smoothed CE. The weak head is
part of the trained module but never exported. Device-agnostic (the official code hard-codes ``.cuda()``).
``rank_on: official`` reproduces the official ranking (probabilities of the weak head + log-probabilities of the
student); ``prob`` uses probabilities on both sides, as the paper writes it (see ``zipf_soft_labels``).
Presets: ImageNet α=1, β=0.1, μ=0.005 (also the default, used on digits); CIFAR α=0.1, β=0.1, μ=0.1.
Soft/mixed labels (MixUp/CutMix vectors in ``batch["labels"]``) keep their top-2 classes as targets, as the official
code does (``uskd_terms``; cls_KD ``mmcls/models/dis_losses/uskd.py`` lines 33-36).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import hard_ce_loss, uskd_terms

from .base import METHODS, Method


@dataclass
class USKDParams:
    """Hyper-parameters of ``uskd``."""

    alpha: float = option(1.0, help="weight α of the soft target term L_t")
    beta: float = option(0.1, help="weight β of the Zipf non-target term L_non")
    mu: float = option(0.005, help="weight μ of the weak head's label-smoothed cross-entropy L_weak")
    label_smoothing: float = option(0.1, help="label smoothing of the weak head's cross-entropy")
    rank_on: str = option("official", help="ranking of the non-target classes: official (weak-head probabilities + "
                                           "student log-probabilities) or prob (probabilities on both sides)")


@METHODS.register("uskd")
class USKD(Method):
    """Universal self-KD: the student and a weak head on its middle feature, no teacher."""

    Params = USKDParams
    presets = {"cifar": {"alpha": 0.1, "beta": 0.1, "mu": 0.1},
               "imagenet": {"alpha": 1.0, "beta": 0.1, "mu": 0.005}}
    strategy = "self"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        if params.rank_on not in ("official", "prob"):
            raise DistillerError(f"params.rank_on must be official or prob, got '{params.rank_on}'")
        self.weak_head = nn.Linear(student.mid_dim, self.num_outputs)

    def loss_terms(self, batch):
        """``ce`` and the three USKD terms (``uskd_target``, ``uskd_non_target``, ``uskd_weak``)."""
        p = self.params
        out = self.student_out(batch)
        logits, labels = out["logits"], batch["labels"]
        weak = self.weak_head(out["mid"])
        ce = hard_ce_loss(logits, labels)
        l_t, l_non, l_weak = uskd_terms(logits, weak, labels, p.label_smoothing, p.rank_on)
        uskd = p.alpha * l_t + p.beta * l_non + p.mu * l_weak
        return {"loss": ce + uskd, "ce": ce, "uskd_target": l_t, "uskd_non_target": l_non, "uskd_weak": l_weak}
