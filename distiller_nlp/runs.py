"""Plumbing shared by every command that writes a run directory (finetune-teacher, distill, evaluate, predict).

Conventions: a non-empty ``--output-dir`` is an error unless ``--resume`` (continue from its last checkpoint) or
``--overwrite``; all inputs are validated before anything is written; files appear atomically (temp name, then
rename); each run writes ``DIR/metrics.json`` with flat keys (``eval_<metric>`` in the metric's own range,
``train_runtime_s``, ``examples_per_s``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np

from distiller_nlp.errors import DistillerError

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True in a single process and on rank 0 of ``accelerate launch`` / ``torchrun`` (read before any
    ``Accelerator`` exists, from the launcher's environment)."""
    return os.environ.get("RANK", "0") in ("0", "") and os.environ.get("LOCAL_RANK", "0") in ("0", "")


def check_output_dir(output_dir: str, resume: bool = False, overwrite: bool = False) -> None:
    """Validate ``--output-dir`` without touching it (called before any work starts).

    Only the main process judges whether the directory is empty: under ``accelerate launch`` the other ranks could
    otherwise see files the main process already wrote and fail a run that is fine. When the main process refuses,
    the launcher stops the others."""
    if not output_dir:
        raise DistillerError("--output-dir is required")
    if resume and overwrite:
        raise DistillerError("--resume and --overwrite exclude each other")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DistillerError(f"--output-dir {output_dir} exists and is not a directory")
    non_empty = os.path.isdir(output_dir) and bool(os.listdir(output_dir))
    if non_empty and is_main_process() and not (resume or overwrite):
        raise DistillerError(
            f"output directory {output_dir} is not empty: pass --resume to continue it or --overwrite to replace it"
        )


def create_output_dir(output_dir: str, overwrite: bool = False, is_main: bool | None = None) -> None:
    """Create (or with ``overwrite``, empty) the output directory. Call only after all inputs were validated.
    Only the main process (``is_main``, by default read from the launcher's environment) touches the disk."""
    if is_main is None:
        is_main = is_main_process()
    if is_main:
        if overwrite and os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.makedirs(output_dir, exist_ok=True)


def write_json_atomic(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def promote_best(output_dir: str) -> None:
    """Move the exported best model from ``DIR/best`` to ``DIR`` itself (so ``from_pretrained(DIR)`` loads it)."""
    best = os.path.join(output_dir, "best")
    if not os.path.isdir(best):
        return
    for name in os.listdir(best):
        os.replace(os.path.join(best, name), os.path.join(output_dir, name))
    os.rmdir(best)


def task_metric_fn(task):
    """``(logits, labels) -> metrics`` for a task: argmax for classification, the squeezed value for regression."""
    from distiller_nlp.metrics import compute_task_metrics

    def compute(logits: np.ndarray, labels: np.ndarray) -> dict:
        if task.is_regression:
            preds = logits.reshape(-1)
        else:
            preds = logits.argmax(-1)
        return compute_task_metrics(task.metrics, preds, labels)

    return compute


def eval_splits(ds, task, include_test: bool = True) -> dict:
    """Ordered evaluation sets: the task's validation split(s) first (model selection), then a labelled test split."""
    out = {}
    names = list(getattr(task, "eval_splits", None) or ["validation"])
    for name in names:
        if name in ds and len(ds[name]) > 0:
            out[name] = ds[name]
    if include_test and "test" in ds and len(ds["test"]) > 0:
        labels = ds["test"]["labels"] if "labels" in ds["test"].column_names else ds["test"]["label"]
        if len(labels) and min(labels) >= 0:
            out["test"] = ds["test"]
    if not out:
        raise DistillerError(f"task '{task.name}' has no labelled validation split to evaluate on")
    return out


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("distiller_nlp").setLevel(logging.INFO)
