"""``rdd``: Relative Difficulty Distillation for semantic segmentation (Liang, Sun, Du, Chen & Huang, arXiv
2407.03719; code sunyueue/RDD @6aa347a, ``train_onlykd_two_stage_diff.py``, ``losses/loss.py::CriterionKD``).

Pixel-level KD that adds no new objective: the teacher's and the student's *difficulty* of each pixel decides where
the task loss is applied. Two stages over the iterations:

- **TFE-RDD** (teacher-full evaluated, the first ``warmup_steps`` iterations; reference ``--warmup_iter``, argparse
  default 8000, the paper's scripts 4000 of 40,000): per-pixel CE weighted by ``exp(−KL(p_aux ‖ p_main))`` of the
  teacher's auxiliary and main heads — an easy-first curriculum;
- **TSE-RDD** (teacher-student evaluated, afterwards): CE only on the pixels where the student's and the teacher's
  OHEM hard-pixel masks (true-class probability ≤ 0.7, at least ``min_kept`` = 100,000 pixels) differ — ``rule``
  ``xor`` (the reference default ``--EDD_method XOR``; ``or``/``and``/``ohem`` are its ablations);
- always: pixel KD ``kd_weight·τ²·KL(p_t ‖ p_s)`` on the main heads (λ_kd = 1, τ = 1), plus, when the student has
  an auxiliary head, its task term with weight 0.4 (the reference's ``--aux``; the teacher always has one).

The loss pieces are :func:`distiller_nlp.core.losses.relational_kd.rdd_task_loss` and ``pixel_kd_loss``. Reference
quirks handled: the weight map was resized to a hard-coded (512, 1024) — here to the labels' size; an empty
selection (teacher and student equally hard everywhere) gave a NaN CE — here 0; fewer valid pixels than
``min_kept`` crashed ``get_mask`` — here every valid pixel counts as hard. The reference weighs the Cityscapes
classes (19 fixed weights) in TSE; ``class_weights`` is empty (unweighted) here unless given.

Needs from ``vision_kd`` (not offered today, so ``vision-kd train --method rdd`` stops with "does not apply to
classification data"): a ``segmentation`` data task (images + (H, W) label maps), segmentation models returning
``{"logits": (B, C, h, w), "aux_logits": ...}``, a mIoU metric, and ``train.py`` accepting the task. The method
module works on its own (``RDD(student, params, ctx, teacher=...)``, driven by any loop calling ``module(batch)``
with ``pixel_values`` and ``labels`` maps); the tests train a tiny FCN pair that way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses.relational_kd import RDD_MASK_RULES, pixel_kd_loss, rdd_task_loss

from .base import METHODS
from .live_teacher import LiveTeacherMethod

#: the data task RDD applies to (no ``vision_kd`` dataset provides it yet)
SEGMENTATION = "segmentation"


@dataclass
class RDDParams:
    """Hyper-parameters of ``rdd``."""

    warmup_steps: int = option(8000, help="iterations of the TFE stage (teacher-evaluated weights; --warmup_iter)",
                               min=0)
    rule: str = option("xor", help="TSE pixel selection from the two OHEM masks: xor, or, and, ohem (--EDD_method)")
    ohem_thresh: float = option(0.7, help="a pixel is hard when its true-class probability is <= this")
    min_kept: int = option(100000, help="OHEM keeps at least this many pixels", min=0)
    kd_weight: float = option(1.0, help="weight λ_kd of the pixel KD term (--lambda-kd)")
    temperature: float = option(1.0, help="temperature of the pixel KD term (--kd-temperature)")
    aux_weight: float = option(0.4, help="weight of the student's auxiliary-head task term (when it has one)")
    ignore_index: int = option(-1, help="label of ignored pixels (--ignore-label)")
    class_weights: list = option(default_factory=list, help="per-class CE weights of the TSE stage ([] = none; the "
                                                            "reference uses 19 Cityscapes weights)")


@METHODS.register("rdd")
class RDD(LiveTeacherMethod):
    """RDD from a frozen segmentation teacher with main and auxiliary heads (run live, inside the module)."""

    Params = RDDParams
    tasks = (SEGMENTATION,)

    def __init__(self, student, params, ctx, teacher=None):
        super().__init__(student, params, ctx, teacher)
        if params.rule not in RDD_MASK_RULES:
            raise DistillerError(f"params.rule must be one of {', '.join(RDD_MASK_RULES)}, got '{params.rule}'")
        if teacher is None:
            raise DistillerError("rdd needs a frozen segmentation teacher")
        self.register_buffer("step_count", torch.zeros((), dtype=torch.long))  # checkpointed: --resume continues
        weights = torch.tensor(params.class_weights, dtype=torch.float32) if params.class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def predict(self, batch):
        """The student's (B, C, H, W) logits."""
        return self.student(batch["pixel_values"])["logits"]

    def loss_terms(self, batch):
        """``task`` (TFE-weighted or TSE-selected CE, + 0.4·aux), ``pixel_kd`` and ``rdd_stage`` (0 TFE, 1 TSE)."""
        p = self.params
        x, labels = batch["pixel_values"], batch["labels"]
        out, t_out = self.student(x), self.teacher_out(x)
        warmup = bool(self.step_count < p.warmup_steps)
        if self.training:
            self.step_count += 1
        kw = dict(warmup=warmup, rule=p.rule, thresh=p.ohem_thresh, min_kept=p.min_kept, ignore_index=p.ignore_index,
                  class_weights=self.class_weights)
        t_aux = t_out.get("aux_logits")
        task = rdd_task_loss(out["logits"], t_out["logits"], labels, teacher_aux_logits=t_aux, **kw)
        if out.get("aux_logits") is not None:
            # the reference's --aux: TFE weighs the auxiliary CE map with the same teacher weights; TSE compares it
            # with the teacher's auxiliary head
            aux_ref = t_out["logits"] if warmup or t_aux is None else t_aux
            task = task + p.aux_weight * rdd_task_loss(out["aux_logits"], aux_ref, labels, teacher_aux_logits=t_aux,
                                                       **kw)
        kd = pixel_kd_loss(out["logits"], t_out["logits"].float(), p.temperature)
        stage = torch.zeros((), device=x.device) if warmup else torch.ones((), device=x.device)
        return {"loss": task + p.kd_weight * kd, "task": task, "pixel_kd": kd, "rdd_stage": stage}
