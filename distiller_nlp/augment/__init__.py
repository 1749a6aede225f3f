"""Text augmentation stages for distillation (Distiller, He et al. 2021, §A.3 of the notes).

An augmentation *pipeline* is an ordered list of stages (e.g. ``["random"]``; later ``["back_translation",
"contextual"]``) applied to every training example; ``copies`` augmented copies are added next to the originals.
Gold labels stay with each copy (for the hard-label term); the teacher gives the soft targets, since it sees the
augmented text. Pair tasks augment both sides independently.

Stages are registered by name (``@register_augmenter("random")``, :mod:`.registry`) and built with ``aug_p`` (the fraction of words a
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

# ruff: noqa: I001  (the registry first, then the stages that register themselves in it)
from distiller_nlp.augment.registry import (AUGMENT_VERSION, AUGMENTERS, augment_dataset, augment_texts,
                                            build_augmenter, list_augmenters, register_augmenter)
from distiller_nlp.augment import random_words  # noqa: F401  (registers "random")
from distiller_nlp.augment import contextual  # noqa: F401  (registers "contextual")
from distiller_nlp.augment import back_translation  # noqa: F401  (registers "back_translation")

__all__ = ["AUGMENTERS", "AUGMENT_VERSION", "register_augmenter", "list_augmenters", "build_augmenter",
           "augment_texts", "augment_dataset"]
