"""The ``distiller-nlp`` recipe schema: the sections of a distillation recipe, one dataclass each.

Every field carries its help, range and (for the common ones) its flag (:func:`~distiller_nlp.core.config.option`):
``--epochs 3`` sets ``train.epochs``, ``--temperature 4`` sets ``kd.temperature``, ``--set kd.mapping.weight=2``
sets any key. Recipes load with :func:`~distiller_nlp.core.config.load_config` (``yaml.safe_load``; an unknown key,
a wrong type or an out-of-range value is a one-line error naming the key and the file).

A distillation recipe looks like::

    task: tweets
    teacher: runs/teacher
    student_shape: layers=3,hidden=256,heads=8,intermediate=1024
    kd:
      pred_loss: kd            # a prediction loss of the registry, or none
      temperature: 2.0
      kd_weight: 1.0
      hard_label_weight: 0.5
      intermediate:            # TextBrewer-style explicit matches ...
        - {layer_T: 4, layer_S: 2, feature: hidden, loss: hidden_mse, weight: 1.0, proj: linear}
      mapping:                 # ... and/or a mapping strategy that expands to matches
        strategy: skip
        loss: mi_alpha
        params: {alpha: 0.9}
    train:
      epochs: 3
      batch_size: 32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from distiller_nlp.core.config import option, parse_set_option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.schedules import KINDS as SCHEDULE_KINDS
from distiller_nlp.core.train_args import TrainArgs

__all__ = ["MatchConfig", "MappingConfig", "ScheduleConfig", "KDConfig", "resolve_kd_defaults", "KD_FALLBACKS",
           "AugmentConfig", "DataConfig",
           "FinetuneConfig", "TeacherFinetuneConfig", "DistillConfig", "SCHEDULED", "FEATURES",
           "POOLS"]

#: The features an intermediate match compares.
FEATURES = ("hidden", "attention_scores")
#: How a hidden-state match reads its layer: every token (``none``), the first token (``cls``) or the masked mean
#: over tokens (``mean``). The pooled (sequence-level) matches work when teacher and student tokenize differently.
POOLS = ("none", "cls", "mean")
_PROJ_HELP = ("hidden matches: {choices} (auto: a learned linear map only when the widths differ, as Distiller adds "
              "one only for a narrower student; linear: always, also at equal widths; none: never)")
#: The KD hyper-parameters a schedule can move.
SCHEDULED = ("temperature", "kd_weight", "hard_label_weight", "intermediate_weight")


def _prediction_losses() -> tuple:
    from distiller_nlp.core.losses import prediction_losses

    return (*prediction_losses(), "none")


def _mapping_strategies() -> tuple:
    from distiller_nlp.kd.mapping import MAPPING_STRATEGIES

    return tuple(MAPPING_STRATEGIES.names())


def _augmenters() -> tuple:
    from distiller_nlp.augment import AUGMENTERS

    return tuple(AUGMENTERS.names())


def _comma_list(value: str) -> list:
    return [x.strip() for x in value.split(",") if x.strip()]


def _aug_param_overrides(items: list) -> dict:
    """``--aug-param STAGE.KEY=VALUE`` (repeatable) → ``{"params.STAGE.KEY": value}``."""
    out = {}
    for item in items:
        key, value = parse_set_option(item)
        if "." not in key:
            raise DistillerError(f"--aug-param expects STAGE.KEY=VALUE, got '{item}'")
        out[f"params.{key}"] = value
    return out


def _teacher_overrides(names: list) -> dict:
    """``--teacher A --teacher B``: ``A`` is the teacher, ``B`` ... are averaged with it (``teachers``)."""
    out = {"teacher": names[0]}
    if names[1:]:
        out["teachers"] = names[1:]
    return out


@dataclass
class MatchConfig:
    """One intermediate match, written the way TextBrewer users write ``intermediate_matches``.

    ``feature``: ``hidden`` (layer outputs; 0 = embeddings) or ``attention_scores`` (pre-softmax Q·Kᵀ of a layer,
    1..L). ``proj``: ``linear`` adds a learned ``Linear(d_S -> d_T)`` owned by the run (trained with the student,
    never exported), ``none`` requires equal widths, ``auto`` adds one when the widths differ. ``params`` are passed to
    the loss (e.g. ``alpha`` for ``mi_alpha``, ``kind`` for ``attention_score``; ``num_heads: N`` for
    ``attention_score`` splits both models' q/k into N relation heads, MiniLMv2-style — required when teacher and
    student have different head counts).
    """

    layer_T: int = option(0, help="teacher layer (hidden: 0 = embeddings, 1..L; attention_scores: 1..L)")
    layer_S: int = option(0, help="student layer (same indexing as layer_T)")
    feature: str = option("hidden", help="{choices}", choices=FEATURES)
    loss: str = option("hidden_mse", help="a registered intermediate loss")
    weight: float = option(1.0, help="weight of this match in the total loss")
    proj: str = option("auto", help=_PROJ_HELP, choices=("auto", "linear", "none"))
    pool: str = option("none", help="hidden states: {choices} (cls / mean: one vector per sequence, for a teacher "
                                    "with another tokenizer)", choices=POOLS)
    params: dict = option(default_factory=dict, help="keyword arguments of the loss")


@dataclass
class MappingConfig:
    """A mapping strategy (``distiller_nlp.kd.mapping``) that expands to matches: ``skip`` (teacher ⌊i·L_T/L_S⌋),
    ``last`` (L_T − L_S + i) or ``emd`` (BERT-EMD: every student layer against every teacher layer, weighted by an
    earth mover's transport plan whose layer weights adapt during training). EMD keys of ``params`` (not passed to the
    loss): ``emd_weights`` — ``bert_emd`` (BERT-EMD's cost attention, the default; ``uniform`` for ``mi_alpha``),
    ``bert_emd_linear`` (BERT-EMD's released code, no softmax) or ``uniform`` (Distiller: fixed uniform weights);
    ``emd_temperature`` — the softmax temperature of ``bert_emd`` (default 1). With ``mi_alpha``, EMD builds one critic
    per (student, teacher) layer pair plus one for the embeddings; skip/last share one critic."""

    strategy: str = option("skip", help="intermediate layer mapping: {choices}", choices=_mapping_strategies,
                           flag="mapping")
    feature: str = option("hidden", help="{choices}", choices=FEATURES)
    loss: str = option("hidden_mse", help="intermediate loss of the mapping (hidden_mse, mi_alpha, ...)",
                       flag="inter-loss")
    weight: float = option(1.0, help="weight of each intermediate match", flag="inter-weight")
    proj: str = option("auto", help=_PROJ_HELP, choices=("auto", "linear", "none"))
    include_embeddings: bool = option(True, help="also match the embeddings (hidden layer 0)")
    pool: str = option("none", help="hidden states: {choices} (cls / mean: sequence-level)", choices=POOLS)
    params: dict = option(default_factory=dict, help="keyword arguments of the loss (and, for emd, "
                                                      "emd_weights and emd_temperature)")


@dataclass
class ScheduleConfig:
    """How one KD hyper-parameter moves over training from its start value to ``final``.

    The start value is the KD config's own (``temperature``, ``kd_weight``, ``hard_label_weight``; 1.0 for
    ``intermediate_weight``, a factor on every match's weight). With progress p = step / total steps:
    ``linear``: start + (final − start)·p; ``cosine``: start + (final − start)·(1 − cos πp)/2; ``constant``: start.
    """

    kind: str = option("constant", help="{choices}", choices=SCHEDULE_KINDS)
    final: Optional[float] = option(None, help="the value at the end of training")


@dataclass
class KDConfig:
    """The KD pipeline: prediction-layer loss + weights + temperature + intermediate matches."""

    pred_loss: str = option("kd", help="{choices}", choices=_prediction_losses, flag=True)
    temperature: Optional[float] = option(None, positive=True, flag=True,
                                          help="softmax temperature of the prediction loss (default: the loss's "
                                               "paper value, 4 for dkd, else 1)")
    kd_weight: float = option(1.0, help="weight of the prediction-layer KD loss", flag=True)
    hard_label_weight: Optional[float] = option(None, flag=True,
                                                help="weight of the cross-entropy on gold labels (default: 1 for "
                                                     "nkd and dkd, whose papers train CE + their loss, else 0)")
    kd_warmup: Optional[float] = option(None, min=0, max=1, flag=True,
                                        help="fraction of training over which the prediction loss's weight rises "
                                             "linearly from 0 (default: 1/12 for dkd, mdistiller's 20 of 240 "
                                             "epochs; else 0)")
    pred_loss_params: dict = option(default_factory=dict, help="keyword arguments of the prediction loss")
    intermediate: list[MatchConfig] = option(default_factory=list, help="explicit intermediate matches")
    mapping: Optional[MappingConfig] = option(None, help="a mapping strategy that expands to matches")
    mixup: bool = option(False, help="MixUp on word embeddings (batch = originals + mixed copies)", flag=True)
    mixup_alpha: float = option(0.4, help="MixUp λ ~ Beta(mixup_alpha, mixup_alpha)", positive=True)
    # e.g. {my-encoder: {embeddings: embed, layers: blocks, q: attn.wq, k: attn.wk, v: attn.wv}}
    encoder_layouts: dict = option(default_factory=dict,
                                   help="module paths of encoder types the capture does not know (model type -> "
                                        "EncoderLayout fields; see distiller_nlp.core.capture)")
    # e.g. {temperature: {kind: linear, final: 1.0}, kd_weight: {kind: cosine, final: 0.5}}
    schedules: dict[str, ScheduleConfig] = option(default_factory=dict, help="schedules of KD hyper-parameters")


#: What a KD recipe falls back to when it leaves a field unset and the prediction loss has no recipe default.
KD_FALLBACKS = {"temperature": 1.0, "hard_label_weight": 0.0, "kd_warmup": 0.0}


def resolve_kd_defaults(kd: KDConfig) -> KDConfig:
    """A copy of ``kd`` with every unset (None) field of :data:`KD_FALLBACKS` filled: the prediction loss's
    ``recipe_defaults`` (registered with the loss, :func:`distiller_nlp.core.losses.register_loss`: ``dkd`` =
    T 4, CE weight 1, warm-up 1/12 of training as mdistiller's DKD; ``nkd`` = τ 1, CE weight 1 as the NKD paper),
    else the fallback (T 1, CE weight 0, no warm-up). A value the recipe sets is kept. Idempotent; the input is
    not modified. Every consumer (the KD module, the run card, the pipeline space) reads the resolved copy, so a
    recipe's stages inherit "unset", not the first stage's loss's values."""
    import dataclasses

    from distiller_nlp.core.losses import LOSSES

    missing = {k for k in KD_FALLBACKS if getattr(kd, k) is None}
    if not missing:
        return kd
    defaults = {}
    if kd.pred_loss in LOSSES:
        defaults = LOSSES.meta(kd.pred_loss).get("recipe_defaults") or {}
    return dataclasses.replace(kd, **{k: float(defaults.get(k, KD_FALLBACKS[k])) for k in missing})


@dataclass
class AugmentConfig:
    """Text augmentation of the training set (``distiller_nlp.augment``): ``copies`` augmented copies of every
    training example, made by the ordered ``stages`` (e.g. ``[random]``), added next to the originals."""

    stages: list[str] = option(default_factory=list, choices=_augmenters, check=False, flag="augment",
                               parse=_comma_list,
                               help="augmentation pipeline, comma-separated stages in order ({choices})")
    aug_p: float = option(0.3, help="fraction of words an augmentation stage changes, in (0, 1]", flag=True)
    copies: int = option(1, help="augmented copies per training example", flag="aug-copies")
    seed: int = option(0, help="seed of the augmentation")
    params: dict = option(default_factory=dict, flag="aug-param", append=True, overrides=_aug_param_overrides,
                          metavar="STAGE.KEY=VALUE",
                          help="stage parameter, e.g. contextual.model=runs/mlm (repeatable)")
    reaug_every: int = option(0, help="regenerate the augmented copies every N epochs (0 = once)", min=0, flag=True)
    repeated_aug: int = option(1, help="k > 1: each batch holds examples with k - 1 augmented copies", min=1,
                               flag=True)


@dataclass
class DataConfig:
    """Which text task and where its data is (``distiller_nlp.tasks``)."""

    task: str = option("tweets", flag=True,
                       help="task name: GLUE (sst2, mnli, ...), tweets, bbc-headlines, or a custom name")
    data_dir: str = option("", help="directory with local train/dev files (TSV/CSV/JSON/parquet)", flag=True)
    text_column: str = option("", help="text column of custom data", flag=True)
    text_pair_column: str = option("", help="second text column of custom pair data", flag=True)
    label_column: str = option("", help="label column of custom data", flag=True)
    max_train_examples: int = option(0, help="cap on training examples (seeded subset; 0 = all)", min=0, flag=True)
    max_eval_examples: int = option(0, help="cap on examples of each evaluation split (0 = all)", min=0, flag=True)
    subset_seed: int = option(-1, help="seed of the capped train/eval subsets (-1: the run's train.seed); one value "
                                       "gives a teacher and students of several seeds the same examples", min=-1)


@dataclass
class FinetuneConfig:
    """``distiller-nlp finetune-teacher``: fine-tune an encoder checkpoint (default the packaged MiniLM) on a task."""

    model: str = option("minilm", help="encoder checkpoint: directory, 'minilm' or Hub name", flag=True)
    output_dir: str = option("", help="run directory (must be empty unless --resume/--overwrite)",
                             flag="output-dir")
    data: DataConfig = option(default_factory=DataConfig, help="the task")
    train: TrainArgs = option(default_factory=TrainArgs, help="training settings")
    trust_remote_code: bool = option(False, help="allow custom model code from checkpoints (off by default)",
                                     flag=True)
    floors: bool = option(True, flag=True, help="also fit the majority-class and TF-IDF floors on the same training "
                                                "split (seconds) and warn when the model does not beat them")


@dataclass
class TeacherFinetuneConfig:
    """First stage of ``distiller-nlp run``: fine-tune ``teacher`` on the task when it has no classifier for it
    (``when: auto``), always, or never (then a teacher without a classifier is an error)."""

    when: str = option("auto", help="{choices}", choices=("auto", "always", "never"))
    train: TrainArgs = option(default_factory=lambda: TrainArgs(epochs=3.0, lr=2e-5),
                              help="training settings of the teacher fine-tune")


@dataclass
class DistillConfig:
    """``distiller-nlp distill`` (and every stage of ``distiller-nlp run``): the whole run."""

    teacher: str = option("", flag=True, append=True, overrides=_teacher_overrides,
                          help="fine-tuned teacher: a directory, 'minilm', or a Hub name; repeat it for several "
                               "teachers whose soft targets are averaged")
    teachers: list[str] = option(default_factory=list, help="more teachers: soft targets averaged with teacher's")
    student: str = option("", help="student checkpoint (directory or Hub name)", flag=True)
    student_shape: str = option("layers=3,hidden=256,heads=8,intermediate=1024", flag=True,
                                help="student shape, e.g. layers=3,hidden=256,heads=8,intermediate=1024")
    student_init: str = option("auto", help="{choices}", choices=("auto", "teacher", "random"), flag=True)
    output_dir: str = option("", help="run directory (must be empty unless --resume/--overwrite)",
                             flag="output-dir")
    data: DataConfig = option(default_factory=DataConfig, help="the task")
    kd: KDConfig = option(default_factory=KDConfig, help="the KD objective")
    train: TrainArgs = option(default_factory=TrainArgs, help="training settings")
    augment: AugmentConfig = option(default_factory=AugmentConfig, help="augmentation of the training set")
    trust_remote_code: bool = option(False, help="allow custom model code from checkpoints (off by default)",
                                     flag=True)
    teacher_cache: str = option("off", flag=True,
                                help="off | auto (compute teacher outputs once) | DIR from cache-teacher")
    teacher_cache_dtype: str = option("float16", choices=("float16", "float32"),
                                      help="{choices} (float16: half the disk; float32: bit-faithful)")
    floors: bool = option(True, flag=True, help="also fit the majority-class and TF-IDF floors on the same training "
                                                "split (seconds) and warn when the model does not beat them")
    teacher_finetune: TeacherFinetuneConfig = option(default_factory=TeacherFinetuneConfig, flag=False,
                                                     help="`run` only: the teacher fine-tune stage")
    predict_test: bool = option(True, help="`run` only: GLUE-format predictions for unlabelled test splits")
    stages: list[dict] = option(default_factory=list,
                                help="`run` only: distillation stages in sequence, each a partial recipe merged "
                                     "onto this one (`name` labels it); stage i+1 starts from stage i's student")
    general: bool = option(False, help="task-agnostic distillation: intermediate matches only, labels unused, the "
                                       "model selected by the held-out distillation loss")
    meta_dataset: str = option("", flag=True,
                               help="append this run's record to an AutoDistiller meta-dataset (FILE.parquet or a "
                                    "directory of shards)")
    meta_family: str = option("", help="dataset family of the meta-dataset record (default: the task's)", flag=True)
