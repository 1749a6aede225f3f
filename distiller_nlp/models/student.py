"""Building the student: a checkpoint (``--student``), or the teacher's architecture with a smaller shape
(``--student-shape``), initialised from leading slices of the teacher's weights (the weight-sharing rule of
DynaBERT/AutoDistil SuperLMs: ``W[:out_S, :in_S]``, whole leading heads, evenly spaced layers) or at random.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Optional

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.shape import StudentShape, parse_student_shape
from distiller_nlp.models.load import from_pretrained_classifier, info_keys, quiet_transformers, task_label_config
from distiller_nlp.models.resolve import resolve_model_path

logger = logging.getLogger(__name__)

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


def config_shape(config: Any) -> dict[str, int]:
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


def student_config(teacher_config: PretrainedConfig, shape: StudentShape, task: Any) -> PretrainedConfig:
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
        data.update(task_label_config(task))
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


def teacher_init_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Teacher encoder layers (1-based) whose weights initialise student layers 1..L_S: ⌊i·L_T/L_S⌋, i = 1..L_S.

    Every k-th layer, consistent with the ``skip`` mapping (student layer i is initialised from the teacher layer it
    is later matched with): 6 → 3 gives [2, 4, 6]; 12 → 4 gives [3, 6, 9, 12]. Raises DistillerError unless
    1 ≤ student_layers ≤ teacher_layers.
    """
    teacher_layers = _layer_count("teacher_layers", teacher_layers)
    student_layers = _layer_count("student_layers", student_layers)
    if student_layers > teacher_layers:
        raise DistillerError(
            f"student_layers ({student_layers}) must not exceed teacher_layers ({teacher_layers}) "
            "to initialise the student from teacher layers"
        )
    return [i * teacher_layers // student_layers for i in range(1, student_layers + 1)]


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
        teacher, _ = from_pretrained_classifier(resolve_model_path(teacher), "teacher", trust_remote_code=trust_remote_code)
    if not isinstance(teacher, PreTrainedModel):
        raise DistillerError(f"teacher must be a Hugging Face PreTrainedModel, got {type(teacher).__name__}")
    tconf = teacher.config

    if student is not None:
        path = resolve_model_path(student)
        if task is not None:
            labels = task_label_config(task)
        else:
            labels = {
                "num_labels": tconf.num_labels,
                "id2label": dict(tconf.id2label),
                "label2id": dict(tconf.label2id),
                "problem_type": tconf.problem_type,
            }
        torch.manual_seed(seed)
        model, info = from_pretrained_classifier(
            path, "student", trust_remote_code=trust_remote_code, ignore_mismatched_sizes=True, **labels
        )
        new = info_keys(info, "missing_keys") + info_keys(info, "mismatched_keys")
        if new:
            logger.info("student %s: newly initialised (seed %d): %s", path, seed, ", ".join(new))
        # another vocabulary than the teacher's is a cross-tokenizer run (kd.setup checks what it allows)
        model.float()
        model.train()
        return model

    shape = parse_student_shape(shape)
    config = student_config(tconf, shape, task)
    teacher_shape = config_shape(tconf)
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
    with quiet_transformers():
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




def _layer_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DistillerError(f"{name} must be a positive integer, got {value!r}")
    return value
