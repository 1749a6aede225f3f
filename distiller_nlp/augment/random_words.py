"""EDA-style random word augmentation (Wei & Zou 2019; Distiller's ``random`` stage used nlpaug's random swap).

Words are whitespace-separated tokens. With ``n = max(1, round(aug_p · #words))``:

- ``swap``: n times, exchange two randomly chosen positions (the multiset of words is kept);
- ``delete``: each word is dropped with probability ``aug_p`` (at least one word always stays);
- ``insert``: n times, insert a copy of a random word of the same text at a random position (EDA inserts a
  WordNet synonym; without NLTK's data offline we insert a word of the sentence itself — no download ever);
- ``mixed`` (default: ``swap``, as Distiller): each text draws one of swap / delete / insert;
- ``synonym``: n words replaced by a random WordNet synonym (EDA's synonym replacement) — only when NLTK and its
  WordNet data are installed locally; otherwise a clear error at construction, never a download.

Texts of fewer than two words are returned unchanged by swap and delete.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from distiller_nlp.augment.registry import register_augmenter
from distiller_nlp.core.errors import DistillerError

ACTIONS = ("swap", "delete", "insert", "mixed", "synonym")


def _wordnet():
    """NLTK's WordNet corpus reader, or a DistillerError saying how to get it (we never download at run time)."""
    hint = ("random augmentation: action 'synonym' needs NLTK's WordNet data, which is not installed here; install "
            "it once with `python -m nltk.downloader wordnet` (or set NLTK_DATA), or use action swap/delete/insert")
    try:
        import nltk
        from nltk.corpus import wordnet
    except ImportError:
        raise DistillerError(hint.replace("NLTK's WordNet data", "the nltk package and its WordNet data")) from None
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            raise DistillerError(hint) from None
    return wordnet


@register_augmenter("random")
class RandomWordAugmenter:
    """``augment(texts, rngs)`` → texts with words swapped / deleted / inserted (see the module docstring)."""

    def __init__(self, aug_p: float = 0.3, action: str = "swap"):
        if action not in ACTIONS:
            raise DistillerError(f"random augmentation: action '{action}' must be one of {', '.join(ACTIONS)}")
        self.aug_p = float(aug_p)
        self.action = action
        self.wordnet = _wordnet() if action == "synonym" else None

    def _synonyms(self, word: str) -> list:
        names = {lemma.name().replace("_", " ") for syn in self.wordnet.synsets(word) for lemma in syn.lemmas()}
        return sorted(n for n in names if n.lower() != word.lower())

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
        elif action == "synonym":
            order = rng.permutation(len(words))
            done = 0
            for i in order:
                if done >= n:
                    break
                options = self._synonyms(words[i])
                if options:
                    words[i] = options[int(rng.integers(len(options)))]
                    done += 1
        else:  # insert
            for _ in range(n):
                words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
        return " ".join(words)

    def augment(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        """Augmented copies of ``texts``; ``rngs[i]`` is example i's random stream."""
        return [self._one(t, rng) for t, rng in zip(texts, rngs)]
