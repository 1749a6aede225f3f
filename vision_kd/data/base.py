"""What every vision dataset loader returns and the pieces loaders share: :class:`VisionData`, its map-style
:class:`TensorImageDataset` splits, the seeded stratified split, training-set normalisation and the CIFAR-style
augmentation :class:`RandomShiftFlip`.

Items are dicts of tensors: ``pixel_values`` (C, H, W) float and ``labels`` (a class index, or the 2·L landmark
coordinates in [-1, 1]), plus any extra per-example columns (``asm_labels``, cached ``teacher_logits``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

CLASSIFICATION = "classification"
LANDMARKS = "landmarks"


class TensorImageDataset(torch.utils.data.Dataset):
    """Images (N, C, H, W) + labels (+ extra per-example tensors) with an optional train-time augmentation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, extra: Optional[dict] = None, augment=None):
        if len(images) != len(labels):
            raise DistillerError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self.extra = dict(extra or {})
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        if self.augment is not None:
            x = self.augment(x)
        item = {"pixel_values": x, "labels": self.labels[i]}
        for k, v in self.extra.items():
            item[k] = v[i]
        return item

    def with_extra(self, **columns) -> "TensorImageDataset":
        """A view with more per-example columns (e.g. cached teacher logits)."""
        return TensorImageDataset(self.images, self.labels, {**self.extra, **columns}, self.augment)


@dataclass
class VisionData:
    """A loaded dataset: its splits and the shapes a model must match.

    Attributes:
        name: the dataset's name (``--dataset``).
        task: ``classification`` or ``landmarks``.
        train, validation, test: the splits (``test`` may be None).
        num_outputs: classes, or 2 × landmarks.
        in_channels, image_size: the image shape (C, S, S).
        family: the hyper-parameter preset family (``cifar``, ``imagenet``; ``""`` = the methods' defaults).
        info: where the data came from (written nowhere; for messages and inspection).
    """

    name: str
    task: str
    train: TensorImageDataset
    validation: TensorImageDataset
    test: Optional[TensorImageDataset]
    num_outputs: int
    in_channels: int
    image_size: int
    family: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_landmarks(self) -> int:
        """Landmark points per example (0 for classification)."""
        return self.num_outputs // 2 if self.task == LANDMARKS else 0

    def eval_sets(self) -> dict:
        """The evaluation splits by name: ``validation`` and, when non-empty, ``test``."""
        out = {"validation": self.validation}
        if self.test is not None and len(self.test):
            out["test"] = self.test
        return out


# ------------------------------------------------------------------------------------------------ augmentation

class RandomShiftFlip:
    """Standard CIFAR augmentation on tensors: zero-pad by ``pad`` and crop back at a random offset, then a horizontal
    flip with probability 0.5 when ``flip``. Draws from torch's global RNG (seeded by the engine)."""

    def __init__(self, pad: int, flip: bool):
        self.pad, self.flip = int(pad), bool(flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad > 0:
            h, w = x.shape[-2:]
            padded = torch.nn.functional.pad(x, (self.pad,) * 4)
            i, j = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,)))
            x = padded[..., i:i + h, j:j + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x


# ------------------------------------------------------------------------------------------------ splitting

def stratified_split(labels: np.ndarray, fractions=(0.6, 0.2, 0.2), seed: int = 0) -> list[np.ndarray]:
    """Indices of a stratified split (per class, shuffled with ``seed``) into len(fractions) parts."""
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    cum = np.cumsum(fractions) / np.sum(fractions)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        bounds = [0] + [int(round(f * len(idx))) for f in cum]
        for k in range(len(fractions)):
            parts[k].extend(idx[bounds[k]:bounds[k + 1]].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def subsample(idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` of the indices ``idx`` (0 = all), drawn with ``seed + 1`` and kept sorted."""
    if n and n < len(idx):
        idx = np.sort(np.random.default_rng(seed + 1).choice(idx, n, replace=False))
    return idx


def resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Images (N, C, H, W) resized bilinearly to ``image_size`` × ``image_size`` (0 or the same size: unchanged)."""
    if image_size and images.shape[-1] != image_size:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    return images


def classification_data(name, images, labels, num_classes, split_seed, augment, max_train, family="", info=None,
                        splits=None, flip=True) -> VisionData:
    """A classification :class:`VisionData` from all images and labels.

    ``splits``: (train, validation, test) indices, else a stratified 60/20/20 split by ``split_seed``. The training
    split is capped at ``max_train`` examples (0 = all); every split is normalised with the training split's
    per-channel mean and std; ``augment`` adds :class:`RandomShiftFlip` (``flip``: with horizontal flips) to it."""
    images = torch.as_tensor(images, dtype=torch.float32)
    labels_np = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx, test_idx = splits if splits is not None else stratified_split(labels_np, seed=split_seed)
    train_idx = subsample(train_idx, max_train, split_seed)
    mean = images[train_idx].mean(dim=(0, 2, 3), keepdim=True)
    std = images[train_idx].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    images = (images - mean) / std
    y = torch.as_tensor(labels_np)
    aug = RandomShiftFlip(pad=max(1, images.shape[-1] // 8), flip=flip) if augment else None
    make = lambda idx, a=None: TensorImageDataset(images[idx], y[idx], augment=a)  # noqa: E731
    return VisionData(name, CLASSIFICATION, make(train_idx, aug), make(val_idx), make(test_idx) if len(test_idx) else
                      None, int(num_classes), int(images.shape[1]), int(images.shape[-1]), family, info or {})


__all__ = ["CLASSIFICATION", "LANDMARKS", "TensorImageDataset", "VisionData", "RandomShiftFlip", "stratified_split",
           "subsample", "resize", "classification_data"]
