"""Analytic FLOPs and parameter counts of BERT-family encoders, and a checked ``FlopCounterMode`` counter.

Unit
----
**FLOPs = 2 × multiply-adds (MACs).** A matmul of an (m×k) by a (k×n) matrix costs m·k·n MACs = 2·m·k·n FLOPs,
the convention of ``torch.utils.flop_counter.FlopCounterMode``. Many papers, AutoDistil's paper and code included,
report multiply-adds and call them "FLOPs" (BERT-base at 128 tokens = 11.2 G there): halve our numbers before
comparing with theirs.

What is counted
---------------
Only the matrix products of the encoder layers. Embedding lookups (no arithmetic), LayerNorm, softmax, GELU,
residual additions, biases and dropout are excluded; they are O(n·H) per layer and below 1 % of the total for usual
shapes. The pooler and task heads are outside the encoder and also excluded.

The closed form needs no model: :func:`encoder_flops` evaluates thousands of candidate shapes per second (used as a
budget constraint by ``autodistil``). :func:`count_flops_with_torch` measures a real forward pass with
``FlopCounterMode`` and is what the tests compare the closed form against.

This module imports torch only (no transformers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = [
    "encoder_flops",
    "encoder_flops_from_config",
    "count_encoder_params",
    "register_sdpa_flop_formula",
    "count_flops_with_torch",
]


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DistillerError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _attention_width(hidden: int, heads: int, head_dim: int | None) -> int:
    """A·d = heads × head_dim; head_dim defaults to hidden // heads (then hidden must be divisible by heads)."""
    if head_dim is None:
        if hidden % heads != 0:
            raise DistillerError(
                f"hidden size {hidden} is not divisible by {heads} attention heads; pass head_dim explicitly"
            )
        head_dim = hidden // heads
    head_dim = _positive_int("head_dim", head_dim)
    return heads * head_dim


def encoder_flops(
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    seq_len: int = 128,
    head_dim: int | None = None,
) -> int:
    """FLOPs (= 2 × multiply-adds) of one forward pass of a BERT-family encoder over ONE sequence of ``seq_len`` tokens.

    With n = seq_len, H = hidden, I = intermediate, A·d = heads × head_dim (the attention width; head_dim defaults to
    H // heads), the multiply-adds of one layer are

    - Q, K, V projections:    3 · n · H · (A·d)
    - scores Q·Kᵀ:            n² · (A·d)
    - probabilities · V:      n² · (A·d)
    - output projection:      n · (A·d) · H
    - feed-forward (2 matmuls): 2 · n · H · I

    and the result is ``2 × layers × (sum above)``. Embeddings, LayerNorm, softmax, activations, biases, the pooler
    and task heads are excluded. Examples (n = 128): MiniLM-L6-H384 (6, 384, 12, 1536) = 2,868,903,936 FLOPs;
    BERT-base (12, 768, 12, 3072) = 22,347,251,712 FLOPs (11.17 G multiply-adds; AutoDistil's formula adds the
    pooler and rounds the attention terms differently and reports 11.25 G multiply-adds).

    Raises DistillerError for non-positive sizes or when hidden is not divisible by heads and head_dim is None.
    """
    layers = _positive_int("layers", layers)
    hidden = _positive_int("hidden", hidden)
    heads = _positive_int("heads", heads)
    intermediate = _positive_int("intermediate", intermediate)
    n = _positive_int("seq_len", seq_len)
    width = _attention_width(hidden, heads, head_dim)
    per_layer_macs = (
        3 * n * hidden * width  # Q, K, V
        + n * n * width  # Q·Kᵀ
        + n * n * width  # attention·V
        + n * width * hidden  # output projection
        + 2 * n * hidden * intermediate  # FFN up + down
    )
    return 2 * layers * per_layer_macs


_CONFIG_NAMES = {
    "layers": ("num_hidden_layers", "n_layers"),
    "hidden": ("hidden_size", "dim"),
    "heads": ("num_attention_heads", "n_heads"),
    "intermediate": ("intermediate_size", "hidden_dim"),
}


def _config_get(config: Any, name: str) -> Any:
    if isinstance(config, Mapping):
        return config.get(name)
    return getattr(config, name, None)


def _shape_from_config(config: Any) -> dict[str, Any]:
    shape: dict[str, Any] = {}
    for key, names in _CONFIG_NAMES.items():
        for name in names:
            value = _config_get(config, name)
            if value is not None:
                shape[key] = value
                break
        else:
            raise DistillerError(
                f"config {type(config).__name__} has none of the attributes {' / '.join(names)} needed for FLOPs"
            )
    shape["head_dim"] = _config_get(config, "head_dim")
    return shape


def encoder_flops_from_config(config: Any, seq_len: int = 128) -> int:
    """:func:`encoder_flops` for a config object (or mapping) of a BERT-family encoder.

    Reads ``num_hidden_layers``/``hidden_size``/``num_attention_heads``/``intermediate_size`` (BERT, RoBERTa,
    ELECTRA, ...), falling back to DistilBERT's ``n_layers``/``dim``/``n_heads``/``hidden_dim``, and an optional
    ``head_dim`` (None = hidden // heads). Unit: FLOPs = 2 × multiply-adds.
    """
    return encoder_flops(seq_len=seq_len, **_shape_from_config(config))


def count_encoder_params(
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    head_dim: int | None = None,
    vocab_size: int = 30522,
    max_position: int = 512,
    type_vocab: int = 2,
    include_embeddings: bool = True,
    include_pooler: bool = True,
) -> int:
    """Closed-form parameter count of a BERT encoder (``BertModel``), weights and biases.

    With W = heads × head_dim (head_dim defaults to H // heads):

    - embeddings: (vocab_size + max_position + type_vocab) · H word/position/token-type tables + 2H LayerNorm;
    - per layer: Q, K, V 3·(H·W + W); attention output W·H + H; LayerNorm 2H; FFN H·I + I and I·H + H;
      LayerNorm 2H;
    - pooler: H·H + H (``include_pooler``).

    MiniLM-L6-H384 (6, 384, 12, 1536, vocab 30522) = 22,713,216. For RoBERTa pass vocab_size=50265,
    max_position=514, type_vocab=1; ``type_vocab=0`` drops the token-type table.
    """
    layers = _positive_int("layers", layers)
    hidden = _positive_int("hidden", hidden)
    heads = _positive_int("heads", heads)
    intermediate = _positive_int("intermediate", intermediate)
    width = _attention_width(hidden, heads, head_dim)
    for name, value in (("vocab_size", vocab_size), ("max_position", max_position), ("type_vocab", type_vocab)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise DistillerError(f"{name} must be a non-negative integer, got {value!r}")

    per_layer = (
        3 * (hidden * width + width)  # Q, K, V
        + width * hidden + hidden  # attention output projection
        + 2 * hidden  # attention LayerNorm
        + hidden * intermediate + intermediate  # FFN up
        + intermediate * hidden + hidden  # FFN down
        + 2 * hidden  # output LayerNorm
    )
    total = layers * per_layer
    if include_embeddings:
        total += (vocab_size + max_position + type_vocab) * hidden + 2 * hidden
    if include_pooler:
        total += hidden * hidden + hidden
    return total


# --------------------------------------------------------------------------------------------------------------------
# FlopCounterMode and CPU SDPA
# --------------------------------------------------------------------------------------------------------------------


def _attention_matmul_flops(query_shape, key_shape, value_shape) -> int:
    """2·b·h·s_q·s_k·d_q (Q·Kᵀ) + 2·b·h·s_q·s_k·d_v (P·V); shapes are (batch, heads, seq, head_dim)."""
    b, h, s_q, d_q = query_shape
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    return 2 * b * h * s_q * s_k * d_q + 2 * b * h * s_q * s_k * d_v


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (forward): the two attention matmuls."""
    return _attention_matmul_flops(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    """FLOPs of the backward: recompute Q·Kᵀ, dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q (five matmuls)."""
    b, h, s_q, d_q = query_shape
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v + d_v + d_q + d_q)


def register_sdpa_flop_formula() -> bool:
    """Teach ``FlopCounterMode`` to count CPU scaled-dot-product attention. Idempotent.

    On CPU, ``F.scaled_dot_product_attention`` (transformers' default ``attn_implementation="sdpa"``) dispatches to
    ``aten._scaled_dot_product_flash_attention_for_cpu``, which torch's flop registry does not list (it registers
    only the CUDA efficient/flash/cudnn variants), so the attention matmuls (2·n²·A·d per layer and sequence)
    silently count as zero. This registers the same formula torch uses for the CUDA kernels (Q·Kᵀ plus P·V) for the
    CPU forward op, and the five-matmul formula for its backward op, via
    ``torch.utils.flop_counter.register_flop_formula``. ``FlopCounterMode`` copies the registry when it is
    constructed, so call this before creating the counter. Returns True if anything was newly registered.
    """
    from torch.utils import flop_counter

    aten = torch.ops.aten
    registered = False
    for op_name, formula in (
        ("_scaled_dot_product_flash_attention_for_cpu", _cpu_flash_attention_flop),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_flash_attention_backward_flop),
    ):
        if not hasattr(aten, op_name):  # an older/newer torch without this op
            continue
        op = getattr(aten, op_name)
        if op in flop_counter.flop_registry:  # already registered (by us, or natively by a newer torch)
            continue
        flop_counter.register_flop_formula(op)(formula)
        registered = True
    return registered


def count_flops_with_torch(model: torch.nn.Module, input_ids=None, attention_mask=None, **inputs) -> int:
    """Measured FLOPs (2 × multiply-adds, whole batch) of one forward pass of ``model`` under ``FlopCounterMode``.

    Registers the CPU SDPA formula first (:func:`register_sdpa_flop_formula`), then runs
    ``model(input_ids=..., attention_mask=..., **inputs)`` under ``torch.no_grad()``. ``FlopCounterMode`` counts
    matmul-type ops (mm, addmm, bmm, baddbmm, SDPA kernels, convolutions), so for a ``BertModel`` the result is
    ``batch × (encoder_flops(...) + 2·H²)`` — the second term is the pooler's dense layer on the [CLS] vector.
    Keyword arguments that are None are not passed (so an encoder can be called with ``hidden_states=...``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    register_sdpa_flop_formula()
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**kwargs)
    return int(counter.get_total_flops())
