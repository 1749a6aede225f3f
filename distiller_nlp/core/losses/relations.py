"""MiniLMv2 self-attention relation distillation (Wang et al., Findings ACL 2021, "MiniLMv2: Multi-Head
Self-Attention Relation Distillation for Compressing Pretrained Transformers"), as used by AutoDistil (Xu et al. 2022).

For one of Q, K or V, each model's ``(B, L, width)`` projection output is concatenated over its own heads (that is
what the linear layer outputs) and re-split into the same number of *relation heads* ``A_r`` — so teacher and student
may have any head counts and widths. Relation ``R = X_a X_aᵀ / sqrt(d_r) (+ attention mask before the softmax)``,
``d_r`` = the model's relation-head dim.

Width not divisible by ``A_r``: only the first ``A_r·⌊width/A_r⌋`` dims are used (AutoDistil's code does the same,
e.g. a 9-head × 64 = 576-wide student with 12 relation heads keeps 12 × 48 = 576, a 7 × 64 = 448-wide one keeps
12 × 37 = 444 dims).

Two reductions of the pre-softmax MSE (``kind="mse"``, ``mse_pairs``):

- ``"valid"`` (the default of this shared loss): the mean over relation heads and the (query, key) pairs whose query
  and key are both real tokens — padding never changes the loss;
- ``"all"``: AutoDistil's released code (github.com/microsoft/autodistil). ``BertSelfAttention_v1.forward``
  (``Code/transformers/modeling_bert.py`` lines 524-542) adds the extended attention mask (−10000 on padded keys,
  ``BertModel_v1.forward`` lines 1128-1137) to the student's and the teacher's Q-Q/K-K/V-V scores alike, and
  ``Code/run_wiki_plus_book_NoAssist_RndSampl.py`` (lines 458-470) takes ``torch.nn.MSELoss()`` (mean) of each
  pair: the mean over **every** one of the ``B × A_r × n × n`` entries. The same −10000 on both sides cancels in the
  difference, so a padded key column does *not* contribute zero: it contributes the real ``(R_S − R_T)²`` of the
  [PAD] tokens' projections (as do padded query rows); the loss therefore depends on how much padding the batch has.
  Here the mask is not added at all: it cancels exactly, and adding it in fp32 would only round each padded
  difference to a multiple of 2⁻¹⁰ ≈ 0.001 (the spacing of fp32 numbers near 10000), as the released code did.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from distiller_nlp.core.errors import DistillerError

from .features import scaled_scores, score_divergence
from .registry import register_loss

#: Reductions of the pre-softmax MSE relation loss (``mse_pairs``; see the module docstring).
MSE_PAIRS = ("valid", "all")


def _check_mse_pairs(mse_pairs: str) -> None:
    if mse_pairs not in MSE_PAIRS:
        raise DistillerError(f"relation_loss: mse_pairs must be one of {', '.join(MSE_PAIRS)}, got {mse_pairs!r}")


def mse_all_entries(r_s: torch.Tensor, r_t: torch.Tensor) -> torch.Tensor:
    """AutoDistil's released relation MSE: ``mean((R_S − R_T)²)`` over all ``B × heads × n × n`` entries, padded
    rows and columns included (the additive mask both sides get cancels; see the module docstring)."""
    if r_s.shape != r_t.shape:
        raise DistillerError(f"relation_loss: student relations {tuple(r_s.shape)} and teacher relations "
                             f"{tuple(r_t.shape)} differ (same batch, heads and sequence length needed)")
    return (r_s - r_t).pow(2).mean()


def relation_loss(
    x_s: torch.Tensor,
    x_t: torch.Tensor,
    mask: Optional[torch.Tensor],
    num_relation_heads: int = 12,
    kind: str = "kl",
    mse_pairs: str = "valid",
) -> torch.Tensor:
    """One MiniLMv2 relation term (Q-Q, K-K or V-V) between student ``x_s`` and teacher ``x_t`` (each (B, L, width)).

    ``R = X_a X_aᵀ/sqrt(d_r)`` per relation head a (widths truncated to a multiple of ``num_relation_heads``).
    - ``kind="kl"`` (MiniLMv2): ``(1/(A_r·|valid rows|)) Σ_a Σ_rows KL(softmax R_T ‖ softmax R_S)`` with padded keys
      masked to −∞ before the softmax and padded query rows excluded;
    - ``kind="mse"`` (what AutoDistil's released code ran): mean of ``(R_S − R_T)²`` on pre-softmax relations over
      relation heads and, with ``mse_pairs="valid"`` (default), the valid (query, key) pairs only (padding never
      changes the loss), or with ``mse_pairs="all"`` every entry, pads included — the released code's
      ``MSELoss`` (module docstring; :func:`mse_all_entries`).
    ``mask`` is the ``(B, L)`` attention mask (1 = keep) or None (unused by ``mse_pairs="all"``); ``mse_pairs`` is
    ignored by ``kind="kl"``.
    """
    if x_s.dim() != 3 or x_t.dim() != 3 or x_s.shape[:2] != x_t.shape[:2]:
        raise DistillerError(f"relation_loss: student {tuple(x_s.shape)} and teacher {tuple(x_t.shape)} need "
                             "(batch, seq, width) shapes with the same batch and sequence length")
    r_s = scaled_scores(x_s, x_s, num_relation_heads, truncate=True, what="relation_loss (student)")
    r_t = scaled_scores(x_t, x_t, num_relation_heads, truncate=True, what="relation_loss (teacher)")
    _check_mse_pairs(mse_pairs)
    if kind == "mse" and mse_pairs == "all":
        return mse_all_entries(r_s, r_t)
    return score_divergence(r_s, r_t, mask, kind, what="relation_loss")


@register_loss("relation", kind="qkv")
def qkv_relation_loss(
    s: Mapping[str, torch.Tensor],
    t: Mapping[str, torch.Tensor],
    mask: Optional[torch.Tensor],
    num_relation_heads: int = 12,
    kind: str = "kl",
    mse_pairs: str = "valid",
) -> torch.Tensor:
    """MiniLMv2 / AutoDistil objective: ``L = L_QQ + L_KK + L_VV``, each a :func:`relation_loss`.

    ``s`` and ``t`` map ``'q'``, ``'k'``, ``'v'`` to the student's and teacher's ``(B, L, width)`` projection outputs
    (typically of the last layer of each model). ``kind="kl"`` is MiniLMv2; ``kind="mse", mse_pairs="all"`` is
    AutoDistil's released objective (the ``autodistil`` SuperLM training default), ``mse_pairs="valid"`` its
    padding-independent variant.
    """
    for name, side in (("student", s), ("teacher", t)):
        if not isinstance(side, Mapping):
            raise DistillerError(f"qkv_relation_loss: {name} features must be a dict with keys 'q', 'k', 'v'")
        missing = [key for key in ("q", "k", "v") if key not in side]
        if missing:
            raise DistillerError(f"qkv_relation_loss: {name} features miss key(s) {', '.join(missing)}")
    _check_mse_pairs(mse_pairs)
    return sum(relation_loss(s[key], t[key], mask, num_relation_heads, kind, mse_pairs) for key in ("q", "k", "v"))


__all__ = ["relation_loss", "qkv_relation_loss", "mse_all_entries", "MSE_PAIRS"]
