"""MiniLMv2 self-attention relation distillation (Wang et al., Findings ACL 2021, "MiniLMv2: Multi-Head
Self-Attention Relation Distillation for Compressing Pretrained Transformers"), as used by AutoDistil (Xu et al. 2022).

For one of Q, K or V, each model's ``(B, L, width)`` projection output is concatenated over its own heads (that is
what the linear layer outputs) and re-split into the same number of *relation heads* ``A_r`` — so teacher and student
may have any head counts and widths. Relation ``R = X_a X_aᵀ / sqrt(d_r) (+ attention mask before the softmax)``,
``d_r`` = the model's relation-head dim.

Width not divisible by ``A_r``: only the first ``A_r·⌊width/A_r⌋`` dims are used (AutoDistil's code does the same,
e.g. a 9-head × 64 = 576-wide student with 12 relation heads keeps 12 × 48 = 576, a 7 × 64 = 448-wide one keeps
12 × 37 = 444 dims).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from distiller_nlp.core.errors import DistillerError

from .features import scaled_scores, score_divergence
from .registry import register_loss


def relation_loss(
    x_s: torch.Tensor,
    x_t: torch.Tensor,
    mask: Optional[torch.Tensor],
    num_relation_heads: int = 12,
    kind: str = "kl",
) -> torch.Tensor:
    """One MiniLMv2 relation term (Q-Q, K-K or V-V) between student ``x_s`` and teacher ``x_t`` (each (B, L, width)).

    ``R = X_a X_aᵀ/sqrt(d_r)`` per relation head a (widths truncated to a multiple of ``num_relation_heads``).
    - ``kind="kl"`` (MiniLMv2): ``(1/(A_r·|valid rows|)) Σ_a Σ_rows KL(softmax R_T ‖ softmax R_S)`` with padded keys
      masked to −∞ before the softmax and padded query rows excluded;
    - ``kind="mse"`` (what AutoDistil's released code ran): mean of ``(R_S − R_T)²`` on pre-softmax relations over
      relation heads and valid (query, key) pairs. (AutoDistil's code averaged over all positions, pads included,
      after adding −10000 to both; here padded pairs are excluded so padding never changes the loss.)
    ``mask`` is the ``(B, L)`` attention mask (1 = keep) or None.
    """
    if x_s.dim() != 3 or x_t.dim() != 3 or x_s.shape[:2] != x_t.shape[:2]:
        raise DistillerError(f"relation_loss: student {tuple(x_s.shape)} and teacher {tuple(x_t.shape)} need "
                             "(batch, seq, width) shapes with the same batch and sequence length")
    r_s = scaled_scores(x_s, x_s, num_relation_heads, truncate=True, what="relation_loss (student)")
    r_t = scaled_scores(x_t, x_t, num_relation_heads, truncate=True, what="relation_loss (teacher)")
    return score_divergence(r_s, r_t, mask, kind, what="relation_loss")


@register_loss("relation", kind="qkv")
def qkv_relation_loss(
    s: Mapping[str, torch.Tensor],
    t: Mapping[str, torch.Tensor],
    mask: Optional[torch.Tensor],
    num_relation_heads: int = 12,
    kind: str = "kl",
) -> torch.Tensor:
    """MiniLMv2 / AutoDistil objective: ``L = L_QQ + L_KK + L_VV``, each a :func:`relation_loss`.

    ``s`` and ``t`` map ``'q'``, ``'k'``, ``'v'`` to the student's and teacher's ``(B, L, width)`` projection outputs
    (typically of the last layer of each model).
    """
    for name, side in (("student", s), ("teacher", t)):
        if not isinstance(side, Mapping):
            raise DistillerError(f"qkv_relation_loss: {name} features must be a dict with keys 'q', 'k', 'v'")
        missing = [key for key in ("q", "k", "v") if key not in side]
        if missing:
            raise DistillerError(f"qkv_relation_loss: {name} features miss key(s) {', '.join(missing)}")
    return sum(relation_loss(s[key], t[key], mask, num_relation_heads, kind) for key in ("q", "k", "v"))


__all__ = ["relation_loss", "qkv_relation_loss"]
