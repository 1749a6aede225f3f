"""``synthetic``: K-class procedural glyphs, LW-KD's "synthesized simple dataset"."""

from __future__ import annotations

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

from vision_kd.data.base import VisionData, classification_data, resize
from vision_kd.data.registry import VISION_DATASETS, DataRequest


def glyph_prototypes(num_classes: int, size: int = 8, seed: int = 1234) -> torch.Tensor:
    """One fixed glyph per class on a ``size``×``size`` grid: a horizontal and a vertical stroke at a (row, column)
    pair unique to the class (up to (size−2)² classes); further classes get three random strokes (rows, columns,
    diagonals)."""
    rng = np.random.default_rng(seed)
    protos = np.zeros((num_classes, size, size), dtype=np.float32)
    m = size - 2
    for c in range(num_classes):
        g = protos[c]
        if c < m * m:
            g[1 + c % m, 1:-1] = 1
            g[1:-1, 1 + (c // m + 2 * c) % m] = 1
            continue
        for _ in range(3):
            kind, k = rng.integers(0, 4), int(rng.integers(1, size - 1))
            if kind == 0:
                g[k, 1:-1] = 1
            elif kind == 1:
                g[1:-1, k] = 1
            elif kind == 2:
                np.fill_diagonal(g, 1)
            else:
                np.fill_diagonal(np.fliplr(g), 1)
    return torch.as_tensor(protos)


def synthetic_glyphs(num_classes: int, per_class: int, seed: int, size: int = 8, noise: float = 0.3) -> tuple:
    """K-class procedural images: the class glyph with random contrast and Gaussian noise (no shifts: a shifted
    glyph could look like another class's, and the point of this set is to be simple)."""
    protos = glyph_prototypes(num_classes, size)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x = protos[labels]
    x = x * (0.7 + 0.6 * torch.rand(len(labels), 1, 1, generator=g)) + noise * torch.randn(x.shape, generator=g)
    return x[:, None], labels


def load_synthetic_data(num_classes: int = 10, split_seed: int = 0, per_class: int = 100,
                        image_size: int = 0) -> VisionData:
    """LW-KD's synthesized simple dataset: ``num_classes`` glyph classes, ``per_class`` images each (60/20/20)."""
    if num_classes < 2:
        raise DistillerError(f"synthetic data needs at least 2 classes, got {num_classes}")
    images, labels = synthetic_glyphs(num_classes, per_class, seed=split_seed)
    images = resize(images, image_size)
    return classification_data("synthetic", images, labels.numpy(), num_classes, split_seed, False, 0, flip=False,
                               info={"source": "procedural glyphs", "per_class": per_class})


@VISION_DATASETS.register("synthetic", family="",
                          defaults={"student": "mlp_small", "teacher_arch": "mlp_small", "teacher_epochs": 20.0})
def synthetic_dataset(request: DataRequest) -> VisionData:
    """Procedural glyphs: ``num_classes`` classes of 8×8 images, 100 per class (never augmented, never capped)."""
    return load_synthetic_data(request.num_classes, request.split_seed, image_size=request.image_size)


__all__ = ["glyph_prototypes", "synthetic_glyphs", "load_synthetic_data"]
