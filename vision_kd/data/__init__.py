"""Image data for vision KD, one file per source, every dataset registered in :data:`VISION_DATASETS`:

====================  =====================================================================================
module                datasets
====================  =====================================================================================
``base.py``           :class:`VisionData`, :class:`TensorImageDataset`, splits, normalisation, augmentation
``registry.py``       :data:`VISION_DATASETS`, :class:`DataRequest`, each dataset's family and defaults
``digits.py``         ``digits``: sklearn's real 8×8 handwritten digits (offline)
``fashion_mnist.py``  ``fashion-mnist``: Zalando's 28×28 clothing images from the Debian package (offline)
``synthetic.py``      ``synthetic``: K-class procedural glyphs (LW-KD's "simple dataset")
``landmarks.py``      ``landmarks``: procedural faces (facial-landmark KD-Loss), the ASM smoother
``hub.py``            ``imagefolder`` directories and ``datasets`` Hub sets (CIFAR, ImageNet, any Hub name)
``loading.py``        :func:`load_vision_data`: by name through the registry
====================  =====================================================================================

Every loader returns a :class:`VisionData`: map-style ``train``/``validation``/``test`` sets whose items are dicts of
tensors (``pixel_values`` (C, H, W) float, ``labels``: a class index, or the 2·L landmark coordinates in [-1, 1]),
plus the shapes a model must match. Splits are seeded by ``split_seed`` (independent of the training seed, so runs
with different training seeds are paired on the same split). A new dataset is one loader decorated with
``@VISION_DATASETS.register(name, family=..., defaults=...)`` in one file (see :mod:`vision_kd.data.registry`).
"""

from vision_kd.data.base import (CLASSIFICATION, LANDMARKS, RandomShiftFlip, TensorImageDataset, VisionData,
                                 classification_data, stratified_split)
from vision_kd.data.registry import (HUB_DEFAULTS, VISION_DATASETS, DataRequest, dataset_defaults, dataset_family,
                                     dataset_meta)

# The modules below register their datasets on import, in this order (the order of ``--help`` and ``vision-kd list``).
from vision_kd.data.digits import load_digits_data
from vision_kd.data.fashion_mnist import load_fashion_mnist_data
from vision_kd.data.synthetic import glyph_prototypes, load_synthetic_data, synthetic_glyphs
from vision_kd.data.landmarks import ASM, landmark_data, load_landmark_data, mean_face, synthetic_landmarks
from vision_kd.data.hub import load_hf_image_data
from vision_kd.data.loading import load_vision_data

__all__ = ["VisionData", "TensorImageDataset", "RandomShiftFlip", "ASM", "stratified_split", "load_vision_data",
           "load_digits_data", "load_fashion_mnist_data", "load_synthetic_data", "load_landmark_data",
           "load_hf_image_data",
           "synthetic_glyphs", "synthetic_landmarks", "mean_face", "glyph_prototypes", "CLASSIFICATION", "LANDMARKS",
           "VISION_DATASETS", "HUB_DEFAULTS", "DataRequest", "dataset_meta", "dataset_family", "dataset_defaults",
           "classification_data", "landmark_data"]
