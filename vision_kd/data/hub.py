"""Image sets read with the ``datasets`` library: ``imagefolder`` directories (``--data-dir``) and Hub datasets.

The Hub names registered here carry their preset family (``cifar``, ``imagenet``); any other name is loaded from the
Hub the same way (:func:`hub_dataset`, with no family and :data:`~vision_kd.data.registry.HUB_DEFAULTS`). A Hub set
needs network access unless it is in the local ``datasets`` cache.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

from vision_kd.data.base import CLASSIFICATION, LANDMARKS, VisionData, classification_data, stratified_split
from vision_kd.data.landmarks import landmark_data
from vision_kd.data.registry import VISION_DATASETS, DataRequest, dataset_family

#: the ``datasets`` builder that reads a local directory of images
IMAGEFOLDER = "imagefolder"


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


def _open(name: str, data_dir: str):
    import datasets

    if name == IMAGEFOLDER:
        if not data_dir or not os.path.isdir(data_dir):
            raise DistillerError(f"imagefolder needs --data-dir pointing to a directory, got '{data_dir}'")
        return datasets.load_dataset(IMAGEFOLDER, data_dir=data_dir)
    try:
        return datasets.load_dataset(name, data_dir=data_dir or None)
    except Exception as exc:  # offline misses, unknown names
        raise DistillerError(f"cannot load dataset '{name}': {str(exc).splitlines()[0]}") from None


def load_hf_image_data(name: str, data_dir: str = "", split_seed: int = 0, augment: bool = False,
                       image_size: int = 0, max_train: int = 0, image_column: str = "", label_column: str = "",
                       task: str = CLASSIFICATION, num_landmarks: int = 0, asm_variance: float = 0.9) -> VisionData:
    """Any ``datasets`` image dataset: ``imagefolder`` with ``data_dir`` (class sub-directories; a
    ``metadata.jsonl`` with a ``landmarks`` list column for landmark sets), or a Hub name such as ``cifar100``.

    Splits ``train``/``validation``/``test`` are used when present; a missing validation split is carved out of train
    (stratified, ``split_seed``). Images are converted to the first image's mode (gray or RGB) and resized to
    ``image_size`` (default: the first image's width). ``num_landmarks`` (landmark sets): the expected point count
    (0 = whatever the first row has).
    """
    ds = _open(name, data_dir)
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
        return landmark_data(name, images, torch.tensor(rows, dtype=torch.float32), split_seed, max_train,
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
    return classification_data(name, images, labels, num_classes, split_seed, augment, max_train,
                               family=dataset_family(name), info={"source": name}, splits=splits)


def hub_dataset(request: DataRequest) -> VisionData:
    """``request.dataset`` read with ``datasets.load_dataset`` (see :func:`load_hf_image_data`): a classification
    set, or with ``task: landmarks`` an image + ``landmarks`` set of ``num_landmarks`` points."""
    landmarks = request.task == LANDMARKS
    return load_hf_image_data(request.dataset, request.data_dir, request.split_seed, request.augment,
                              request.image_size, request.max_train_examples, request.image_column,
                              request.label_column, LANDMARKS if landmarks else CLASSIFICATION,
                              request.num_landmarks if landmarks else 0)


@VISION_DATASETS.register(IMAGEFOLDER, family="")
def imagefolder_dataset(request: DataRequest) -> VisionData:
    """A local directory (``--data-dir``): one sub-directory per class, or with ``--task landmarks`` images plus a
    ``metadata.jsonl`` with a ``landmarks`` column; ``train``/``validation``/``test`` sub-directories are splits."""
    return hub_dataset(request)


# Hub sets with a preset family (the methods' CIFAR / ImageNet hyper-parameters); the loader is the generic one.
VISION_DATASETS.register("cifar10", hub_dataset, family="cifar")
VISION_DATASETS.register("cifar100", hub_dataset, family="cifar")
VISION_DATASETS.register("uoft-cs/cifar10", hub_dataset, family="cifar")
VISION_DATASETS.register("uoft-cs/cifar100", hub_dataset, family="cifar")
VISION_DATASETS.register("imagenet", hub_dataset, family="imagenet")
VISION_DATASETS.register("imagenet-1k", hub_dataset, family="imagenet")
VISION_DATASETS.register("ILSVRC/imagenet-1k", hub_dataset, family="imagenet")


__all__ = ["IMAGEFOLDER", "load_hf_image_data", "hub_dataset", "imagefolder_dataset"]
