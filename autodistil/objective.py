"""AutoDistil's task-agnostic objective: MiniLMv2 self-attention relation distillation.

``L = L_QQ + L_KK + L_VV`` between the q/k/v projections of a teacher layer (default the last) and of the student
subnet's last layer, each re-split into ``relation_heads`` heads so any head count works (the shared loss
``distiller_nlp.core.losses.get_loss("relation")``). The default is what AutoDistil's released code trained with
(github.com/microsoft/autodistil, ``Code/run_wiki_plus_book_NoAssist_RndSampl.py`` lines 458-476 with
``Depth_Lambda1/2/3 = 0/0/1``; relations in ``Code/transformers/modeling_bert.py`` lines 524-542): ``kind="mse"``
on pre-softmax relations with ``mse_pairs="all"``, the mean over every entry of the padded batch. ``kind="kl"`` is
MiniLMv2's softmax KL; ``mse_pairs="valid"`` the padding-independent MSE over real-token pairs. q/k/v are captured
with forward hooks (:class:`FeatureCapture`), never with ``output_attentions``.
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch
from torch import nn

from distiller_nlp.core.capture import FeatureCapture, num_layers
from distiller_nlp.core.losses import get_loss
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.tasks import model_inputs

from .superlm import SuperLM

__all__ = ["resolve_teacher_layer", "TeacherFeatures", "subnet_relation_loss"]


def resolve_teacher_layer(teacher: nn.Module, layer: int) -> int:
    """1-based teacher layer; 0 = last."""
    n = num_layers(teacher)
    if layer == 0:
        return n
    if not 1 <= layer <= n:
        raise DistillerError(f"teacher_layer {layer} out of range: the teacher has {n} layers (use 1..{n}, 0 = last)")
    return layer


class TeacherFeatures:
    """Callable ``batch -> {"q","k","v"}`` of one teacher layer (detached), captured with hooks."""

    def __init__(self, teacher: nn.Module, layer: int = 0):
        self.teacher = teacher
        self.layer = resolve_teacher_layer(teacher, layer)
        self.capture = FeatureCapture(teacher, qkv_layers=(self.layer,), detach=True)

    def __call__(self, batch: Mapping) -> dict:
        with self.capture:
            self.teacher(**model_inputs(batch))
        return dict(self.capture.qkv[self.layer])


def subnet_relation_loss(superlm: SuperLM, batch: Mapping, teacher_qkv: Mapping[str, torch.Tensor],
                         relation_heads: int = 12, kind: str = "mse", mse_pairs: str = "all") -> torch.Tensor:
    """Relation loss of the SuperLM's *active* subnet (its last kept layer) against teacher q/k/v (defaults: the
    released code's objective, see the module docstring)."""
    layer = superlm.last_qkv_layer
    with FeatureCapture(superlm, qkv_layers=(layer,)) as cap:
        superlm(**model_inputs(batch))
    loss_fn = get_loss("relation")
    mask: Optional[torch.Tensor] = batch.get("attention_mask")
    return loss_fn(cap.qkv[layer], teacher_qkv, mask, num_relation_heads=relation_heads, kind=kind,
                   mse_pairs=mse_pairs)
