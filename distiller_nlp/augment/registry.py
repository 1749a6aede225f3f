"""The augmentation registry (:data:`AUGMENTERS`) and the functions that run a pipeline of stages over a dataset.

:func:`augment_dataset` is deterministic for a seed (each example's random stream is derived from (seed, copy, example
index), so results do not depend on batching or process count) and is cached by ``datasets`` fingerprint: the same
data + pipeline + seed is computed once.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Optional, Sequence

import numpy as np

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

#: Augmentation stages: ``name -> class`` whose ``__init__(aug_p, **params)`` builds the stage and whose
#: ``augment(texts, rngs)`` returns the augmented texts.
AUGMENTERS: Registry[type] = Registry("augmentation stage")
AUGMENT_VERSION = 1


def register_augmenter(name: str) -> Callable[[type], type]:
    """Class decorator: register an augmenter class under ``name`` (its ``__init__(aug_p, **params)``)."""
    return AUGMENTERS.register(name)


def list_augmenters() -> list[str]:
    """Sorted names of the registered stages."""
    return sorted(AUGMENTERS)


def build_augmenter(name: str, aug_p: float, params: Optional[dict] = None):
    """Instantiate a registered stage; an unknown name or ``aug_p`` outside (0, 1] is a DistillerError."""
    cls = AUGMENTERS.get(name)
    if not (0.0 < float(aug_p) <= 1.0):
        raise DistillerError(f"aug_p must be in (0, 1], got {aug_p}")
    try:
        return cls(aug_p=float(aug_p), **(params or {}))
    except TypeError as exc:
        raise DistillerError(f"augmentation stage '{name}': bad parameters {params} ({exc})") from None


def augment_texts(texts: Sequence[str], augmenters: Sequence, rngs: Sequence[np.random.Generator]) -> list[str]:
    """Run every stage in order over ``texts``; ``rngs[i]`` is example i's random stream."""
    out = list(texts)
    for aug in augmenters:
        out = aug.augment(out, rngs)
    return out


def augment_dataset(ds, stages: Sequence[str], aug_p: float = 0.3, copies: int = 1, seed: int = 0,
                    params: Optional[dict] = None):
    """``copies`` augmented copies of a normalized split (columns ``text``, [``text_pair``], ``label``).

    Returns a ``datasets.Dataset`` with the same columns and ``len(ds) * copies`` rows (copy-major), cached by a
    fingerprint of (input fingerprint, stages, aug_p, copies, seed, params).
    """
    import datasets

    if not stages:
        raise DistillerError("augment_dataset needs at least one stage")
    if int(copies) < 1:
        raise DistillerError(f"augment copies must be at least 1, got {copies}")
    params = params or {}
    augmenters = [build_augmenter(name, aug_p, params.get(name)) for name in stages]
    if "text" not in ds.column_names:
        raise DistillerError(f"augment_dataset needs a normalized split with a 'text' column, got {ds.column_names}")
    has_pair = "text_pair" in ds.column_names
    base = getattr(ds, "_fingerprint", None) or "unfingerprinted"

    def run(batch, indices, copy, offset=0):
        rngs = [np.random.default_rng([int(seed), copy, int(i) + offset]) for i in indices]
        out = dict(batch)
        out["text"] = augment_texts(batch["text"], augmenters, rngs)
        if has_pair:
            out["text_pair"] = augment_texts(batch["text_pair"], augmenters, rngs)
        return out

    rank, world = _process_share()
    parts = []
    for copy in range(int(copies)):
        spec = json.dumps({"base": base, "stages": list(stages), "aug_p": float(aug_p), "seed": int(seed),
                           "copy": copy, "params": params, "v": AUGMENT_VERSION}, sort_keys=True, default=str)
        fp = hashlib.sha256(spec.encode()).hexdigest()[:16]
        desc = f"Augmenting ({'+'.join(stages)}, copy {copy + 1}/{copies})"
        if world == 1:
            parts.append(ds.map(run, batched=True, with_indices=True, fn_kwargs={"copy": copy}, new_fingerprint=fp,
                                desc=desc))
        else:
            parts.append(_augment_sharded(ds, run, copy, fp, desc, rank, world))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _process_share() -> tuple[int, int]:
    """``(rank, world size)`` of the run's process group (``(0, 1)`` without one; never creates one)."""
    from distiller_nlp.core.distributed import process_state

    state = process_state()
    return (0, 1) if state is None else (state.process_index, state.num_processes)


def _augment_sharded(ds, run, copy: int, fp: str, desc: str, rank: int, world: int):
    """Several processes: each rank augments one contiguous shard (its examples keep their global seeds), then every
    rank receives all shards in order — the same dataset (and fingerprint) as one process computes, at 1/N the cost
    per rank."""
    import datasets
    from accelerate.utils import gather_object

    n = len(ds)
    div, mod = divmod(n, world)
    start = rank * div + min(rank, mod)
    shard = ds.shard(num_shards=world, index=rank, contiguous=True)
    local = shard.map(run, batched=True, with_indices=True, fn_kwargs={"copy": copy, "offset": start},
                      desc=f"{desc} [rank {rank}]")
    shards = gather_object([local.to_dict()])
    merged = {k: [v for part in shards for v in part[k]] for k in local.column_names}
    out = datasets.Dataset.from_dict(merged, features=local.features)
    out._fingerprint = fp  # the fingerprint one process gives it (the teacher cache keys on it)
    return out


__all__ = ["AUGMENTERS", "register_augmenter", "list_augmenters", "build_augmenter", "augment_texts", "augment_dataset"]
