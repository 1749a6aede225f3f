"""Flat size facts of a model or config (layers, hidden, ..., params, encoder FLOPs)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from distiller_nlp.core.flops import count_encoder_params, encoder_flops
from distiller_nlp.models.load import quiet_transformers
from distiller_nlp.models.student import config_shape

logger = logging.getLogger(__name__)

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
    dims = config_shape(config)
    out: dict[str, Any] = {"model_type": getattr(config, "model_type", None), **dims}
    out["num_labels"] = getattr(config, "num_labels", None)
    if model is not None:
        unique = {id(p): p for p in model.parameters()}
        out["params"] = sum(p.numel() for p in unique.values())
        out["trainable_params"] = sum(p.numel() for p in unique.values() if p.requires_grad)
    else:
        try:
            with torch.device("meta"), quiet_transformers():
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


