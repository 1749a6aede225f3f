"""vision_kd: image-classification (and landmark-regression) KD methods on the shared loss core.

Methods (``vision_kd.methods.METHODS``): ``ce``, ``kd``, ``dkd``, ``nkd``, ``uskd``, ``bdkd``, ``lwkd``,
``landmark_kd``; datasets (``vision_kd.data.VISION_DATASETS``); models (``vision_kd.models``); the run function
:func:`vision_kd.train.train_vision` and the ``vision-kd`` command line (``vision_kd.cli``). Adding a method or a
dataset is one decorated class or loader in one file. Importing this package is light (torch only, lazily).
"""

from distiller_nlp.core.lazy import lazy_exports

__all__ = ["train_vision"]

__getattr__ = lazy_exports(__name__, {"train_vision": "vision_kd.train"})
