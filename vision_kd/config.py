"""The ``vision-kd`` config schema: one dataclass shared by YAML recipes (``recipes/vision/*.yaml``) and flags.

Loaded with :func:`distiller_nlp.core.config.load_config`, so an unknown key or a wrong type is a one-line error naming
the key and the file. Method hyper-parameters live under ``params`` and are checked by the method's own ``Params``
dataclass (unknown ``params.<key>`` is an error too); defaults come from the method, then the dataset family
(e.g. NKD τ=3 γ=3.5 on CIFAR, τ=1 γ=1.5 on ImageNet and digits), then the recipe.

A recipe::

    method: nkd
    dataset: digits
    student: mlp_small
    params: {temperature: 1.0, gamma: 1.5}
    train: {epochs: 40, lr: 0.003, seed: 1}
"""

from __future__ import annotations

from dataclasses import dataclass

from distiller_nlp.core.config import option
from distiller_nlp.core.train_args import PRECISIONS, REPORT_TO, TrainArgs, parse_auto


def _methods() -> list:
    from vision_kd.methods import METHODS

    return METHODS.names()


def _datasets() -> list:
    from vision_kd.data import VISION_DATASETS

    return VISION_DATASETS.names()


@dataclass
class VisionTrainArgs(TrainArgs):
    """The engine's :class:`~distiller_nlp.core.train_args.TrainArgs` with defaults for small image models.

    ``precision`` defaults to ``no``: the models here are tiny and overhead-bound, bf16 buys little and its rounding of
    logits distorts ECE; pass ``--precision auto`` for bigger ones (resnet32x4 on CIFAR-sized inputs). Text-only
    settings (``max_length``, ``group_by_length``) are no flags here. The length stays a fixed number of epochs (the
    papers' protocols), so ``--min-steps`` and early stopping are off unless ``--epochs auto`` is given; the peak
    learning rate is chosen per run (``--lr auto``) unless ``--lr`` is given.
    """

    epochs: float = option(30.0, help="training epochs", flag=True)
    batch_size: int = option(64, help="per-process train batch size", positive=True, flag=True)
    eval_batch_size: int = option(512, help="per-process eval batch size", positive=True, flag=True)
    lr: float = option(0.0, help="peak learning rate, or 'auto' (stored as 0, the default): chosen per run by a short "
                                  "LR range test (a tenth of the run's steps, at most 100)", min=0, flag=True,
                       parse=parse_auto)
    lr_fallback: float = option(3e-3, help="--lr auto: the learning rate of a run too short for a range test (under "
                                           "200 steps)", positive=True)
    weight_decay: float = option(5e-4, help="AdamW weight decay", flag=True)
    warmup_ratio: float = option(0.0, help="fraction of steps with linear warm-up", flag=True)
    precision: str = option("no", help="{choices} (auto = bf16 where fast)", choices=PRECISIONS, flag=True)
    logging_steps: int = option(10, help="log every N steps", positive=True, flag=True)
    report_to: str = option("none", help="experiment trackers, comma-separated: {choices}", choices=REPORT_TO,
                            check=False, flag=True)  # checked by TrainArgs.validate (parse_report_to)
    max_grad_norm: float = option(5.0, help="gradient clipping norm (<= 0 disables clipping)")
    max_length: int = option(128, help="(text only; unused for images)")
    group_by_length: bool = option(False, help="(text only; unused for images)")


@dataclass
class VisionConfig:
    """``vision-kd train``: one run (a teacher with ``method: ce``, or a student with a KD method)."""

    method: str = option("kd", help="{choices}", choices=_methods, check=False, flag=True)
    dataset: str = option("digits", help="{choices}, or a datasets Hub name", choices=_datasets, check=False,
                          flag=True)
    task: str = option("", help="classification | landmarks (default: from dataset and method)", flag=True)
    data_dir: str = option("", help="directory of an imagefolder dataset", flag=True)
    image_column: str = option("", help="image column of a datasets set")
    label_column: str = option("", help="label column of a datasets set")
    image_size: int = option(0, help="resize images to this size (0 = the dataset's own)", min=0, flag=True)
    augment: bool = option(False, help="random shift (+ flip) of training images", flag=True)
    split_seed: int = option(0, flag=True,
                             help="seed of the train/validation/test split (independent of train.seed, so seeds are "
                                  "paired on one split)")
    max_train_examples: int = option(0, help="cap on training examples (0 = all)", min=0, flag=True)
    num_classes: int = option(10, help="synthetic data only: classes", positive=True)
    num_landmarks: int = option(14, help="synthetic landmark shapes; for a datasets landmark set: the expected count",
                                positive=True)
    student: str = option("", flag=True,
                          help="architecture (mlp_small, cnn, resnet8x4, vit_tiny, ...) or a saved model dir "
                               "('' = the dataset's default)")
    teacher: str = option("", flag=True,
                          help="saved teacher directory ('' = train and cache the dataset's default teacher)")
    tolerant_teacher: str = option("", help="landmark_kd: the Tolerant teacher directory ('' = default)", flag=True)
    teacher_arch: str = option("", help="architecture of an auto-trained teacher ('' = dataset default)", flag=True)
    teacher_epochs: float = option(0.0, help="epochs of an auto-trained teacher (0 = dataset default)", min=0)
    teacher_cache: str = option("", flag=True,
                                help="directory of auto-trained teachers ('' = $VISION_KD_CACHE or ~/.cache/vision_kd)")
    output_dir: str = option("", help="run directory (must be empty unless --resume/--overwrite)", flag="output-dir")
    threads: int = option(0, help="torch threads (0 = torch's default; 1 is fastest on a busy machine)", min=0,
                          flag=True)
    params: dict = option(default_factory=dict, help="the method's hyper-parameters (its Params dataclass)")
    train: VisionTrainArgs = option(default_factory=VisionTrainArgs, help="training settings")


__all__ = ["VisionConfig", "VisionTrainArgs"]
