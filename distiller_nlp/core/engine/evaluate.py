"""Inference loops: predictions of every example exactly once in any world size, and evaluation of a module on named
datasets (also without training)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

__all__ = ["batch_size_of", "predict_loader", "evaluate_loaders", "evaluate_module"]


def batch_size_of(batch: dict) -> int:
    """Examples in a batch: the length of its ``labels``, else of its first tensor."""
    if "labels" in batch and torch.is_tensor(batch["labels"]):
        return int(batch["labels"].shape[0])
    for value in batch.values():
        if torch.is_tensor(value) and value.ndim > 0:
            return int(value.shape[0])
    return 0


@torch.no_grad()
def predict_loader(accelerator, model: nn.Module, loader, desc: str = "eval"):
    """Run ``model.predict(batch)`` over a prepared loader: ``(predictions, labels)`` of every example exactly once.

    ``gather_for_metrics`` drops the samples a distributed sampler duplicated to even out the last batch, so in any
    world size each example is counted once. Batches without ``labels`` give ``labels = None``. A transient progress
    bar shows on the main process.
    """
    from tqdm.auto import tqdm

    from distiller_nlp.core.distributed import sync_buffers

    sync_buffers(accelerator, model)  # every rank evaluates rank 0's BatchNorm statistics
    model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    preds, refs = [], []
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True,
                      disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            logits = model.predict(batch)
        if "labels" in batch:
            logits, labels = accelerator.gather_for_metrics((logits.float().contiguous(), batch["labels"].contiguous()))
            refs.append(labels.cpu())
        else:
            logits = accelerator.gather_for_metrics(logits.float().contiguous())
        preds.append(logits.cpu())
    if was_training:
        model.train()
    if not preds:
        return np.zeros((0,)), np.zeros((0,))
    return torch.cat(preds).numpy(), (torch.cat(refs).numpy() if refs else None)


def evaluate_loaders(accelerator, model, names, loaders, compute_metrics, first_is_eval: bool = True) -> dict:
    """Metrics of ``model`` on each loader: keys ``eval_<metric>`` for the first (``first_is_eval``) and
    ``<name>_<metric>`` for the others, plus ``<prefix>_examples``."""
    out = {}
    for i, (name, loader) in enumerate(zip(names, loaders)):
        logits, labels = predict_loader(accelerator, model, loader, desc=f"eval {name}")
        metrics = compute_metrics(logits, labels) if compute_metrics else {}
        prefix = "eval" if (i == 0 and first_is_eval) else name
        for k, v in metrics.items():
            out[f"{prefix}_{k}"] = float(v)
        out[f"{prefix}_examples"] = int(len(logits))
    return out


def evaluate_module(module: nn.Module, eval_datasets: dict, collate_fn: Callable, compute_metrics: Callable,
                    args, accelerator=None) -> dict:
    """Evaluate a module with ``predict(batch) -> logits`` on named datasets (no training); same keys as the engine.

    Keys are ``eval_<metric>`` for the first dataset and ``<name>_<metric>`` for the others, plus
    ``eval_runtime_s``, ``eval_examples_per_s`` and ``world_size``.
    """
    from distiller_nlp.core.engine.precision import make_accelerator

    acc = accelerator or make_accelerator(args)
    names = list(eval_datasets)
    from distiller_nlp.core.engine.samplers import loader_kwargs

    loaders = [DataLoader(ds, batch_size=args.eval_batch_size, shuffle=False, collate_fn=collate_fn,
                          **loader_kwargs(args))
               for ds in eval_datasets.values()]
    prepared = acc.prepare(module, *loaders)
    model, loaders = prepared[0], list(prepared[1:])
    t0 = time.perf_counter()
    out = evaluate_loaders(acc, model, names, loaders, compute_metrics)
    runtime = time.perf_counter() - t0
    n = sum(v for k, v in out.items() if k.endswith("_examples"))
    out["eval_runtime_s"] = round(runtime, 3)
    out["eval_examples_per_s"] = round(n / runtime, 3) if runtime > 0 else 0.0
    out["world_size"] = acc.num_processes
    return out


