"""Cheap floors for image classification (issue #22): the majority class and logistic regression on the raw pixels,
fitted on the run's own training split and scored on its evaluation splits, so a run that does not beat pixels gets
a one-line warning (not an error). The image analogue of the NLP side's TF-IDF floor (``distiller_nlp.tasks.floors``).
"""

from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

__all__ = ["MAX_FIT_EXAMPLES", "pixel_floors", "pixel_floor_warning"]

logger = logging.getLogger(__name__)

#: Training images the pixel floor is fitted on at most (a seeded subsample of larger splits: seconds on CPU).
MAX_FIT_EXAMPLES = 5000


def _arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    images = getattr(ds, "images", None)
    if images is None:  # any map-style set of {"pixel_values", "labels"} items
        items = [ds[i] for i in range(len(ds))]
        x = np.stack([np.asarray(it["pixel_values"], dtype=np.float32).ravel() for it in items])
        y = np.asarray([int(it["labels"]) for it in items])
        return x, y
    return images.reshape(len(images), -1).float().numpy(), np.asarray(ds.labels).astype(int)


def pixel_floors(train, eval_sets: dict, seed: int = 0) -> dict:
    """``floor_majority_<split>_accuracy`` and ``floor_pixels_<split>_accuracy`` (``eval_`` for the first eval set,
    the split name for the others, as the engine names them) and ``floors_s``."""
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    x, y = _arrays(train)
    if len(y) > MAX_FIT_EXAMPLES:
        keep = np.random.default_rng(seed).choice(len(y), MAX_FIT_EXAMPLES, replace=False)
        x, y = x[keep], y[keep]
    majority = np.bincount(y).argmax()
    clf = LogisticRegression(max_iter=300) if len(np.unique(y)) > 1 else None
    if clf is not None:
        clf.fit(x, y)
    out = {}
    for i, (name, ds) in enumerate(eval_sets.items()):
        ex, ey = _arrays(ds)
        prefix = "eval" if i == 0 else name
        out[f"floor_majority_{prefix}_accuracy"] = float(np.mean(ey == majority))
        pred = clf.predict(ex) if clf is not None else np.full_like(ey, majority)
        out[f"floor_pixels_{prefix}_accuracy"] = float(np.mean(pred == ey))
    out["floors_s"] = round(time.perf_counter() - t0, 2)
    return out


def pixel_floor_warning(metrics: dict, who: str = "model") -> Optional[str]:
    """One line when the dev accuracy does not beat the pixel floor (None otherwise); also logged."""
    score, floor = metrics.get("eval_accuracy"), metrics.get("floor_pixels_eval_accuracy")
    if score is None or floor is None or score > floor:
        return None
    line = (f"the {who}'s dev accuracy {score:.4f} does not beat the pixel floor {floor:.4f} (logistic regression on "
            f"raw pixels; majority class {metrics.get('floor_majority_eval_accuracy', float('nan')):.4f}) fitted on "
            "the same training split: try more --epochs, another --lr, or a larger --student")
    logger.warning(line)
    return line
