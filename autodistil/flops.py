"""FLOPs of AutoDistil students: analytic (no model) and measured (``FlopCounterMode``).

Unit: FLOPs = 2 × multiply-adds (halve before comparing with AutoDistil's paper/code, which report multiply-adds).
Encoder only (embeddings, pooler and heads excluded), one sequence, attention width = heads × head_dim.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from distiller_nlp.core.errors import DistillerError

from .space import Arch

__all__ = ["analytic_flops", "measure_flops", "measure_latency"]


def analytic_flops(arch: Arch, seq_len: int = 128) -> int:
    """Closed-form encoder FLOPs of ``arch`` over one ``seq_len``-token sequence (see
    :func:`distiller_nlp.core.flops.encoder_flops`); builds no model."""
    return arch.flops(seq_len)


def _encoder_layer_flops(counts: dict) -> int:
    """Sum the counts of the modules ``<prefix>.encoder.layer.<i>`` (the outermost prefix that has them)."""
    import re

    groups: dict = {}
    for key, ops in counts.items():
        match = re.fullmatch(r"(.*)\.encoder\.layer\.\d+", key)
        if match:
            groups[match.group(1)] = groups.get(match.group(1), 0) + sum(ops.values())
    if not groups:
        raise DistillerError("measure_flops: the model has no encoder layers at '<...>.encoder.layer.<i>'")
    return int(groups[min(groups, key=len)])


def measure_flops(model: nn.Module, seq_len: int = 128, vocab_id: int = 1) -> int:
    """Measured FLOPs of the encoder of ``model`` (a BERT-like model or a :class:`~autodistil.superlm.SuperLM` with
    its active subnet) over one ``seq_len``-token sequence, with ``FlopCounterMode`` and the CPU SDPA formula
    registered (:func:`distiller_nlp.core.flops.register_sdpa_flop_formula`)."""
    from torch.utils.flop_counter import FlopCounterMode

    from distiller_nlp.core.flops import register_sdpa_flop_formula

    register_sdpa_flop_formula()
    device = next(model.parameters()).device
    ids = torch.full((1, seq_len), vocab_id, dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(input_ids=ids, attention_mask=mask)
    finally:
        model.train(was_training)
    return _encoder_layer_flops(counter.get_flop_counts())


def measure_latency(model: nn.Module, seq_len: int = 128, batch_size: int = 1, repeats: int = 10,
                    warmup: int = 2) -> float:
    """Median CPU wall-clock seconds of one forward pass over ``batch_size`` sequences of ``seq_len`` tokens."""
    if repeats < 1:
        raise DistillerError("measure_latency: repeats must be at least 1")
    device = next(model.parameters()).device
    ids = torch.ones((batch_size, seq_len), dtype=torch.long, device=device)
    mask = torch.ones_like(ids)
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
