"""``lwkd``: learning from a lightweight teacher (Liu, Zhang & Wang, arXiv 2005.09163) — reconstruction.

The teacher is small and trained on a *synthesized simple dataset* with as many classes as the target (procedural
glyphs, ``--dataset synthetic``). Its outputs on a pool of synthetic samples are computed once (cached-teacher
strategy); for a target sample of class c the soft target is the teacher's tempered output on a random synthetic
sample of class c (instance-varying, class-conditional). Student:
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

from distiller_nlp.core.losses import hard_ce_loss, kd_loss

from .base import Method


@dataclass
class LWKDParams:
    temperature: float = 4.0
    kd_weight: float = 0.5
    hard_label_weight: float = 0.5
    adv_weight: float = 0.1
    disc_hidden: int = 64
    pool_per_class: int = 50  # synthetic samples per class whose teacher outputs are cached


class LWKD(Method):
    name = "lwkd"
    Params = LWKDParams
    strategy = "adversarial"

    def __init__(self, student, params, ctx):
        super().__init__(student, params, ctx)
        pool = ctx.synthetic_teacher_logits  # (C, P, C) teacher logits on P synthetic samples of each class
        self.register_buffer("pool", pool.float(), persistent=True)
        c = self.num_outputs
        self.discriminator = nn.Sequential(nn.Linear(c, params.disc_hidden), nn.LeakyReLU(0.2),
                                           nn.Linear(params.disc_hidden, 1))

    def soft_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher logits on a random synthetic sample of each label's class (global RNG, seeded by the engine)."""
        pick = torch.randint(0, self.pool.shape[1], (len(labels),), device=labels.device)
        return self.pool[labels.long(), pick]

    def loss_terms(self, batch):
        from vision_kd.strategies import frozen_call

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
