"""AutoDistiller's meta-dataset: one row per distillation run, in a parquet table ``datasets`` and pandas can read.

``distill``, ``run`` and ``hpo`` append a record when ``meta_dataset`` (``--meta-dataset PATH``) is set. ``PATH``
ending in ``.parquet`` is one file (appends lock it and replace it atomically); any other path is a directory that
receives one parquet shard per record (safe for many workers on a shared file system). :func:`load_meta_dataset`
reads either; ``datasets.load_dataset("parquet", data_files=...)`` reads them too.

Columns of a record:

- ``record_id``, ``created`` (UTC ISO time), ``source`` (``distill`` | ``run`` | ``hpo`` | ``benchmark``);
- ``dataset`` (task, plus the data directory's name and training-size cap when given), ``family`` (datasets from
  one corpus share it: never count them as independent), ``task_type`` (single | pair | regression), ``metric``;
- ``mf_*``: dataset meta-features from the training data and the teacher (:mod:`distiller_nlp.autodistiller.metafeatures`);
- ``teacher``, ``student`` (names/paths) and ``teacher_layers|hidden|heads|params|flops``,
  ``student_layers|hidden|heads|params|flops`` (encoder FLOPs of one 128-token sequence);
- ``pipeline`` (JSON of the canonical pipeline parameters, :func:`distiller_nlp.autodistiller.pipeline_space.pipeline_params`),
  ``pipeline_id`` and the same parameters flat as ``p_<name>`` (NaN / 'none' where inactive), ``config`` (the whole
  recipe as JSON);
- ``seed``, ``epochs``, ``train_examples`` (after augmentation), ``train_examples_original``;
- ``student_score``, ``teacher_score`` (the task's main metric on the model-selection split),
  ``score_ratio`` = student / teacher, or student − teacher when the metric can be ≤ 0 (Matthews, correlations;
  ``ratio_kind`` says which), ``wall_s``.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import math
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

DIFFERENCE_METRICS = ("matthews", "pearson", "spearman", "combined_score_regression")
P_PARAMS = ("augment", "aug_p", "mixup", "pred_loss", "temperature", "kd_weight", "hard_label_weight", "inter_loss",
            "mi_alpha", "mapping", "inter_weight", "lr")
P_STRINGS = ("augment", "pred_loss", "inter_loss", "mapping")


def shipped_meta_dataset_path() -> Path:
    """The meta-dataset that ships with the package (built by ``benchmarks/meta_dataset.py`` on this project's
    offline corpora)."""
    from distiller_nlp.resources import META_DATASET

    return META_DATASET


def ratio_kind(metric: str, is_regression: bool) -> str:
    """``difference`` for metrics that can be ≤ 0 (Matthews, Pearson/Spearman, regression scores), else ``ratio``."""
    if metric in DIFFERENCE_METRICS or is_regression:
        return "difference"
    return "ratio"


def score_ratio(student: float, teacher: float, kind: str) -> float:
    """student / teacher (``ratio``) or student − teacher (``difference``); NaN when undefined."""
    if student is None or teacher is None or not math.isfinite(student) or not math.isfinite(teacher):
        return float("nan")
    if kind == "difference":
        return float(student - teacher)
    return float(student / teacher) if teacher > 0 else float("nan")


def dataset_name(cfg) -> str:
    """How a record names its dataset: the task, plus ``@<data dir name>`` and ``#<train cap>`` when given."""
    name = cfg.data.task
    if cfg.data.data_dir:
        name += "@" + os.path.basename(os.path.normpath(cfg.data.data_dir))
    if cfg.data.max_train_examples:
        name += f"#{cfg.data.max_train_examples}"
    return name


def check_meta_path(path: str) -> None:
    """Fail early (before any training) when ``path`` cannot receive records."""
    p = Path(path)
    parent = p.parent if p.suffix == ".parquet" else p
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise DistillerError(f"meta-dataset {path}: {probe} is not writable")
    if p.suffix == ".parquet" and p.exists():
        load_meta_dataset(str(p))


def _flat_params(params: dict) -> dict:
    out = {}
    for name in P_PARAMS:
        v = params.get(name)
        if name in P_STRINGS:
            out[f"p_{name}"] = "none" if v is None else str(v)
        elif name == "mixup":
            out[f"p_{name}"] = bool(v)
        else:
            out[f"p_{name}"] = float("nan") if v is None else float(v)
    return out


def build_record(*, cfg, task, meta_features: dict, teacher_info: dict, student_info: dict, student_score: float,
                 teacher_score: float, wall_s: float, source: str, train_examples: int = 0,
                 train_examples_original: int = 0) -> dict:
    """One meta-dataset row (see the module docstring) from a finished run's pieces."""
    from distiller_nlp.autodistiller.pipeline_space import pipeline_key, pipeline_params
    from distiller_nlp.core.config import to_dict

    params = pipeline_params(cfg)
    kind = ratio_kind(task.main_metric, task.is_regression)
    task_type = "regression" if task.is_regression else ("pair" if task.is_pair else "single")
    rec: dict[str, Any] = {
        "record_id": uuid.uuid4().hex,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "dataset": dataset_name(cfg),
        "family": cfg.meta_family or task.family or cfg.data.task,
        "task_type": task_type,
        "metric": task.main_metric,
    }
    rec.update({k: float(v) for k, v in meta_features.items()})
    rec["teacher"] = str(cfg.teacher)
    rec["student"] = str(cfg.student or cfg.student_shape)
    for who, info in (("teacher", teacher_info), ("student", student_info)):
        for k in ("layers", "hidden", "heads", "params"):
            rec[f"{who}_{k}"] = float(info.get(k) or float("nan"))
        rec[f"{who}_flops"] = float(info.get("encoder_flops") or float("nan"))
    rec["pipeline"] = json.dumps(params, sort_keys=True)
    rec["pipeline_id"] = pipeline_key(params)
    rec.update(_flat_params(params))
    rec["config"] = json.dumps(to_dict(cfg), sort_keys=True, default=str)
    rec["seed"] = int(cfg.train.seed)
    rec["epochs"] = float(cfg.train.planned_epochs)
    rec["train_examples"] = int(train_examples)
    rec["train_examples_original"] = int(train_examples_original)
    rec["student_score"] = float(student_score) if student_score is not None else float("nan")
    rec["teacher_score"] = float(teacher_score) if teacher_score is not None else float("nan")
    rec["ratio_kind"] = kind
    rec["score_ratio"] = score_ratio(rec["student_score"], rec["teacher_score"], kind)
    rec["wall_s"] = round(float(wall_s), 2)
    return rec


def cached_meta_features(train, task, tokenizer, teacher, teacher_path: str, *, eval_set=None,
                         teacher_finetuned: bool = False) -> dict:
    """:func:`~distiller_nlp.autodistiller.metafeatures.compute_meta_features`, cached on disk by data, teacher and flag."""
    from distiller_nlp.autodistiller.metafeatures import compute_meta_features, meta_features_cache_key
    from distiller_nlp.env import cache_dir

    key = meta_features_cache_key(train, teacher_path, teacher_finetuned, eval_set=eval_set)
    path = cache_dir() / "meta_features" / f"{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    feats = compute_meta_features(train, task, tokenizer, teacher, eval_set=eval_set,
                                  teacher_finetuned=teacher_finetuned)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(feats))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache: compute again next time
        logger.info("cannot cache meta-features in %s: %s", path, exc)
    return feats


def record_run(cfg, run, metrics: dict, wall_s: float, source: str = "distill", path: Optional[str] = None) -> dict:
    """Append the record of a finished :func:`~distiller_nlp.kd.distillation.distill` run (``run``: its prepared
    run, ``cfg``: its config) to ``path`` (default ``cfg.meta_dataset``)."""
    from distiller_nlp.models import describe_model

    task = run.task
    eval_set = run.raw[task.eval_splits[0]]
    teacher_tokenizer = getattr(run, "teacher_tokenizer", None) or run.tokenizer
    feats = cached_meta_features(run.raw_train, task, teacher_tokenizer, run.teacher, run.teacher_path,
                                 eval_set=eval_set, teacher_finetuned=True)
    rec = build_record(cfg=cfg, task=task, meta_features=feats, teacher_info=describe_model(run.teacher),
                       student_info=describe_model(run.student), student_score=metrics.get(f"eval_{task.main_metric}"),
                       teacher_score=feats.get("mf_teacher_dev_score"), wall_s=wall_s, source=source,
                       train_examples=metrics.get("train_examples", 0),
                       train_examples_original=metrics.get("train_examples_original", 0))
    path = path or cfg.meta_dataset
    append_records(path, [rec])
    logger.info("meta-dataset %s: +1 record (%s, ratio %.4f)", path, rec["dataset"], rec["score_ratio"])
    return rec


class MetaDatasetRecorder:
    """An ``on_finish`` hook of :func:`~distiller_nlp.kd.distillation.distill`: appends the finished run's record to
    the meta-dataset ``path`` (checked when the recorder is made, before any run starts). ``source`` names who ran it
    (``distill``, ``run``, ``hpo``, ``verify``)."""

    def __init__(self, path: str, source: str = "distill"):
        check_meta_path(path)
        self.path = path
        self.source = source

    def __call__(self, run, metrics: dict, wall_s: float) -> None:
        record_run(run.cfg, run, metrics, wall_s=wall_s, source=self.source, path=self.path)


def meta_recorders(cfg, source: str) -> list:
    """The ``on_finish`` hooks a config asks for: a :class:`MetaDatasetRecorder` when ``cfg.meta_dataset`` is set
    (task distillation only: a ``general`` run has no task score)."""
    return [MetaDatasetRecorder(cfg.meta_dataset, source)] if cfg.meta_dataset and not cfg.general else []


def _write_parquet_atomic(df, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def append_records(path: str, records: Iterable[dict]) -> None:
    """Append records to a meta-dataset file (``.parquet``: locked read-modify-replace) or directory (one shard
    per call). Readers never see a half-written table."""
    import pandas as pd

    new = pd.DataFrame(list(records))
    if new.empty:
        return
    p = Path(path)
    if p.suffix != ".parquet":
        _write_parquet_atomic(new, p / f"records-{uuid.uuid4().hex[:16]}.parquet")
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(str(p) + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if p.exists():
                old = pd.read_parquet(p)
                new = pd.concat([old, new], ignore_index=True)
            _write_parquet_atomic(new, p)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_meta_dataset(path: Optional[str] = None):
    """The meta-dataset at ``path`` (a ``.parquet`` file or a directory of shards; default the shipped one) as a
    pandas DataFrame. An empty, missing or unreadable table is a :class:`DistillerError` naming it."""
    import pandas as pd

    p = Path(path) if path else shipped_meta_dataset_path()
    try:
        if p.is_dir():
            files = sorted(p.glob("*.parquet"))
            if not files:
                raise DistillerError(f"meta-dataset {p}: the directory holds no .parquet files")
            df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        elif p.is_file():
            df = pd.read_parquet(p)
        elif not path:
            raise DistillerError(f"the shipped meta-dataset {p} is missing: build it with `python "
                                 "benchmarks/meta_dataset.py` then `--export`, or pass --meta-dataset FILE")
        else:
            raise DistillerError(f"meta-dataset {p} not found")
    except DistillerError:
        raise
    except Exception as exc:  # pyarrow raises several kinds for a corrupt file
        raise DistillerError(f"meta-dataset {p} is unreadable: {str(exc).splitlines()[0]}") from None
    missing = [c for c in ("dataset", "family", "score_ratio", "pipeline") if c not in df.columns]
    if missing:
        raise DistillerError(f"meta-dataset {p} is not a meta-dataset: column '{missing[0]}' is missing")
    if len(df) == 0:
        raise DistillerError(f"meta-dataset {p} is empty")
    return df
