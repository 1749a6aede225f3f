"""Intermediate-layer (feature) distillation losses: hidden states and attention scores.

Conventions:
- Hidden states are ``(B, L, D)`` (tokens) or already pooled ``(B, D)``; ``mask`` has the shape of the token axes
  (``(B, L)``, or ``(B,)`` for pooled inputs) with 1 = real token, 0 = padding. "Masked mean over tokens" means the
  per-token loss summed over kept tokens divided by their number; padded positions never touch the value (they are
  selected out with ``torch.where``, so even NaN padding is harmless).
- Student and teacher widths must be equal for the hidden losses: the projection for unequal widths is an
  ``nn.Linear`` owned by the caller (it has parameters to train), applied before calling these functions.
- q/k inputs of :func:`attention_score_loss` are the ``(B, L, width)`` outputs of the query/key linear layers (captured
  with forward hooks; this works for every attention backend, unlike ``output_attentions``).
- All reductions run in fp32.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from distiller_nlp.core.errors import DistillerError

from .logits import _check_temperature
from .registry import register_loss

# ------------------------------------------------------------------------------------------------------- helpers


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise DistillerError(
            f"{what}: student {tuple(a.shape)} and teacher {tuple(b.shape)} must have the same shape "
            "(project the student first if the widths differ)"
        )
    if a.dim() < 2:
        raise DistillerError(f"{what}: expected (batch, seq, dim) or (batch, dim) inputs, got {tuple(a.shape)}")


def _keep_mask(mask: Optional[torch.Tensor], shape: torch.Size, what: str) -> Optional[torch.Tensor]:
    """Boolean keep-mask of exactly ``shape`` (None stays None)."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(shape):
        raise DistillerError(f"{what}: mask {tuple(mask.shape)} must have shape {tuple(shape)} (1 = keep)")
    return mask != 0


def masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` (same shape, bool) is True; plain mean when mask is None.

    An all-padding mask gives 0 (with the graph kept) rather than NaN.
    """
    if mask is None:
        return values.mean()
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / mask.sum().clamp_min(1).to(values.dtype)


# ---------------------------------------------------------------------------------------------------- hidden losses


@register_loss("hidden_mse", kind="hidden")
def hidden_mse_loss(h_s: torch.Tensor, h_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Hidden-state MSE (FitNets, Romero et al. 2015; TinyBERT, Jiao et al. 2020; Distiller's ``mse``).

    ``L = (1/|kept|) Σ_{kept tokens} (1/D) Σ_d (h_s − h_t)²`` — the mean over the feature dim and over unmasked
    tokens. No projection here: pass ``W h_s`` when the widths differ.
    """
    _check_same_shape(h_s, h_t, "hidden_mse_loss")
    keep = _keep_mask(mask, h_s.shape[:-1], "hidden_mse_loss")
    per_token = (h_s.float() - h_t.float()).pow(2).mean(-1)
    return masked_mean(per_token, keep)


@register_loss("hidden_ce", kind="hidden")
def hidden_ce_loss(
    h_s: torch.Tensor, h_t: torch.Tensor, mask: Optional[torch.Tensor] = None, temperature: float = 1.0
) -> torch.Tensor:
    """Hidden-state soft cross-entropy over the feature dimension (Distiller's intermediate ``ce``, He et al. 2021).

    ``L = masked mean over tokens of −Σ_d softmax(h_t/T)_d · log softmax(h_s/T)_d`` (no T² factor).
    """
    temperature = _check_temperature(temperature)
    _check_same_shape(h_s, h_t, "hidden_ce_loss")
    keep = _keep_mask(mask, h_s.shape[:-1], "hidden_ce_loss")
    p_t = F.softmax(h_t.float() / temperature, dim=-1)
    log_p_s = F.log_softmax(h_s.float() / temperature, dim=-1)
    per_token = -(p_t * log_p_s).sum(-1)
    return masked_mean(per_token, keep)


@register_loss("cosine", kind="hidden")
def cosine_loss(h_s: torch.Tensor, h_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Cosine-embedding loss on hidden states (DistilBERT, Sanh et al. 2019; Distiller's ``cos``).

    ``L = masked mean over tokens of (1 − cos(h_s, h_t))`` with cos over the feature dim (eps 1e-8).
    """
    _check_same_shape(h_s, h_t, "cosine_loss")
    keep = _keep_mask(mask, h_s.shape[:-1], "cosine_loss")
    per_token = 1.0 - F.cosine_similarity(h_s.float(), h_t.float(), dim=-1, eps=1e-8)
    return masked_mean(per_token, keep)


@register_loss("pkd", kind="hidden")
def pkd_loss(h_s: torch.Tensor, h_t: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Patient KD (Sun, Cheng, Gan & Liu, EMNLP 2019, "Patient Knowledge Distillation for BERT Model Compression").

    ``L = mean_b ‖ h_s[b,0]/‖h_s[b,0]‖₂ − h_t[b,0]/‖h_t[b,0]‖₂ ‖₂²`` on the first ([CLS]) token; ``(B, D)`` inputs
    are used as they are. ``mask`` is accepted for a uniform signature and ignored ([CLS] is never padding).
    """
    _check_same_shape(h_s, h_t, "pkd_loss")
    if h_s.dim() == 3:
        h_s, h_t = h_s[:, 0], h_t[:, 0]
    elif h_s.dim() != 2:
        raise DistillerError(f"pkd_loss: expected (batch, seq, dim) or (batch, dim) inputs, got {tuple(h_s.shape)}")
    diff = F.normalize(h_s.float(), dim=-1) - F.normalize(h_t.float(), dim=-1)
    return diff.pow(2).sum(-1).mean()


# ------------------------------------------------------------------------------------------------ attention scores


def split_heads(x: torch.Tensor, num_heads: int, *, truncate: bool = False, what: str = "input") -> torch.Tensor:
    """Re-split a ``(B, L, width)`` projection output into ``num_heads`` heads: ``(B, num_heads, L, width/num_heads)``.

    With ``truncate=False`` the width must be divisible by ``num_heads`` (else :class:`DistillerError`); with
    ``truncate=True`` only the first ``num_heads·⌊width/num_heads⌋`` dims are used (AutoDistil's convention for
    relation heads).
    """
    if x.dim() != 3:
        raise DistillerError(f"{what}: expected a (batch, seq, width) tensor, got shape {tuple(x.shape)}")
    if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
        raise DistillerError(f"{what}: number of heads must be a positive integer, got {num_heads!r}")
    batch, seq, width = x.shape
    head_dim = width // num_heads
    if head_dim == 0:
        raise DistillerError(f"{what}: width {width} is smaller than the number of heads {num_heads}")
    if width % num_heads:
        if not truncate:
            raise DistillerError(f"{what}: width {width} is not divisible by {num_heads} heads")
        x = x[..., : num_heads * head_dim]
    return x.reshape(batch, seq, num_heads, head_dim).transpose(1, 2)


def scaled_scores(q: torch.Tensor, k: torch.Tensor, num_heads: int, *, truncate: bool = False,
                  what: str = "input") -> torch.Tensor:
    """Per-head pre-softmax scores ``q_h k_hᵀ / sqrt(head_dim)`` in fp32, shape ``(B, num_heads, L, L)``."""
    qh = split_heads(q, num_heads, truncate=truncate, what=what).float()
    kh = split_heads(k, num_heads, truncate=truncate, what=what).float()
    device_type = qh.device.type if qh.device.type in ("cpu", "cuda", "xpu", "mps", "hpu") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):  # autocast would run the matmul in bf16/fp16
        return qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])


def score_divergence(
    scores_s: torch.Tensor, scores_t: torch.Tensor, mask: Optional[torch.Tensor], kind: str, what: str = "scores"
) -> torch.Tensor:
    """Compare student/teacher score tensors ``(B, H, L, L)`` over valid positions only.

    ``kind="mse"``: mean over heads and valid (query, key) pairs of ``(S_s − S_t)²`` (pre-softmax scores).
    ``kind="kl"``: with padded keys removed from the softmax (equivalent to adding −∞ to them),
    ``KL(softmax S_t ‖ softmax S_s)`` per query row, averaged over heads and valid query rows of the whole batch.
    ``mask`` is ``(B, L)`` with 1 = keep (None = all valid).
    """
    if scores_s.shape != scores_t.shape:
        raise DistillerError(f"{what}: student scores {tuple(scores_s.shape)} and teacher scores "
                             f"{tuple(scores_t.shape)} differ (same batch, heads and sequence length needed)")
    batch, heads, seq, _ = scores_s.shape
    if mask is None:
        valid = torch.ones(batch, seq, dtype=torch.bool, device=scores_s.device)
    else:
        valid = _keep_mask(mask, torch.Size((batch, seq)), what)
    key_valid = valid[:, None, None, :]
    query_valid = valid[:, None, :, None]
    zero = torch.zeros((), dtype=scores_s.dtype, device=scores_s.device)
    if kind == "mse":
        pairs = query_valid & key_valid
        sq = torch.where(pairs, (scores_s - scores_t).pow(2), zero)
        count = pairs.sum() * heads
        return sq.sum() / count.clamp_min(1).to(sq.dtype)
    if kind == "kl":
        neg = torch.finfo(scores_s.dtype).min
        log_p_s = F.log_softmax(scores_s.masked_fill(~key_valid, neg), dim=-1)
        log_p_t = F.log_softmax(scores_t.masked_fill(~key_valid, neg), dim=-1)
        terms = torch.where(key_valid, log_p_t.exp() * (log_p_t - log_p_s), zero)
        per_row = terms.sum(-1)  # (B, H, L)
        per_row = torch.where(query_valid[..., 0], per_row, zero)
        count = valid.sum() * heads
        return per_row.sum() / count.clamp_min(1).to(per_row.dtype)
    raise DistillerError(f"{what}: kind must be 'mse' or 'kl', got {kind!r}")


@register_loss("attention_score", kind="qkv")
def attention_score_loss(
    q_s: torch.Tensor,
    k_s: torch.Tensor,
    q_t: torch.Tensor,
    k_t: torch.Tensor,
    mask: Optional[torch.Tensor],
    num_heads: int,
    kind: str = "mse",
) -> torch.Tensor:
    """Attention-score distillation from captured query/key projections (TinyBERT, Jiao et al. 2020; MiniLM, Wang
    et al. 2020).

    Each model's q/k ``(B, L, width)`` is re-split into ``num_heads`` heads (its own width must be divisible, else
    :class:`DistillerError`; the head dims of student and teacher may differ), ``A = q_h k_hᵀ/sqrt(head_dim)``.
    With ``num_heads`` = both models' attention-head count, head h compares with head h (TinyBERT/MiniLM, which need
    equal counts). A match between models with different head counts must ask for ``num_heads: N`` explicitly
    (``kd.intermediate[i].params``; resolving the match refuses it otherwise): both models' q/k are then concatenated
    over heads and split into N *relation heads* — MiniLMv2's (Wang et al. 2021) way to compare models whose head
    counts differ; the relation heads are not the models' attention heads.
    - ``kind="mse"`` (TinyBERT): ``mean over heads and valid (query, key) pairs of (A_s − A_t)²`` on pre-softmax
      scores — only pairs whose query and key are both real tokens count;
    - ``kind="kl"`` (MiniLM): ``KL(softmax A_t ‖ softmax A_s)`` per query row with padded keys masked out
      (−∞ before the softmax), mean over heads and valid query rows.
    ``mask`` is the ``(B, L)`` attention mask (1 = keep) or None.
    """
    if q_s.shape != k_s.shape or q_t.shape != k_t.shape:
        raise DistillerError(f"attention_score_loss: q/k shapes differ (student {tuple(q_s.shape)} vs "
                             f"{tuple(k_s.shape)}, teacher {tuple(q_t.shape)} vs {tuple(k_t.shape)})")
    if q_s.dim() != 3 or q_t.dim() != 3 or q_s.shape[:2] != q_t.shape[:2]:
        raise DistillerError(f"attention_score_loss: student {tuple(q_s.shape)} and teacher {tuple(q_t.shape)} need "
                             "(batch, seq, width) shapes with the same batch and sequence length")
    scores_s = scaled_scores(q_s, k_s, num_heads, what="attention_score_loss (student)")
    scores_t = scaled_scores(q_t, k_t, num_heads, what="attention_score_loss (teacher)")
    return score_divergence(scores_s, scores_t, mask, kind, what="attention_score_loss")


__all__ = [
    "hidden_mse_loss",
    "hidden_ce_loss",
    "cosine_loss",
    "pkd_loss",
    "attention_score_loss",
    "masked_mean",
    "split_heads",
    "scaled_scores",
    "score_divergence",
]
