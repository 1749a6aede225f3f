"""``load_task_data``: a task as ``(DatasetDict, TaskSpec)`` from local files, a packaged corpus or the Hub.

Sources, in the order they are tried:

1. ``data_dir`` given: local files (:mod:`.files`); Hub column names and raw GLUE header aliases are accepted and
   text labels are mapped to ids through the label names (:mod:`.normalize`);
2. the task's registered loader (the packaged corpora, :mod:`.corpora`);
3. GLUE tasks without ``data_dir``: ``datasets.load_dataset("nyu-mll/glue", name)`` (needs the network or the
   ``datasets`` cache; with ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` set a miss fails at once).

Custom data: any name not in the registry, with ``data_dir``, ``text_column`` (+ ``text_pair_column``) and
``label_column``; the label set is inferred from the training split (sorted unique values; integer or string labels
→ classification, non-integer numbers → regression).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import hub_offline
from distiller_nlp.tasks.files import EXTENSIONS, SPLIT_FILE_STEMS, find_split_files, load_file
from distiller_nlp.tasks.normalize import infer_custom_spec, normalise_split
from distiller_nlp.tasks.spec import TASKS, TaskSpec, get_task, list_tasks, task_key, task_loader
from distiller_nlp.tasks.splits import subset

logger = logging.getLogger(__name__)

def load_hub(spec: TaskSpec):
    """The task's Hub dataset (``datasets.load_dataset``); a miss is a one-line error naming the task."""
    import datasets

    try:
        return datasets.load_dataset(spec.hub_path, spec.hub_name)
    except Exception as exc:
        why = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set" if hub_offline(datasets=True) else f"{type(exc).__name__}"
        raise DistillerError(
            f"task {spec.name!r} was not found locally ({spec.hub_path}/{spec.hub_name} is not in the datasets cache "
            f"and {why}); download the files and pass --data-dir DIR"
        ) from exc


def load_task_data(
    name: str,
    data_dir: str | os.PathLike | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    max_examples: int | None = None,
    seed: int = 42,
    *,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    regression: bool | None = None,
):
    """Load a task as ``(DatasetDict, TaskSpec)`` with columns ``text``, [``text_pair``], ``label``.

    ``name``: a registered task (``list_tasks()``) or, with ``data_dir`` and ``text_column``/``label_column``, any
    name for a custom dataset. ``data_dir``: local files (see the module docstring); required for custom data.
    ``*_column``: override the source column names. ``max_examples``: cap every split at this many rows — a seeded
    (``seed``) stratified subset for labelled classification splits, a seeded random subset otherwise;
    ``max_train_examples`` / ``max_eval_examples`` override it for the train split / the other splits.
    ``regression``: custom data only; ``None`` = infer (non-integer numeric labels → regression).

    Raises :class:`DistillerError` naming the culprit for: an unknown task without ``data_dir``, a missing
    directory or training/validation file, a missing column (listing the available ones), a label outside the
    label set, an empty split, a missing corpus package, and an unreachable Hub dataset.
    """
    key = task_key(name)
    for arg, value in (("max_examples", max_examples), ("max_train_examples", max_train_examples),
                       ("max_eval_examples", max_eval_examples)):
        if value is not None and int(value) < 1:
            raise DistillerError(f"{arg} must be a positive integer, got {value}")
    import datasets

    known = key in TASKS
    loader = task_loader(key) if known else None
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DistillerError(f"data directory {str(root)!r} does not exist or is not a directory")
        if known:
            spec = get_task(key)
        else:
            if not text_column or not label_column:
                raise DistillerError(
                    f"unknown task {name!r}: for custom data in {root} pass --text-column and --label-column "
                    f"(known tasks: {', '.join(list_tasks())})"
                )
            spec = TaskSpec(name=str(name), text_column=text_column, text_pair_column=text_pair_column,
                            label_column=label_column, num_labels=0, label_names=[])
        files = find_split_files(root, spec)
        expected = ", ".join(f"{s}.{{{','.join(EXTENSIONS)}}}" for s in SPLIT_FILE_STEMS.get(spec.train_split, ()))
        if spec.train_split not in files:
            raise DistillerError(f"no training file in {root} for task {spec.name!r} (expected {expected})")
        if spec.validation_split not in files:
            stems = "|".join(SPLIT_FILE_STEMS.get(spec.validation_split, (spec.validation_split,)))
            raise DistillerError(
                f"no validation file in {root} for task {spec.name!r} (expected {stems}.<{'|'.join(EXTENSIONS)}>)"
            )
        raw = {split: load_file(path, spec, split) for split, path in files.items()}
        if not known:
            spec = infer_custom_spec(
                str(name), raw[spec.train_split], str(files[spec.train_split]), text_column, text_pair_column,
                label_column, regression,
            )
        sources = {split: str(path) for split, path in files.items()}
    else:
        if not known:
            get_task(key)  # raises the "unknown task" error listing the known tasks
        spec = get_task(key)
        if loader is not None:
            raw = dict(loader(spec))
        elif spec.hub_path:
            raw = dict(load_hub(spec))
        else:
            raise DistillerError(f"task {spec.name!r} has no loader and no Hub dataset; pass --data-dir DIR")
        sources = {split: f"{spec.name} split {split!r}" for split in raw}
        extra = sorted(set(raw) - set(spec.splits))
        for split in extra:
            del raw[split]

    if text_column or text_pair_column or label_column:
        spec = dataclasses.replace(
            spec,
            text_column=text_column or spec.text_column,
            text_pair_column=text_pair_column or spec.text_pair_column,
            label_column=label_column or spec.label_column,
        )
    out = {}
    for split in spec.splits:
        if split not in raw:
            continue
        ds = normalise_split(
            raw[split], spec, split, sources[split], text_column, text_pair_column, label_column
        )
        cap = max_train_examples if split == spec.train_split else max_eval_examples
        cap = max_examples if cap is None else cap
        if cap is not None:
            ds = subset(ds, int(cap), seed, spec)
        out[split] = ds
    return datasets.DatasetDict(out), spec



def load_data_config(data: Any, seed: int = 42):
    """:func:`load_task_data` for a recipe's ``data`` section (a :class:`~distiller_nlp.config.DataConfig`:
    ``task``, ``data_dir``, ``*_column``, ``max_train_examples``, ``max_eval_examples``; empty values = unset).
    The subsets are drawn with ``data.subset_seed`` when it is set (>= 0), else with ``seed`` (the run's)."""
    subset_seed = getattr(data, "subset_seed", -1)
    if subset_seed is not None and subset_seed >= 0:
        seed = subset_seed
    return load_task_data(data.task, data_dir=data.data_dir or None, text_column=data.text_column or None,
                          text_pair_column=data.text_pair_column or None, label_column=data.label_column or None,
                          max_train_examples=data.max_train_examples or None,
                          max_eval_examples=data.max_eval_examples or None, seed=seed)




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
