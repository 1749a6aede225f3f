"""Causal-LM distillation (issue #21), library layer: token-level divergences, sparse teacher targets, generation.

- :mod:`.divergences` — forward / reverse / skew KL (DistiLLM), generalized JSD (GKD, TRL's convention), total
  variation; masked token means, fp32, chunked over tokens. Importing this package registers them on the core loss
  registry as ``lm_fkl``, ``lm_rkl``, ``lm_skew_fkl``, ``lm_skew_rkl``, ``lm_jsd``, ``lm_tv``.
- :mod:`.sparse` — top-k teacher log-probabilities + indices + the remaining mass, as tensors and ``datasets`` columns.
- :mod:`.generate` — KV-cached batched decoding, speculative KD (SKD) data generation, GKD on-policy mixing.

Only ``torch`` and :mod:`distiller_nlp.core` are imported here (``datasets`` lazily, in
:func:`~distiller_nlp.lm.sparse.column_features`); models are passed in by the caller.
"""

from .divergences import (DEFAULT_CHUNK_SIZE, DIVERGENCES, lm_divergence, lm_fkl, lm_jsd, lm_rkl, lm_skew_fkl,
                          lm_skew_rkl, lm_tv)
from .generate import (GenerationOutput, SKDAcceptance, SKDOutput, generate, left_pad, on_policy_batch,
                       position_ids_from_mask, sample_token, skd_accept, skd_generate, use_student_samples, warp_logits)
from .sparse import SparseTargets, bytes_per_token, column_features, from_columns, sparse_targets, to_columns

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DIVERGENCES", "lm_divergence", "lm_fkl", "lm_rkl", "lm_skew_fkl", "lm_skew_rkl", "lm_jsd",
    "lm_tv",
    "SparseTargets", "sparse_targets", "to_columns", "from_columns", "column_features", "bytes_per_token",
    "GenerationOutput", "SKDAcceptance", "SKDOutput", "generate", "sample_token", "warp_logits", "left_pad",
    "position_ids_from_mask", "skd_accept", "skd_generate", "use_student_samples", "on_policy_batch",
]
