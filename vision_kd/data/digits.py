"""``digits``: sklearn's real 8×8 handwritten digits (offline, no download)."""

from __future__ import annotations

import torch

from vision_kd.data.base import VisionData, classification_data, resize
from vision_kd.data.registry import VISION_DATASETS, DataRequest


def load_digits_data(split_seed: int = 0, augment: bool = False, image_size: int = 0,
                     max_train: int = 0) -> VisionData:
    """sklearn's real 8×8 handwritten digits (1,797 images, 10 classes): stratified 60/20/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    images = resize(images, image_size)
    return classification_data("digits", images, d.target, 10, split_seed, augment, max_train, flip=False,
                               info={"source": "sklearn.datasets.load_digits"})


@VISION_DATASETS.register("digits", family="",
                          defaults={"student": "mlp_small", "teacher_arch": "cnn", "teacher_epochs": 30.0})
def digits_dataset(request: DataRequest) -> VisionData:
    """sklearn digits (real, offline): 10 classes of 8×8 gray images, stratified 60/20/20 by ``split_seed``."""
    return load_digits_data(request.split_seed, request.augment, request.image_size, request.max_train_examples)


__all__ = ["load_digits_data"]
