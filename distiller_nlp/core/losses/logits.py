"""Prediction-layer (logit) distillation losses.

Conventions:
- Logits have classes on the last dimension; every leading dimension counts as a sample (``(B, C)`` for sequence
  classification, ``(B, L, C)`` for token-level outputs), so "batch mean" means the mean over all samples.
- KL terms use ``reduction="batchmean"`` semantics (sum over classes, mean over samples) and are multiplied by T².
- Reductions run in fp32 (inputs are cast with ``.float()``), so bf16/fp16 logits give an fp32 loss.
- Nothing is detached except where the paper's formula says so (NKD's target probability ``T_t``); run the
  teacher under ``torch.no_grad()`` for offline KD.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distiller_nlp.core.errors import DistillerError

from .registry import register_loss

# ----------------------------------------------------------------------------------------------------- validation


def _check_temperature(temperature: float) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise DistillerError(f"temperature must be a positive number, got {temperature!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise DistillerError(f"temperature must be a positive number, got {temperature!r}")
    return value


#: The temperature check every loss module shares (one-line error for a non-positive or non-finite value).
check_temperature = _check_temperature


def _check_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise DistillerError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must have the same shape"
        )
    if student_logits.dim() < 1 or student_logits.shape[-1] < 1:
        raise DistillerError(f"logits need a class dimension, got shape {tuple(student_logits.shape)}")


def _flat(logits: torch.Tensor) -> torch.Tensor:
    """(…, C) -> (N, C) in fp32."""
    return logits.reshape(-1, logits.shape[-1]).float()


def _target_labels(labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Hard class indices of shape (N,) for (…, C) logits; soft/mixed label vectors (…, C) are reduced by argmax.

    The argmax reduction is what the official NKD code does with a mixed label (yzd-v/cls_KD @1e5d48f,
    ``mmcls/models/dis_losses/nkd.py`` lines 25-26: ``label = torch.max(gt_label, dim=1, keepdim=True)[1]``); NKD
    and DKD use it. USKD keeps the top-2 classes of a mixed label instead (:func:`_top2_targets`).
    """
    num_classes = logits.shape[-1]
    if num_classes < 2:
        raise DistillerError(f"target/non-target decomposition needs at least 2 classes, got {num_classes}")
    if labels.is_floating_point() and labels.shape == logits.shape:
        labels = labels.argmax(dim=-1)
    if labels.shape != logits.shape[:-1]:
        raise DistillerError(
            f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})"
        )
    labels = labels.reshape(-1).long()
    if labels.numel() and labels.device.type == "cpu":  # a host check costs no device sync on CPU tensors
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise DistillerError(
                f"labels must lie in [0, {num_classes - 1}], got values in [{int(labels.min())}, {int(labels.max())}]"
            )
    elif labels.numel() and labels.device.type == "cuda":  # checked on the device, without a host sync
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(),
                            f"labels must lie in [0, {num_classes - 1}]")
    return labels


def _top2_targets(labels: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """USKD's target classes: ``(index (N, K), value (N, K), soft (N, C) or None)``.

    - hard labels (integer class ids, shape = the logits' leading dims): ``K = 1``, ``value = 1``, ``soft = None``;
    - soft/mixed label vectors (float, the logits' shape, e.g. MixUp/CutMix ``λ·onehot_a + (1−λ)·onehot_b``): the two
      largest entries, ``K = 2``, as the official USKD does (yzd-v/cls_KD @1e5d48f,
      ``mmcls/models/dis_losses/uskd.py`` lines 33-36: sort the label descending, keep ``[:, :2]`` of the values and
      the indices). Both columns count as targets even when the second value is 0 (an unmixed one-hot float label):
      the official code then also drops that class from the non-target set (line 81) and zeroes its target weight
      (line 50). Ties (e.g. 0.5/0.5, or the zeros of a one-hot) are broken towards the lower class index (a stable
      sort; the official ``torch.sort`` leaves their order unspecified). ``soft`` is the (N, C) label, in fp32.
    """
    num_classes = logits.shape[-1]
    if labels.is_floating_point() and labels.shape == logits.shape:
        if num_classes < 2:
            raise DistillerError(f"target/non-target decomposition needs at least 2 classes, got {num_classes}")
        soft = _flat(labels)
        value, index = torch.sort(soft, dim=-1, descending=True, stable=True)
        return index[:, :2], value[:, :2], soft
    y = _target_labels(labels, logits)
    return y[:, None], torch.ones(y.shape[0], 1, device=y.device), None


def _drop_columns(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, C−K): the columns not in ``index`` (N, K, distinct per row), in their original order (a gather,
    no boolean-mask indexing, so no device-to-host sync)."""
    n, c = z.shape
    is_target = torch.zeros(n, c, dtype=torch.long, device=z.device).scatter(1, index, 1)
    keep = torch.sort(is_target, dim=-1, stable=True).indices[:, : c - index.shape[1]]  # the 0s first, order kept
    return z.gather(1, keep)


def _split_target(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (N, C) logits into the target logit (N,) and the C−1 non-target logits (N, C−1), order preserved.

    Gathering the non-target columns (instead of multiplying by a mask) is what makes the non-target softmax exact:
    the target class is really removed (cf. cls_KD issue #16, where a mask of ones left it in).
    """
    n, c = z.shape
    # gathers, not boolean-mask indexing (whose data-dependent shape needs a device-to-host sync)
    target = z.gather(1, labels[:, None]).squeeze(1)
    cols = torch.arange(c - 1, device=z.device)[None, :].expand(n, c - 1)
    non_target = z.gather(1, cols + (cols >= labels[:, None]).long())
    return target, non_target


# ---------------------------------------------------------------------------------------------------------- losses


@register_loss("kd", kind="logits", takes=("teacher_logits",), probabilities=True)
def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    *,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Classic KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network").

    ``L = T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes and averaged over samples (``batchmean``).
    ``reduction="none"`` returns the per-sample values ``T²·KL_n`` (shape = the logits' leading dims), e.g. for
    sample-wise weighting of forward and reverse KL (BD-KD); the reverse KL ``T²·KL(p_s ‖ p_t)`` is
    ``kd_loss(teacher_logits, student_logits, T)`` (arguments swapped).
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    if reduction not in ("batchmean", "none"):
        raise DistillerError(f"kd_loss reduction must be 'batchmean' or 'none', got {reduction!r}")
    log_p_s = F.log_softmax(_flat(student_logits) / temperature, dim=-1)
    log_p_t = F.log_softmax(_flat(teacher_logits) / temperature, dim=-1)
    per_sample = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(-1) * temperature**2
    if reduction == "none":
        return per_sample.reshape(student_logits.shape[:-1])
    return per_sample.mean()


@register_loss("soft_ce", kind="logits", takes=("teacher_logits",), probabilities=True)
def soft_ce_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target cross-entropy, Distiller's ``ce`` prediction loss (He et al. 2021, "Distiller").

    ``L = mean_n −Σ_c softmax(t_n/T)_c · log softmax(s_n/T)_c`` (no T² factor, as in Distiller/TextBrewer).
    It equals ``KL(p_t ‖ p_s) + H(p_t)``, so its student gradient is ``kd``'s divided by T².
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    p_t = F.softmax(_flat(teacher_logits) / temperature, dim=-1)
    log_p_s = F.log_softmax(_flat(student_logits) / temperature, dim=-1)
    return -(p_t * log_p_s).sum(-1).mean()


@register_loss("logits_mse", kind="logits", takes=("teacher_logits",))
def logits_mse_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Logit matching by MSE (Ba & Caruana 2014; Distiller's ``mse`` prediction loss, used for regression tasks).

    ``L = mean over all elements of (s/T − t/T)²``.
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    return F.mse_loss(student_logits.float() / temperature, teacher_logits.float() / temperature)


@register_loss("hard_ce", kind="logits", takes=("labels",))
def hard_ce_loss(student_logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Supervised loss on gold (or teacher pseudo-) labels, following Hugging Face's problem-type rules.

    - logits with last dim 1 (regression, e.g. STS-B): ``MSE(s.squeeze(-1), y)``;
    - integer labels with shape = logits' leading dims: cross-entropy ``mean −log softmax(s)_y`` over samples whose
      label is not ``ignore_index`` (-100, the HF padding label);
    - float labels with the logits' full shape: soft-label cross-entropy ``mean −Σ_c y_c log softmax(s)_c``.
    Float labels of shape (N,) with more than one logit are rejected (ambiguous: regression needs one output).
    """
    if student_logits.dim() < 1:
        raise DistillerError("hard_ce_loss: logits need a class dimension")
    num_outputs = student_logits.shape[-1]
    if num_outputs == 1:
        target = labels.float().reshape(student_logits.shape[:-1])
        return F.mse_loss(student_logits.float().squeeze(-1), target)
    if labels.is_floating_point():
        if labels.shape == student_logits.shape:
            log_p = F.log_softmax(_flat(student_logits), dim=-1)
            return -(labels.reshape(log_p.shape).float() * log_p).sum(-1).mean()
        raise DistillerError(
            f"hard_ce_loss: float labels {tuple(labels.shape)} need logits with last dim 1 (regression) or labels "
            f"of the logits' shape {tuple(student_logits.shape)} (soft labels)"
        )
    if labels.shape != student_logits.shape[:-1]:
        raise DistillerError(
            f"hard_ce_loss: labels {tuple(labels.shape)} do not match logits {tuple(student_logits.shape)}"
        )
    return F.cross_entropy(_flat(student_logits), labels.reshape(-1).long(), ignore_index=ignore_index)


@register_loss("nkd", kind="logits", takes=("teacher_logits", "labels"), probabilities=True,
               recipe_defaults={"temperature": 1.0, "hard_label_weight": 1.0})  # NKD paper: CE + NKD, tau 1
def nkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    gamma: float = 1.5,
) -> torch.Tensor:
    """Normalized KD (Yang, Zeng, Yuan & Li, ICCV 2023, "From Knowledge Distillation to Self-Knowledge
    Distillation: A Unified Approach with Normalized Loss and Customized Soft Labels").

    ``L = mean_n [ −T_t · log S_t  −  γ·τ² · Σ_{i≠t} N(T^τ)_i · log N(S^τ)_i ]``

    with ``T_t = softmax(t)_y`` (τ = 1, detached), ``S_t = softmax(s)_y`` (τ = 1) and ``N(z^τ)`` the softmax of the
    C−1 non-target logits divided by τ (the target column is removed, not masked by a multiply). The plain
    cross-entropy on labels is NOT included (add ``hard_ce`` yourself, as the paper does). Soft/mixed labels (float,
    same shape as the logits) are reduced to their argmax, as in the official code (yzd-v/cls_KD @1e5d48f,
    ``mmcls/models/dis_losses/nkd.py`` lines 25-26); unlike USKD (:func:`uskd_terms`), NKD keeps no second class.
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    y = _target_labels(labels, student_logits)
    s = _flat(student_logits)
    t = _flat(teacher_logits)

    log_s_target = F.log_softmax(s, dim=-1).gather(1, y[:, None]).squeeze(1)
    t_target = F.softmax(t, dim=-1).gather(1, y[:, None]).squeeze(1).detach()
    target_term = -(t_target * log_s_target)

    _, s_non = _split_target(s / temperature, y)
    _, t_non = _split_target(t / temperature, y)
    non_target_term = -(F.softmax(t_non, dim=-1) * F.log_softmax(s_non, dim=-1)).sum(-1)

    return (target_term + float(gamma) * temperature**2 * non_target_term).mean()


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample DKD pieces at temperature τ, *without* the τ² factor (Zhao et al., CVPR 2022).

    Returns ``(tckd, nckd)``, each of shape (N,):
    - ``tckd_n = KL(b^T ‖ b^S)`` with the binary distributions ``b = (p_t, 1 − p_t)`` of softmax(z/τ);
    - ``nckd_n = KL(N(T^τ) ‖ N(S^τ))`` between the softmaxes of the C−1 non-target logits.
    The paper's identity ``KL(p^T ‖ p^S) = tckd + (1 − p_t^T)·nckd`` holds per sample. Everything is computed in
    log space (``log(1 − p_t) = logsumexp(non-target) − logsumexp(all)``), so saturated teachers stay finite.
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    y = _target_labels(labels, student_logits)
    s = _flat(student_logits) / temperature
    t = _flat(teacher_logits) / temperature

    def pieces(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z_target, z_non = _split_target(z, y)
        lse_all = torch.logsumexp(z, dim=-1)
        lse_non = torch.logsumexp(z_non, dim=-1)
        log_b = torch.stack([z_target - lse_all, lse_non - lse_all], dim=-1)  # log (p_t, 1 − p_t)
        log_n = z_non - lse_non[:, None]  # log N(z)
        return log_b, log_n

    log_b_s, log_n_s = pieces(s)
    log_b_t, log_n_t = pieces(t)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(-1)
    nckd = (log_n_t.exp() * (log_n_t - log_n_s)).sum(-1)
    return tckd, nckd


@register_loss("dkd", kind="logits", takes=("teacher_logits", "labels"), probabilities=True,
               # mdistiller DKD: CE weight 1, T 4, warm-up 20 of 240 epochs (1/12 of training)
               recipe_defaults={"temperature": 4.0, "hard_label_weight": 1.0, "kd_warmup": 1 / 12})
def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
) -> torch.Tensor:
    """Decoupled KD (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge Distillation").

    ``L = α·τ²·mean_n TCKD_n + β·τ²·mean_n NCKD_n`` where TCKD is the KL between the binary target/non-target
    distributions (p_t, 1 − p_t) of teacher and student at temperature τ and NCKD the KL between the softmaxes of the
    non-target logits (target column removed). See :func:`dkd_terms`. The paper's warm-up of the loss weight over
    the first epochs belongs to the training loop, not here.
    """
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    tau2 = _check_temperature(temperature) ** 2
    return float(alpha) * tau2 * tckd.mean() + float(beta) * tau2 * nckd.mean()



# ------------------------------------------------------------------------------ BD-KD: balanced forward/reverse KL

def _entropy(logits: torch.Tensor) -> torch.Tensor:
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def entropy_gap_weights(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    rule: str = "sigmoid",
    sharpness: float = 1.0,
) -> torch.Tensor:
    """Per-sample weight ``λ_r ∈ [0, 1]`` of the reverse KL in BD-KD (``λ_f = 1 − λ_r``), detached.

    ``ΔH = H(p_s^τ) − H(p_t^τ)`` (entropy gap). A student flatter than its teacher (ΔH > 0) leans on the
    mode-seeking reverse KL(p_s‖p_t), which sharpens it; a student more confident than its teacher (ΔH < 0) leans on
    the mass-covering forward KL(p_t‖p_s), which softens it (calibration). Rules:
    ``sigmoid``: ``λ_r = σ(sharpness·ΔH)``; ``hard``: ``λ_r = 1[ΔH > 0]``; ``forward``/``reverse``: λ_r = 0 / 1.
    This rule is a reconstruction from the BD-KD abstract (Amara et al., arXiv 2212.12965 v1/v2: "sample-wise
    weighting of forward and reverse KL", guided by the teacher/student entropy gap), not the paper's code (none is
    public) nor its method section (not retrievable here). For the teacher's term pass the logits in swapped roles:
    ``entropy_gap_weights(teacher, student)`` uses ``H(p_t) − H(p_s)``; under ``sigmoid`` that is ``1 − λ_r``.
    """
    temperature = _check_temperature(temperature)
    _check_pair(student_logits, teacher_logits)
    with torch.no_grad():
        gap = _entropy(_flat(student_logits) / temperature) - _entropy(_flat(teacher_logits) / temperature)
        if rule == "sigmoid":
            w = torch.sigmoid(float(sharpness) * gap)
        elif rule == "hard":
            w = (gap > 0).float()
        elif rule == "forward":
            w = torch.zeros_like(gap)
        elif rule == "reverse":
            w = torch.ones_like(gap)
        else:
            raise DistillerError(f"BD-KD weighting rule must be sigmoid, hard, forward or reverse, got {rule!r}")
    return w.reshape(student_logits.shape[:-1])


@register_loss("bdkd", kind="logits", takes=("teacher_logits",), probabilities=True)
def balanced_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    rule: str = "sigmoid",
    sharpness: float = 1.0,
) -> torch.Tensor:
    """Balanced divergences (BD-KD, Amara et al. 2022, "BD-KD: Balancing the Divergences for Online Knowledge
    Distillation"): ``L = τ²·mean_n[(1 − λ_r,n)·KL(p_t‖p_s)_n + λ_r,n·KL(p_s‖p_t)_n]`` with ``λ_r`` from
    :func:`entropy_gap_weights`. Gradients reach both logits; detach the side you do not train.

    "student" is the network being trained by this term and "teacher" its target: the online teacher's own balanced
    term is ``balanced_kl_loss(teacher_logits, student_logits.detach(), …)`` (roles swapped, the ``bdkd`` vision
    method's ``teacher_reg``), i.e. ``τ²·mean_n[(1 − λ'_n)·KL(p_s‖p_t) + λ'_n·KL(p_t‖p_s)]`` with
    ``λ'_n = g(H(p_t) − H(p_s))``.
    """
    w = entropy_gap_weights(student_logits, teacher_logits, temperature, rule, sharpness).reshape(-1)
    forward = kd_loss(student_logits, teacher_logits, temperature, reduction="none").reshape(-1)
    reverse = kd_loss(teacher_logits, student_logits, temperature, reduction="none").reshape(-1)
    return ((1 - w) * forward + w * reverse).mean()


# ------------------------------------------------------------------------------ USKD: self-KD with custom soft labels

def _check_rank_on(rank_on: str) -> None:
    if rank_on not in ("official", "prob"):
        raise DistillerError(f"USKD rank_on must be 'official' or 'prob', got {rank_on!r}")


def _zipf_from_targets(
    s: torch.Tensor, w: torch.Tensor, index: torch.Tensor, rank_on: str
) -> torch.Tensor:
    """Zipf non-target labels (N, C−K) for fp32 (N, C) student/weak logits and target columns ``index`` (N, K)."""
    _check_rank_on(rank_on)
    with torch.no_grad():
        p_w = F.softmax(w, dim=-1)
        w_t = p_w.gather(1, index).sum(1, keepdim=True)
        if rank_on == "official":
            ls = F.log_softmax(s, dim=-1)
            score = p_w / (1 - w_t).clamp_min(1e-12) + ls / (1 - ls.gather(1, index).sum(1, keepdim=True))
        else:
            ps = F.softmax(s, dim=-1)
            ps_t = ps.gather(1, index).sum(1, keepdim=True)
            score = p_w / (1 - w_t).clamp_min(1e-12) + ps / (1 - ps_t).clamp_min(1e-12)
        rank = score.argsort(dim=-1, descending=True).argsort(dim=-1) + 1  # 1 = highest score
        non = _drop_columns(1.0 / rank.float(), index)
        return non / non.sum(-1, keepdim=True).clamp_min(1e-12)


def zipf_soft_labels(
    student_logits: torch.Tensor,
    weak_logits: torch.Tensor,
    labels: torch.Tensor,
    rank_on: str = "official",
) -> torch.Tensor:
    """USKD's non-target soft labels (Yang et al., ICCV 2023): rank the classes by a score, give the class at rank r
    (1-based, all C classes ranked) the Zipf weight 1/r, drop the target(s) and renormalise over the non-targets.
    Returns (N, C−K), detached, rows summing to 1, columns in the original class order with the K target columns
    removed: K = 1 for hard labels, K = 2 (the label's top-2 classes, :func:`_top2_targets`) for soft/mixed labels.

    Score of class i for sample n (``w`` = softmax of the weak head, ``s`` = softmax of the student, ``T`` = the
    target columns, one or two):
    - ``rank_on="official"``: ``w_i/(1−Σ_T w) + ℓ_i/(1−Σ_T ℓ)`` with ``ℓ = log s``, exactly what the official code
      computes (yzd-v/cls_KD @1e5d48f, ``mmcls/models/dis_losses/uskd.py`` lines 53-54 and 70-73: its variable
      holding the student's probabilities is overwritten by ``log_softmax`` before the ranking line, so probabilities
      and log-probabilities are added; the log term spans many nats and mostly decides the order, the weak head
      breaks near-ties);
    - ``rank_on="prob"``: ``w_i/(1−Σ_T w) + s_i/(1−Σ_T s)``, the formula as written in the paper (both normalised
      non-target probabilities).
    """
    _check_pair(student_logits, weak_logits)
    index, _, _ = _top2_targets(labels, student_logits)
    return _zipf_from_targets(_flat(student_logits), _flat(weak_logits), index, rank_on)


def uskd_terms(
    student_logits: torch.Tensor,
    weak_logits: torch.Tensor,
    labels: torch.Tensor,
    label_smoothing: float = 0.1,
    rank_on: str = "official",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three USKD terms (batch means), without their weights: ``(L_t, L_non, L_weak)``.

    Hard labels (class ids):
    - ``L_t = −mean_n p_t,n · log softmax(z)_y`` with ``p_t = s_t² + 1 − mean_batch(s_t²)``, detached (soft target);
    - ``L_non = −mean_n Σ_{i≠y} Z_i · log N(z)_i`` with Zipf labels ``Z`` from :func:`zipf_soft_labels`;
    - ``L_weak = CE((1−ε)·onehot + ε/C, z_weak)``, the weak classifier on an intermediate feature.

    Soft/mixed labels ``ŷ`` (float, the logits' shape), as the official code (yzd-v/cls_KD @1e5d48f,
    ``mmcls/models/dis_losses/uskd.py``) treats them: the two largest label entries ``a, b`` with values ``v_a, v_b``
    are both targets (lines 33-36);
    - ``L_t = −mean_n Σ_{k∈{a,b}} p_k · log softmax(z)_k`` with ``p_k = s_k² + v_k − mean_batch(s_k²)`` (the batch
      mean taken per column: top-1 and top-2 separately) and ``p_k = 0`` where ``v_k = 0``, detached (lines 44-55);
    - ``L_non``: the non-target set excludes both ``a`` and ``b`` (C−2 classes; ranking as above, lines 70-90);
    - ``L_weak = −mean_n Σ_c ((1−ε)·ŷ_c + ε/C) · log softmax(z_weak)_c``: the whole soft label, smoothed (lines
      58-59 with ε = 0.1).
    With two classes and a soft label the non-target set is empty and ``L_non = 0`` (as in the official code).
    """
    _check_pair(student_logits, weak_logits)
    _check_rank_on(rank_on)
    index, value, soft = _top2_targets(labels, student_logits)
    s, w = _flat(student_logits), _flat(weak_logits)
    log_s = F.log_softmax(s, dim=-1)
    log_s_t = log_s.gather(1, index)
    with torch.no_grad():
        sq = log_s_t.exp() ** 2
        p_t = torch.where(value == 0, torch.zeros_like(sq), sq + value - sq.mean(0, keepdim=True))
    l_t = -(p_t * log_s_t).sum(1).mean()
    if s.shape[1] > index.shape[1]:
        z = _zipf_from_targets(s, w, index, rank_on)
        l_non = -(z * F.log_softmax(_drop_columns(s, index), dim=-1)).sum(-1).mean()
    else:  # two classes, both targets: no non-target class left
        l_non = s.sum() * 0.0
    eps = float(label_smoothing)
    if soft is None:
        l_weak = F.cross_entropy(w, index[:, 0], label_smoothing=eps)
    else:
        target = (1 - eps) * soft + eps / s.shape[1]
        l_weak = -(target * F.log_softmax(w, dim=-1)).sum(-1).mean()
    return l_t, l_non, l_weak


@register_loss("uskd", kind="logits", takes=("weak_logits", "labels"), probabilities=True)
def uskd_loss(
    student_logits: torch.Tensor,
    weak_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.1,
    mu: float = 0.005,
    label_smoothing: float = 0.1,
    rank_on: str = "official",
) -> torch.Tensor:
    """Universal Self-KD (Yang, Zeng, Yuan & Li, ICCV 2023), teacher-free: ``α·L_t + β·L_non + μ·L_weak``
    (see :func:`uskd_terms`; ImageNet α=1, β=0.1, μ=0.005; CIFAR α=0.1, β=0.1, μ=0.1). Add the plain CE yourself."""
    l_t, l_non, l_weak = uskd_terms(student_logits, weak_logits, labels, label_smoothing, rank_on)
    return float(alpha) * l_t + float(beta) * l_non + float(mu) * l_weak


__all__ = [
    "check_temperature",
    "kd_loss",
    "soft_ce_loss",
    "logits_mse_loss",
    "hard_ce_loss",
    "nkd_loss",
    "dkd_loss",
    "dkd_terms",
    "entropy_gap_weights",
    "balanced_kl_loss",
    "zipf_soft_labels",
    "uskd_terms",
    "uskd_loss",
]
