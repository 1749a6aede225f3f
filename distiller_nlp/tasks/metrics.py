"""GLUE metrics, computed offline, exposed through the ``evaluate`` interface.

The Hub's ``glue`` metric script cannot be fetched without network, so the toolkit owns the metric code. Every value
is returned in the metric's own range, never as a percentage:

=================  ==========  =====================================================================================
key                range       definition
=================  ==========  =====================================================================================
``accuracy``       [0, 1]      fraction of predictions equal to the reference (``sklearn.metrics.accuracy_score``)
``f1``             [0, 1]      binary F1 of the positive class 1: 2·TP / (2·TP + FP + FN) (``sklearn.metrics.f1_score``)
``f1_macro``       [0, 1]      unweighted mean of the per-class F1 over the classes present (multi-class tasks)
``matthews``       [-1, 1]     Matthews correlation (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)), its
                               multi-class generalisation by Gorodkin (2004) (``sklearn.metrics.matthews_corrcoef``)
``pearson``        [-1, 1]     Pearson correlation of predictions and references (``scipy.stats.pearsonr``)
``spearman``       [-1, 1]     Spearman rank correlation (``scipy.stats.spearmanr``)
``combined_score`` as members  what GLUE ranks by for tasks with two metrics: mean(accuracy, f1) for MRPC/QQP,
                               mean(pearson, spearman) for STS-B; added whenever both members are computed
=================  ==========  =====================================================================================

Degenerate cases are defined, not ``nan``: a correlation (Matthews, Pearson, Spearman) whose denominator is zero —
constant predictions or constant references, or fewer than two examples — is **0.0** (no linear/rank association can
be measured), and no warning is emitted. F1 with no predicted and no true positive is 0.0 (``zero_division=0``).

Two interfaces:

* :func:`compute_task_metrics` — a plain function: ``compute_task_metrics(["accuracy", "f1"], preds, refs)``.
* :func:`load_metric` — ``load_metric("mrpc").compute(predictions=..., references=...)``. It loads the local
  ``evaluate`` module script ``distiller_nlp/tasks/glue_metric.py`` by path with :func:`evaluate.load` (works with
  ``HF_HUB_OFFLINE=1``: a local script never touches the Hub), and falls back to :class:`TaskMetric`, a small class
  with the same ``compute`` signature, if ``evaluate`` cannot load it or the task is a custom one.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

#: Path of the ``evaluate`` module script (``evaluate.load(GLUE_METRIC_SCRIPT, config_name="sst2")``).
GLUE_METRIC_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glue_metric.py")

#: Metrics reported per task (GLUE's own choice; ``combined_score`` is added when both members are present).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("matthews",),
    "sst2": ("accuracy",),
    "mrpc": ("accuracy", "f1"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("accuracy", "f1"),
    "mnli": ("accuracy",),
    "mnli_matched": ("accuracy",),
    "mnli_mismatched": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "ax": ("matthews",),
    "tweets": ("accuracy", "f1_macro"),
    "bbc-headlines": ("accuracy", "f1_macro"),
    "bbc-pairs": ("accuracy", "f1"),
}

#: Tasks whose predictions and references are real-valued scores.
REGRESSION_TASKS = frozenset({"stsb"})

#: Every metric key :func:`compute_task_metrics` understands, and the aliases it accepts for them.
METRIC_NAMES = ("accuracy", "f1", "f1_macro", "matthews", "pearson", "spearman", "combined_score")
_ALIASES = {
    "acc": "accuracy",
    "matthews_correlation": "matthews",
    "mcc": "matthews",
    "pearsonr": "pearson",
    "spearmanr": "spearman",
    "macro_f1": "f1_macro",
}
_REGRESSION_METRICS = frozenset({"pearson", "spearman"})


def _as_array(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype == object:
        raise DistillerError(f"{name} must be numeric, got values of type object (e.g. {arr.ravel()[:1].tolist()})")
    return arr


def _prepare(predictions: Any, references: Any, *, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flatten inputs to 1-D arrays of equal length; 2-D classification predictions (logits) are arg-maxed."""
    preds = _as_array(predictions, "predictions")
    refs = _as_array(references, "references")
    if preds.ndim == 2:
        preds = preds[:, 0] if preds.shape[1] == 1 else (preds.argmax(axis=-1) if not regression else preds)
    if refs.ndim == 2 and refs.shape[1] == 1:
        refs = refs[:, 0]
    if preds.ndim != 1 or refs.ndim != 1:
        raise DistillerError(
            f"predictions and references must be 1-D (got shapes {preds.shape} and {refs.shape})"
        )
    if preds.shape[0] != refs.shape[0]:
        raise DistillerError(
            f"predictions and references differ in length: {preds.shape[0]} predictions, {refs.shape[0]} references"
        )
    if preds.shape[0] == 0:
        raise DistillerError("cannot compute a metric on zero examples")
    return preds, refs


def _as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DistillerError(f"{name} must be class ids for a classification metric, got non-integer values")
        arr = arr.astype(np.int64)
    return arr


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Accuracy = (1/n)·Σ_i [pred_i = ref_i], in [0, 1]. 2-D ``predictions`` (logits) are arg-maxed."""
    from sklearn.metrics import accuracy_score

    preds, refs = _prepare(predictions, references, regression=False)
    return float(accuracy_score(_as_labels(refs, "references"), _as_labels(preds, "predictions")))


def f1(predictions: Sequence, references: Sequence, pos_label: int = 1) -> float:
    """Binary F1 of class ``pos_label`` (GLUE: 1): F1 = 2·TP / (2·TP + FP + FN), in [0, 1].

    0.0 when there is no true and no predicted positive (``zero_division=0``). Labels other than 0/1 (for the
    default ``pos_label``) raise :class:`DistillerError`: use :func:`f1_macro` for multi-class tasks.
    """
    from sklearn.metrics import f1_score

    preds, refs = _prepare(predictions, references, regression=False)
    preds, refs = _as_labels(preds, "predictions"), _as_labels(refs, "references")
    extra = sorted((set(np.unique(preds).tolist()) | set(np.unique(refs).tolist())) - {0, 1, pos_label})
    if extra:
        raise DistillerError(
            f"binary F1 needs labels in {{0, 1}} (positive class {pos_label}), got label {extra[0]}; "
            "use 'f1_macro' for multi-class tasks"
        )
    return float(f1_score(refs, preds, pos_label=pos_label, average="binary", zero_division=0))


def f1_macro(predictions: Sequence, references: Sequence) -> float:
    """Macro F1 = (1/K)·Σ_k F1_k over the K classes seen in predictions or references, in [0, 1]."""
    from sklearn.metrics import f1_score

    preds, refs = _prepare(predictions, references, regression=False)
    return float(
        f1_score(_as_labels(refs, "references"), _as_labels(preds, "predictions"), average="macro", zero_division=0)
    )


def matthews_corrcoef(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation coefficient (Matthews, 1975), in [-1, 1].

    Binary: MCC = (TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)); multi-class: Gorodkin's R_K
    (``sklearn.metrics.matthews_corrcoef``). Constant predictions or constant references (zero denominator) → 0.0.
    """
    from sklearn.metrics import matthews_corrcoef as _mcc

    preds, refs = _prepare(predictions, references, regression=False)
    preds, refs = _as_labels(preds, "predictions"), _as_labels(refs, "references")
    if np.all(preds == preds[0]) or np.all(refs == refs[0]):
        return 0.0
    value = float(_mcc(refs, preds))
    return 0.0 if math.isnan(value) else value


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.all(x == x[0]))


def pearson(predictions: Sequence, references: Sequence) -> float:
    """Pearson's r = cov(p, y) / (σ_p·σ_y), in [-1, 1] (``scipy.stats.pearsonr``).

    Fewer than two examples, a constant input (σ = 0) or a non-finite result → 0.0, without scipy's warning.
    """
    from scipy.stats import pearsonr

    preds, refs = _prepare(predictions, references, regression=True)
    preds, refs = preds.astype(np.float64), refs.astype(np.float64)
    if preds.shape[0] < 2 or _is_constant(preds) or _is_constant(refs):
        return 0.0
    value = float(pearsonr(preds, refs)[0])
    return 0.0 if not math.isfinite(value) else max(-1.0, min(1.0, value))


def spearman(predictions: Sequence, references: Sequence) -> float:
    """Spearman's ρ = Pearson's r of the ranks (ties get their average rank), in [-1, 1] (``scipy.stats.spearmanr``).

    Fewer than two examples, a constant input or a non-finite result → 0.0, without scipy's warning.
    """
    from scipy.stats import spearmanr

    preds, refs = _prepare(predictions, references, regression=True)
    preds, refs = preds.astype(np.float64), refs.astype(np.float64)
    if preds.shape[0] < 2 or _is_constant(preds) or _is_constant(refs):
        return 0.0
    value = float(spearmanr(preds, refs)[0])
    return 0.0 if not math.isfinite(value) else max(-1.0, min(1.0, value))


_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1,
    "f1_macro": f1_macro,
    "matthews": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def canonical_metric_name(name: str) -> str:
    """Map a metric name or alias (``matthews_correlation``, ``acc``, ...) to its key; unknown → DistillerError."""
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in METRIC_NAMES:
        raise DistillerError(f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}")
    return key


def compute_task_metrics(metric_names: Iterable[str], predictions: Any, references: Any) -> dict[str, float]:
    """Compute the named metrics; returns ``{name: value}`` plus ``combined_score`` where GLUE reports one.

    ``combined_score`` = mean(accuracy, f1) when both are requested (MRPC, QQP), mean(pearson, spearman) when both
    are requested (STS-B). Requesting ``combined_score`` alone needs one of these pairs. Predictions may be class
    ids, or 2-D logits (arg-maxed) for classification metrics; correlations use the raw values.
    """
    names: list[str] = []
    for n in metric_names:
        key = canonical_metric_name(n)
        if key not in names:
            names.append(key)
    if not names:
        raise DistillerError("no metric requested")
    result: dict[str, float] = {}
    for key in names:
        if key != "combined_score":
            result[key] = _FUNCTIONS[key](predictions, references)
    if "accuracy" in result and "f1" in result:
        result["combined_score"] = (result["accuracy"] + result["f1"]) / 2.0
    elif "pearson" in result and "spearman" in result:
        result["combined_score"] = (result["pearson"] + result["spearman"]) / 2.0
    elif "combined_score" in names:
        raise DistillerError("'combined_score' needs 'accuracy' and 'f1', or 'pearson' and 'spearman'")
    return result


_TASK_ALIASES = {
    "sst-2": "sst2",
    "sts-b": "stsb",
    "bbc_headlines": "bbc-headlines",
    "bbc_pairs": "bbc-pairs",
    "mnli-m": "mnli_matched",
    "mnli-mm": "mnli_mismatched",
}


def _normalise_task(task_name: str) -> str:
    key = str(task_name).strip().lower()
    return _TASK_ALIASES.get(key, key)


def task_metric_names(task_name: str) -> tuple[str, ...]:
    """The metric names GLUE reports for ``task_name`` (see :data:`TASK_METRICS`); unknown → DistillerError."""
    key = _normalise_task(task_name)
    if key not in TASK_METRICS:
        raise DistillerError(f"no metrics defined for task {task_name!r}; known tasks: {', '.join(TASK_METRICS)}")
    return TASK_METRICS[key]


class TaskMetric:
    """Minimal stand-in for an ``evaluate`` module: ``TaskMetric(["accuracy", "f1"]).compute(predictions=, references=)``.

    Also supports ``add_batch(predictions=, references=)`` followed by ``compute()`` like ``evaluate`` modules.
    """

    def __init__(self, metric_names: Iterable[str], name: str = "custom"):
        self.metric_names = tuple(canonical_metric_name(n) for n in metric_names)
        self.name = name
        self.config_name = name
        self._preds: list = []
        self._refs: list = []

    def add_batch(self, *, predictions: Any, references: Any) -> None:
        """Accumulate a batch (flattened) for a later :meth:`compute`."""
        self._preds.extend(np.asarray(_as_array(predictions, "predictions")).tolist())
        self._refs.extend(np.asarray(_as_array(references, "references")).tolist())

    def compute(self, *, predictions: Any = None, references: Any = None) -> dict[str, float]:
        """Return :func:`compute_task_metrics` for the given (or accumulated) predictions and references."""
        if predictions is None and references is None:
            predictions, references = self._preds, self._refs
            self._preds, self._refs = [], []
        return compute_task_metrics(self.metric_names, predictions, references)

    def __repr__(self) -> str:
        return f"TaskMetric(name={self.name!r}, metrics={list(self.metric_names)})"


def load_metric(task: Any, *, use_evaluate: bool = True) -> Any:
    """Return an object with ``compute(predictions=, references=) -> dict`` for a task.

    ``task`` is a task name (GLUE names, ``tweets``, ``bbc-headlines``) or any object with ``name`` and
    ``metric_names`` attributes (a ``distiller_nlp.tasks.TaskSpec``). For a known task this is
    ``evaluate.load(GLUE_METRIC_SCRIPT, config_name=task)`` — the local module script, which needs no network.
    If ``evaluate`` fails for any reason, or the task is a custom one, a :class:`TaskMetric` with the same
    ``compute`` signature is returned (the failure is logged at INFO level).
    """
    if isinstance(task, str):
        names = task_metric_names(task)
        name = _normalise_task(task)
    else:
        name, names = getattr(task, "name", "custom"), tuple(getattr(task, "metric_names"))
        if name not in TASK_METRICS or tuple(canonical_metric_name(n) for n in names) != TASK_METRICS[name]:
            return TaskMetric(names, name=name)
    if use_evaluate:
        try:
            import evaluate

            return evaluate.load(GLUE_METRIC_SCRIPT, config_name=name)
        except Exception as exc:  # any failure: offline cache dir not writable, evaluate API change, ...
            logger.info("evaluate.load(%s) failed (%s: %s); using TaskMetric", GLUE_METRIC_SCRIPT, type(exc).__name__, exc)
    return TaskMetric(names, name=name)


def task_metric_fn(task):
    """``(logits, labels) -> metrics`` for a task: argmax for classification, the squeezed value for regression."""

    def compute(logits: np.ndarray, labels: np.ndarray) -> dict:
        if task.is_regression:
            preds = logits.reshape(-1)
        else:
            preds = logits.argmax(-1)
        return compute_task_metrics(task.metrics, preds, labels)

    return compute
