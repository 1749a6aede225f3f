"""The ``vision-kd`` config schema: one dataclass shared by YAML recipes (``recipes/vision/*.yaml``) and flags.

Loaded with :func:`distiller_nlp.config.load_config`, so an unknown key or a wrong type is a one-line error naming
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

from dataclasses import dataclass, field

from distiller_nlp.config import TrainArgs


@dataclass
class VisionTrainArgs(TrainArgs):
    """The engine's :class:`~distiller_nlp.config.TrainArgs` with defaults for small image models.

    ``precision`` defaults to ``no``: the models here are tiny and overhead-bound, bf16 buys little and its rounding of
    logits distorts ECE; pass ``--precision auto`` for bigger ones (resnet32x4 on CIFAR-sized inputs).
    """

    epochs: float = 30.0
    batch_size: int = 64
    eval_batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_ratio: float = 0.0
    precision: str = "no"
    logging_steps: int = 10
    report_to: str = "none"
    max_grad_norm: float = 5.0


@dataclass
class VisionConfig:
    """``vision-kd train``: one run (a teacher with ``method: ce``, or a student with a KD method)."""

    method: str = "kd"
    dataset: str = "digits"  # digits | synthetic | landmarks | imagefolder | a datasets Hub name
    task: str = ""  # "" = auto | classification | landmarks (a datasets image+points set)
    data_dir: str = ""
    image_column: str = ""
    label_column: str = ""
    image_size: int = 0  # 0 = the dataset's own size
    augment: bool = False  # random shift (+ horizontal flip except on digits) of training images
    split_seed: int = 0  # the data split; independent of train.seed so seeds are paired on one split
    max_train_examples: int = 0
    num_classes: int = 10  # synthetic data only
    num_landmarks: int = 14  # synthetic landmark shapes; for a datasets landmark set: the expected count
    student: str = ""  # architecture name (see vision_kd.models) or a saved model directory; "" = dataset default
    teacher: str = ""  # saved teacher directory; "" = train the dataset's default teacher once and cache it
    tolerant_teacher: str = ""  # landmark_kd: the Tolerant teacher (``teacher`` is the Tough one); "" = default
    teacher_arch: str = ""  # architecture of an auto-trained teacher ("" = dataset default)
    teacher_epochs: float = 0.0  # epochs of an auto-trained teacher (0 = dataset default)
    teacher_cache: str = ""  # directory of auto-trained teachers ("" = $VISION_KD_CACHE or ~/.cache/vision_kd)
    output_dir: str = ""
    threads: int = 0  # torch intra-op threads for this run (0 = torch's default); 1 is fastest on a busy machine
    params: dict = field(default_factory=dict)
    train: VisionTrainArgs = field(default_factory=VisionTrainArgs)


__all__ = ["VisionConfig", "VisionTrainArgs"]
