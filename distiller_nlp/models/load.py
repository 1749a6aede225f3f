"""Loading teachers, backbones and tokenizers (``Auto*`` classes, quietly, with one-line errors).

:func:`load_teacher_for_task` loads a teacher and insists that its classifier was trained for the task;
:func:`load_backbone_for_finetune` loads any encoder with a fresh head for the task (``finetune-teacher``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.models.resolve import resolve_model_path

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report / 'newly initialized' warnings and its progress bar, then restore them."""
    hf_logging = transformers.utils.logging
    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if bar:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


_DTYPES = {
    "auto": "auto",
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def _as_dtype(dtype: Any) -> Any:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise DistillerError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[key]


def from_pretrained_classifier(path: str, what: str, **kwargs: Any):
    """``AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)``, quietly;
    an unreadable checkpoint or an architecture without a sequence-classification class becomes a DistillerError."""
    try:
        with quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DistillerError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistillerError(f"cannot load {what} '{path}' as a sequence classifier: {first}") from exc


def info_keys(info: Mapping[str, Any], key: str) -> list[str]:
    """Key names from a transformers loading-info field (sets of names, or (name, shape, shape) tuples)."""
    out = []
    for item in info.get(key) or ():
        out.append(item[0] if isinstance(item, (tuple, list)) else str(item))
    return sorted(out)


def _head_keys(model: PreTrainedModel, keys: list[str]) -> list[str]:
    """The keys among ``keys`` that belong to the classification path: outside the base model, or a classifier or
    pooler (BERT classifies the pooled [CLS] vector, so an untrained pooler is an untrained head too)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    head = []
    for key in keys:
        outside = not (prefix and key.startswith(prefix + "."))
        if outside or "classifier" in key or "pooler" in key:
            head.append(key)
    return head


def _task_num_labels(task: Any) -> int:
    return 1 if getattr(task, "is_regression", False) else int(task.num_labels)


def task_label_config(task: Any) -> dict[str, Any]:
    """num_labels / id2label / label2id / problem_type of a task, for a config."""
    if getattr(task, "is_regression", False):
        names = ["LABEL_0"]
        problem = "regression"
    else:
        n = int(task.num_labels)
        given = list(getattr(task, "label_names", None) or [])
        names = [str(x) for x in given] if len(given) == n else [f"LABEL_{i}" for i in range(n)]
        problem = "single_label_classification"
    return {
        "num_labels": len(names),
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
        "problem_type": problem,
    }


def load_tokenizer(path: Any, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained(resolve_model_path(path))``; a missing tokenizer is a DistillerError."""
    resolved = resolve_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistillerError(f"cannot load a tokenizer from '{resolved}': {first}") from exc


def load_teacher_for_task(name_or_path: Any, task: Any, trust_remote_code: bool = False, dtype: Any = None):
    """Load a teacher whose classifier is trained for ``task``; return it in eval mode with ``requires_grad=False``.

    The checkpoint is loaded with ``AutoModelForSequenceClassification.from_pretrained(..., output_loading_info=True)``
    and its own ``num_labels``. It is rejected (DistillerError pointing to ``distiller-nlp finetune-teacher``) when

    - the head was newly initialised: the loading info lists missing classifier/pooler/head weights (a raw
      ``BertModel`` or masked-LM checkpoint such as the packaged MiniLM), or
    - ``config.num_labels`` differs from the task's (1 for regression), or
    - the teacher's label names are the task's names in another order (its outputs would be permuted).

    Label names that simply differ (``LABEL_0`` vs ``negative``, or other spellings) are logged, not rejected.
    ``dtype`` may be a torch dtype or ``"bf16"``/``"fp16"``/``"float32"``/``"auto"``.
    """
    path = resolve_model_path(name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = _as_dtype(dtype)
    model, info = from_pretrained_classifier(path, "teacher", **kwargs)
    task_name = getattr(task, "name", str(task))
    fix = "fine-tune it first with `distiller-nlp finetune-teacher`"
    missing = info_keys(info, "missing_keys") + info_keys(info, "mismatched_keys")
    new = _head_keys(model, missing)
    if len(new) < len(missing):
        logger.warning("teacher %s: encoder weights missing from the checkpoint, newly initialised: %s",
                       path, ", ".join(k for k in missing if k not in new))
    if new:
        shown = ", ".join(new[:4]) + (", ..." if len(new) > 4 else "")
        raise DistillerError(
            f"teacher '{path}' has no classifier trained for task '{task_name}' (newly initialised weights: "
            f"{shown}): {fix}"
        )
    want = _task_num_labels(task)
    have = int(model.config.num_labels)
    if have != want:
        kind = "a regression task (1 output)" if getattr(task, "is_regression", False) else f"{want} labels"
        raise DistillerError(
            f"teacher '{path}' has no classifier trained for task '{task_name}' (it has {have} outputs, the task "
            f"has {kind}): {fix}"
        )
    names = list(getattr(task, "label_names", None) or [])
    if not getattr(task, "is_regression", False) and names:
        id2label = getattr(model.config, "id2label", None) or {}
        teacher_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(have)]
        generic = all(re.fullmatch(r"LABEL_\d+", n) for n in teacher_names)
        ours = [str(n).lower() for n in names]
        theirs = [n.lower() for n in teacher_names]
        if not generic and theirs != ours:
            if sorted(theirs) == sorted(ours):
                raise DistillerError(
                    f"teacher '{path}' orders its labels {teacher_names} but task '{task_name}' orders them "
                    f"{[str(n) for n in names]}: {fix}"
                )
            logger.warning(
                "teacher %s has labels %s, task %s has %s: assuming the same order",
                path, teacher_names, task_name, names,
            )
    model.eval()
    model.requires_grad_(False)
    logger.info("loaded teacher %s (%s, %d labels) for task %s", path, model.config.model_type, have, task_name)
    return model


def load_backbone_for_finetune(name_or_path: Any, task: Any, trust_remote_code: bool = False):
    """Load any encoder checkpoint as ``AutoModelForSequenceClassification`` with a head for ``task`` (to fine-tune).

    ``num_labels``/``id2label``/``label2id``/``problem_type`` (``single_label_classification`` or ``regression``)
    come from the task; ``ignore_mismatched_sizes=True`` so a checkpoint fine-tuned on another task gets a fresh head.
    transformers' "newly initialized" report is silenced; one info line lists the re-initialised weights.
    """
    path = resolve_model_path(name_or_path)
    labels = task_label_config(task)
    model, info = from_pretrained_classifier(
        path, "backbone", trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **labels
    )
    missing = info_keys(info, "missing_keys")
    mismatched = info_keys(info, "mismatched_keys")
    if missing or mismatched:
        logger.info(
            "backbone %s: new head for task %s (%d outputs); newly initialised: %s%s",
            path,
            getattr(task, "name", task),
            labels["num_labels"],
            ", ".join(missing) or "-",
            f"; re-initialised (size mismatch): {', '.join(mismatched)}" if mismatched else "",
        )
    else:
        logger.info("backbone %s: loaded with its existing head for task %s", path, getattr(task, "name", task))
    model.train()
    return model


def mlm_prediction_head(model):
    """The module of a ``*ForMaskedLM`` that maps hidden states to vocabulary logits, when the architecture exposes
    one we know (BERT-like ``cls``, RoBERTa-like ``lm_head``); ``None`` otherwise (then callers compute
    full-sequence logits). Used to score the masked positions only."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if head is not None and callable(head):
            return head
    return None
