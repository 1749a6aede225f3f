"""Models: resolution, loading, student construction, description and export (Hugging Face ``Auto*`` classes).

================  ===================================================================================================
``resolve.py``    :func:`resolve_model_path` — ``minilm`` / a directory / a Hub id (offline: only what is local)
``load.py``       :func:`load_tokenizer`, :func:`load_teacher_for_task` (its classifier must fit the task),
                  :func:`load_backbone_for_finetune`, :func:`quiet_transformers`
``student.py``    :func:`build_student` — a checkpoint, or a smaller shape initialised from teacher slices
``describe.py``   :func:`describe_model` — layers, hidden, ..., params, encoder FLOPs
``export.py``     :func:`save_student` — an atomic, plain ``save_pretrained`` checkpoint
``card.py``       :func:`model_source`, :func:`size_rows`, :func:`write_card` — the model card of an export
``supervised.py`` :class:`SupervisedModule` — a classifier as the engine's module (CE on labels, MSE for one output)
================  ===================================================================================================

Student shapes use the one grammar of :mod:`distiller_nlp.core.shape` (:class:`StudentShape`).
"""

from distiller_nlp.core.shape import StudentShape, parse_student_shape
from distiller_nlp.models.card import epochs_text, load_snippet, model_source, size_rows, task_card_fields, write_card
from distiller_nlp.models.describe import describe_model
from distiller_nlp.models.export import save_student
from distiller_nlp.models.load import (load_backbone_for_finetune, load_teacher_for_task, load_tokenizer,
                                       mlm_prediction_head, quiet_transformers)
from distiller_nlp.models.resolve import PACKAGED_TEACHER, packaged_minilm_path, resolve_model_path
from distiller_nlp.models.supervised import SupervisedModule
from distiller_nlp.models.student import (SUPPORTED_STUDENT_TYPES, build_student, config_shape, student_config,
                                          teacher_init_layers)

__all__ = [
    "model_source",
    "size_rows",
    "task_card_fields",
    "write_card",
    "load_snippet",
    "epochs_text",
    "PACKAGED_TEACHER",
    "packaged_minilm_path",
    "resolve_model_path",
    "load_tokenizer",
    "load_teacher_for_task",
    "load_backbone_for_finetune",
    "quiet_transformers",
    "mlm_prediction_head",
    "StudentShape",
    "parse_student_shape",
    "build_student",
    "config_shape",
    "student_config",
    "teacher_init_layers",
    "describe_model",
    "save_student",
    "SupervisedModule",
    "SUPPORTED_STUDENT_TYPES",
]
