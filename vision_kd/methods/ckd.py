"""``ckd``: Comparative Knowledge Distillation (Wilf, Xu, Liang, Obolenskiy, Fried & Morency, arXiv 2311.02253,
WACV 2025; code alextxu/ckd @f8cc6bd "WACV 2025 release", RepDistiller-based).

Setting: few teacher calls (reduced-teacher-inference KD) — the teacher is run once per training image and its
logits cached (``dataset/cifar100.py`` caches them for a ``--subset_size`` subset; here the cached-teacher strategy
of :mod:`vision_kd.strategies` does exactly that whenever the training set is not augmented, and
``--max-train-examples`` is the subset). The student learns from *differences between samples*: for groups of
samples (``pos_and_neg`` = 2 → one positive vs one negative; 3 → two vs one, ``dataset/sampling/CKDSample.py``),
group-mean logits are combined by ``mix`` (``helper/CKDTrainHelpers.py::mix_func``: ``ckd`` x − y, ``ckd_add``
½x + ½y, ``ckd_mixup`` λx + (1−λ)y with λ ~ Beta(1, 1) per batch) and matched by MSE
(:func:`distiller_nlp.core.losses.relational_kd.comparative_kd_terms`)::

    L = cls_weight·MSE(Δz_s, Δy) + rel_weight·MSE(Δz_s, Δz_t) (+ kd_weight·kd(z_s, z_t, τ))

— the reference's ``criterion_cls = MSELoss`` (the student never sees a plain CE in CKD), ``criterion_rel =
MSELoss``, ``w_cls`` 1, ``w_rel`` 1 (``w_rel_defaults['ckd']``), ``w_kd`` 0, ``kd_T`` 4, ``pos_and_neg`` 2 (sweep
``ckd.yml``: 2 and 3; lr 0.1/0.05/0.025; subsets 2,000–6,000 CIFAR-100 images).

Simplified: the reference samples up to ``max_rel_samples`` = 100,000 fixed index groups from the subset once and
batches 64 *groups* (128–192 images per step); here groups are drawn afresh inside each batch — group g is the
batch permutation's samples g, g−1, … (cyclic shifts, so the members are distinct and every image is in
``pos_and_neg`` groups) — so one step costs one student forward of B images and yields B groups. The reference
forwards the positive and negative images as two batches (BatchNorm statistics per half); here they share one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import kd_loss
from distiller_nlp.core.losses.relational_kd import CKD_MIXES, comparative_groups, comparative_kd_terms

from .base import METHODS, Method


@dataclass
class CKDParams:
    """Hyper-parameters of ``ckd``."""

    pos_and_neg: int = option(2, help="samples per comparison group: 2 (1 vs 1) or 3 (2 vs 1) (--pos_and_neg)",
                              min=2)
    mix: str = option("ckd", help="how a group's two means combine: ckd (difference), ckd_add (average), ckd_mixup "
                                  "(λ ~ Beta(1,1)) (--relational)")
    cls_weight: float = option(1.0, help="weight of the MSE to the label differences (--w_cls)")
    rel_weight: float = option(1.0, help="weight of the MSE to the teacher's logit differences (w_rel)")
    kd_weight: float = option(0.0, help="weight of a per-image Hinton KD term (--w_kd)")
    temperature: float = option(4.0, help="temperature of the KD term (--kd_T)")


@METHODS.register("ckd")
class CKD(Method):
    """Comparative KD from a frozen (cached) teacher: the student matches the teacher's sample differences."""

    Params = CKDParams
    teacher_roles = ("teacher",)
    strategy = "offline"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        if params.mix not in CKD_MIXES:
            raise DistillerError(f"params.mix must be one of {', '.join(CKD_MIXES)}, got '{params.mix}'")

    def loss_terms(self, batch):
        """``ckd_cls``, ``ckd_rel`` (and ``kd``)."""
        p = self.params
        logits, labels, t = self.student_out(batch)["logits"], batch["labels"], batch["teacher_logits"]
        perm = torch.randperm(len(logits), device=logits.device)  # global RNG, seeded by the engine
        pos, neg = comparative_groups(perm, p.pos_and_neg)
        lam = torch.rand((), device=logits.device) if p.mix == "ckd_mixup" else 0.5  # Beta(1, 1) = U(0, 1)
        cls, rel = comparative_kd_terms(logits, t, labels, pos, neg, p.mix, lam)
        loss = p.cls_weight * cls + p.rel_weight * rel
        terms = {"ckd_cls": cls, "ckd_rel": rel}
        if p.kd_weight:
            kd = kd_loss(logits, t, p.temperature)
            loss = loss + p.kd_weight * kd
            terms["kd"] = kd
        return {"loss": loss, **terms}
