"""Augmented copies that change during training (Distiller's ``num_reaug``) and in-batch repeated augmentation.

:class:`AugmentedTrainSet` is the training set ``distill`` uses when ``augment.reaug_every`` > 0 or
``augment.repeated_aug`` > 1: the tokenized originals followed by ``copies`` augmented copies of every example
(copy-major, as :func:`~distiller_nlp.augment.augment_dataset` makes them). Before each epoch the engine calls
``set_epoch(e)``; the copies of round ``e // reaug_every`` are made then (deterministically from (seed, round), cached
by fingerprint, so a resumed run rebuilds exactly the same copies at no cost). With ``repeated_aug = k`` there are
k − 1 copies and ``index_groups`` tells the engine to keep every example and its k − 1 copies in one batch
(Hoffer et al. 2020; the batch size stays as configured, so a batch holds batch_size / k distinct examples).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np

logger = logging.getLogger(__name__)


def round_seed(seed: int, round_: int) -> int:
    """The augmentation seed of regeneration round ``round_`` (round 0 keeps ``seed`` itself)."""
    if round_ == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(round_)]).generate_state(1)[0] % (2 ** 31))


class AugmentedTrainSet:
    """Originals + augmented copies whose round follows the epoch (map-style dataset for the engine)."""

    def __init__(self, originals, make_round: Callable[[int], object], copies: int, reaug_every: int = 0,
                 repeated_aug: int = 1):
        self.originals = originals
        self.make_round = make_round
        self.copies = int(copies)
        self.reaug_every = int(reaug_every)
        self.repeated_aug = int(repeated_aug)
        self.n = len(originals)
        self._rounds: dict = {}
        self.round = 0
        self.current = self._get_round(0)

    def _get_round(self, r: int):
        if r not in self._rounds:
            ds = self.make_round(r)
            if len(ds) != self.n * self.copies:
                raise RuntimeError(f"augmentation round {r} made {len(ds)} rows, expected {self.n * self.copies}")
            self._rounds = {r: ds}  # keep one round in memory; older rounds stay in the datasets cache
        return self._rounds[r]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmented copies of epoch ``epoch`` (regenerated every ``reaug_every`` epochs)."""
        r = int(epoch) // self.reaug_every if self.reaug_every > 0 else 0
        if r != self.round:
            logger.info("augmentation: regenerating copies (round %d, epoch %d)", r, epoch)
            self.current = self._get_round(r)
            self.round = r

    def __len__(self) -> int:
        return self.n * (1 + self.copies)

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if i < 0:
            i += len(self)
        return self.originals[i] if i < self.n else self.current[i - self.n]

    def example_lengths(self) -> np.ndarray:
        """Token counts (originals + the current round's copies), for length-grouped batches."""
        lens = [len(x) for x in self.originals["input_ids"]] + [len(x) for x in self.current["input_ids"]]
        return np.asarray(lens, dtype=np.int64)

    @property
    def index_groups(self) -> Optional[list]:
        """With repeated augmentation: ``[[i, n+i, 2n+i, ...], ...]``, each example with its copies."""
        if self.repeated_aug <= 1:
            return None
        return [[i + c * self.n for c in range(1 + self.copies)] for i in range(self.n)]
