"""Precision and the Accelerator: ``auto | no | bf16 | fp16``, where ``auto`` picks bf16 only where it runs fast.

Depends on torch and accelerate only.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = ["bf16_is_fast", "resolve_precision", "make_accelerator"]

logger = logging.getLogger(__name__)

_BF16_FAST_CACHE: dict = {}


def bf16_is_fast(on_gpu: Optional[bool] = None) -> bool:
    """True where bf16 matmuls run fast: a CUDA GPU with bf16 support, or a CPU with AMX tiles or AVX-512 bf16.

    A CPU without those (e.g. an AVX2-only AMD EPYC) falls back to slow reference kernels for bf16 matmuls, so
    ``auto`` must pick fp32 there (measured ratios are in ``benchmarks/results/bench_kd_step.md``).
    ``on_gpu=None`` means "a GPU if one is available".
    """
    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    if on_gpu not in _BF16_FAST_CACHE:
        if on_gpu:
            fast = bool(torch.cuda.is_bf16_supported())
        else:
            fast = False
            for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
                probe = getattr(torch.cpu, name, None)
                fast = fast or (bool(probe()) if probe is not None else False)
        _BF16_FAST_CACHE[on_gpu] = fast
    return _BF16_FAST_CACHE[on_gpu]


def resolve_precision(precision: str, cpu: bool = False) -> str:
    """Map ``auto|no|bf16|fp16`` to what accelerate understands (``no``/``bf16``/``fp16``), logging the choice."""
    on_gpu = torch.cuda.is_available() and not cpu
    if precision == "auto":
        chosen = "bf16" if bf16_is_fast(on_gpu) else "no"
        if chosen == "no":
            logger.info("precision auto: bf16 is not fast on this hardware, training in fp32")
        else:
            logger.info("precision auto: bf16 autocast (hardware runs bf16 matmuls fast)")
        return chosen
    if precision == "fp16" and not on_gpu:
        raise DistillerError("precision fp16 needs a CUDA GPU; use --precision bf16 or --precision no on CPU")
    if precision not in ("no", "bf16", "fp16"):
        raise DistillerError(f"unknown precision '{precision}' (use auto, no, bf16 or fp16)")
    if precision == "bf16" and not bf16_is_fast(on_gpu):
        logger.warning("precision bf16: this %s has no fast bf16 kernels (no AMX / AVX-512 bf16); bf16 may run "
                       "far slower than fp32 here. --precision auto picks the fast one.", "GPU" if on_gpu else "CPU")
    return precision


def make_accelerator(args, output_dir: Optional[str] = None, tracking: bool = False):
    """The Accelerator every command uses (precision resolved, seedable sampler, DDP kwargs)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import DistributedDataParallelKwargs

    mixed = resolve_precision(args.precision, cpu=args.cpu)
    return Accelerator(
        cpu=args.cpu,
        mixed_precision=mixed,
        gradient_accumulation_steps=args.grad_accum,
        log_with="tensorboard" if (tracking and args.report_to == "tensorboard") else None,
        project_dir=output_dir,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.find_unused_parameters)],
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
