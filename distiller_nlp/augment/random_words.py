"""EDA-style random word augmentation (Wei & Zou 2019; Distiller's ``random`` stage used nlpaug's random swap).

Words are whitespace-separated tokens. With ``n = max(1, round(aug_p · #words))``:

- ``swap``: n times, exchange two randomly chosen positions (the multiset of words is kept);
- ``delete``: each word is dropped with probability ``aug_p`` (at least one word always stays);
- ``insert``: n times, insert a copy of a random word of the same text at a random position (EDA inserts a
  WordNet synonym; without NLTK's data offline we insert a word of the sentence itself — no download ever);
- ``mixed`` (default: ``swap``, as Distiller): each text draws one of swap / delete / insert.

Texts of fewer than two words are returned unchanged by swap and delete.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from distiller_nlp.augment import register_augmenter
from distiller_nlp.errors import DistillerError

ACTIONS = ("swap", "delete", "insert", "mixed")


@register_augmenter("random")
class RandomWordAugmenter:
    """``augment(texts, rngs)`` → texts with words swapped / deleted / inserted (see the module docstring)."""

    def __init__(self, aug_p: float = 0.3, action: str = "swap"):
        if action not in ACTIONS:
            raise DistillerError(f"random augmentation: action '{action}' must be one of {', '.join(ACTIONS)}")
        self.aug_p = float(aug_p)
        self.action = action

    def _one(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        if not words:
            return text
        action = self.action
        if action == "mixed":
            action = ("swap", "delete", "insert")[int(rng.integers(3))]
        n = max(1, int(round(self.aug_p * len(words))))
        if action == "swap":
            if len(words) < 2:
                return text
            for _ in range(n):
                i, j = rng.choice(len(words), size=2, replace=False)
                words[i], words[j] = words[j], words[i]
        elif action == "delete":
            if len(words) < 2:
                return text
            keep = rng.random(len(words)) >= self.aug_p
            if not keep.any():
                keep[int(rng.integers(len(words)))] = True
            words = [w for w, k in zip(words, keep) if k]
        else:  # insert
            for _ in range(n):
                words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
        return " ".join(words)

    def augment(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        return [self._one(t, rng) for t, rng in zip(texts, rngs)]
