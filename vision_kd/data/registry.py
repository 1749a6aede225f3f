"""The vision dataset registry: ``--dataset NAME`` → a loader, with the dataset's preset family and defaults.

A dataset is one decorated loader that takes a :class:`DataRequest` and returns a
:class:`~vision_kd.data.base.VisionData`::

    from vision_kd.data import VISION_DATASETS, DataRequest, classification_data

    @VISION_DATASETS.register("stripes", family="", defaults={"student": "cnn", "teacher_arch": "resnet8x4"})
    def load_stripes(request: DataRequest):
        \"\"\"Procedural stripes, 4 classes.\"\"\"
        images, labels = ...
        return classification_data("stripes", images, labels, 4, request.split_seed, request.augment,
                                   request.max_train_examples)

Metadata of an entry:

- ``family``: the hyper-parameter preset family of the methods (``cifar``, ``imagenet``; ``""`` = the methods'
  defaults), e.g. NKD's τ=3 γ=3.5 on CIFAR;
- ``defaults``: ``student``, ``teacher_arch`` and ``teacher_epochs`` used when the run leaves them unset; missing
  keys come from :data:`HUB_DEFAULTS`, which also serve a name that is not registered (loaded from the Hub).

The ``--dataset`` help, ``vision-kd list`` and the recipe checks read the registry, so nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from distiller_nlp.core.registry import Registry

from vision_kd.data.base import CLASSIFICATION

#: ``name -> loader(request) -> VisionData`` with metadata ``family`` and ``defaults``
VISION_DATASETS = Registry("vision dataset", hint=", or a datasets Hub name")

#: the defaults of a dataset registered without (some of) them, and of an unregistered Hub name
HUB_DEFAULTS = {"student": "resnet8x4", "teacher_arch": "resnet32x4", "teacher_epochs": 30.0}


@dataclass
class DataRequest:
    """What a dataset loader is asked for: the data fields of :class:`~vision_kd.config.VisionConfig` (same names,
    same meaning) with ``task`` resolved to ``classification`` or ``landmarks``."""

    dataset: str = ""
    task: str = CLASSIFICATION
    data_dir: str = ""
    image_column: str = ""
    label_column: str = ""
    image_size: int = 0
    augment: bool = False
    split_seed: int = 0
    max_train_examples: int = 0
    num_classes: int = 10
    num_landmarks: int = 14

    @classmethod
    def from_config(cls, cfg, task: str = CLASSIFICATION) -> "DataRequest":
        """The request of a run config (any object with the fields above), asking for ``task``."""
        values = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name != "task" and hasattr(cfg, f.name)}
        return cls(task=task, **values)


def dataset_meta(name: str) -> dict:
    """``{"family": ..., "defaults": {...}}`` of dataset ``name`` (an unregistered name: a Hub set with
    :data:`HUB_DEFAULTS` and no family)."""
    meta = VISION_DATASETS.meta(name) if name in VISION_DATASETS else {}
    return {"family": meta.get("family", ""), "defaults": {**HUB_DEFAULTS, **meta.get("defaults", {})}}


def dataset_family(name: str) -> str:
    """The preset family of dataset ``name`` (``cifar``, ``imagenet`` or ``""``)."""
    return dataset_meta(name)["family"]


def dataset_defaults(name: str) -> dict:
    """``student``, ``teacher_arch`` and ``teacher_epochs`` of dataset ``name`` when the run does not set them."""
    return dataset_meta(name)["defaults"]


__all__ = ["VISION_DATASETS", "HUB_DEFAULTS", "DataRequest", "dataset_meta", "dataset_family", "dataset_defaults"]
