"""Seeded, label-stratified splits and subsets, and de-duplication by majority label."""

from __future__ import annotations

import collections
import logging
import math
from typing import Sequence

import numpy as np

from distiller_nlp.tasks.spec import LABEL, TaskSpec

logger = logging.getLogger(__name__)

#: Seed of the fixed train/validation/test split of the packaged corpora (independent of the training seed).
SPLIT_SEED = 42
#: Fractions of the packaged corpora's split (train, validation, test), stratified by label.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: Version of the built corpora; bump it whenever de-duplication or splitting changes (it keys the cache).


def stratified_split(
    labels: Sequence[int], fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = SPLIT_SEED
) -> list[np.ndarray]:
    """Split indices ``0..n-1`` into ``len(fractions)`` parts, stratified by label, with a seeded permutation.

    For each class with ``n_c`` examples, part ``j ≥ 1`` gets ``round(n_c·fractions[j])`` of its (permuted) examples
    and part 0 the rest. Each part is returned in a seeded shuffled order (so it is not sorted by label).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        counts = [int(round(len(idx) * f)) for f in fractions[1:]]
        start = len(idx) - sum(counts)
        parts[0].extend(idx[:start].tolist())
        for j, n in enumerate(counts, start=1):
            parts[j].extend(idx[start : start + n].tolist())
            start += n
    return [np.asarray(p, dtype=np.int64)[rng.permutation(len(p))] for p in parts]


def stratified_subset(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subset of size ``n`` with class proportions kept (largest-remainder rounding)."""
    labels = np.asarray(labels)
    total = len(labels)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / total
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    chosen: list[int] = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(idx, size=int(k), replace=False).tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))


def dedup_majority(texts: Sequence[str], labels: Sequence[int], confidence: Sequence[float] | None = None):
    """Keep one row per exact text: the majority label; ties → the row with highest confidence, then the first.

    Returns ``(texts, labels, n_conflicts)`` in first-occurrence order; ``n_conflicts`` counts texts that had more
    than one distinct label. A missing (NaN) confidence ranks lowest.
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    out_t, out_l, conflicts = [], [], 0
    for t, rows in groups.items():
        labs = [labels[i] for i in rows]
        counter = collections.Counter(labs)
        if len(counter) > 1:
            conflicts += 1
        top = max(counter.values())
        winners = {lab for lab, k in counter.items() if k == top}
        if len(winners) == 1:
            lab = winners.pop()
        else:
            def conf(i: int) -> float:
                c = confidence[i] if confidence is not None else None
                return -math.inf if c is None or (isinstance(c, float) and math.isnan(c)) else float(c)

            cands = [i for i in rows if labels[i] in winners]
            lab = labels[max(cands, key=lambda i: (conf(i), -i))]
        out_t.append(t)
        out_l.append(lab)
    return out_t, out_l, conflicts



def subset(ds, n: int, seed: int, spec: TaskSpec):
    """A seeded subset of ``n`` rows: stratified for labelled classification splits, random otherwise."""
    if len(ds) <= n:
        return ds
    labels = np.asarray(ds[LABEL][:])  # Column[:] is a fast list (iterating a Column is row by row)
    if not spec.is_regression and np.all(labels >= 0):
        idx = stratified_subset(labels, n, seed)
    else:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
    return ds.select(idx.tolist())


