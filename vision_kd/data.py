"""Image data for vision KD: sklearn digits (real, offline), ``datasets`` image sets (``imagefolder`` directories,
Hub datasets such as cifar100 when online), synthetic K-class glyphs (LW-KD's "simple dataset") and synthetic landmark
shapes (facial-landmark KD-Loss).

Every loader returns a :class:`VisionData`: map-style ``train``/``validation``/``test`` sets whose items are dicts of
tensors (``pixel_values`` (C, H, W) float, ``labels``: a class index, or the 2·L landmark coordinates in [-1, 1]),
plus the shapes a model must match. Splits are stratified and seeded by ``split_seed`` (independent of the training
seed, so runs with different training seeds are paired on the same split).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

CLASSIFICATION = "classification"
LANDMARKS = "landmarks"
DATASETS = ("digits", "synthetic", "landmarks", "imagefolder", "<hub name>")
# Typical per-dataset hyper-parameter presets are keyed by these family names (see vision_kd.methods).
FAMILIES = {"cifar10": "cifar", "cifar100": "cifar", "uoft-cs/cifar10": "cifar", "uoft-cs/cifar100": "cifar",
            "imagenet": "imagenet", "imagenet-1k": "imagenet", "ILSVRC/imagenet-1k": "imagenet"}


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
    name: str
    task: str  # classification | landmarks
    train: TensorImageDataset
    validation: TensorImageDataset
    test: Optional[TensorImageDataset]
    num_outputs: int  # classes, or 2 × landmarks
    in_channels: int
    image_size: int
    family: str = ""
    info: dict = field(default_factory=dict)

    @property
    def num_landmarks(self) -> int:
        return self.num_outputs // 2 if self.task == LANDMARKS else 0

    def eval_sets(self) -> dict:
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


def _subsample(idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    if n and n < len(idx):
        idx = np.sort(np.random.default_rng(seed + 1).choice(idx, n, replace=False))
    return idx


def _resize(images: torch.Tensor, image_size: int) -> torch.Tensor:
    if image_size and images.shape[-1] != image_size:
        images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False)
    return images


def _classification(name, images, labels, num_classes, split_seed, augment, max_train, family="", info=None,
                    splits=None, flip=True):
    images = torch.as_tensor(images, dtype=torch.float32)
    labels_np = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx, test_idx = splits if splits is not None else stratified_split(labels_np, seed=split_seed)
    train_idx = _subsample(train_idx, max_train, split_seed)
    # Normalise with the training set's per-channel statistics.
    mean = images[train_idx].mean(dim=(0, 2, 3), keepdim=True)
    std = images[train_idx].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    images = (images - mean) / std
    y = torch.as_tensor(labels_np)
    aug = RandomShiftFlip(pad=max(1, images.shape[-1] // 8), flip=flip) if augment else None
    make = lambda idx, a=None: TensorImageDataset(images[idx], y[idx], augment=a)  # noqa: E731
    return VisionData(name, CLASSIFICATION, make(train_idx, aug), make(val_idx), make(test_idx) if len(test_idx) else
                      None, int(num_classes), int(images.shape[1]), int(images.shape[-1]), family, info or {})


# ------------------------------------------------------------------------------------------------ sources

def load_digits_data(split_seed: int = 0, augment: bool = False, image_size: int = 0, max_train: int = 0):
    """sklearn's real 8×8 handwritten digits (1,797 images, 10 classes): stratified 60/20/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    images = _resize(images, image_size)
    return _classification("digits", images, d.target, 10, split_seed, augment, max_train, flip=False,
                           info={"source": "sklearn.datasets.load_digits"})


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


def load_synthetic_data(num_classes: int = 10, split_seed: int = 0, per_class: int = 100, image_size: int = 0):
    """LW-KD's synthesized simple dataset: ``num_classes`` glyph classes, ``per_class`` images each (60/20/20)."""
    if num_classes < 2:
        raise DistillerError(f"synthetic data needs at least 2 classes, got {num_classes}")
    images, labels = synthetic_glyphs(num_classes, per_class, seed=split_seed)
    images = _resize(images, image_size)
    return _classification("synthetic", images, labels.numpy(), num_classes, split_seed, False, 0, flip=False,
                           info={"source": "procedural glyphs", "per_class": per_class})


# ------------------------------------------------------------------------------------------------ landmarks

def mean_face(num_landmarks: int = 14) -> np.ndarray:
    """A schematic face of ``num_landmarks`` 2-D points in [-1, 1]: jaw arc, two eyes (points 0 and 1 are the eye
    centres, used to normalise NME), nose, mouth corners; extra points continue the jaw arc."""
    if num_landmarks < 6:
        raise DistillerError(f"landmark shapes need at least 6 points, got {num_landmarks}")
    fixed = [(-0.35, -0.25), (0.35, -0.25), (0.0, 0.05), (-0.25, 0.4), (0.25, 0.4), (0.0, 0.45)]
    n_jaw = num_landmarks - len(fixed)
    angles = np.linspace(np.pi * 0.1, np.pi * 0.9, n_jaw) if n_jaw else []
    jaw = [(0.75 * math.cos(a), 0.75 * math.sin(a) * 0.9) for a in angles]
    return np.asarray(fixed + jaw, dtype=np.float32)


def synthetic_landmarks(n: int, num_landmarks: int, seed: int, size: int = 16, noise: float = 0.04):
    """Procedural faces: the mean face deformed by 3 shape modes (width, mouth opening, eye spacing) plus per-point
    noise, then a random similarity transform; the image renders a Gaussian blob per point plus pixel noise.

    Returns ``(images (n, 1, size, size), landmarks (n, 2·L))`` with coordinates in [-1, 1].
    """
    rng = np.random.default_rng(seed)
    base = mean_face(num_landmarks)
    pts = np.repeat(base[None], n, axis=0)
    pts[:, :, 0] *= 1 + 0.15 * rng.standard_normal((n, 1))  # width
    pts[:, 3:6, 1] += 0.08 * rng.standard_normal((n, 1))  # mouth opening
    pts[:, 0:2, 0] *= 1 + 0.15 * rng.standard_normal((n, 1))  # eye spacing
    pts += noise * rng.standard_normal(pts.shape)
    angle = rng.uniform(-0.3, 0.3, n)
    scale = rng.uniform(0.75, 1.05, n)
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    pts = np.einsum("nij,nkj->nki", rot, pts) * scale[:, None, None] + rng.uniform(-0.1, 0.1, (n, 1, 2))
    pts = np.clip(pts, -0.98, 0.98).astype(np.float32)
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    gx, gy = np.meshgrid(grid, grid)
    sigma = 1.5 / size
    d2 = (gx[None, None] - pts[:, :, 0, None, None]) ** 2 + (gy[None, None] - pts[:, :, 1, None, None]) ** 2
    img = np.exp(-d2 / (2 * sigma**2)).sum(1) + 0.3 * rng.standard_normal((n, size, size))
    return torch.as_tensor(img[:, None], dtype=torch.float32), torch.as_tensor(pts.reshape(n, -1))


class ASM:
    """Active shape model (Cootes et al. 1995): PCA of landmark vectors; a shape is smoothed by projecting onto the
    components that explain ``variance`` of the variance, each coefficient clamped to ±3√λ (Fard & Mahoor's "soft"
    landmarks for the Tolerant teacher)."""

    def __init__(self, shapes: torch.Tensor, variance: float = 0.9):
        if not 0 < variance <= 1:
            raise DistillerError(f"ASM variance must lie in (0, 1], got {variance}")
        x = shapes.double()
        self.mean = x.mean(0)
        _, s, vt = torch.linalg.svd(x - self.mean, full_matrices=False)
        eig = s**2 / max(1, len(x) - 1)
        k = int(torch.searchsorted(torch.cumsum(eig, 0) / eig.sum(), torch.tensor(variance, dtype=eig.dtype))) + 1
        self.components, self.eigenvalues = vt[:k], eig[:k]

    def smooth(self, shapes: torch.Tensor) -> torch.Tensor:
        b = (shapes.double() - self.mean) @ self.components.T
        limit = 3 * self.eigenvalues.sqrt()
        b = torch.maximum(torch.minimum(b, limit), -limit)
        return (self.mean + b @ self.components).to(shapes.dtype)


def _landmark_data(name, images, points, split_seed, max_train, asm_variance, info):
    n = len(images)
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    train_idx, val_idx, test_idx = (np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))
    train_idx = _subsample(train_idx, max_train, split_seed)
    mean, std = images[train_idx].mean(), images[train_idx].std().clamp_min(1e-6)
    images = (images - mean) / std
    asm = ASM(points[train_idx], asm_variance)
    soft = asm.smooth(points)
    make = lambda idx: TensorImageDataset(images[idx], points[idx], {"asm_labels": soft[idx]})  # noqa: E731
    info = {**info, "asm_components": int(len(asm.eigenvalues)), "asm_variance": asm_variance}
    return VisionData(name, LANDMARKS, make(train_idx), make(val_idx), make(test_idx), int(points.shape[1]),
                      int(images.shape[1]), int(images.shape[-1]), "", info)


def load_landmark_data(num_landmarks: int = 14, split_seed: int = 0, n: int = 2000, image_size: int = 16,
                       max_train: int = 0, asm_variance: float = 0.9):
    images, points = synthetic_landmarks(n, num_landmarks, seed=split_seed, size=image_size or 16)
    return _landmark_data("landmarks", images, points, split_seed, max_train, asm_variance,
                          {"source": "procedural faces"})


# ------------------------------------------------------------------------------------------------ datasets library

def _pil_to_tensor(img, image_size: int, channels: int) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    if image_size and img.size != (image_size, image_size):
        img = img.resize((image_size, image_size))
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.as_tensor(arr)


def _find_columns(features, image_column: str, label_column: str, task: str):
    from datasets import ClassLabel, Image

    image_column = image_column or next((k for k, f in features.items() if isinstance(f, Image)), "")
    if not image_column or image_column not in features:
        raise DistillerError(f"no image column found (columns: {', '.join(features)}); set image_column")
    if task == LANDMARKS:
        label_column = label_column or ("landmarks" if "landmarks" in features else "")
    else:
        label_column = label_column or next((k for k, f in features.items() if isinstance(f, ClassLabel)), "")
    if not label_column or label_column not in features:
        raise DistillerError(f"no label column found (columns: {', '.join(features)}); set label_column")
    return image_column, label_column


def load_hf_image_data(name: str, data_dir: str = "", split_seed: int = 0, augment: bool = False,
                       image_size: int = 0, max_train: int = 0, image_column: str = "", label_column: str = "",
                       task: str = CLASSIFICATION, num_landmarks: int = 0, asm_variance: float = 0.9):
    """Any ``datasets`` image dataset: ``imagefolder`` with ``data_dir`` (class sub-directories; a
    ``metadata.jsonl`` with a ``landmarks`` list column for landmark sets), or a Hub name such as ``cifar100``.

    Splits ``train``/``validation``/``test`` are used when present; a missing validation split is carved out of train
    (stratified, ``split_seed``). Images are converted to the first image's mode (gray or RGB) and resized to
    ``image_size`` (default: the first image's width).
    """
    import datasets

    if name == "imagefolder":
        if not data_dir or not os.path.isdir(data_dir):
            raise DistillerError(f"imagefolder needs --data-dir pointing to a directory, got '{data_dir}'")
        ds = datasets.load_dataset("imagefolder", data_dir=data_dir)
    else:
        try:
            ds = datasets.load_dataset(name, data_dir=data_dir or None)
        except Exception as exc:  # offline misses, unknown names
            raise DistillerError(f"cannot load dataset '{name}': {str(exc).splitlines()[0]}") from None
    if "train" not in ds:
        raise DistillerError(f"dataset '{name}' has no train split (splits: {', '.join(ds)})")
    img_col, lab_col = _find_columns(ds["train"].features, image_column, label_column, task)
    first = ds["train"][0][img_col]
    channels = 1 if first.mode in ("L", "1", "I", "F") else 3
    size = int(image_size or first.size[0])

    def convert(split):
        imgs = torch.stack([_pil_to_tensor(im, size, channels) for im in split[img_col]])
        return imgs, split[lab_col]

    parts = {k: convert(ds[k]) for k in ("train", "validation", "test") if k in ds}
    if "validation" not in parts and "valid" in ds:
        parts["validation"] = convert(ds["valid"])
    if task == LANDMARKS:
        images = torch.cat([p[0] for p in parts.values()])
        rows = [r for p in parts.values() for r in p[1]]
        counts = {len(r) for r in rows}
        expected = 2 * num_landmarks if num_landmarks else next(iter(counts))
        bad = next((i for i, r in enumerate(rows) if len(r) != expected), None)
        if bad is not None:
            raise DistillerError(f"landmarks of the wrong count in '{name}': row {bad} has {len(rows[bad])} "
                                 f"coordinates, expected {expected} ({expected // 2} points)")
        return _landmark_data(name, images, torch.tensor(rows, dtype=torch.float32), split_seed, max_train,
                              asm_variance, {"source": name})
    num_classes = ds["train"].features[lab_col].num_classes
    names = list(parts)
    images = torch.cat([parts[k][0] for k in names])
    labels = np.concatenate([np.asarray(parts[k][1]) for k in names])
    offsets = np.cumsum([0] + [len(parts[k][1]) for k in names])
    idx = {k: np.arange(offsets[i], offsets[i + 1]) for i, k in enumerate(names)}
    if "validation" not in idx:
        tr, va = stratified_split(labels[idx["train"]], (0.8, 0.2), seed=split_seed)
        idx["train"], idx["validation"] = idx["train"][tr], idx["train"][va]
    splits = (idx["train"], idx["validation"], idx.get("test", np.zeros(0, dtype=np.int64)))
    return _classification(name, images, labels, num_classes, split_seed, augment, max_train,
                           family=FAMILIES.get(name, ""), info={"source": name}, splits=splits)


def load_vision_data(dataset: str, *, data_dir: str = "", split_seed: int = 0, augment: bool = False,
                     image_size: int = 0, max_train: int = 0, num_classes: int = 10, num_landmarks: int = 14,
                     image_column: str = "", label_column: str = "", landmarks: bool = False) -> VisionData:
    """Load ``dataset`` by name: ``digits``, ``synthetic``, ``landmarks``, ``imagefolder`` (with ``data_dir``) or a
    ``datasets`` Hub name. ``landmarks=True`` reads an image+points ``datasets`` set as a landmark task."""
    if dataset == "digits":
        return load_digits_data(split_seed, augment, image_size, max_train)
    if dataset == "synthetic":
        return load_synthetic_data(num_classes, split_seed, image_size=image_size)
    if dataset == "landmarks":
        return load_landmark_data(num_landmarks, split_seed, image_size=image_size or 16, max_train=max_train)
    if not dataset:
        raise DistillerError(f"--dataset is required ({', '.join(DATASETS)})")
    return load_hf_image_data(dataset, data_dir, split_seed, augment, image_size, max_train, image_column,
                              label_column, LANDMARKS if landmarks else CLASSIFICATION,
                              num_landmarks if landmarks else 0)


__all__ = ["VisionData", "TensorImageDataset", "RandomShiftFlip", "ASM", "stratified_split", "load_vision_data",
           "load_digits_data", "load_synthetic_data", "load_landmark_data", "load_hf_image_data",
           "synthetic_glyphs", "synthetic_landmarks", "mean_face", "glyph_prototypes"]
