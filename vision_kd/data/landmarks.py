"""``landmarks``: procedural 14-point faces (facial-landmark KD-Loss), and what every landmark set shares: the
active shape model (:class:`ASM`) whose smoothed shapes train the Tolerant teacher, and :func:`landmark_data`."""

from __future__ import annotations

import math

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

from vision_kd.data.base import LANDMARKS, TensorImageDataset, VisionData, subsample
from vision_kd.data.registry import VISION_DATASETS, DataRequest


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
        """``shapes`` (N, 2·L) projected onto the model's components, coefficients clamped to ±3√λ."""
        b = (shapes.double() - self.mean) @ self.components.T
        limit = 3 * self.eigenvalues.sqrt()
        b = torch.maximum(torch.minimum(b, limit), -limit)
        return (self.mean + b @ self.components).to(shapes.dtype)


def landmark_data(name, images, points, split_seed, max_train, asm_variance, info) -> VisionData:
    """A landmark :class:`VisionData` from all images and points: a seeded 60/20/20 split, the training split capped
    at ``max_train`` (0 = all), images normalised with the training split's mean and std, and an ``asm_labels``
    column (the shapes smoothed by an :class:`ASM` fitted on the training split)."""
    n = len(images)
    rng = np.random.default_rng(split_seed)
    perm = rng.permutation(n)
    a, b = int(0.6 * n), int(0.8 * n)
    train_idx, val_idx, test_idx = (np.sort(perm[:a]), np.sort(perm[a:b]), np.sort(perm[b:]))
    train_idx = subsample(train_idx, max_train, split_seed)
    mean, std = images[train_idx].mean(), images[train_idx].std().clamp_min(1e-6)
    images = (images - mean) / std
    asm = ASM(points[train_idx], asm_variance)
    soft = asm.smooth(points)
    make = lambda idx: TensorImageDataset(images[idx], points[idx], {"asm_labels": soft[idx]})  # noqa: E731
    info = {**info, "asm_components": int(len(asm.eigenvalues)), "asm_variance": asm_variance}
    return VisionData(name, LANDMARKS, make(train_idx), make(val_idx), make(test_idx), int(points.shape[1]),
                      int(images.shape[1]), int(images.shape[-1]), "", info)


def load_landmark_data(num_landmarks: int = 14, split_seed: int = 0, n: int = 2000, image_size: int = 16,
                       max_train: int = 0, asm_variance: float = 0.9) -> VisionData:
    """``n`` procedural faces of ``num_landmarks`` points on ``image_size``² images (see :func:`synthetic_landmarks`),
    split 60/20/20 by ``split_seed``."""
    images, points = synthetic_landmarks(n, num_landmarks, seed=split_seed, size=image_size or 16)
    return landmark_data("landmarks", images, points, split_seed, max_train, asm_variance,
                         {"source": "procedural faces"})


@VISION_DATASETS.register("landmarks", family="",
                          defaults={"student": "mlp:hidden=64", "teacher_arch": "cnn_flat", "teacher_epochs": 40.0})
def landmarks_dataset(request: DataRequest) -> VisionData:
    """Procedural faces: 2,000 images of ``num_landmarks`` points (16×16 unless ``image_size``); always a landmark
    task."""
    return load_landmark_data(request.num_landmarks, request.split_seed, image_size=request.image_size or 16,
                              max_train=request.max_train_examples)


__all__ = ["mean_face", "synthetic_landmarks", "ASM", "landmark_data", "load_landmark_data"]
