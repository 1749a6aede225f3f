"""Tokenization of normalized splits and the padding collator."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.tasks.spec import LABEL, TEXT, TEXT_PAIR

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Tokenization and batching
# --------------------------------------------------------------------------------------------------------------------
#: The batch keys an encoder's ``forward`` takes.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Prefix of the teacher's own inputs when teacher and student tokenize differently (``teacher_input_ids``, ...).
TEACHER_PREFIX = "teacher_"


def model_inputs(batch: Mapping) -> dict:
    """The encoder inputs of a batch (``input_ids``, ``attention_mask``, ``token_type_ids`` where present)."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def teacher_model_inputs(batch: Mapping) -> dict:
    """The teacher's encoder inputs: ``teacher_input_ids``, ... (renamed to ``input_ids``, ...) when the batch holds
    the teacher's own tokenization (see :func:`tokenize_dataset` with ``teacher_tokenizer``), else
    :func:`model_inputs`."""
    if TEACHER_PREFIX + "input_ids" in batch:
        return {k: batch[TEACHER_PREFIX + k] for k in MODEL_INPUTS if TEACHER_PREFIX + k in batch}
    return model_inputs(batch)


def has_teacher_inputs(batch_or_columns) -> bool:
    """Whether a batch (or a list of column names) carries the teacher's own tokenization."""
    return TEACHER_PREFIX + "input_ids" in batch_or_columns


def _tokenize_batch(batch, tokenizer, max_length, has_pair, has_label, teacher_tokenizer=None):
    enc = tokenizer(
        batch[TEXT], batch[TEXT_PAIR] if has_pair else None, truncation=True, max_length=max_length
    )
    out = {k: enc[k] for k in MODEL_INPUTS if k in enc}
    if teacher_tokenizer is not None:  # cross-tokenizer distillation: the teacher reads the raw text its own way
        t_enc = teacher_tokenizer(
            batch[TEXT], batch[TEXT_PAIR] if has_pair else None, truncation=True, max_length=max_length
        )
        out.update({TEACHER_PREFIX + k: t_enc[k] for k in MODEL_INPUTS if k in t_enc})
    if has_label:
        out["labels"] = batch[LABEL]
    return out



def tokenize_dataset(ds, tokenizer, max_length: int = 128, teacher_tokenizer=None):
    """Tokenize normalized splits: ``input_ids``, ``attention_mask``, [``token_type_ids``], ``labels``.

    ``teacher_tokenizer`` (a teacher that tokenizes differently from the student): the same raw text is also
    tokenized with it into ``teacher_input_ids``, ``teacher_attention_mask``, [``teacher_token_type_ids``] — each
    model reads the text its own way (:func:`teacher_model_inputs` picks the teacher's).

    Works on a :class:`datasets.DatasetDict` or a single :class:`datasets.Dataset`. Batched ``map`` without padding
    (pad per batch with :func:`make_collator`), truncation to ``max_length`` tokens (``longest_first`` for pairs);
    ``text``/``text_pair``/``label`` are removed, other columns are kept. Uses the ``datasets`` fingerprint cache,
    so tokenizing the same file-backed data with the same tokenizer again is a cache hit.
    """
    import datasets

    if int(max_length) < 8:
        raise DistillerError(f"max_length must be at least 8 tokens, got {max_length}")

    def one(d):
        if TEXT not in d.column_names:
            raise DistillerError(f"dataset has no {TEXT!r} column (columns: {d.column_names}); load it with load_task_data")
        has_pair = TEXT_PAIR in d.column_names
        has_label = LABEL in d.column_names
        remove = [c for c in (TEXT, TEXT_PAIR, LABEL) if c in d.column_names]
        return d.map(
            _tokenize_batch,
            batched=True,
            fn_kwargs={"tokenizer": tokenizer, "max_length": int(max_length), "has_pair": has_pair,
                       "has_label": has_label, "teacher_tokenizer": teacher_tokenizer},
            remove_columns=remove,
            desc="Tokenizing",
        )

    if isinstance(ds, datasets.DatasetDict):
        return datasets.DatasetDict({k: one(v) for k, v in ds.items()})
    return one(ds)


def make_collator(tokenizer, is_regression: bool | None = None, pad_to_multiple_of: int | None = None,
                  extra_columns: Callable[[Sequence[Mapping], dict], Iterable[str]] | None = None,
                  teacher_tokenizer=None):
    """A ``DataCollatorWithPadding``-like collate function for tokenized examples.

    Pads ``input_ids`` (with ``tokenizer.pad_token_id``), ``attention_mask`` (0), ``token_type_ids`` (0) and
    ``special_tokens_mask`` (1) to the longest example of the batch (rounded up to ``pad_to_multiple_of``), on the
    tokenizer's ``padding_side``. ``labels`` (or ``label``) become a ``long`` tensor for classification or a
    ``float32`` tensor for regression (``is_regression=None``: float if any label is a Python float). Any other
    numeric field of equal shape is stacked into a tensor; string fields are dropped. ``extra_columns(features,
    batch)`` collates columns of its own into ``batch`` (e.g. cached teacher hidden states of varying length) and
    returns their names. ``teacher_tokenizer``: the ``teacher_*`` inputs of a cross-tokenizer run are padded with
    its pad token, to their own longest example.
    """
    import torch

    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise DistillerError("the tokenizer has no pad token (set tokenizer.pad_token first)")
    side = getattr(tokenizer, "padding_side", "right")
    t_side = getattr(teacher_tokenizer, "padding_side", "right") if teacher_tokenizer is not None else side
    pad_values = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}
    if teacher_tokenizer is not None:
        t_pad = getattr(teacher_tokenizer, "pad_token_id", None)
        if t_pad is None:
            raise DistillerError("the teacher's tokenizer has no pad token (set tokenizer.pad_token first)")
        pad_values.update({TEACHER_PREFIX + "input_ids": t_pad, TEACHER_PREFIX + "attention_mask": 0,
                           TEACHER_PREFIX + "token_type_ids": 0})

    def collate(features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise DistillerError("cannot collate an empty batch")
        keys = list(features[0].keys())
        batch: dict[str, Any] = {}
        seq_keys = [k for k in keys if k in pad_values]
        for group, g_side in (
            ([k for k in seq_keys if not k.startswith(TEACHER_PREFIX)], side),
            ([k for k in seq_keys if k.startswith(TEACHER_PREFIX)], t_side),
        ):
            if not group:
                continue
            longest = max(len(f[group[0]]) for f in features)
            if pad_to_multiple_of:
                longest = int(math.ceil(longest / pad_to_multiple_of) * pad_to_multiple_of)
            for k in group:
                rows = []
                for f in features:
                    seq = list(f[k])
                    pad = [pad_values[k]] * (longest - len(seq))
                    rows.append(pad + seq if g_side == "left" else seq + pad)
                batch[k] = torch.tensor(rows, dtype=torch.long)
        label_key = "labels" if "labels" in keys else ("label" if "label" in keys else None)
        if label_key is not None:
            labels = [f[label_key] for f in features]
            regression = is_regression
            if regression is None:
                regression = any(isinstance(v, float) for v in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
        done = set(extra_columns(features, batch)) if extra_columns is not None else set()
        for k in keys:
            if k in pad_values or k == label_key or k in done:
                continue
            values = [f[k] for f in features]
            if any(isinstance(v, (str, bytes)) or v is None for v in values):
                continue
            if isinstance(values[0], torch.Tensor):
                batch[k] = torch.stack(values)
            elif isinstance(values[0], np.ndarray):  # e.g. cached teacher outputs in NumPy format: one copy
                batch[k] = torch.from_numpy(np.stack(values))
            else:
                batch[k] = torch.tensor(values)
        return batch

    return collate


