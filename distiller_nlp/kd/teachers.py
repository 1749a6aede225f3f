"""Teacher runners (the engine's ``prepare_batch``): the teacher's logits, hidden states and q/k/v added to each
batch — for several teachers, and for MixUp copies too."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from distiller_nlp.core.capture import FeatureCapture
from distiller_nlp.kd.mixup import mixup_inputs
from distiller_nlp.tasks import teacher_model_inputs

logger = logging.getLogger(__name__)

class TeacherRunner:
    """``prepare_batch`` for the engine: runs the teacher once per batch (no autograd) and adds the outputs the
    :class:`~distiller_nlp.kd.module.DistillModule` ``module`` needs.

    With MixUp it also draws ``λ ~ Beta(α, α)`` and an in-batch permutation (from the global RNG, which checkpoints
    save and resume restores) and runs the teacher on originals + mixed copies.
    """

    def __init__(self, teacher: nn.Module, module: nn.Module, extra_teachers: Optional[list] = None):
        self.teacher = teacher
        self.extra_teachers = list(extra_teachers or [])
        self.hidden_layers = module.teacher_hidden_layers
        self.qkv_layers = module.teacher_qkv_layers
        self.mixup_alpha = module.kd.mixup_alpha if module.kd.mixup else None

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        if self.mixup_alpha:
            alpha = torch.tensor(float(self.mixup_alpha))
            batch["mix_lambda"] = torch.distributions.Beta(alpha, alpha).sample().to(batch["input_ids"].device)
            batch["mix_perm"] = torch.randperm(batch["input_ids"].shape[0]).to(batch["input_ids"].device)
            inputs = mixup_inputs(self.teacher, batch)
        else:
            inputs = teacher_model_inputs(batch)  # the teacher's own tokenization when it has another tokenizer
        with FeatureCapture(self.teacher, hidden_layers=self.hidden_layers, qkv_layers=self.qkv_layers) as cap:
            logits = self.teacher(**inputs).logits
        batch["teacher_logits"] = logits
        batch["teacher_hidden"] = dict(cap.hidden)
        batch["teacher_qkv"] = dict(cap.qkv)
        if self.extra_teachers:  # their soft targets are averaged with the first teacher's (logits only)
            batch["teacher_logits_extra"] = [
                t(**(mixup_inputs(t, batch) if self.mixup_alpha else teacher_model_inputs(batch))).logits
                for t in self.extra_teachers]
        return batch


class CachedMixupRunner(TeacherRunner):
    """MixUp with a teacher cache: the originals' teacher outputs come from the cache and the teacher runs only on
    the mixed copies — half the teacher's work of :class:`TeacherRunner`, with the same λ and permutation draws
    (same RNG order), so the run matches the live one up to the cache's precision."""

    def __call__(self, batch: dict) -> dict:
        from distiller_nlp.kd.teacher_cache import CachedTeacher

        batch = CachedTeacher()(batch)
        alpha = torch.tensor(float(self.mixup_alpha))
        batch["mix_lambda"] = torch.distributions.Beta(alpha, alpha).sample().to(batch["input_ids"].device)
        batch["mix_perm"] = torch.randperm(batch["input_ids"].shape[0]).to(batch["input_ids"].device)
        both = mixup_inputs(self.teacher, batch)
        n = batch["input_ids"].shape[0]
        mixed = {k: v[n:] for k, v in both.items()}
        with FeatureCapture(self.teacher, hidden_layers=self.hidden_layers) as cap:
            logits = self.teacher(**mixed).logits
        batch["teacher_logits"] = torch.cat([batch["teacher_logits"].to(logits.dtype), logits])
        length = batch["input_ids"].shape[1]
        hidden = {}
        for layer, cached in batch["teacher_hidden"].items():
            live = cap.hidden[layer]
            if cached.shape[1] < length:  # cached rows are padded to the longest cached example
                cached = torch.nn.functional.pad(cached, (0, 0, 0, length - cached.shape[1]))
            hidden[layer] = torch.cat([cached[:, :length].to(live.dtype), live])
        batch["teacher_hidden"] = hidden
        return batch


