"""Token-level divergences between a teacher's and a student's next-token distributions (causal-LM KD).

Every loss here compares, at each *response* token ``t`` (``mask[b, t] != 0``), the teacher distribution
``p = softmax(z_T / τ)`` with the student distribution ``q = softmax(z_S / τ)`` and averages over the masked tokens
only. The caller aligns the logits: position ``t`` holds the distribution of the token at ``t + 1`` (the usual causal
shift) and ``mask`` marks the positions whose next token belongs to the response.

========================  ======================================================  =====================================
name                      per-token value                                          paper / reference code
========================  ======================================================  =====================================
``lm_fkl``                KL(p || q)                                               Hinton et al. 2015; DistiLLM ``forward_kl``
``lm_rkl``                KL(q || p)                                               MiniLLM (Gu et al. 2024); DistiLLM ``reverse_kl``
``lm_skew_fkl``           KL(p || α p + (1-α) q)                                   DistiLLM (Ko et al., ICML 2024)
``lm_skew_rkl``           KL(q || (1-α) p + α q)                                   DistiLLM (Ko et al., ICML 2024)
``lm_jsd``                β KL(p || m) + (1-β) KL(q || m), m = β p + (1-β) q       GKD (Agarwal et al., ICLR 2024), TRL
``lm_tv``                 ½ Σ_v |p_v - q_v|                                        DistiLLM ``tv_distance``
========================  ======================================================  =====================================

Conventions (what the reference code does, and where we differ):

- **Skew KL** follows DistiLLM's code (jongwooko/distillm, ``distillm/losses.py``: ``skewed_forward_kl`` mixes
  ``lam * teacher_probs + (1-lam) * student_probs`` and takes ``-Σ p log m``; ``skewed_reverse_kl`` mixes
  ``(1-lam) * teacher_probs + lam * student_probs`` and takes ``Σ q (log m - log q)`` negated), default ``lam = 0.1``.
  DistiLLM's forward losses are cross-entropies (they omit the teacher entropy ``Σ p log p``, a constant for the
  student); ours are true KL divergences, so ``KL(p||p) = 0`` and α = 0 gives plain KL exactly. Gradients agree.
- **Generalized JSD** follows TRL's ``GKDTrainer.generalized_jsd_loss`` (huggingface/trl,
  ``trl/experimental/gkd/gkd_trainer.py``): the mixture is ``m = β p + (1-β) q`` (log-space ``logsumexp`` of
  ``student_log_probs + log(1-β)`` and ``teacher_log_probs + log β``) and ``jsd = β KL(p||m) + (1-β) KL(q||m)``.
  TRL (and we) special-case the end points: ``β = 0`` *is* forward KL(p || q) and ``β = 1`` *is* reverse KL(q || p).
  The formula itself vanishes at both ends: as β → 0, JSD(β) / β → KL(p || q); as β → 1, JSD(β) / (1-β) →
  KL(q || p). At β = ½ it is the symmetric Jensen-Shannon divergence.
- **Temperature**: both distributions are softened by τ, and the KL-family losses (everything but ``lm_tv``) are
  multiplied by τ² (Hinton et al.; the toolkit's convention, see :mod:`distiller_nlp.core.losses.logits`) so their
  gradient scale does not shrink with τ. At τ = 1 (the default, and what DistiLLM and TRL's GKD train with) the
  values equal the references'. ``lm_tv`` is a distance in [0, 1] and is not rescaled.
- **Precision and memory**: logits may be bf16/fp16; every reduction runs in fp32. The masked tokens are selected
  first (their row indices), then processed ``chunk_size`` tokens at a time: each chunk is gathered, cast to fp32 and
  reduced; when the student needs gradients, the chunk's gradient is computed at once and written into one buffer of
  the student's dtype (the gradient the student gets anyway), so neither pass ever holds a second full ``B × T × V``
  tensor — fp32 or otherwise — only a few ``chunk_size × V`` fp32 temporaries (a 49k vocabulary at long sequences
  fits). A loss built this way can be back-propagated once (no ``retain_graph`` double backward).
- **Gradients** flow to the student only: the teacher is a constant target (its logits are detached).
- **Sparse teacher targets**: ``teacher_logits`` may be a :class:`~distiller_nlp.lm.sparse.SparseTargets` (top-k
  log-probabilities + indices + the remaining mass). Both distributions are then compared on k + 1 atoms: the k
  teacher tokens and one "rest" bucket whose student mass is ``logsumexp`` of the student's other logits (see
  :mod:`distiller_nlp.lm.sparse`). With k = V there is no rest bucket and the loss equals the dense one.

Each function is registered on the core loss registry (``get_loss("lm_fkl")``) once this module is imported, with
``kind="logits"`` and ``takes=("teacher_logits",)``; on ``(B, C)`` logits without a mask they are ordinary
classification KD losses. :data:`DIVERGENCES` maps each name to its per-token function ``(log_p, log_q) -> (N,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Union

import torch
import torch.nn.functional as F

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import register_loss
from distiller_nlp.core.losses.logits import check_temperature as _check_temperature

from .sparse import SparseTargets

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DIVERGENCES",
    "lm_divergence",
    "lm_fkl",
    "lm_jsd",
    "lm_rkl",
    "lm_skew_fkl",
    "lm_skew_rkl",
    "lm_tv",
    "token_fkl",
    "token_jsd",
    "token_rkl",
    "token_skew_fkl",
    "token_skew_rkl",
    "token_tv",
]

#: masked tokens processed at once: 1024 × 49,152 fp32 = 192 MiB per intermediate
DEFAULT_CHUNK_SIZE = 1024
#: log-probabilities are floored here so that 0 · log 0 terms (masked vocabulary, an empty sparse bucket) stay 0
#: in the forward pass *and* the backward pass (a literal -inf gives NaN gradients through logaddexp / where)
LOG_FLOOR = -1e30

Teacher = Union[torch.Tensor, SparseTargets]

# ------------------------------------------------------------------------------------------- per-token divergences
# All take log-probabilities (N, A) over the same A atoms (the vocabulary, or k teacher tokens + a rest bucket) and
# return the per-token value (N,). p is the teacher, q the student.


def _kl(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) = Σ_v a_v (log a_v - log b_v), per row."""
    return (log_a.exp() * (log_a - log_b)).sum(dim=-1)


def _mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w a + (1 - w) b) for 0 < w < 1, computed in log space."""
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def token_fkl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Forward KL(p || q) per token (mean-seeking; the Hinton et al. 2015 KD objective)."""
    return _kl(log_p, log_q)


def token_rkl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Reverse KL(q || p) per token (mode-seeking; MiniLLM, Gu et al. 2024)."""
    return _kl(log_q, log_p)


def token_skew_fkl(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew forward KL (DistiLLM, Ko et al., ICML 2024): KL(p || α p + (1-α) q); α = 0 is KL(p || q)."""
    if alpha == 0:
        return _kl(log_p, log_q)
    if alpha == 1:
        return torch.zeros_like(log_p[..., 0])
    return _kl(log_p, _mix(log_p, log_q, alpha))


def token_skew_rkl(log_p: torch.Tensor, log_q: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew reverse KL (DistiLLM, Ko et al., ICML 2024): KL(q || (1-α) p + α q); α = 0 is KL(q || p)."""
    if alpha == 0:
        return _kl(log_q, log_p)
    if alpha == 1:
        return torch.zeros_like(log_q[..., 0])
    return _kl(log_q, _mix(log_q, log_p, alpha))


def token_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized JSD (GKD, Agarwal et al. 2024, Eq. 1, as TRL computes it): β KL(p||m) + (1-β) KL(q||m) with
    m = β p + (1-β) q; β = 0 is KL(p || q) and β = 1 is KL(q || p) exactly (TRL's special cases)."""
    if beta == 0:
        return _kl(log_p, log_q)
    if beta == 1:
        return _kl(log_q, log_p)
    log_m = _mix(log_p, log_q, beta)
    return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)


def token_tv(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ_v |p_v - q_v| per token (DistiLLM ``tv_distance``; Wen et al. 2023, f-divergence KD)."""
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(dim=-1)


#: name -> per-token divergence ``(log_p, log_q, **params) -> (N,)``
DIVERGENCES: dict[str, Callable[..., torch.Tensor]] = {
    "lm_fkl": token_fkl,
    "lm_rkl": token_rkl,
    "lm_skew_fkl": token_skew_fkl,
    "lm_skew_rkl": token_skew_rkl,
    "lm_jsd": token_jsd,
    "lm_tv": token_tv,
}
#: divergences multiplied by τ² (the KL family); total variation keeps its [0, 1] range
_T2_SCALED = {"lm_fkl", "lm_rkl", "lm_skew_fkl", "lm_skew_rkl", "lm_jsd"}

# ------------------------------------------------------------------------------------------------- the reduction


def _check_weight(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DistillerError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise DistillerError(f"{name} must be in [0, 1], got {value}")
    return value


def _take(x: torch.Tensor, rows) -> torch.Tensor:
    return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)


def _dense_rows(s: torch.Tensor, t: torch.Tensor, temperature: float, fn, params) -> torch.Tensor:
    """Summed divergence of a chunk of dense logits (N, V), in fp32."""
    s, t = s.float(), t.float()
    if temperature != 1.0:
        s, t = s / temperature, t / temperature
    log_q = F.log_softmax(s, dim=-1).clamp(min=LOG_FLOOR)
    log_p = F.log_softmax(t, dim=-1).clamp(min=LOG_FLOOR)
    return fn(log_p, log_q, **params).sum()


def _sparse_rows(s: torch.Tensor, idx: torch.Tensor, log_p: torch.Tensor, rest_p: torch.Tensor, temperature: float,
                 fn, params, with_rest: bool) -> torch.Tensor:
    """Summed divergence of a chunk against sparse targets: k atoms + (when k < V) one rest bucket, in fp32."""
    s = s.float()
    if temperature != 1.0:
        s = s / temperature
    idx = idx.long()
    lse = torch.logsumexp(s, dim=-1, keepdim=True)
    log_q = s.gather(-1, idx) - lse
    log_p = log_p.float()
    if with_rest:
        rest_q = torch.logsumexp(s.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True) - lse
        log_q = torch.cat([log_q, rest_q], dim=-1)
        log_p = torch.cat([log_p, rest_p.float().unsqueeze(-1)], dim=-1)
    return fn(log_p.clamp(min=LOG_FLOOR), log_q.clamp(min=LOG_FLOOR), **params).sum()


class _FusedChunks(torch.autograd.Function):
    """Σ over chunks of ``compute(student rows, *teacher rows)``, with each chunk's gradient computed right away.

    The forward runs forward *and* backward chunk by chunk and writes the gradient rows into one buffer of the
    student's dtype; the backward only scales it. So the fp32 working set is one chunk, nothing is recomputed (unlike
    activation checkpointing), and no full-size temporary gradient is built per chunk (unlike autograd through
    ``index_select``)."""

    @staticmethod
    def forward(ctx, s_flat, chunks, compute):
        grad = torch.zeros_like(s_flat)
        total = torch.zeros((), dtype=torch.float32, device=s_flat.device)
        for rows, teacher_rows in chunks():
            x = _take(s_flat, rows).detach().requires_grad_(True)
            with torch.enable_grad():
                part = compute(x, *teacher_rows)
            (g,) = torch.autograd.grad(part, x)
            if isinstance(rows, slice):
                grad[rows] = g
            else:
                grad.index_copy_(0, rows, g)
            total = total + part.detach()
        ctx.save_for_backward(grad)
        ctx.consumed = False
        return total

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.consumed:
            raise RuntimeError("a chunked LM divergence cannot be back-propagated twice (retain_graph=True): "
                               "compute the loss again")
        ctx.consumed = True
        (grad,) = ctx.saved_tensors
        return grad.mul_(grad_output.to(grad.dtype)), None, None


def lm_divergence(name: str, student_logits: torch.Tensor, teacher_logits: Teacher,
                  mask: torch.Tensor | None = None, temperature: float = 1.0,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, **params) -> torch.Tensor:
    """Mean over masked tokens of divergence ``name`` (a key of :data:`DIVERGENCES`), × τ² for the KL family.

    Args:
        student_logits: ``(B, T, V)`` (any leading shape ``(..., V)``), any float dtype; the loss is fp32.
        teacher_logits: logits of the same shape, or :class:`SparseTargets` with leading shape ``(...)``.
        mask: ``(B, T)`` (the leading shape); tokens where it is 0 are excluded. ``None``: every token counts.
        temperature: τ, softening both distributions (sparse targets carry the τ they were computed at, and
            it must be this one).
        chunk_size: masked tokens reduced at once (bounds the fp32 working set to ``chunk_size × V``).
        params: the divergence's own parameters (``alpha`` for the skew KLs, ``beta`` for JSD).

    Returns a 0-dim fp32 tensor; 0 (still attached to the student's graph) when no token is masked in.
    """
    if name not in DIVERGENCES:
        raise DistillerError(f"unknown LM divergence {name!r}; known: {', '.join(DIVERGENCES)}")
    fn = DIVERGENCES[name]
    tau = _check_temperature(temperature)
    chunk = int(chunk_size)
    if chunk < 1:
        raise DistillerError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if student_logits.dim() < 1 or student_logits.shape[-1] < 1:
        raise DistillerError(f"logits need a vocabulary dimension, got shape {tuple(student_logits.shape)}")
    vocab = student_logits.shape[-1]
    lead = tuple(student_logits.shape[:-1])
    sparse = isinstance(teacher_logits, SparseTargets)
    if sparse:
        if tuple(teacher_logits.indices.shape[:-1]) != lead:
            raise DistillerError(f"sparse teacher targets {tuple(teacher_logits.indices.shape)} do not match student "
                                 f"logits {tuple(student_logits.shape)} (expected leading shape {lead})")
        if teacher_logits.vocab_size != vocab:
            raise DistillerError(f"sparse teacher targets were computed over {teacher_logits.vocab_size} tokens, the "
                                 f"student has {vocab}")
        if not math.isclose(teacher_logits.temperature, tau, rel_tol=1e-6):
            raise DistillerError(f"sparse teacher targets were computed at temperature {teacher_logits.temperature}, "
                                 f"the loss asks for {tau}: recompute them at this temperature")
    elif not torch.is_tensor(teacher_logits) or tuple(teacher_logits.shape) != tuple(student_logits.shape):
        shape = tuple(teacher_logits.shape) if torch.is_tensor(teacher_logits) else type(teacher_logits).__name__
        raise DistillerError(f"student logits {tuple(student_logits.shape)} and teacher logits {shape} must have the "
                             "same shape")

    s_flat = student_logits.reshape(-1, vocab)
    n_rows = s_flat.shape[0]
    if mask is None:
        rows_all: torch.Tensor | None = None
        n = n_rows
    else:
        if tuple(mask.shape) != lead:
            raise DistillerError(f"mask {tuple(mask.shape)} must have the logits' leading shape {lead}")
        rows_all = (mask.reshape(-1) != 0).nonzero().squeeze(-1).to(s_flat.device)
        n = int(rows_all.numel())
    if n == 0:
        return s_flat.float().sum() * 0.0

    if sparse:
        k = teacher_logits.indices.shape[-1]
        flats = (teacher_logits.indices.reshape(-1, k).to(s_flat.device),
                 teacher_logits.logprobs.reshape(-1, k).detach().to(s_flat.device),
                 teacher_logits.rest_logprob.reshape(-1).detach().to(s_flat.device))

        def compute(s_rows, idx, lp, rest):
            return _sparse_rows(s_rows, idx, lp, rest, tau, fn, params, k < vocab)
    else:
        flats = (teacher_logits.detach().reshape(-1, vocab).to(s_flat.device),)

        def compute(s_rows, t_rows):
            return _dense_rows(s_rows, t_rows, tau, fn, params)

    def chunks():
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n)) if rows_all is None else rows_all[start:start + chunk]
            yield rows, [_take(x, rows) for x in flats]

    if torch.is_grad_enabled() and s_flat.requires_grad:
        total = _FusedChunks.apply(s_flat, chunks, compute)
    else:
        total = None
        for rows, teacher_rows in chunks():
            part = compute(_take(s_flat, rows), *teacher_rows)
            total = part if total is None else total + part
    loss = total / n
    if name in _T2_SCALED and tau != 1.0:
        loss = loss * (tau * tau)
    return loss


# ------------------------------------------------------------------------------------------ registered losses


@register_loss("lm_fkl", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_fkl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
           temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Forward KL τ²·mean_t KL(p_t || q_t) over masked tokens (Hinton et al. 2015; supervised KD for LMs, e.g.
    DistiLLM's ``forward_kl``, Ko et al. 2024). Usage: ``get_loss("lm_fkl")(s, t, mask, temperature=1.0)``."""
    return lm_divergence("lm_fkl", student_logits, teacher_logits, mask, temperature, chunk_size)


@register_loss("lm_rkl", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_rkl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
           temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Reverse KL τ²·mean_t KL(q_t || p_t) over masked tokens (MiniLLM, Gu et al., ICLR 2024; token-level as in
    DistiLLM's ``reverse_kl``)."""
    return lm_divergence("lm_rkl", student_logits, teacher_logits, mask, temperature, chunk_size)


@register_loss("lm_skew_fkl", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_skew_fkl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
                temperature: float = 1.0, alpha: float = 0.1, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Skew forward KL (DistiLLM, Ko et al., ICML 2024): τ²·mean_t KL(p || α p + (1-α) q); α = 0.1 is DistiLLM's
    default (``skewed_forward_kl(..., lam=0.1)``), α = 0 is plain forward KL."""
    return lm_divergence("lm_skew_fkl", student_logits, teacher_logits, mask, temperature, chunk_size,
                         alpha=_check_weight("alpha", alpha))


@register_loss("lm_skew_rkl", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_skew_rkl(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
                temperature: float = 1.0, alpha: float = 0.1, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Skew reverse KL (DistiLLM, Ko et al., ICML 2024): τ²·mean_t KL(q || (1-α) p + α q); α = 0.1 is DistiLLM's
    default (``skewed_reverse_kl(..., lam=0.1)``), α = 0 is plain reverse KL."""
    return lm_divergence("lm_skew_rkl", student_logits, teacher_logits, mask, temperature, chunk_size,
                         alpha=_check_weight("alpha", alpha))


@register_loss("lm_jsd", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_jsd(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
           temperature: float = 1.0, beta: float = 0.5, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Generalized JSD (GKD, Agarwal et al., ICLR 2024), TRL's convention: τ²·mean_t [β KL(p||m) + (1-β) KL(q||m)],
    m = β p + (1-β) q. β = 0 is forward KL(p||q), β = 1 reverse KL(q||p); JSD(β)/β → KL(p||q) as β → 0 and
    JSD(β)/(1-β) → KL(q||p) as β → 1. TRL's default β = 0.5."""
    return lm_divergence("lm_jsd", student_logits, teacher_logits, mask, temperature, chunk_size,
                         beta=_check_weight("beta", beta))


@register_loss("lm_tv", kind="token_logits", takes=("teacher_logits",), probabilities=True)
def lm_tv(student_logits: torch.Tensor, teacher_logits: Teacher, mask: torch.Tensor | None = None,
          temperature: float = 1.0, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Total variation mean_t ½ Σ_v |p_v - q_v| over masked tokens (DistiLLM ``tv_distance``; f-divergence KD, Wen
    et al., ACL 2023). Not multiplied by τ². With sparse targets: the TV of the (k + 1)-atom coarsening."""
    return lm_divergence("lm_tv", student_logits, teacher_logits, mask, temperature, chunk_size)
