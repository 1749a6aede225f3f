"""Training batches: plain shuffled batches, length-grouped batches (less padding) or grouped batches that keep an
example with its augmented copies. Every order is a pure function of (seed, epoch), so a resumed run sees the same
batches.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from distiller_nlp.core.errors import DistillerError

__all__ = ["LengthGroupedBatchSampler", "GroupedBatchSampler", "example_lengths", "seeded_generator",
           "train_loader", "loader_kwargs"]

logger = logging.getLogger(__name__)


class LengthGroupedBatchSampler:
    """Shuffled batches of similar length, so padding to the longest example of a batch wastes little compute.

    Each epoch: a seeded permutation of the examples is cut into chunks of ``mega`` batches; each chunk is sorted by
    length and split into batches; the order of all full batches is shuffled and the one short batch (if any) comes
    last. Deterministic in (seed, epoch), so a resumed run sees the same batches.

    The short batch must come last: accelerate's ``BatchSamplerShard`` hands out batches in rounds of one per rank
    and treats a short batch as the end of the data, so a short batch in the middle made a round (one batch per
    rank) vanish and ``len(loader)`` overstate the epoch. On tweets (median 34 tokens, max 64) the mean padded length of a batch of 32 drops
    from about 58 to about 36 tokens.
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, mega: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = int(batch_size)
        self.drop_last = False
        self.seed = int(seed)
        self.mega = int(mega)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, bs, chunk = len(self.lengths), self.batch_size, self.batch_size * self.mega
        full, rest = divmod(n, chunk)
        return full * self.mega + math.ceil(rest / bs)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        perm = rng.permutation(len(self.lengths))
        chunk = self.batch_size * self.mega
        batches = []
        for start in range(0, len(perm), chunk):
            part = perm[start:start + chunk]
            part = part[np.argsort(-self.lengths[part], kind="stable")]
            batches += [part[i:i + self.batch_size].tolist() for i in range(0, len(part), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]
        full = [b for b in batches if len(b) == self.batch_size]
        for k in rng.permutation(len(full)):
            yield full[k]
        yield from short


class GroupedBatchSampler:
    """Shuffled batches that keep groups of examples together (repeated augmentation: an example and its augmented
    copies in one batch). ``groups``: lists of dataset indices of equal size k; each batch holds
    ``max(1, batch_size // k)`` whole groups, so its true size is that times k (15 for ``batch_size`` 16 and k = 3),
    which is what ``batch_size`` reports: accelerate's ``BatchSamplerShard`` compares every batch with it, and a wrong
    value gave the ranks different batch counts (a hang). Deterministic in (seed, epoch)."""

    def __init__(self, groups, batch_size: int, seed: int = 0):
        self.groups = [list(g) for g in groups]
        k = max(1, len(self.groups[0]) if self.groups else 1)
        if any(len(g) != k for g in self.groups):
            raise DistillerError("repeated augmentation: every example needs the same number of copies")
        self.per_batch = max(1, int(batch_size) // k)
        self.batch_size = self.per_batch * k  # the true size of every batch but the last
        self.drop_last = False
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.groups) / self.per_batch)

    def __iter__(self):
        perm = np.random.default_rng([self.seed, self.epoch, 7]).permutation(len(self.groups))
        for start in range(0, len(perm), self.per_batch):
            yield [i for g in perm[start:start + self.per_batch] for i in self.groups[g]]


def seeded_generator(seed: int) -> torch.Generator:
    """A ``torch.Generator`` seeded with ``seed`` (a loader's own, so it draws nothing from the global RNG)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def example_lengths(dataset) -> np.ndarray:
    """Token counts of a tokenized dataset (its ``example_lengths()`` or its ``input_ids`` column)."""
    if hasattr(dataset, "example_lengths"):
        return dataset.example_lengths()
    names = getattr(dataset, "column_names", None) or []
    if "input_ids" not in names:
        raise DistillerError("group_by_length needs a tokenized dataset with an 'input_ids' column")
    return np.fromiter((len(x) for x in dataset["input_ids"]), dtype=np.int64, count=len(dataset))


def loader_kwargs(args) -> dict:
    """Worker processes (``args.num_workers``) and pinned host memory (when batches go to a CUDA GPU) for a
    DataLoader."""
    workers = int(getattr(args, "num_workers", 0) or 0)
    on_gpu = torch.cuda.is_available() and not getattr(args, "cpu", False)
    out = {"num_workers": workers, "pin_memory": on_gpu}
    if workers > 0:
        out["persistent_workers"] = True
    return out


def train_loader(dataset, args, collate_fn):
    """``(DataLoader, batch_sampler or None)`` for a training set.

    A dataset with ``index_groups`` (repeated augmentation) gets a :class:`GroupedBatchSampler`; with
    ``args.group_by_length`` a :class:`LengthGroupedBatchSampler`; otherwise a shuffled loader. Each loader has a
    generator of its own, so creating an iterator (lazily, inside accelerate) draws nothing from the global RNG and a
    resumed run keeps the same random stream (dropout, MixUp, masking)."""
    groups = getattr(dataset, "index_groups", None)
    sampler = None
    if groups is not None:
        if getattr(args, "group_by_length", False):
            logger.info("group_by_length is off: repeated augmentation keeps each example's copies in one batch")
        sampler = GroupedBatchSampler(groups, args.batch_size, seed=args.seed)
    elif getattr(args, "group_by_length", False):
        sampler = LengthGroupedBatchSampler(example_lengths(dataset), args.batch_size, seed=args.seed)
    if sampler is not None:
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn,
                          generator=seeded_generator(args.seed), **loader_kwargs(args)), sampler
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True, collate_fn=collate_fn,
                      generator=seeded_generator(args.seed), **loader_kwargs(args)), None
