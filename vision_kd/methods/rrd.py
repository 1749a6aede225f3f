"""``rrd``: Relational Representation Distillation (Giakoumoglou & Stathaki, arXiv 2407.12073; code
giakoumoglou/rrd @83cefda, ``cifar/distillers/RRD.py::RRD_FifoMemory_Loss`` and ``cifar/train_student.py``).

Student and teacher penultimate features (``feature``; the reference's ``feat[-1]``) are projected by linear heads
``embed_s: d_s→128`` and ``embed_t: d_t→128`` and L2-normalised; the teacher embeddings of each batch are pushed into
a FIFO queue Q of K = 16,384 entries *before* the similarities are taken; the loss is the relaxed contrastive
cross-entropy between the teacher's and the student's similarity distributions over Q
(:func:`distiller_nlp.core.losses.relational_kd.relational_kd_loss`, τ_s = 0.1, τ_t = 0.02). Total, as the
reference's ``loss = γ·CE + α·KD + β·RRD`` run as ``-r 1 -a 0 -b 1`` (RRD + CE; ``-a 1`` adds KD, τ = 4)::

    hard_label_weight·CE + kd_weight·kd(τ) + rrd_weight·RRD

Defaults (argparse of ``cifar/train_student.py``): ``feat_dim`` 128, ``nce_k`` 16384, ``nce_t_s`` 0.1,
``nce_t_t`` 0.02, ``memory_type`` fifo, ``kd_T`` 4, γ = 1, α = 0 (RRD) / 1 (RRD+KD), β = 1. Reproduced quirks: the
queue starts as Gaussian noise normalised along dim 0 (columns, not rows); ``embed_t`` is a trained module in the
reference but its output is only used detached, so it never receives a gradient (a fixed random projection) — the
same here. Relaxed: the reference asserts ``nce_k % batch == 0``; here the queue pointer wraps around, so any batch
size ≤ K works (the last, smaller batch too). The momentum-memory variant (``memory_type=momentum``, CRD's memory,
needs dataset indices) is not implemented. The teacher runs live inside the module (its features are needed; see
:mod:`vision_kd.methods.live_teacher`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import hard_ce_loss, kd_loss
from distiller_nlp.core.losses.relational_kd import relational_kd_loss

from .base import METHODS
from .live_teacher import LiveTeacherMethod


@dataclass
class RRDParams:
    """Hyper-parameters of ``rrd``."""

    feat_dim: int = option(128, help="dimension of the projection space (--feat_dim)", positive=True)
    bank_size: int = option(16384, help="teacher embeddings in the FIFO queue (--nce_k)", positive=True)
    student_temperature: float = option(0.1, help="temperature τ_s of the student's similarities (--nce_t_s)")
    teacher_temperature: float = option(0.02, help="temperature τ_t of the teacher's similarities (--nce_t_t)")
    rrd_weight: float = option(1.0, help="weight β of the RRD term (-b)")
    kd_weight: float = option(0.0, help="weight α of the Hinton KD term (-a; 1 = RRD+KD)")
    temperature: float = option(4.0, help="temperature of the KD term (--kd_T)")
    hard_label_weight: float = option(1.0, help="weight γ of the cross-entropy on the labels (-r)")


@METHODS.register("rrd")
class RRD(LiveTeacherMethod):
    """RRD from a frozen teacher: projection heads and a FIFO queue of teacher embeddings inside the module."""

    Params = RRDParams

    def __init__(self, student, params, ctx, teacher=None):
        super().__init__(student, params, ctx, teacher)
        if teacher is None:
            raise DistillerError("rrd needs a frozen teacher (RRD.prepare loads it)")
        self.embed_s = nn.Linear(student.feature_dim, params.feat_dim)
        self.embed_t = nn.Linear(teacher.feature_dim, params.feat_dim)
        # the reference's init: Gaussian, normalised along dim 0 (a quirk kept as is)
        self.register_buffer("queue", F.normalize(torch.randn(params.bank_size, params.feat_dim), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (B, d) at the queue pointer (wrapping around) and advance it by B."""
        b, k = keys.shape[0], self.queue.shape[0]
        if b > k:
            raise DistillerError(f"rrd: batch of {b} is larger than params.bank_size {k}")
        idx = (self.queue_ptr + torch.arange(b, device=keys.device)) % k
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + b) % k)

    def loss_terms(self, batch):
        """``ce``, ``rrd`` (and ``kd`` when ``kd_weight`` > 0)."""
        p = self.params
        x, labels = batch["pixel_values"], batch["labels"]
        out = self.student(x)
        t_out = self.teacher_out(x)
        f_s = F.normalize(self.embed_s(out["feature"].float()), dim=1)
        with torch.no_grad():
            f_t = F.normalize(self.embed_t(t_out["feature"].float()), dim=1)
        if self.training:
            self.enqueue(f_t)  # the current batch joins the bank before the similarities, as the reference
        rrd = relational_kd_loss(f_s, f_t, self.queue.clone(), p.student_temperature, p.teacher_temperature)
        ce = hard_ce_loss(out["logits"], labels)
        loss = p.hard_label_weight * ce + p.rrd_weight * rrd
        terms = {"ce": ce, "rrd": rrd}
        if p.kd_weight:
            kd = kd_loss(out["logits"], t_out["logits"].float(), p.temperature)
            loss = loss + p.kd_weight * kd
            terms["kd"] = kd
        return {"loss": loss, **terms}
