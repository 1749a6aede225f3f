"""``fashion-mnist``: Zalando's Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), read from the Debian package
``dataset-fashion-mnist`` — 70,000 real 28×28 gray images of 10 clothing classes, offline, no torchvision.

The package installs the four original IDX files under ``/usr/share/datasets/fashion-mnist/`` (``dpkg -L
dataset-fashion-mnist``): ``{train,t10k}-images-idx3-ubyte.gz`` and ``{train,t10k}-labels-idx1-ubyte.gz``. They are
read here with ``gzip`` + ``numpy`` (:func:`read_idx` checks the magic number, the dimensions and the payload size).
The directory is, in order: the ``data_dir`` argument (``--data-dir``), ``$VISION_KD_FASHION_MNIST_DIR``, the
package's directory. A missing package is a one-line :class:`DistillerError` that says how to install it.

Splits: the official 10,000 ``t10k`` images are the test set; the validation set is a fixed, stratified
``validation_size`` (5,000 = 500 per class) carved out of the 60,000 training images by ``split_seed``; the rest
(55,000) is the training set, optionally capped (``max_train``, drawn with ``split_seed``). ``max_eval`` caps the
validation and test sets (a stratified draw, for quick benchmarks and tests). Pixels are scaled to [0, 1] and then
normalised with the training split's mean and std, as every dataset here (:func:`~vision_kd.data.base.
classification_data`). Only the selected images are converted to float.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import torch

from distiller_nlp.core.errors import DistillerError

from vision_kd.data.base import VisionData, classification_data, resize, stratified_split, subsample
from vision_kd.data.registry import VISION_DATASETS, DataRequest

#: where ``apt-get install dataset-fashion-mnist`` puts the IDX files
PACKAGE_DIR = "/usr/share/datasets/fashion-mnist"
#: the environment variable that overrides :data:`PACKAGE_DIR`
DIR_ENV = "VISION_KD_FASHION_MNIST_DIR"
#: the Debian package and the command that installs it (quoted in the missing-data error)
PACKAGE = "dataset-fashion-mnist"
INSTALL_HINT = f"apt-get install -y {PACKAGE}"
#: split -> (images file, labels file), the official names
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
#: IDX magic numbers: 0x0000 + type 0x08 (unsigned byte) + number of dimensions
IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES, SIDE = 10, 28
#: the validation images carved out of the 60,000 training images (stratified: 500 per class)
VALIDATION_SIZE = 5000


def fashion_mnist_dir(data_dir: str = "") -> str:
    """The directory holding the four IDX files: ``data_dir``, else ``$VISION_KD_FASHION_MNIST_DIR``, else
    :data:`PACKAGE_DIR`; a :class:`DistillerError` naming the missing file and the install command when absent."""
    where = data_dir or os.environ.get(DIR_ENV) or PACKAGE_DIR
    for name in (n for pair in FILES.values() for n in pair):
        if not os.path.isfile(os.path.join(where, name)):
            raise DistillerError(f"Fashion-MNIST not found: {os.path.join(where, name)} is missing; install the "
                                 f"Debian package ({INSTALL_HINT}, as root) or point --data-dir or ${DIR_ENV} to a "
                                 "directory with the four IDX files")
    return where


def read_idx(path: str, magic: int) -> np.ndarray:
    """The unsigned-byte array of one (gzip-ed) IDX file, checked: magic number ``magic`` (2051 images, 2049 labels),
    big-endian dimension sizes, payload size = their product."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DistillerError(f"cannot read IDX file {path}: {exc}") from None
    name = os.path.basename(path)
    if len(raw) < 4:
        raise DistillerError(f"{name} is not an IDX file ({len(raw)} bytes)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DistillerError(f"{name} has IDX magic number {found:#010x}, expected {magic:#010x}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DistillerError(f"{name}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims)) if dims else 0
    if len(raw) - header != size:
        raise DistillerError(f"{name}: IDX payload has {len(raw) - header} bytes, its header {dims} says {size}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_mnist(split: str, data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Raw ``(images uint8 (N, 28, 28), labels uint8 (N,))`` of the official ``train`` (60,000) or ``test``
    (10,000) split, shapes and label range checked."""
    if split not in FILES:
        raise DistillerError(f"Fashion-MNIST split must be train or test, got {split!r}")
    where = fashion_mnist_dir(data_dir)
    images_file, labels_file = FILES[split]
    images = read_idx(os.path.join(where, images_file), IMAGES_MAGIC)
    labels = read_idx(os.path.join(where, labels_file), LABELS_MAGIC)
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise DistillerError(f"{images_file}: images of shape {images.shape[1:]}, expected ({SIDE}, {SIDE})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DistillerError(f"{labels_file}: {labels.shape} labels for {len(images)} images")
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DistillerError(f"{labels_file}: label {int(labels.max())} outside 0..{NUM_CLASSES - 1}")
    return images, labels


def load_fashion_mnist_data(split_seed: int = 0, augment: bool = False, image_size: int = 0, max_train: int = 0,
                            data_dir: str = "", validation_size: int = 0, max_eval: int = 0) -> VisionData:
    """Fashion-MNIST as a :class:`VisionData`: train (60,000 − ``validation_size``, capped at ``max_train``),
    a stratified seeded validation set of ``validation_size`` carved from train (0 = 5,000, or 10 % of a training
    file smaller than 50,000 images, e.g. a test fixture), the official 10,000 test images
    (``max_eval`` > 0 caps validation and test, stratified); images (N, 1, 28, 28) in [0, 1] normalised with the
    training split's statistics (``image_size`` resizes)."""
    train_x, train_y = read_fashion_mnist("train", data_dir)
    test_x, test_y = read_fashion_mnist("test", data_dir)
    n = len(train_y)
    validation_size = validation_size or (VALIDATION_SIZE if n >= 10 * VALIDATION_SIZE else max(1, n // 10))
    if not 0 < validation_size < n:
        raise DistillerError(f"validation_size must be in 1..{n - 1}, got {validation_size}")
    train_idx, val_idx = stratified_split(train_y, fractions=(n - validation_size, validation_size), seed=split_seed)
    train_idx = subsample(train_idx, max_train, split_seed)
    test_idx = np.arange(len(test_y))
    if max_eval:
        val_idx = _stratified_cap(train_y, val_idx, max_eval, split_seed)
        test_idx = _stratified_cap(test_y, test_idx, max_eval, split_seed)
    raw = np.concatenate([train_x[train_idx], train_x[val_idx], test_x[test_idx]])
    labels = np.concatenate([train_y[train_idx], train_y[val_idx], test_y[test_idx]]).astype(np.int64)
    images = resize(torch.from_numpy(raw.astype(np.float32) / 255.0)[:, None], image_size)
    a, b = len(train_idx), len(train_idx) + len(val_idx)
    splits = (np.arange(a), np.arange(a, b), np.arange(b, len(labels)))
    return classification_data("fashion-mnist", images, labels, NUM_CLASSES, split_seed, augment, 0, splits=splits,
                               info={"source": f"Debian {PACKAGE} ({fashion_mnist_dir(data_dir)})",
                                     "classes": list(CLASSES)})


def _stratified_cap(labels: np.ndarray, idx: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` of ``idx``, the same fraction of every class (seeded)."""
    if cap >= len(idx):
        return idx
    keep, _ = stratified_split(labels[idx], fractions=(cap, len(idx) - cap), seed=seed + 2)
    return idx[keep]


@VISION_DATASETS.register("fashion-mnist", family="",
                          defaults={"student": "mlp_small", "teacher_arch": "cnn", "teacher_epochs": 10.0})
def fashion_mnist_dataset(request: DataRequest) -> VisionData:
    """Fashion-MNIST (real, offline from the Debian package ``dataset-fashion-mnist``): 10 classes of 28×28 gray
    images; official test set, a stratified 5,000-image validation set from train by ``split_seed``."""
    return load_fashion_mnist_data(request.split_seed, request.augment, request.image_size,
                                   request.max_train_examples, request.data_dir)


__all__ = ["load_fashion_mnist_data", "read_fashion_mnist", "read_idx", "fashion_mnist_dir", "PACKAGE_DIR", "DIR_ENV",
           "INSTALL_HINT", "CLASSES"]
