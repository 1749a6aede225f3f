"""MixUp on word embeddings (Distiller's MixUp, Zhang et al. 2018): a batch = its originals + mixed copies."""

from __future__ import annotations

import torch
from torch import nn


def mixup_inputs(model: nn.Module, batch: dict) -> dict:
    """Model inputs for originals + MixUp copies (Distiller's MixUp, Zhang et al. 2018 on word embeddings).

    ``inputs_embeds = [E(x); λ·E(x) + (1−λ)·E(x_π)]`` in the model's own word-embedding table, with ``λ =
    batch["mix_lambda"]`` and ``π = batch["mix_perm"]``; the mixed rows attend to the union of both masks.
    """
    lam, perm = batch["mix_lambda"], batch["mix_perm"]
    emb = model.get_input_embeddings()(batch["input_ids"])
    out = {"inputs_embeds": torch.cat([emb, lam.to(emb.dtype) * emb + (1 - lam.to(emb.dtype)) * emb[perm]])}
    mask = batch["attention_mask"]
    out["attention_mask"] = torch.cat([mask, torch.maximum(mask, mask[perm])])
    if "token_type_ids" in batch:
        out["token_type_ids"] = torch.cat([batch["token_type_ids"], batch["token_type_ids"]])
    return out
