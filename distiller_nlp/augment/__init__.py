"""Text augmentation stages for distillation (Distiller, He et al. 2021, §A.3 of the notes).

An augmentation *pipeline* is an ordered list of stages (e.g. ``["random"]``; later ``["back_translation",
"contextual"]``) applied to every training example; ``copies`` augmented copies are added next to the originals.
Gold labels stay with each copy (for the hard-label term); the teacher gives the soft targets, since it sees the
augmented text. Pair tasks augment both sides independently.

Stages are registered by name (``@register_augmenter("random")``) and built with ``aug_p`` (the fraction of words a
stage changes, in (0, 1]) and a seed. :func:`augment_dataset` is deterministic for a seed (each example's random
stream is derived from (seed, copy, example index), so results do not depend on batching or process count) and is
cached by ``datasets`` fingerprint: the same data + pipeline + seed is computed once.

Built in: ``random`` (:class:`~distiller_nlp.augment.random_words.RandomWordAugmenter`, EDA-style swap / delete /
insert of words, our own code, no downloads); ``contextual``
(:class:`~distiller_nlp.augment.contextual.ContextualAugmenter`, masked-LM substitution with top-p sampling from any
``*ForMaskedLM`` checkpoint, param ``model``; ``distiller-nlp train-mlm`` fits one); ``back_translation``
(:class:`~distiller_nlp.augment.back_translation.BackTranslationAugmenter`, en → pivot → en with two MarianMT-style
checkpoints, params ``forward_model`` / ``backward_model``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Optional, Sequence

import numpy as np

from distiller_nlp.errors import DistillerError

_AUGMENTERS: dict[str, type] = {}
AUGMENT_VERSION = 1


def register_augmenter(name: str) -> Callable[[type], type]:
    """Class decorator: register an augmenter class under ``name`` (its ``__init__(aug_p, **params)``)."""

    def deco(cls: type) -> type:
        if name in _AUGMENTERS and _AUGMENTERS[name] is not cls:
            raise DistillerError(f"augmenter '{name}' is already registered")
        _AUGMENTERS[name] = cls
        return cls

    return deco


def list_augmenters() -> list[str]:
    return sorted(_AUGMENTERS)


def build_augmenter(name: str, aug_p: float, params: Optional[dict] = None):
    """Instantiate a registered stage; an unknown name or ``aug_p`` outside (0, 1] is a DistillerError."""
    if name not in _AUGMENTERS:
        raise DistillerError(f"unknown augmentation stage '{name}' (known: {', '.join(list_augmenters())})")
    if not (0.0 < float(aug_p) <= 1.0):
        raise DistillerError(f"aug_p must be in (0, 1], got {aug_p}")
    try:
        return _AUGMENTERS[name](aug_p=float(aug_p), **(params or {}))
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

    def run(batch, indices, copy):
        rngs = [np.random.default_rng([int(seed), copy, int(i)]) for i in indices]
        out = dict(batch)
        out["text"] = augment_texts(batch["text"], augmenters, rngs)
        if has_pair:
            out["text_pair"] = augment_texts(batch["text_pair"], augmenters, rngs)
        return out

    parts = []
    for copy in range(int(copies)):
        spec = json.dumps({"base": base, "stages": list(stages), "aug_p": float(aug_p), "seed": int(seed),
                           "copy": copy, "params": params, "v": AUGMENT_VERSION}, sort_keys=True, default=str)
        fp = hashlib.sha256(spec.encode()).hexdigest()[:16]
        parts.append(ds.map(run, batched=True, with_indices=True, fn_kwargs={"copy": copy}, new_fingerprint=fp,
                            desc=f"Augmenting ({'+'.join(stages)}, copy {copy + 1}/{copies})"))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


from distiller_nlp.augment import random_words  # noqa: E402,F401  (registers "random")
from distiller_nlp.augment import contextual  # noqa: E402,F401  (registers "contextual")
from distiller_nlp.augment import back_translation  # noqa: E402,F401  (registers "back_translation")

__all__ = ["register_augmenter", "list_augmenters", "build_augmenter", "augment_texts", "augment_dataset"]
