"""The Distiller KD pipeline, one file per job:

====================  ===============================================================================================
``distillation.py``   :func:`distill` (``distiller-nlp distill``) and :func:`cache_teacher` (``cache-teacher``)
``recipe.py``         :func:`run_recipe` — every stage of a recipe (``distiller-nlp run RECIPE``)
``finetune.py``       :func:`finetune_teacher` — a teacher for the task (``finetune-teacher``)
``setup.py``          :func:`prepare_distillation` — data, teacher, student and KD module, validated, nothing written
``module.py``         :class:`DistillModule` — student + projections + critics, the KD objective
``matches.py``        intermediate matches (explicit or from a mapping strategy), resolved and checked
``mapping.py``        layer-mapping strategies (registry :data:`MAPPING_STRATEGIES`: skip, last, emd)
``teachers.py``       teacher runners (the engine's ``prepare_batch``), several teachers
``ensemble.py``       averaged soft targets of several teachers
``mixup.py``          MixUp on word embeddings
``teacher_cache.py``  teacher outputs computed once (fingerprint-keyed ``datasets`` columns)
====================  ===============================================================================================

Importing this package is light; the names below load their module on first use.
"""

from distiller_nlp.core.lazy import lazy_exports

_EXPORTS = {
    "distill": "distiller_nlp.kd.distillation",
    "cache_teacher": "distiller_nlp.kd.distillation",
    "run_recipe": "distiller_nlp.kd.recipe",
    "expand_stages": "distiller_nlp.kd.recipe",
    "finetune_teacher": "distiller_nlp.kd.finetune",
    
    "prepare_distillation": "distiller_nlp.kd.setup",
    "check_pipeline": "distiller_nlp.kd.setup",
    "DistillModule": "distiller_nlp.kd.module",
    "resolve_matches": "distiller_nlp.kd.matches",
    "ResolvedMatch": "distiller_nlp.kd.matches",
    "MAPPING_STRATEGIES": "distiller_nlp.kd.mapping",
    "layer_mapping": "distiller_nlp.kd.mapping",
    "TeacherRunner": "distiller_nlp.kd.teachers",
    "ensemble_logits": "distiller_nlp.kd.ensemble",
    "mixup_inputs": "distiller_nlp.kd.mixup",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
