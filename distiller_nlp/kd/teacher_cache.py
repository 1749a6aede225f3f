"""Teacher-output caching: run the teacher once over the training set, reuse its outputs in every epoch and run.

A distillation step costs a teacher forward plus a student forward and backward. When the teacher's inputs do not
change between epochs (no online augmentation), its outputs can be computed once (with MixUp, for the originals:
the teacher then runs on the mixed copies only, :class:`distiller_nlp.kd.teachers.CachedMixupRunner`):

- :func:`compute_teacher_outputs` adds ``teacher_logits`` (float16 by default, float32 on request; one row of
  ``num_labels`` per example) and, on request, ``teacher_hidden_<l>`` (``(tokens_of_the_example, hidden)`` —
  padding is not stored) as
  ``datasets`` columns. They live in Arrow files that are memory-mapped, so memory stays bounded for large datasets.
- The cache key is the teacher fingerprint (SHA-256 of its config and weight files) + the tokenized data's
  ``datasets`` fingerprint + the requested layers + the augmentation seed (for augmented copies). A cache directory
  written by ``distiller-nlp cache-teacher`` holds that key in ``teacher_cache.json``; :func:`load_teacher_cache`
  refuses a cache whose key differs from the run's (another teacher, other data, other layers).
- :class:`CachedTeacher` is the engine's ``prepare_batch`` in place of the live teacher: it turns the collated
  columns into ``batch["teacher_logits"]`` and ``batch["teacher_hidden"] = {layer: (B, L, d)}``.

fp16 storage keeps 3 significant digits of each logit; on the demo student the resulting KD loss differs from the
live teacher's by less than 1e-3 (tests pin the round trip to fp16 precision).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from distiller_nlp.config import DistillConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import cache_dir

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_FILE = "teacher_cache.json"
LOGITS = "teacher_logits"
HIDDEN_PREFIX = "teacher_hidden_"


def teacher_fingerprint(path: str) -> str:
    """SHA-256 (16 hex digits) of a checkpoint directory's config and weight files (names, sizes and bytes)."""
    if not os.path.isdir(path):
        raise DistillerError(f"cannot fingerprint teacher '{path}': not a local directory")
    h = hashlib.sha256()
    names = sorted(n for n in os.listdir(path)
                   if n == "config.json" or n.endswith((".safetensors", ".bin")) and not n.startswith("."))
    if not any(n.endswith((".safetensors", ".bin")) for n in names):
        raise DistillerError(f"cannot fingerprint teacher '{path}': no weight files")
    for name in names:
        h.update(f"{name}:{os.path.getsize(os.path.join(path, name))};".encode())
        with open(os.path.join(path, name), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


DTYPES = ("float16", "float32")


def cache_key(teacher_fp: str, data_fp: str, hidden_layers: Iterable[int] = (), aug_seed: Optional[int] = None,
              dtype: str = "float16", tokenizer_fp: Optional[str] = None) -> str:
    """The key a cache is valid for: teacher + data + requested hidden layers + storage dtype (+ augmentation seed,
    + the teacher tokenizer's fingerprint when it differs from the student's)."""
    layers = ",".join(str(int(x)) for x in sorted(set(hidden_layers)))
    raw = f"v{CACHE_VERSION}|teacher={teacher_fp}|data={data_fp}|hidden={layers}|aug={aug_seed}"
    if dtype != "float16":
        raw += f"|dtype={dtype}"
    if tokenizer_fp:
        raw += f"|teacher_tokenizer={tokenizer_fp}"
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def hidden_column(layer: int) -> str:
    """The dataset column holding the cached hidden states of teacher layer ``layer``."""
    return f"{HIDDEN_PREFIX}{int(layer)}"


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    longest = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (longest - len(r)) for r in rows], dtype=torch.long)


def compute_teacher_outputs(dataset, teacher: torch.nn.Module, key: str, hidden_layers: Sequence[int] = (),
                            batch_size: int = 64, pad_token_id: int = 0, cache_file: Optional[str] = None,
                            device: Optional[torch.device] = None, dtype: str = "float16"):
    """Add the teacher's outputs to a tokenized ``datasets.Dataset`` as float16 columns (see the module docstring).

    When the dataset holds ``teacher_input_ids`` (a teacher with another tokenizer than the student's), the teacher
    reads those and ``pad_token_id`` is the teacher tokenizer's; hidden rows then have the teacher's token count.
    ``key`` (from :func:`cache_key`) is used as the new ``datasets`` fingerprint, so the same teacher + data +
    layers is computed once and then loaded from ``cache_file`` (or the dataset's own cache directory).
    """
    import datasets

    from distiller_nlp.core.capture import FeatureCapture

    if len(dataset) == 0:
        raise DistillerError("cannot cache teacher outputs of an empty dataset")
    if dtype not in DTYPES:
        raise DistillerError(f"teacher cache dtype '{dtype}' must be one of {', '.join(DTYPES)}")
    np_dtype = np.float16 if dtype == "float16" else np.float32
    device = device or next(teacher.parameters()).device
    hidden_layers = sorted(set(int(x) for x in hidden_layers))
    num_labels = int(teacher.config.num_labels)
    width = int(getattr(teacher.config, "hidden_size", 0) or getattr(teacher.config, "dim"))
    features = dataset.features.copy()
    features[LOGITS] = datasets.Sequence(datasets.Value(dtype), length=num_labels)
    for layer in hidden_layers:
        features[hidden_column(layer)] = datasets.Array2D(shape=(None, width), dtype=dtype)
    was_training = teacher.training
    teacher.eval()

    # a teacher with another tokenizer than the student's reads its own columns (teacher_input_ids, ...)
    pre = "teacher_" if "teacher_input_ids" in dataset.column_names else ""

    def run(batch):
        inputs = {"input_ids": _pad(batch[pre + "input_ids"], pad_token_id)}
        inputs["attention_mask"] = _pad(batch[pre + "attention_mask"], 0)
        if pre + "token_type_ids" in batch:
            inputs["token_type_ids"] = _pad(batch[pre + "token_type_ids"], 0)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad(), FeatureCapture(teacher, hidden_layers=hidden_layers) as cap:
            logits = teacher(**inputs).logits
        out = {LOGITS: logits.float().cpu().numpy().astype(np_dtype)}
        lengths = [len(ids) for ids in batch[pre + "input_ids"]]
        for layer in hidden_layers:
            h = cap.hidden[layer].float().cpu().numpy().astype(np_dtype)
            out[hidden_column(layer)] = [h[i, :n] for i, n in enumerate(lengths)]
        return out

    try:
        result = dataset.map(run, batched=True, batch_size=batch_size, features=features, new_fingerprint=key,
                             cache_file_name=cache_file, desc="Caching teacher outputs")
    finally:
        teacher.train(was_training)
    return result


def save_teacher_cache(dataset, directory: str, key: str, teacher_path: str, hidden_layers: Sequence[int]) -> None:
    """Write a cached training split with its key to ``directory`` (atomically: temp dir, then rename)."""
    import shutil
    import tempfile

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".teacher-cache-", dir=parent)
    try:
        dataset.save_to_disk(os.path.join(tmp, "train"))
        meta = {"key": key, "version": CACHE_VERSION, "teacher": teacher_path, "hidden_layers": list(hidden_layers),
                "examples": len(dataset)}
        with open(os.path.join(tmp, META_FILE), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)
        old = None
        if os.path.isdir(directory):  # moved aside in one rename: a kill never leaves a half-deleted cache behind
            old = tempfile.mkdtemp(prefix=".teacher-cache-old-", dir=parent)
            os.rmdir(old)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def load_teacher_cache(directory: str, expected_key: str):
    """Load a cache written by :func:`save_teacher_cache`; a different key is a DistillerError (never reused)."""
    import datasets

    meta_path = os.path.join(directory, META_FILE)
    if not os.path.isfile(meta_path):
        raise DistillerError(f"teacher cache {directory} has no {META_FILE} (write it with `distiller-nlp cache-teacher`)")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("key") != expected_key:
        raise DistillerError(
            f"teacher cache {directory} was computed for another teacher, data or layer set (key {meta.get('key')} "
            f"!= {expected_key}): recompute it with `distiller-nlp cache-teacher`"
        )
    try:
        ds = datasets.load_from_disk(os.path.join(directory, "train"))
    except Exception as exc:  # noqa: BLE001 - a damaged cache directory (files removed or truncated by hand)
        raise DistillerError(f"teacher cache {directory} is damaged ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}); recompute it with "
                             "`distiller-nlp cache-teacher --overwrite`") from None
    if meta.get("examples") is not None and len(ds) != meta["examples"]:
        raise DistillerError(f"teacher cache {directory} holds {len(ds)} examples, its {META_FILE} says "
                             f"{meta['examples']}: recompute it with `distiller-nlp cache-teacher --overwrite`")
    return ds


def is_teacher_column(name: str) -> bool:
    """True for a column of cached teacher outputs."""
    return name == LOGITS or name.startswith(HIDDEN_PREFIX)


def teacher_columns(dataset) -> list[str]:
    """The cached-teacher columns of ``dataset``."""
    return [c for c in dataset.column_names if is_teacher_column(c)]


def as_cached_format(dataset):
    """Return the teacher columns as NumPy arrays (fast collation), every other column unchanged."""
    return dataset.with_format("numpy", columns=teacher_columns(dataset), output_all_columns=True)


class CachedTeacher:
    """``prepare_batch`` that reads cached teacher outputs from the batch instead of running the teacher."""

    def __call__(self, batch: dict) -> dict:
        batch = dict(batch)
        hidden = {}
        for key in list(batch):
            if key.startswith(HIDDEN_PREFIX):
                hidden[int(key[len(HIDDEN_PREFIX):])] = batch.pop(key).float()
        batch[LOGITS] = batch[LOGITS].float()
        batch["teacher_hidden"] = hidden
        batch["teacher_qkv"] = {}
        return batch


def collate_teacher_columns(features: Sequence[dict], batch: dict) -> list[str]:
    """Stack ``teacher_logits`` and right-pad every ``teacher_hidden_<l>`` to the batch's longest example; returns the
    collated column names (the ``extra_columns`` hook of :func:`distiller_nlp.tasks.make_collator`)."""
    keys = [k for k in features[0] if is_teacher_column(k)]
    for key in keys:
        arrays = [np.asarray(f[key], dtype=np.float32) for f in features]
        if key == LOGITS:
            batch[key] = torch.from_numpy(np.stack(arrays))
            continue
        longest = max(a.shape[0] for a in arrays)
        out = np.zeros((len(arrays), longest, arrays[0].shape[1]), dtype=np.float32)
        for i, a in enumerate(arrays):
            out[i, : a.shape[0]] = a
        batch[key] = torch.from_numpy(out)
    return keys


# ------------------------------------------------------------------------------------------------ in a run

def cache_problem(run) -> Optional[str]:
    """Why this pipeline cannot read the teacher from a cache (None if it can)."""
    if run.module.teacher_qkv_layers:
        return "attention_scores matches need the teacher's q/k, which are not cached"
    if run.extra_teachers:
        return "several teachers are averaged live"
    if run.online_augment:
        return "augmented copies change during training (augment.reaug_every / augment.repeated_aug)"
    if getattr(teacher_tokenizer_of(run), "padding_side", "right") != "right":
        return "the tokenizer pads on the left"
    return None


def teacher_tokenizer_of(run):
    """The tokenizer the teacher reads (the student's unless the run distils across tokenizers)."""
    return getattr(run, "teacher_tokenizer", None) or run.tokenizer


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 (16 hex digits) of a tokenizer's class and vocabulary (what decides the ids it produces)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    for token, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        h.update(f"{idx}:{token};".encode())
    return h.hexdigest()[:16]


def cache_key_for(run) -> str:
    """The cache key of a prepared run: teacher fingerprint, training-data fingerprint, hidden layers, dtype, and
    the teacher's tokenizer when the student reads another one."""
    t_fp = tokenizer_fingerprint(run.teacher_tokenizer) if getattr(run, "cross_tokenizer", False) else None
    return cache_key(teacher_fingerprint(run.teacher_path), run.tok["train"]._fingerprint,
                     run.module.teacher_hidden_layers, dtype=run.cache_dtype, tokenizer_fp=t_fp)


def cached_train_set(cfg: DistillConfig, run, accelerator=None):
    """The training set with cached teacher columns, or None to run the teacher live (see ``teacher_cache``).

    ``auto`` computes the outputs on ``accelerator``'s device, on the main process first (the others then read its
    cache file): pass the run's Accelerator, so the process state is the run's own."""
    mode = cfg.teacher_cache or "off"
    if mode == "off" or not run.module.needs_teacher:
        return None
    problem = cache_problem(run)
    if problem and mode != "auto":
        raise DistillerError(f"teacher_cache {mode}: {problem}")
    if problem:
        logger.info("teacher cache off: %s", problem)
        return None
    try:
        key = cache_key_for(run)
    except DistillerError as exc:
        if mode != "auto":
            raise
        logger.info("teacher cache off: %s", exc)
        return None
    if mode != "auto":
        return as_cached_format(load_teacher_cache(mode, key))
    if accelerator is None:
        from distiller_nlp.core.engine import make_accelerator

        accelerator = make_accelerator(cfg.train)
    state = accelerator.state
    target = cache_dir() / "teacher_outputs" / key
    target.mkdir(parents=True, exist_ok=True)
    with state.main_process_first():
        run.teacher.to(state.device)
        ds = compute_teacher_outputs(run.tok["train"], run.teacher, key, run.module.teacher_hidden_layers,
                                        pad_token_id=teacher_tokenizer_of(run).pad_token_id,
                                        cache_file=str(target / "train.arrow"), dtype=run.cache_dtype)
    return as_cached_format(ds)


