"""Pure loss functions of the relational / adversarial / segmentation KD methods of ``vision_kd`` (issue #19):

==============================  ================================================================================
function                        method (paper; the code followed)
==============================  ================================================================================
:func:`relational_kd_loss`      RRD, Giakoumoglou & Stathaki 2024 (giakoumoglou/rrd ``cifar/distillers/RRD.py``)
:func:`comparative_groups`,     CKD, Wilf et al. 2023/WACV 2025 (alextxu/ckd ``helper/CKDTrainHelpers.py``,
:func:`comparative_kd_terms`    ``dataset/sampling/CKDSample.py``)
:func:`nasty_teacher_terms`     Nasty Teacher, Ma et al. ICLR 2021 (VITA-Group/Nasty-Teacher ``train_nasty.py``)
:func:`ohem_hard_mask`,         RDD, Liang et al. 2024 (sunyueue/RDD ``train_onlykd_two_stage_diff.py``,
:func:`rdd_difficulty_weights`, ``losses/loss.py``)
:func:`rdd_task_loss`,
:func:`pixel_kd_loss`
==============================  ================================================================================

They compose the shared core (:func:`~.logits.kd_loss`, :func:`~.logits.hard_ce_loss`,
:func:`~.logits.logits_mse_loss`) and are deliberately *not* registered in :data:`~.registry.LOSSES`: a registered
``kind="logits"`` loss that takes ``teacher_logits`` becomes a choice of ``kd.pred_loss`` and a one-hot column of the
AutoDistiller pipeline encoding (``encode_pipeline``), and a ``hidden`` one an intermediate-loss choice — these take
memory banks, sample groups or (B, C, H, W) maps, which the NLP pipeline cannot feed.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from distiller_nlp.core.errors import DistillerError

from .logits import hard_ce_loss, kd_loss, logits_mse_loss

# ------------------------------------------------------------------------------------------------------------- RRD


def relational_kd_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor, bank: torch.Tensor,
                       student_temperature: float = 0.1, teacher_temperature: float = 0.02) -> torch.Tensor:
    """Relational Representation Distillation (Giakoumoglou & Stathaki, arXiv 2407.12073), the relaxed contrastive
    loss over a memory bank of teacher embeddings::

        L = mean_n − Σ_k softmax(⟨t_n, Q_k⟩ / τ_t)_k · log softmax(⟨s_n, Q_k⟩ / τ_s)_k

    ``student_emb`` (B, d) and ``teacher_emb`` (B, d): the (already L2-normalised) projections; ``bank`` (K, d): the
    queue Q (treated as a constant); the teacher side is detached. Defaults τ_s = 0.1, τ_t = 0.02 are the reference
    code's argparse defaults (``cifar/train_student.py`` ``--nce_t_s`` / ``--nce_t_t``; the loss class's docstring
    states them the other way round). As τ_t → 0 the target is one-hot on the bank entry most similar to the teacher
    embedding (InfoNCE with that entry as positive).
    """
    for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise DistillerError(f"rrd {name} must be a positive number, got {value!r}")
    if student_emb.dim() != 2 or student_emb.shape != teacher_emb.shape or bank.dim() != 2 \
            or bank.shape[1] != student_emb.shape[1]:
        raise DistillerError(f"rrd: student {tuple(student_emb.shape)} and teacher {tuple(teacher_emb.shape)} "
                             f"embeddings must be (B, d) and the bank (K, d), got bank {tuple(bank.shape)}")
    q = bank.detach().float()
    sim_s = student_emb.float() @ q.t()
    sim_t = teacher_emb.detach().float() @ q.t()
    target = F.softmax(sim_t / teacher_temperature, dim=1)
    return -(target * F.log_softmax(sim_s / student_temperature, dim=1)).sum(1).mean()


# ------------------------------------------------------------------------------------------------------------- CKD

CKD_MIXES = ("ckd", "ckd_add", "ckd_mixup")


def comparative_groups(perm: torch.Tensor, pos_and_neg: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """CKD's sample groups from a permutation of the batch: group g takes the ``pos_and_neg`` distinct samples
    ``perm[g], perm[g−1], …`` (cyclic shifts), the first ``pos_and_neg − pos_and_neg // 2`` as its positive group and
    the rest as its negative group, as ``train_student.py`` splits them (``neg = pos_and_neg // 2``): 2 → 1 vs 1,
    3 → 2 vs 1. Returns index tensors (G, P) and (G, N), G = batch size."""
    if pos_and_neg < 2:
        raise DistillerError(f"ckd pos_and_neg must be at least 2, got {pos_and_neg}")
    if perm.numel() < pos_and_neg:
        raise DistillerError(f"ckd needs batches of at least pos_and_neg = {pos_and_neg} samples, got {perm.numel()}")
    cols = torch.stack([perm.roll(k) for k in range(pos_and_neg)], dim=1)
    n_neg = pos_and_neg // 2
    return cols[:, :pos_and_neg - n_neg], cols[:, pos_and_neg - n_neg:]


def _mix(x: torch.Tensor, y: torch.Tensor, mix: str, lam) -> torch.Tensor:
    if mix == "ckd":
        return x - y
    if mix == "ckd_add":
        return 0.5 * x + 0.5 * y
    return lam * x + (1 - lam) * y


def comparative_kd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                         pos_index: torch.Tensor, neg_index: torch.Tensor, mix: str = "ckd",
                         lam=0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Comparative KD (Wilf, Xu, Liang, Obolenskiy, Fried & Morency, arXiv 2311.02253): the student learns the
    teacher's *differences* between groups of samples. With group means z̄⁺ = mean(z[pos]), z̄⁻ = mean(z[neg]) and
    m(a, b) = a − b (``ckd``), ½a + ½b (``ckd_add``) or λa + (1−λ)b (``ckd_mixup``, λ ~ Beta(1, 1) per batch)::

        cls = MSE(m(z̄⁺_s, z̄⁻_s), m(ȳ⁺, ȳ⁻))        rel = MSE(m(z̄⁺_s, z̄⁻_s), m(z̄⁺_t, z̄⁻_t))

    (``nn.MSELoss``: mean over groups and classes; ȳ = averaged one-hot labels), returned as ``(cls, rel)``; the
    reference's total is ``w_cls·cls + w_rel·rel`` (both 1). ``targets``: (B,) class indices or (B, C) label vectors.
    Swapping the positive and negative groups flips every difference and leaves both terms unchanged.
    """
    if mix not in CKD_MIXES:
        raise DistillerError(f"ckd mix must be one of {', '.join(CKD_MIXES)}, got {mix!r}")
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise DistillerError(f"ckd: student {tuple(student_logits.shape)} and teacher "
                             f"{tuple(teacher_logits.shape)} logits must both be (B, C)")
    c = student_logits.shape[1]
    y = targets.float() if targets.is_floating_point() else F.one_hot(targets.long(), c).float()

    def diff(z):
        return _mix(z[pos_index].mean(1), z[neg_index].mean(1), mix, lam)

    d_s = diff(student_logits.float())
    return logits_mse_loss(d_s, diff(y)), logits_mse_loss(d_s, diff(teacher_logits.detach().float()))


# --------------------------------------------------------------------------------------------------- Nasty Teacher


def nasty_teacher_terms(logits: torch.Tensor, adversary_logits: torch.Tensor, labels: torch.Tensor,
                        temperature: float = 4.0, weight: float = 0.04) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    """The Nasty Teacher objective (Ma, Chen, Wang, Wang, Wang & Wang, "Undistillable: Making A Nasty Teacher That
    CANNOT Teach Students", ICLR 2021), for the network being made nasty (``logits``) against a frozen normally
    trained copy (``adversary_logits``)::

        L = CE(y, z_nasty) − ω · τ² · KL(softmax(z_nasty/τ) ‖ softmax(z_adv/τ))

    (VITA-Group/Nasty-Teacher ``train_nasty.py`` lines 61-71: ``KLDivLoss(reduction='batchmean')(log_softmax(
    adv/T), softmax(nasty/T)) · T²``, i.e. KL with the nasty network's distribution first; the reference adds 100
    to make the printed loss positive, dropped here: it changes no gradient). Returns ``(loss, ce, adv_kl)``; ω = 0
    gives plain CE. Defaults τ = 4, ω = 0.04 are the CIFAR-10 ones (``experiments/CIFAR10/kd_nasty_resnet18/
    nasty_resnet18/params.json``); CIFAR-100 τ = 20, ω = 0.005; Tiny-ImageNet τ = 20, ω = 0.01.
    """
    ce = hard_ce_loss(logits, labels)
    # kd_loss(a, b, τ) = τ²·KL(p_b ‖ p_a): the nasty network in the second place, the adversary (detached) first
    adv = kd_loss(adversary_logits.detach(), logits, temperature)
    return ce - weight * adv, ce, adv


# ------------------------------------------------------------------------------------------------------------- RDD

RDD_MASK_RULES = ("xor", "or", "and", "ohem")


def _to_pixels(logits: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B·H·W, C), the layout ``CriterionKD`` uses (``permute(0, 2, 3, 1).view(-1, C)``)."""
    if logits.dim() != 4:
        raise DistillerError(f"segmentation logits must be (B, C, H, W), got {tuple(logits.shape)}")
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


def upsample_to(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logits (B, C, h, w) bilinearly resized (``align_corners=True``, as the reference) to the labels' (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(labels.shape[-2:]):
        return logits
    return F.interpolate(logits.float(), size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=True)


def pixel_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Pixel-wise KD on (B, C, H, W) maps: ``τ²·KL(p_t ‖ p_s)`` per pixel, averaged over the B·H·W pixels
    (sunyueue/RDD ``losses/loss.py::CriterionKD``, ``batchmean`` over pixels; τ = 1 there) = :func:`kd_loss` on the
    pixel rows."""
    if student_logits.shape != teacher_logits.shape:
        raise DistillerError(f"student {tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)} maps "
                             "must have the same shape")
    return kd_loss(_to_pixels(student_logits), _to_pixels(teacher_logits), temperature)


def rdd_difficulty_weights(teacher_logits: torch.Tensor, teacher_aux_logits: torch.Tensor) -> torch.Tensor:
    """RDD's teacher-evaluated pixel weights (the warm-up stage): ``w = exp(−Σ_c KL)`` with the per-pixel
    ``KL(softmax(z_aux) ‖ softmax(z_main))`` between the teacher's auxiliary and main heads, shape (B, h, w),
    detached (reference ``train_onlykd_two_stage_diff.py`` lines 509-511: ``sum(KLDivLoss(reduction='none')(
    log_sm(t_main), sm(t_aux)), dim=1)``). Pixels where the teacher's two heads agree weigh 1, uncertain ones less."""
    if teacher_logits.shape != teacher_aux_logits.shape or teacher_logits.dim() != 4:
        raise DistillerError("rdd: the teacher's main and auxiliary logits must be (B, C, H, W) of the same shape")
    with torch.no_grad():
        log_main = F.log_softmax(teacher_logits.float(), dim=1)
        log_aux = F.log_softmax(teacher_aux_logits.float(), dim=1)
        kl = (log_aux.exp() * (log_aux - log_main)).sum(1)
        return torch.exp(-kl)


def ohem_hard_mask(logits: torch.Tensor, labels: torch.Tensor, thresh: float = 0.7, min_kept: int = 100000,
                   ignore_index: int = -1) -> torch.Tensor:
    """The OHEM "hard pixel" mask of one network (reference ``OhemCrossEntropy2d.get_mask``): valid pixels whose
    probability of the true class is ≤ ``thresh``, the threshold raised so that at least ``min_kept`` pixels are
    kept. ``logits`` (B, C, H, W) at the labels' size, ``labels`` (B, H, W); returns a bool (B, H, W) mask. When
    fewer than ``min_kept`` pixels are valid, every valid pixel is hard (the reference crashes there; the OHEM
    loss it derives from keeps them all)."""
    with torch.no_grad():
        valid = labels.ne(ignore_index)
        num_valid = int(valid.sum())
        if num_valid == 0 or min_kept > num_valid:
            return valid
        prob = F.softmax(logits.float(), dim=1)
        safe = torch.where(valid, labels, torch.zeros_like(labels)).long()
        p_true = prob.gather(1, safe.unsqueeze(1)).squeeze(1).masked_fill(~valid, 1.0)
        threshold = torch.tensor(float(thresh), device=prob.device)
        if min_kept > 0:
            kth = p_true.flatten().sort().values[min(p_true.numel(), int(min_kept)) - 1]
            threshold = torch.maximum(threshold, kth)
        return valid & p_true.le(threshold)


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, ignore_index: int,
               class_weights: Optional[torch.Tensor]) -> torch.Tensor:
    target = labels.masked_fill(~keep, ignore_index).long()
    if not bool(keep.any()):  # the reference's CE would be NaN (0/0); nothing is selected, nothing is learned
        return logits.float().sum() * 0.0
    return F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index)


def rdd_task_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
                  warmup: bool, teacher_aux_logits: Optional[torch.Tensor] = None, rule: str = "xor",
                  thresh: float = 0.7, min_kept: int = 100000, ignore_index: int = -1,
                  class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The task (cross-entropy) term of Relative Difficulty Distillation (Liang, Sun, Du, Chen & Huang, arXiv
    2407.03719), on one head; logits (B, C, h, w) are upsampled to the labels' (B, H, W) first.

    - ``warmup=True`` (TFE stage, iterations < ``warmup_iter``): ``mean_pixels CE(s, y) · w`` with
      :func:`rdd_difficulty_weights` ``w`` of the teacher's main and auxiliary heads (w = 1 without an auxiliary
      head). The mean runs over *all* B·H·W pixels, ignored ones included (they add 0), as the reference's
      ``torch.mean(task_loss * exp_variance_scale)``.
    - ``warmup=False`` (TSE stage): CE on the pixels where the student's and the teacher's OHEM hard masks
      (:func:`ohem_hard_mask`) differ — ``rule`` ``xor`` (default, the reference ``--EDD_method XOR``), ``or``,
      ``and`` or ``ohem`` (the student's mask alone) — averaged over the selected pixels (class-``class_weights``
      weighted mean, as ``nn.CrossEntropyLoss``; the reference uses Cityscapes' 19 class weights). Equal
      teacher/student difficulty under ``xor`` selects nothing: the term is 0.
    """
    s = upsample_to(student_logits, labels)
    t = upsample_to(teacher_logits, labels).detach()
    if warmup:
        ce = F.cross_entropy(s.float(), labels.long(), weight=class_weights, ignore_index=ignore_index,
                             reduction="none")
        if teacher_aux_logits is None:
            return ce.mean()
        w = rdd_difficulty_weights(t, upsample_to(teacher_aux_logits, labels))
        return (ce * w).mean()
    if rule not in RDD_MASK_RULES:
        raise DistillerError(f"rdd rule must be one of {', '.join(RDD_MASK_RULES)}, got {rule!r}")
    hard_s = ohem_hard_mask(s, labels, thresh, min_kept, ignore_index)
    hard_t = ohem_hard_mask(t, labels, thresh, min_kept, ignore_index)
    keep = {"xor": hard_s ^ hard_t, "or": hard_s | hard_t, "and": hard_s & hard_t, "ohem": hard_s}[rule]
    return _masked_ce(s, labels, keep, ignore_index, class_weights)


__all__ = ["relational_kd_loss", "comparative_groups", "comparative_kd_terms", "CKD_MIXES", "nasty_teacher_terms",
           "pixel_kd_loss", "rdd_difficulty_weights", "ohem_hard_mask", "rdd_task_loss", "upsample_to",
           "RDD_MASK_RULES"]
