"""One config schema for YAML recipes and command-line flags.

Recipes are read with ``yaml.safe_load`` only. Every dataclass below is a section of a recipe; an unknown key, a
value of the wrong type or a malformed file is a :class:`~distiller_nlp.errors.DistillerError` that names the key and
the file. Flags override recipe keys (``--epochs 3`` sets ``train.epochs``; ``--set kd.temperature=4`` sets any key).

A distillation recipe looks like::

    task: tweets
    teacher: runs/teacher
    student_shape: layers=3,hidden=256,heads=8,intermediate=1024
    kd:
      pred_loss: kd            # kd | soft_ce | logits_mse | nkd | dkd | none
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

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from distiller_nlp.errors import DistillerError

PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainArgs:
    """Optimisation and run-control settings shared by every training command (the engine's arguments)."""

    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # <= 0 disables clipping
    precision: str = "auto"  # auto | no | bf16 | fp16
    seed: int = 42
    cpu: bool = False
    max_length: int = 128
    eval_steps: int = 0  # 0 = evaluate at the end of every epoch
    save_steps: int = 0  # 0 = checkpoint at the end of every epoch (and at every evaluation)
    logging_steps: int = 20
    keep_checkpoints: int = 2
    report_to: str = "tensorboard"  # tensorboard | none
    metric_for_best: str = ""  # "" = the task's main metric
    find_unused_parameters: bool = False
    group_by_length: bool = False  # batches of similar length (less padding; faster on variable-length text)
    optim: str = "auto"  # auto (fused AdamW on CPU/CUDA) | adamw_fused | adamw_foreach | adamw

    def validate(self, source: str = "config") -> None:
        if self.precision not in PRECISIONS:
            raise DistillerError(f"train.precision: '{self.precision}' in {source} is not one of {', '.join(PRECISIONS)}")
        if self.optim not in ("auto", "adamw", "adamw_foreach", "adamw_fused"):
            raise DistillerError(f"train.optim: '{self.optim}' in {source} must be auto, adamw_fused, adamw_foreach "
                                 "or adamw")
        if self.report_to not in ("tensorboard", "none"):
            raise DistillerError(f"train.report_to: '{self.report_to}' in {source} must be 'tensorboard' or 'none'")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "max_length", "logging_steps"):
            if getattr(self, name) <= 0:
                raise DistillerError(f"train.{name} in {source} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise DistillerError(f"train.epochs in {source} must be positive (or set train.max_steps)")
        if self.lr <= 0:
            raise DistillerError(f"train.lr in {source} must be positive, got {self.lr}")


@dataclass
class MatchConfig:
    """One intermediate match, written the way TextBrewer users write ``intermediate_matches``.

    ``feature``: ``hidden`` (layer outputs; 0 = embeddings) or ``attention_scores`` (pre-softmax Q·Kᵀ of a layer,
    1..L). ``proj``: ``linear`` adds a learned ``Linear(d_S -> d_T)`` owned by the run (trained with the student,
    never exported), ``none`` requires equal widths. ``params`` are passed to the loss (e.g. ``alpha`` for
    ``mi_alpha``, ``kind`` for ``attention_score``).
    """

    layer_T: int = 0
    layer_S: int = 0
    feature: str = "hidden"
    loss: str = "hidden_mse"
    weight: float = 1.0
    proj: str = "linear"
    params: dict = field(default_factory=dict)


@dataclass
class MappingConfig:
    """A mapping strategy that expands to matches: ``skip`` (teacher ⌊i·L_T/L_S⌋), ``last`` (L_T − L_S + i) or
    ``emd`` (BERT-EMD: every student layer against every teacher layer, weighted by an earth mover's transport plan
    whose layer weights adapt during training; ``params.emd_temperature`` sets the update's softmax temperature)."""

    strategy: str = "skip"
    feature: str = "hidden"
    loss: str = "hidden_mse"
    weight: float = 1.0
    proj: str = "linear"
    include_embeddings: bool = True
    params: dict = field(default_factory=dict)


SCHEDULE_KINDS = ("constant", "linear", "cosine")
SCHEDULED = ("temperature", "kd_weight", "hard_label_weight", "intermediate_weight")


@dataclass
class ScheduleConfig:
    """How one KD hyper-parameter moves over training from its start value to ``final``.

    The start value is the KD config's own (``temperature``, ``kd_weight``, ``hard_label_weight``; 1.0 for
    ``intermediate_weight``, a factor on every match's weight). With progress p = step / total steps:
    ``linear``: start + (final − start)·p; ``cosine``: start + (final − start)·(1 − cos πp)/2; ``constant``: start.
    """

    kind: str = "constant"
    final: Optional[float] = None


@dataclass
class KDConfig:
    """The KD pipeline: prediction-layer loss + weights + temperature + intermediate matches."""

    pred_loss: str = "kd"  # kd | soft_ce | logits_mse | nkd | dkd | none
    temperature: float = 1.0
    kd_weight: float = 1.0
    hard_label_weight: float = 0.0
    pred_loss_params: dict = field(default_factory=dict)
    intermediate: list[MatchConfig] = field(default_factory=list)
    mapping: Optional[MappingConfig] = None
    mixup: bool = False  # MixUp on word embeddings: batch = originals + mixed copies (teacher labels both)
    mixup_alpha: float = 0.4  # λ ~ Beta(mixup_alpha, mixup_alpha)
    # e.g. {temperature: {kind: linear, final: 1.0}, kd_weight: {kind: cosine, final: 0.5}}
    schedules: dict[str, ScheduleConfig] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    """Text augmentation of the training set (``distiller_nlp.augment``): ``copies`` augmented copies of every
    training example, made by the ordered ``stages`` (e.g. ``[random]``), added next to the originals."""

    stages: list[str] = field(default_factory=list)
    aug_p: float = 0.3
    copies: int = 1
    seed: int = 0
    params: dict = field(default_factory=dict)  # per stage, e.g. {random: {action: delete}}
    reaug_every: int = 0  # > 0: new augmented copies every N epochs (Distiller's num_reaug); 0 = made once
    repeated_aug: int = 1  # k > 1: k − 1 copies per example, kept in the same batch as their original


@dataclass
class DataConfig:
    task: str = "tweets"
    data_dir: str = ""
    text_column: str = ""
    text_pair_column: str = ""
    label_column: str = ""
    max_train_examples: int = 0  # 0 = all
    max_eval_examples: int = 0


@dataclass
class FinetuneConfig:
    """``distiller-nlp finetune-teacher``: fine-tune an encoder checkpoint (default the packaged MiniLM) on a task."""

    model: str = "minilm"
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainArgs = field(default_factory=TrainArgs)
    trust_remote_code: bool = False


@dataclass
class TeacherFinetuneConfig:
    """First stage of ``distiller-nlp run``: fine-tune ``teacher`` on the task when it has no classifier for it
    (``when: auto``), always, or never (then a teacher without a classifier is an error)."""

    when: str = "auto"  # auto | always | never
    train: TrainArgs = field(default_factory=lambda: TrainArgs(epochs=3.0, lr=2e-5))


@dataclass
class DistillConfig:
    """``distiller-nlp distill``: the whole run."""

    teacher: str = ""
    teachers: list[str] = field(default_factory=list)  # more teachers: soft targets averaged with ``teacher``'s
    student: str = ""
    student_shape: str = "layers=3,hidden=256,heads=8,intermediate=1024"
    student_init: str = "auto"  # auto | teacher | random
    output_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    train: TrainArgs = field(default_factory=TrainArgs)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    trust_remote_code: bool = False
    teacher_cache: str = "off"  # off | auto | DIR written by `distiller-nlp cache-teacher`
    teacher_cache_dtype: str = "float16"  # float16 (half the disk) | float32 (bit-faithful)
    # ``distiller-nlp run`` only: the stages around distillation
    teacher_finetune: TeacherFinetuneConfig = field(default_factory=TeacherFinetuneConfig)
    predict_test: bool = True  # write GLUE-format predictions for the task's unlabelled test split(s)
    # several distillation stages in sequence (e.g. TinyBERT's intermediate-layer then prediction-layer stage): each
    # a partial recipe merged onto this one (``name`` labels it); stage i+1 starts from stage i's student
    stages: list[dict] = field(default_factory=list)
    # task-agnostic (general) distillation: labels unused, only intermediate matches (hidden / attention_scores);
    # the teacher needs no classifier; the model is selected by the held-out distillation loss
    general: bool = False
    # AutoDistiller's meta-dataset: append one record of this run (meta-features, models, pipeline, scores) to this
    # parquet file (or directory of parquet shards); ``meta_family`` groups datasets from one corpus (default: task)
    meta_dataset: str = ""
    meta_family: str = ""


# ------------------------------------------------------------------------------------------------ strict loading

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key, source)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DistillerError(f"key '{key}' in {source} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, source, prefix=key + ".")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise DistillerError(f"key '{key}' in {source} must be a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise DistillerError(f"key '{key}' in {source} must be a mapping, got {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and dataclasses.is_dataclass(args[1]):
            return {str(k): _coerce(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise DistillerError(f"key '{key}' in {source} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise DistillerError(f"key '{key}' in {source} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise DistillerError(f"key '{key}' in {source} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise DistillerError(f"key '{key}' in {source} must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise DistillerError(f"key '{key}' in {source} must be a number, got {value!r}")
    if tp is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise DistillerError(f"key '{key}' in {source} must be a string, got {value!r}")
    return value


def from_dict(cls, data: dict, source: str = "config", prefix: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise DistillerError naming key and file."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise DistillerError(f"unknown key '{prefix}{key}' in {source} (known keys here: {known})")
        factory = fields[key].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[key]) and factory is not dataclasses.MISSING:
            # a section given in part keeps the parent's defaults for the rest (e.g. teacher_finetune.train.lr)
            value = deep_merge(to_dict(factory()), value)
        kwargs[key] = _coerce(value, hints[key], prefix + key, source)
    return cls(**kwargs)


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, recursively for mappings (lists and scalars are replaced)."""
    out = dict(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj) -> dict:
    """The plain-dict form of a config (what a recipe file holds)."""
    return dataclasses.asdict(obj)


def read_yaml(path: str) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; a missing or malformed file is a one-line DistillerError."""
    if not os.path.isfile(path):
        raise DistillerError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DistillerError(f"malformed YAML in {path}{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise DistillerError(f"config file {path} is not UTF-8 text: {exc.reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DistillerError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def set_by_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'`` (creating sub-mappings)."""
    parts = dotted.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise DistillerError(f"cannot set '{dotted}': '{p}' is not a mapping")
        cur = nxt
    cur[parts[-1]] = value


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parse ``--set key.sub=value``; the value is read as YAML (so numbers, booleans and lists work)."""
    if "=" not in item:
        raise DistillerError(f"--set expects KEY=VALUE, got '{item}'")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(cls, path: Optional[str] = None, overrides: Optional[dict] = None, sets: Optional[list] = None):
    """Load a recipe into dataclass ``cls``: YAML file (optional) < ``overrides`` (dotted keys) < ``--set`` items."""
    source = path or "command-line flags"
    data = read_yaml(path) if path else {}
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_by_path(data, dotted, value)
    for item in sets or []:
        key, value = parse_set_option(item)
        set_by_path(data, key, value)
    cfg = from_dict(cls, data, source)
    if hasattr(cfg, "train"):
        cfg.train.validate(source)
    return cfg


def dump_yaml(cfg, path: str) -> None:
    """Write a config as YAML atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, path)
