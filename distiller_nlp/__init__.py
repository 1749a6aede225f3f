"""distiller_nlp: the Distiller knowledge-distillation pipeline on Hugging Face models.

Kept light on purpose: importing ``distiller_nlp`` (or ``distiller_nlp.core``) costs only torch, so ``vision_kd`` and
``autodistil`` can use the shared loss core without loading transformers or datasets.

Entry points: ``distiller_nlp.kd`` (``distill``, ``finetune_teacher``, ``run_recipe``), ``distiller_nlp.hf``
(``DistillationTrainer``: our KD objective inside a ``transformers.Trainer`` script), ``distiller_nlp.autodistiller``
(HPO and recommendations), ``distiller_nlp.cli`` (the ``distiller-nlp`` command).
"""

__version__ = "0.1.0"

from distiller_nlp.core.errors import DistillerError  # noqa: E402

__all__ = ["DistillerError", "__version__"]
