"""Normalization of loaded splits to ``text`` / ``text_pair`` / ``label``: column picking (Hub names and raw GLUE
header aliases), label mapping through the label names, validation, and the inferred spec of custom data."""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.tasks.spec import LABEL, TEXT, TEXT_PAIR, TaskSpec, task_features

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------------
def is_missing(v: Any) -> bool:
    """True for None, NaN and blank strings (a cell without a value)."""
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip() == ""


def clean_text(v: Any) -> str:
    """A cell as stripped text (missing → empty)."""
    if is_missing(v):
        return ""
    return str(v).strip()



# --------------------------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------------------------
def _pick_column(
    columns: Sequence[str], override: str | None, candidates: Sequence[str], what: str, source: str, required: bool
) -> str | None:
    if override:
        if override in columns:
            return override
        raise DistillerError(f"{what} column {override!r} not found in {source}; available columns: {list(columns)}")
    for c in candidates:
        if c and c in columns:
            return c
    if required:
        raise DistillerError(
            f"{what} column {candidates[0]!r} not found in {source}; available columns: {list(columns)} "
            f"(pass --{what.replace(' ', '-')}-column)"
        )
    return None


def parse_number(v: Any) -> float | None:
    """The cell as a float, or None when it is not a number."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _class_label_map(
    values: Iterable[Any], spec: TaskSpec, column: str, source: str, allow_missing: bool
) -> dict[Any, int]:
    """Map each distinct raw label value to a class id (-1 for missing labels where allowed)."""
    names = spec.label_names or []
    lower = {n.lower(): i for i, n in enumerate(names)}
    # Names that are themselves integers ("1", "2", "5") are matched by name only, never read as class ids.
    numeric_names = bool(names) and all(re.fullmatch(r"-?\d+", n) for n in names)
    mapping: dict[Any, int] = {}
    for v in values:
        if is_missing(v):
            if not allow_missing:
                raise DistillerError(f"empty label in column {column!r} of {source} (only test files may lack labels)")
            mapping[_label_key(v)] = -1
            continue
        s = str(v).strip()
        num = parse_number(v)
        integral = num is not None and math.isfinite(num) and float(num).is_integer()
        if s in names:
            idx = names.index(s)
        elif integral and str(int(num)) in names:
            idx = names.index(str(int(num)))
        elif s.lower() in lower:
            idx = lower[s.lower()]
        elif integral and num == -1 and allow_missing:
            idx = -1
        elif integral and not numeric_names and 0 <= num < len(names):
            idx = int(num)
        else:
            raise DistillerError(
                f"label {v!r} in column {column!r} of {source} is outside the label set "
                f"{names} (ids 0..{len(names) - 1})"
            )
        mapping[_label_key(v)] = idx
    return mapping


def _label_key(v: Any) -> Any:
    if is_missing(v):
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _normalise_batch(batch, text_col, pair_col, label_col, label_map, regression, default_label):
    n = len(batch[text_col])
    out = {TEXT: [clean_text(t) for t in batch[text_col]]}
    if pair_col is not None:
        out[TEXT_PAIR] = [clean_text(t) for t in batch[pair_col]]
    if label_col is None:
        out[LABEL] = [default_label] * n
    elif regression:
        out[LABEL] = [-1.0 if is_missing(v) else float(parse_number(v)) for v in batch[label_col]]
    else:
        out[LABEL] = [label_map[_label_key(v)] for v in batch[label_col]]
    return out


def _non_empty(batch, pair: bool):
    keep = [bool(t) for t in batch[TEXT]]
    if pair:
        keep = [k and bool(p) for k, p in zip(keep, batch[TEXT_PAIR])]
    return keep


def normalise_split(
    ds,
    spec: TaskSpec,
    split: str,
    source: str,
    text_column: str | None,
    text_pair_column: str | None,
    label_column: str | None,
):
    """Rename/convert one split's columns to ``text``/``text_pair``/``label`` and validate it."""
    cols = list(ds.column_names)
    target = task_features(spec)
    if set(cols) == set(target) and ds.features == target and not (text_column or text_pair_column or label_column):
        normalised = ds
    else:
        text_col = _pick_column(
            cols, text_column, [spec.text_column, *spec.text_aliases, TEXT], "text", source, True
        )
        pair_col = None
        if spec.is_pair:
            pair_col = _pick_column(
                cols, text_pair_column, [spec.text_pair_column, *spec.text_pair_aliases, TEXT_PAIR],
                "text pair", source, True,
            )
        is_test = split.startswith("test")
        label_col = _pick_column(
            cols, label_column, [spec.label_column, *spec.label_aliases, LABEL], "label", source, not is_test
        )
        label_map: dict[Any, int] = {}
        if label_col is not None:
            values = ds.unique(label_col)
            if spec.is_regression:
                for v in values:
                    if is_missing(v):
                        if not is_test:
                            raise DistillerError(f"empty label in column {label_col!r} of {source}")
                    elif parse_number(v) is None or not math.isfinite(parse_number(v)):
                        raise DistillerError(
                            f"label {v!r} in column {label_col!r} of {source} is not a number (regression task)"
                        )
            else:
                label_map = _class_label_map(values, spec, label_col, source, allow_missing=is_test)
        normalised = ds.map(
            _normalise_batch,
            batched=True,
            fn_kwargs={
                "text_col": text_col,
                "pair_col": pair_col,
                "label_col": label_col,
                "label_map": label_map,
                "regression": spec.is_regression,
                "default_label": -1.0 if spec.is_regression else -1,
            },
            remove_columns=cols,
            features=target,
            desc=f"Normalizing {spec.name}/{split}",
        )
    before = len(normalised)
    normalised = normalised.filter(
        _non_empty, batched=True, fn_kwargs={"pair": spec.is_pair}, desc=f"Dropping empty texts ({split})"
    )
    dropped = before - len(normalised)
    if dropped:
        logger.warning("%s: dropped %d row(s) with empty or missing text", source, dropped)
    if len(normalised) == 0:
        raise DistillerError(f"split {split!r} of task {spec.name!r} is empty ({source})")
    return normalised


def infer_custom_spec(
    name: str, train_ds, source: str, text_column: str, text_pair_column: str | None, label_column: str,
    regression: bool | None,
) -> TaskSpec:
    """The :class:`TaskSpec` of custom data, inferred from its training split's label column (integer or string
    labels → classification, other numbers → regression)."""
    cols = list(train_ds.column_names)
    for col, what in ((text_column, "text"), (text_pair_column, "text pair"), (label_column, "label")):
        if col is not None and col not in cols:
            raise DistillerError(f"{what} column {col!r} not found in {source}; available columns: {cols}")
    values = [v for v in train_ds.unique(label_column) if not is_missing(v)]
    if not values:
        raise DistillerError(f"label column {label_column!r} of {source} has no labels")
    nums = [parse_number(v) for v in values]
    numeric = all(x is not None and math.isfinite(x) for x in nums)
    if regression is None:
        regression = numeric and not all(float(x).is_integer() for x in nums)
    if regression:
        if not numeric:
            bad = next(v for v, x in zip(values, nums) if x is None or not math.isfinite(x))
            raise DistillerError(f"label {bad!r} in column {label_column!r} of {source} is not a number (regression)")
        label_names = None
    elif numeric and all(float(x).is_integer() for x in nums):
        label_names = [str(int(x)) for x in sorted(set(nums))]
    else:
        label_names = sorted({str(v).strip() for v in values})
    if not regression and len(label_names) < 2:
        raise DistillerError(f"label column {label_column!r} of {source} has a single class {label_names}")
    if regression:
        metrics, main = ("pearson", "spearman"), "combined_score"
    elif len(label_names) == 2:
        metrics, main = ("accuracy", "f1"), "accuracy"
    else:
        metrics, main = ("accuracy", "f1_macro"), "accuracy"
    return TaskSpec(
        name=name,
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        num_labels=1 if regression else len(label_names),
        label_names=label_names,
        is_regression=bool(regression),
        metric_names=metrics,
        main_metric=main,
        family=f"custom-{name}",
        description=f"custom dataset from {source}",
    )


