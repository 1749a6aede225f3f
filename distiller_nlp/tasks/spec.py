"""What a text task is (:class:`TaskSpec`) and the task registry (:data:`TASKS`).

Every task's loaded :class:`datasets.DatasetDict` has the columns ``text`` (str), ``text_pair`` (pair tasks only) and
``label`` — a :class:`datasets.ClassLabel` id for classification (``-1`` = no label, e.g. GLUE test files), or a
``float32`` score for regression (STS-B, 0–5; ``-1.0`` = no label). A new task is one :func:`register_task` call
(GLUE in :mod:`.glue`, the packaged corpora in :mod:`.corpora`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

logger = logging.getLogger(__name__)

TEXT = "text"
TEXT_PAIR = "text_pair"
LABEL = "label"


# --------------------------------------------------------------------------------------------------------------------
# Task specification and registry
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class TaskSpec:
    """What a text task is: its columns, label set, metrics and splits.

    ``text_column``/``text_pair_column``/``label_column`` are the names in the task's source files (Hub names for
    GLUE); the loaded :class:`datasets.DatasetDict` always uses ``text``/``text_pair``/``label``.
    ``main_metric`` is what GLUE ranks by: ``matthews`` (CoLA), ``combined_score`` = mean(accuracy, F1) (MRPC, QQP)
    or mean(Pearson, Spearman) (STS-B), ``accuracy`` otherwise (MNLI: accuracy on ``validation_matched``; the
    ``validation_mismatched`` accuracy is reported too). ``eval_splits[0]`` is the split model selection uses;
    all of ``eval_splits`` are evaluated and reported. ``family`` groups tasks derived from one corpus (subsets,
    label groupings), which must never be counted as independent datasets.
    """

    name: str
    text_column: str = TEXT
    text_pair_column: str | None = None
    label_column: str = LABEL
    num_labels: int = 2
    label_names: list[str] | None = None
    is_regression: bool = False
    metric_names: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"
    train_split: str = "train"
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    family: str = ""
    description: str = ""
    text_aliases: tuple[str, ...] = ()
    text_pair_aliases: tuple[str, ...] = ()
    label_aliases: tuple[str, ...] = ()
    headerless_columns: tuple[str, ...] | None = None
    hub_path: str | None = None
    hub_name: str | None = None

    def __post_init__(self) -> None:
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
        if self.is_regression:
            self.num_labels = 1
            self.label_names = None
        elif self.label_names is not None and self.num_labels != len(self.label_names):
            raise DistillerError(
                f"task {self.name!r}: num_labels={self.num_labels} but {len(self.label_names)} label names"
            )
        self.metric_names = tuple(self.metric_names)
        self.eval_splits = tuple(self.eval_splits)
        self.test_splits = tuple(self.test_splits)
        if not self.family:
            self.family = self.name

    @property
    def metrics(self) -> tuple[str, ...]:
        """Alias of ``metric_names``."""
        return self.metric_names

    @property
    def validation_split(self) -> str:
        """The split used for model selection (``eval_splits[0]``)."""
        return self.eval_splits[0]

    @property
    def splits(self) -> tuple[str, ...]:
        """All split names of the task, train first."""
        return (self.train_split, *self.eval_splits, *self.test_splits)

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks (a ``text_pair`` column)."""
        return self.text_pair_column is not None

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}`` for ``config.id2label`` (``{0: "LABEL_0"}`` for regression)."""
        if self.label_names is None:
            return {0: "LABEL_0"}
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        """``{name: id}`` for ``config.label2id``."""
        return {v: k for k, v in self.id2label.items()}

    @property
    def problem_type(self) -> str:
        """``"regression"`` or ``"single_label_classification"`` (the transformers ``config.problem_type``)."""
        return "regression" if self.is_regression else "single_label_classification"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the spec."""
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


Loader = Callable[[TaskSpec], Any]

_NAME_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "bbc_headlines": "bbc-headlines", "mnli-m": "mnli"}


def task_key(name: str) -> str:
    """The registry key of a task name as typed: lower case, with aliases (``SST-2`` → ``sst2``)."""
    k = str(name).strip().lower()
    return _NAME_ALIASES.get(k, k)


#: Every known text task: ``name -> TaskSpec``, with the task's ``loader`` in its metadata.
TASKS: Registry[TaskSpec] = Registry(
    "task", normalize=task_key,
    hint=" (for your own data pass --data-dir with --text-column and --label-column)")


def register_task(spec: TaskSpec, loader: Loader | None = None, *, overwrite: bool = False) -> TaskSpec:
    """Register a task so ``get_task``/``load_task_data``/``--task`` know it.

    ``loader(spec) -> DatasetDict`` is called when no ``data_dir`` is given; it may return the source columns
    (``spec.text_column``, ...) or the normalized ones — both are normalized and validated the same way. With
    ``loader=None`` the task is loaded from ``spec.hub_path``/``spec.hub_name`` or, with ``data_dir``, from local
    files. Registering a known name is an error unless ``overwrite=True``.
    """
    if not isinstance(spec, TaskSpec):
        raise DistillerError(f"register_task needs a TaskSpec, got {type(spec).__name__}")
    if spec.name.strip().lower() in TASKS and not overwrite:
        raise DistillerError(f"task {spec.name!r} is already registered (pass overwrite=True to replace it)")
    TASKS.register(spec.name.strip().lower(), spec, override=True, loader=loader)
    return spec


def list_tasks() -> list[str]:
    """Names of the registered tasks (GLUE tasks, ``tweets``, ``bbc-headlines``, and user registrations)."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of a registered task (a copy: mutate it freely). Unknown → DistillerError."""
    if name not in TASKS:
        raise DistillerError(
            f"unknown task {name!r}; known tasks: {', '.join(list_tasks())} "
            "(for your own data pass --data-dir with --text-column and --label-column)"
        )
    return dataclasses.replace(TASKS.get(name))


def task_loader(name: str) -> Loader | None:
    """The loader a task was registered with (None: Hub or local files)."""
    return TASKS.meta(name).get("loader")


def _class_label(names: Sequence[str]):
    import datasets

    return datasets.ClassLabel(names=list(names))


def task_features(spec: TaskSpec):
    """The normalized ``datasets.Features`` of a task: ``text`` [, ``text_pair``], ``label`` (ClassLabel or float32)."""
    import datasets

    feats = {TEXT: datasets.Value("string")}
    if spec.is_pair:
        feats[TEXT_PAIR] = datasets.Value("string")
    feats[LABEL] = datasets.Value("float32") if spec.is_regression else _class_label(spec.label_names or [])
    return datasets.Features(feats)

