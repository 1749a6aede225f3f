"""The optimizer and learning-rate schedule: AdamW (no weight decay on biases and LayerNorm weights) with linear
warm-up and linear decay."""

from __future__ import annotations

import torch
from torch import nn

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import OPTIMIZERS

__all__ = ["OPTIMIZERS", "make_optimizer", "param_groups", "linear_warmup_schedule"]


def make_optimizer(module: nn.Module, args, device) -> torch.optim.Optimizer:
    """AdamW over ``module``'s trainable parameters (no weight decay on biases and LayerNorm weights).

    ``args.optim``: ``adamw_fused`` (one fused kernel for all parameters; several times faster than the
    per-parameter loop for a 10 M-parameter student on a CPU), ``adamw_foreach``, ``adamw`` (the per-parameter
    loop) or ``auto`` (fused on CPU and CUDA, else foreach).
    """
    name = getattr(args, "optim", "auto") or "auto"
    if name not in OPTIMIZERS:
        raise DistillerError(f"train.optim '{name}' must be one of {', '.join(OPTIMIZERS)}")
    if name == "auto":
        name = "adamw_fused" if torch.device(device).type in ("cpu", "cuda") else "adamw_foreach"
    kwargs = {"adamw_fused": {"fused": True}, "adamw_foreach": {"foreach": True}, "adamw": {"foreach": False}}[name]
    return torch.optim.AdamW(param_groups(module, args.weight_decay), lr=args.lr, eps=1e-8, **kwargs)


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with ``weight_decay``; biases, LayerNorm weights and 1-d parameters without."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        lname = name.lower()
        if p.ndim < 2 or "layernorm" in lname or "layer_norm" in lname or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_warmup_schedule(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up from 0 to the base lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(1, total_steps - warmup_steps)
        return max(0.0, (total_steps - step) / remaining)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
