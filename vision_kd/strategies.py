"""Training strategies as small pieces plugged into the one engine (``distiller_nlp.core.engine.Engine``):

- **offline** (frozen teachers): :func:`offline_teachers` returns ``(prepare_batch, frozen)``; the engine runs
  ``prepare_batch`` under ``no_grad`` + autocast and adds ``batch[f"{role}_logits"]`` for every teacher role.
- **cached teacher outputs**: :func:`cache_teacher_outputs` computes those columns once for a training set without
  augmentation (a frozen teacher in eval mode gives the same outputs every epoch) and adds them to the dataset, so the
  teacher never runs during training. :mod:`vision_kd.train` uses it whenever the training set is not augmented, and
  the live offline path otherwise.
- **self** (USKD) and **online co-training** (BD-KD): nothing to add — everything trained lives in the method module.
- **adversarial** (LW-KD): one summed loss and one step; :func:`frozen_call` evaluates the discriminator with
  detached parameters for the generator's term so each player only moves its own parameters. LW-KD's soft targets
  are teacher outputs computed once with :func:`teacher_outputs`.

Which strategy a method follows is its ``strategy`` attribute (shown by ``vision-kd list``); the pieces here know
nothing about methods.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def offline_teachers(teachers: dict[str, nn.Module]):
    """``prepare_batch`` adding ``{role}_logits`` from live frozen teachers, and the list to pass as ``frozen``."""
    def prepare_batch(batch):
        """The batch with ``{role}_logits`` added for every teacher whose outputs it does not already hold."""
        batch = dict(batch)
        for role, teacher in teachers.items():
            key = f"{role}_logits"
            if key not in batch:
                batch[key] = teacher(batch["pixel_values"])["logits"].float()
        return batch

    return prepare_batch, list(teachers.values())


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Teacher logits for a stack of images (eval mode, fp32, CPU result)."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    out = torch.cat([teacher(images[i:i + batch_size].to(device))["logits"].float().cpu()
                     for i in range(0, len(images), batch_size)])
    teacher.train(was_training)
    return out


def cache_teacher_outputs(teachers: dict[str, nn.Module], dataset):
    """The dataset with ``{role}_logits`` columns computed once (only valid without train-time augmentation)."""
    if dataset.augment is not None:
        raise ValueError("teacher outputs cannot be cached for an augmented training set")
    return dataset.with_extra(**{f"{role}_logits": teacher_outputs(t, dataset.images) for role, t in teachers.items()})


def frozen_call(module: nn.Module, *args):
    """Call ``module`` with its parameters detached: gradients reach the inputs, never the module's parameters."""
    from torch.func import functional_call

    params = {k: v.detach() for k, v in module.named_parameters()}
    return functional_call(module, params, args)


__all__ = ["offline_teachers", "teacher_outputs", "cache_teacher_outputs", "frozen_call"]
