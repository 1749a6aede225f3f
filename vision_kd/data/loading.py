"""``load_vision_data``: a dataset by name (or a :class:`~vision_kd.data.registry.DataRequest`) through the registry;
a name that is not registered is read from the Hub."""

from __future__ import annotations

from typing import Union

from distiller_nlp.core.errors import DistillerError

from vision_kd.data.base import CLASSIFICATION, LANDMARKS, VisionData
from vision_kd.data.hub import hub_dataset
from vision_kd.data.registry import VISION_DATASETS, DataRequest


def load_vision_data(dataset: Union[str, DataRequest], *, data_dir: str = "", split_seed: int = 0,
                     augment: bool = False, image_size: int = 0, max_train: int = 0, num_classes: int = 10,
                     num_landmarks: int = 14, image_column: str = "", label_column: str = "",
                     landmarks: bool = False) -> VisionData:
    """Load ``dataset``: a registered name (``VISION_DATASETS.names()``: ``digits``, ``synthetic``, ``landmarks``,
    ``imagefolder`` with ``data_dir``, CIFAR / ImageNet Hub names), any other ``datasets`` Hub name, or a whole
    :class:`DataRequest` (then the keyword arguments are ignored). ``landmarks=True`` reads an image + points
    ``datasets`` set as a landmark task."""
    if isinstance(dataset, DataRequest):
        request = dataset
    else:
        request = DataRequest(dataset=dataset, task=LANDMARKS if landmarks else CLASSIFICATION, data_dir=data_dir,
                              image_column=image_column, label_column=label_column, image_size=image_size,
                              augment=augment, split_seed=split_seed, max_train_examples=max_train,
                              num_classes=num_classes, num_landmarks=num_landmarks)
    if not request.dataset:
        raise DistillerError(f"--dataset is required ({', '.join(VISION_DATASETS.names())}, or a datasets Hub name)")
    loader = VISION_DATASETS.get(request.dataset) if request.dataset in VISION_DATASETS else hub_dataset
    return loader(request)


__all__ = ["load_vision_data"]
