"""Variational lower bounds on mutual information and the MI-α intermediate-distillation loss.

Bounds from Poole, Ozair, van den Oord, Alemi & Tucker, ICML 2019, "On Variational Bounds of Mutual Information";
MI-α as the intermediate objective of Distiller (He et al. 2021, "Distiller: A Systematic Study of Model
Distillation Methods in NLP").

Conventions: ``scores`` is a (B, B) critic matrix with ``scores[i, j] = f(student_i, teacher_j)`` (diagonal =
positive pairs); ``log_baseline[i]`` (shape (B,), or a scalar) is the learned log-baseline belonging to row i and is
broadcast along the row. Every bound is computed in fp32 (inputs are cast) and returned as a 0-dim tensor (an
estimate of I in nats; the loss is its negative). "offdiag" means the B(B−1) entries with i ≠ j, so every bound
except InfoNCE needs B ≥ 2 (:class:`DistillerError` otherwise).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn as nn

from distiller_nlp.core.errors import DistillerError

from .registry import register_loss

BaselineLike = Union[torch.Tensor, float, int]

# ------------------------------------------------------------------------------------------------------- helpers


def _as_scores(scores: torch.Tensor, what: str, min_batch: int = 2) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise DistillerError(f"{what}: scores must be a square (batch, batch) tensor, got {shape}")
    if scores.shape[0] < min_batch:
        raise DistillerError(
            f"{what}: MI bounds need batch size >= {min_batch} (the off-diagonal negatives are empty), "
            f"got {scores.shape[0]}"
        )
    return scores.float()


def _as_baseline(log_baseline: BaselineLike, batch: int, ref: torch.Tensor, what: str) -> torch.Tensor:
    """Return the per-row log-baseline as a float32 (B,) tensor."""
    b = torch.as_tensor(log_baseline, device=ref.device).float()
    if b.dim() == 0:
        return b.expand(batch)
    if b.dim() == 2 and b.shape[1] == 1:
        b = b[:, 0]
    if b.shape != (batch,):
        raise DistillerError(f"{what}: log_baseline must be a scalar or have shape ({batch},), got {tuple(b.shape)}")
    return b


def _offdiag(batch: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(batch, dtype=torch.bool, device=device)


def logmeanexp_offdiag(x: torch.Tensor) -> torch.Tensor:
    """``log( (1/(B(B−1))) Σ_{i≠j} exp x_ij )`` for a (B, B) tensor, computed with a masked logsumexp."""
    batch = x.shape[0]
    masked = x.masked_fill(~_offdiag(batch, x.device), float("-inf"))
    return torch.logsumexp(masked.reshape(-1), dim=0) - math.log(batch * (batch - 1))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 − exp(x))`` for x < 0, accurate in both regimes (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def log_loo_mean(scores: torch.Tensor) -> torch.Tensor:
    """Leave-one-out InfoNCE baseline ``N_ij = log( (1/(B−1)) Σ_{k≠j} exp S_ik )`` (Poole et al. 2019), (B, B).

    Computed stably in O(B²): for j other than the row's argmax, ``log Σ_{k≠j} = lse_i + log(1 − exp(S_ij − lse_i))``
    is well conditioned (``exp(S_ij − lse_i) ≤ 1/2``); for the argmax column the leave-one-out logsumexp is computed
    directly with that column masked to −∞, so a dominant score never produces ``log(0)``.
    """
    s = _as_scores(scores, "log_loo_mean")
    batch = s.shape[0]
    lse = torch.logsumexp(s, dim=1, keepdim=True)
    top = s.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(s, dtype=torch.bool).scatter(1, top, True)
    # The argmax entries are replaced by a harmless value first so neither the value nor its gradient is NaN.
    x = (s - lse).masked_fill(is_top, -1.0)
    loo = lse + _log1mexp(x)
    loo_top = torch.logsumexp(s.masked_fill(is_top, float("-inf")), dim=1, keepdim=True)
    loo = torch.where(is_top, loo_top.expand_as(loo), loo)
    return loo - math.log(batch - 1)


# --------------------------------------------------------------------------------------------------------- bounds


def infonce_lower_bound(scores: torch.Tensor) -> torch.Tensor:
    """InfoNCE / CPC bound (van den Oord et al. 2018; Poole et al. 2019, Eq. 12).

    ``I_NCE = log B + mean_i [ S_ii − logsumexp_j S_ij ]``  (always ≤ log B). Defined for B ≥ 1 (B = 1 gives 0).
    """
    s = _as_scores(scores, "infonce_lower_bound", min_batch=1)
    batch = s.shape[0]
    return torch.diagonal(s).sub(torch.logsumexp(s, dim=1)).mean() + math.log(batch)


def tuba_lower_bound(scores: torch.Tensor, log_baseline: BaselineLike = 0.0) -> torch.Tensor:
    """TUBA bound with a learned log-baseline (Poole et al. 2019, Eq. 7).

    ``I_TUBA = 1 + mean_i (S_ii − b_i) − exp( logmeanexp_{i≠j} (S_ij − b_i) )``, b broadcast along rows.
    """
    s = _as_scores(scores, "tuba_lower_bound")
    batch = s.shape[0]
    b = _as_baseline(log_baseline, batch, s, "tuba_lower_bound")
    centred = s - b[:, None]
    return 1.0 + torch.diagonal(centred).mean() - torch.exp(logmeanexp_offdiag(centred))


def nwj_lower_bound(scores: torch.Tensor) -> torch.Tensor:
    """NWJ / f-GAN KL bound (Nguyen, Wainwright & Jordan 2010; Poole et al. 2019, Eq. 8): TUBA with baseline e¹.

    ``I_NWJ = tuba(S − 1, 0) = 1 + mean_i (S_ii − 1) − exp( logmeanexp_{i≠j} (S_ij − 1) )``.
    """
    s = _as_scores(scores, "nwj_lower_bound")
    return tuba_lower_bound(s - 1.0, 0.0)


def _check_alpha(alpha: float) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise DistillerError(f"MI-alpha: alpha must be a number in [0, 1], got {alpha!r}") from None
    if not (0.0 <= value <= 1.0):
        raise DistillerError(f"MI-alpha: alpha must be in [0, 1], got {alpha!r}")
    return value


def mi_alpha_lower_bound(scores: torch.Tensor, log_baseline: BaselineLike, alpha: float) -> torch.Tensor:
    """Interpolated bound I_α (Poole et al. 2019, Eq. 13), batched exactly as Distiller/Poole compute it.

    1. ``N_ij = log( (1/(B−1)) Σ_{k≠j} exp S_ik )`` (leave-one-out InfoNCE baseline, :func:`log_loo_mean`);
    2. ``Φ_ij = logsumexp( log α + N_ij , log(1−α) + b_i )`` (interpolated baseline in log space; α = 0 gives
       exactly ``Φ = b`` i.e. TUBA, α = 1 exactly ``Φ = N`` i.e. leave-one-out InfoNCE — no ``log 0`` is formed);
    3. joint ``J = mean_{i≠j} (S_ii − Φ_ij)``; marginal ``M = exp( logmeanexp_{i≠j} (S_ij − Φ_ii) )``;
    4. ``I_α = 1 + J − M``.
    α trades variance (α → 0, unbounded, high variance) for bias (α → 1, ≤ log B for a dominant diagonal).
    """
    alpha = _check_alpha(alpha)
    s = _as_scores(scores, "mi_alpha_lower_bound")
    batch = s.shape[0]
    b = _as_baseline(log_baseline, batch, s, "mi_alpha_lower_bound")[:, None].expand(batch, batch)
    if alpha == 0.0:
        phi = b
    else:
        nce = log_loo_mean(s)
        if alpha == 1.0:
            phi = nce
        else:
            phi = torch.logaddexp(nce + math.log(alpha), b + math.log1p(-alpha))
    off = _offdiag(batch, s.device)
    joint = torch.diagonal(s)[:, None] - phi
    joint_term = torch.where(off, joint, torch.zeros((), device=s.device)).sum() / (batch * (batch - 1))
    marginal_term = torch.exp(logmeanexp_offdiag(s - torch.diagonal(phi)[:, None]))
    return 1.0 + joint_term - marginal_term


# ------------------------------------------------------------------------------------------------------ the module


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


_BOUNDS = ("mi_alpha", "infonce", "nwj", "tuba")
_POOLS = ("cls", "mean")


#: MI-α's default α: Distiller's best runs and launch scripts use 0.9 (Cli212/Distiller ``experiments/*.sh``
#: ``--alpha 0.9``; He et al. 2021 report their best configurations at α = 0.9). 0.5 was this toolkit's old default.
MI_ALPHA_DEFAULT = 0.9


@register_loss("mi_alpha", kind="hidden")
class MIAlphaLoss(nn.Module):
    """MI-α intermediate distillation loss (He et al. 2021, "Distiller"; bound from Poole et al. 2019).

    ``loss = −I(h_s; h_t)`` estimated on a batch with a separable critic ``S = g_S(s) g_T(t)ᵀ`` (two towers
    ``d → hidden → hidden → out_dim`` with ReLU) and, for ``bound in {"mi_alpha", "tuba"}``, a learned log-baseline
    ``b = q(t)`` (MLP ``d_teacher → hidden → hidden → 1`` on the teacher vector). ``bound`` picks
    :func:`mi_alpha_lower_bound` (default, uses ``alpha``), :func:`infonce_lower_bound`, :func:`nwj_lower_bound`
    or :func:`tuba_lower_bound`. The baseline MLP exists only for bounds that use it (no unused parameters under DDP).

    ``forward(h_s, h_t, mask=None)``: ``(B, L, D)`` hidden states are pooled (``pool="cls"``: first token;
    ``"mean"``: mean over tokens where ``mask`` (B, L) is 1); already-pooled ``(B, D)`` inputs are used as they are.
    The critic runs in fp32 with autocast disabled, whatever the input dtype, and the loss is fp32.

    Batch size 1 (e.g. the last, ragged batch of an epoch) has no negatives: the loss is then a 0 that stays
    connected to the student input and the critic parameters (every parameter gets a zero gradient), so training
    continues instead of crashing. The critic's parameters must be given to the optimizer by the caller.
    The last bound value is kept (detached) in ``self.last_bound`` for logging.
    """

    def __init__(
        self,
        d_student: int,
        d_teacher: int,
        alpha: float = MI_ALPHA_DEFAULT,
        pool: str = "cls",
        bound: str = "mi_alpha",
        hidden: int = 128,
        out_dim: int = 64,
    ):
        super().__init__()
        for name, value in (("d_student", d_student), ("d_teacher", d_teacher), ("hidden", hidden),
                            ("out_dim", out_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DistillerError(f"MIAlphaLoss: {name} must be a positive integer, got {value!r}")
        if pool not in _POOLS:
            raise DistillerError(f"MIAlphaLoss: pool must be one of {', '.join(_POOLS)}, got {pool!r}")
        if bound not in _BOUNDS:
            raise DistillerError(f"MIAlphaLoss: bound must be one of {', '.join(_BOUNDS)}, got {bound!r}")
        self.alpha = _check_alpha(alpha)
        self.pool = pool
        self.bound = bound
        self.d_student = d_student
        self.d_teacher = d_teacher
        self.student_tower = _mlp(d_student, hidden, out_dim)
        self.teacher_tower = _mlp(d_teacher, hidden, out_dim)
        self.baseline: Optional[nn.Module] = _mlp(d_teacher, hidden, 1) if bound in ("mi_alpha", "tuba") else None
        self.last_bound: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        """The bound and α in the module's repr."""
        return f"bound={self.bound!r}, alpha={self.alpha}, pool={self.pool!r}"

    def _pool(self, h: torch.Tensor, mask: Optional[torch.Tensor], width: int, who: str) -> torch.Tensor:
        if h.dim() == 2:
            pooled = h
        elif h.dim() == 3:
            if self.pool == "cls":
                pooled = h[:, 0]
            else:
                if mask is None:
                    pooled = h.float().mean(1)
                else:
                    if tuple(mask.shape) != tuple(h.shape[:2]):
                        raise DistillerError(
                            f"MIAlphaLoss: mask {tuple(mask.shape)} must have shape {tuple(h.shape[:2])}")
                    keep = (mask != 0)[..., None]
                    summed = torch.where(keep, h.float(), torch.zeros((), device=h.device)).sum(1)
                    pooled = summed / keep.sum(1).clamp_min(1).float()
        else:
            raise DistillerError(f"MIAlphaLoss: {who} hidden states must be (batch, seq, dim) or (batch, dim), "
                                 f"got {tuple(h.shape)}")
        if pooled.shape[-1] != width:
            raise DistillerError(f"MIAlphaLoss: {who} width {pooled.shape[-1]} != the critic's {width}")
        return pooled

    def forward(self, h_s: torch.Tensor, h_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return ``−I`` (fp32 scalar) for student states ``h_s`` and teacher states ``h_t``."""
        s = self._pool(h_s, mask, self.d_student, "student")
        t = self._pool(h_t, mask, self.d_teacher, "teacher")
        if s.shape[0] != t.shape[0]:
            raise DistillerError(f"MIAlphaLoss: student batch {s.shape[0]} != teacher batch {t.shape[0]}")
        compute_dtype = self.student_tower[0].weight.dtype
        if compute_dtype not in (torch.float32, torch.float64):
            raise DistillerError(
                f"MIAlphaLoss: keep the critic's parameters in fp32 (they are {compute_dtype}); it runs outside "
                "autocast, so cast the student model, not the critic, to half precision"
            )
        autocast_device = s.device.type if s.device.type in ("cpu", "cuda", "xpu", "mps", "hpu") else "cpu"
        with torch.autocast(device_type=autocast_device, enabled=False):
            if s.shape[0] < 2:
                anchor = s.float().sum() + sum(p.float().sum() for p in self.parameters())
                self.last_bound = None
                return anchor * 0.0
            scores = self.student_tower(s.to(compute_dtype)) @ self.teacher_tower(t.to(compute_dtype)).T
            scores = scores.float()
            if self.bound == "infonce":
                value = infonce_lower_bound(scores)
            elif self.bound == "nwj":
                value = nwj_lower_bound(scores)
            else:
                log_baseline = self.baseline(t.to(compute_dtype)).squeeze(-1).float()
                if self.bound == "tuba":
                    value = tuba_lower_bound(scores, log_baseline)
                else:
                    value = mi_alpha_lower_bound(scores, log_baseline, self.alpha)
        self.last_bound = value.detach()
        return -value


__all__ = [
    "infonce_lower_bound",
    "nwj_lower_bound",
    "tuba_lower_bound",
    "mi_alpha_lower_bound",
    "log_loo_mean",
    "logmeanexp_offdiag",
    "MIAlphaLoss",
]
