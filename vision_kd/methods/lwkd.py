"""``lwkd``: learning from a lightweight teacher (Liu, Zhang & Wang, arXiv 2005.09163) — reconstruction.

The teacher is small and trained on a *synthesized simple dataset* with as many classes as the target (procedural
glyphs, ``--dataset synthetic``): ``--teacher``, else the synthetic dataset's default teacher, trained once and cached
(:meth:`LWKD.prepare`). Its outputs on a pool of synthetic samples are computed once (cached-teacher strategy); for a
target sample of class c the soft target is the teacher's tempered output on a random synthetic sample of class c
(instance-varying, class-conditional). Student:
``hard_label_weight·CE + kd_weight·τ²·KL(q^τ‖p_s^τ) + adv_weight·(−log D(p_s^τ))``; a discriminator D (an MLP on
probability vectors) learns ``−log D(q^τ) − log(1 − D(p_s^τ))``. Adversarial strategy: both objectives are summed
into one loss and one optimizer step (simultaneous gradient descent); the student's term evaluates D with detached
parameters (``strategies.frozen_call``) and D's term sees detached student outputs, so each player only moves its own
parameters — no second training loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import hard_ce_loss, kd_loss

from vision_kd.data import load_synthetic_data
from vision_kd.strategies import frozen_call, teacher_outputs

from .base import METHODS, Method

#: the dataset the lightweight teacher is trained on
TEACHER_DATASET = "synthetic"


@dataclass
class LWKDParams:
    """Hyper-parameters of ``lwkd``."""

    temperature: float = option(4.0, help="softmax temperature τ of the KL term and of the discriminator's inputs")
    kd_weight: float = option(0.5, help="weight of the τ²-scaled KL term to the synthetic-data teacher")
    hard_label_weight: float = option(0.5, help="weight of the cross-entropy on the labels")
    adv_weight: float = option(0.1, help="weight of the student's adversarial term −log D(p_s)")
    disc_hidden: int = option(64, help="hidden units of the discriminator MLP")
    pool_per_class: int = option(50, help="synthetic training samples per class whose teacher outputs are cached")


def synthetic_pool(teacher: nn.Module, num_classes: int, per_class: int, split_seed: int) -> torch.Tensor:
    """Teacher logits on ``per_class`` synthetic training images of every class (the split of ``split_seed``), shape
    (C, P, C); P is capped by the smallest class."""
    syn = load_synthetic_data(num_classes, split_seed, image_size=teacher.image_size)
    labels = syn.train.labels
    p = min(per_class, int(torch.bincount(labels, minlength=num_classes).min()))
    if p < 1:
        raise DistillerError("params.pool_per_class must be at least 1")
    idx = torch.stack([torch.nonzero(labels == c).squeeze(1)[:p] for c in range(num_classes)])
    return teacher_outputs(teacher, syn.train.images[idx.reshape(-1)]).reshape(num_classes, p, -1)


@METHODS.register("lwkd")
class LWKD(Method):
    """LW-KD: class-conditional soft targets from a synthetic-data teacher plus an adversarial discriminator."""

    Params = LWKDParams
    strategy = "adversarial"

    def __init__(self, student, params, ctx, synthetic_teacher_logits=None):
        super().__init__(student, params, ctx)
        if synthetic_teacher_logits is None:
            raise DistillerError("lwkd needs the synthetic-data teacher's logits (LWKD.prepare computes them)")
        # (C, P, C): teacher logits on P synthetic samples of each class
        self.register_buffer("pool", synthetic_teacher_logits.float(), persistent=True)
        c = self.num_outputs
        self.discriminator = nn.Sequential(nn.Linear(c, params.disc_hidden), nn.LeakyReLU(0.2),
                                           nn.Linear(params.disc_hidden, 1))

    @classmethod
    def prepare(cls, run) -> dict:
        """The lightweight teacher (``--teacher``, else the synthetic dataset's default teacher with as many classes
        as the data, trained once and cached) and its logits on the synthetic pool."""
        cfg, data = run.cfg, run.data
        path = cfg.teacher or run.default_teacher(
            "synthetic", dataset=TEACHER_DATASET, task="", data_dir="", image_size=0, augment=False,
            max_train_examples=0, num_classes=data.num_outputs)
        teacher = run.load_model(path, "teacher", check_input=False)  # trained on glyphs: only the classes must match
        run.record_teacher("teacher", path)
        pool = synthetic_pool(teacher, data.num_outputs, run.params.pool_per_class, cfg.split_seed)
        return {"synthetic_teacher_logits": pool}

    def soft_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher logits on a random synthetic sample of each label's class (global RNG, seeded by the engine)."""
        pick = torch.randint(0, self.pool.shape[1], (len(labels),), device=labels.device)
        return self.pool[labels.long(), pick]

    def loss_terms(self, batch):
        """Student ``ce`` + ``kd`` + ``adv`` and the discriminator's ``disc``, summed into one ``loss``."""
        p = self.params
        logits, labels = self.student_out(batch)["logits"], batch["labels"]
        q_logits = self.soft_targets(labels)
        ce = hard_ce_loss(logits, labels)
        kd = kd_loss(logits, q_logits, p.temperature)
        q = F.softmax(q_logits.float() / p.temperature, dim=-1)
        s = F.softmax(logits.float() / p.temperature, dim=-1)
        d_real = self.discriminator(q)
        d_fake = self.discriminator(s.detach())
        disc = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        d_student = frozen_call(self.discriminator, s)
        adv = F.binary_cross_entropy_with_logits(d_student, torch.ones_like(d_student))
        student_loss = p.hard_label_weight * ce + p.kd_weight * kd + p.adv_weight * adv
        return {"loss": student_loss + disc, "ce": ce, "kd": kd, "adv": adv, "disc": disc}
