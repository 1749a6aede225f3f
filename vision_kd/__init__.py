"""vision_kd: image-classification (and landmark-regression) KD methods on the shared loss core.

Methods (``vision_kd.methods.METHODS``): ``ce``, ``kd``, ``dkd``, ``nkd``, ``uskd``, ``bdkd``, ``lwkd``,
``landmark_kd``; datasets (``vision_kd.data.VISION_DATASETS``); models (``vision_kd.models``); the run function
:func:`vision_kd.train.train_vision` and the ``vision-kd`` command line (``vision_kd.cli``). Adding a method or a
dataset is one decorated class or loader in one file. Importing this package is light (torch only, lazily).
"""

__all__ = ["train_vision"]


def __getattr__(name):
    if name == "train_vision":
        from vision_kd.train import train_vision

        return train_vision
    raise AttributeError(name)
