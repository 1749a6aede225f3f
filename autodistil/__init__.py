"""AutoDistil (Xu et al. 2022): few-shot task-agnostic NAS for distilling language models.

K compact sub-spaces (:mod:`autodistil.subspaces`), one weight-sharing SuperLM per sub-space
(:mod:`autodistil.superlm`) trained with MiniLMv2 self-attention relation distillation (:mod:`autodistil.objective`,
:mod:`autodistil.train`) on the shared engine, and a search that scores inherited subnets under a FLOPs budget
without retraining (:mod:`autodistil.search`). Importing the package registers the ``autodistil_bert`` model type
(students whose attention width differs from their hidden size) with transformers' Auto classes.
"""

from autodistil import modeling as _modeling  # noqa: F401  (registers autodistil_bert with the Auto classes)
