"""Analytic FLOPs and parameter counts of BERT-family encoders, two FLOPs conventions, and a checked
``FlopCounterMode`` counter.

Conventions (:data:`FLOPS_CONVENTIONS`, one entry point :func:`flops`)
-------------------------------------------------------------------------
``exact`` (the default everywhere): the matrix products the encoder really runs, **FLOPs = 2 × multiply-adds
(MACs)** — a matmul of an (m×k) by a (k×n) matrix costs m·k·n MACs = 2·m·k·n FLOPs, the convention of
``torch.utils.flop_counter.FlopCounterMode`` (:func:`encoder_flops`, verified against it in the tests).

``autodistil``: the cost formula of AutoDistil (Xu et al., 2022; ``cal_flops_bert`` in its released code,
github.com/microsoft/autodistil), **in multiply-adds**, with L layers, A heads, H hidden, R = MLP ratio, n tokens:
``L·[3·n·H²·(A/12) + 2·n²·H·(A/12) + n·H² + 2·n·R·H²] + n·H² + 2·H`` (:func:`autodistil_flops`). Per layer, in
multiply-adds, against ``exact`` (attention width W = heads × head_dim, 64·A in AutoDistil's models):

=====================  ===========================  =========================================
term                   exact                        autodistil
=====================  ===========================  =========================================
Q, K, V projections    3·n·H·W                      3·n·H·(H·A/12)
Q·Kᵀ and P·V           2·n²·W                       2·n²·(H·A/12)
attention output       n·W·H                        n·H² (full width whatever A)
feed-forward           2·n·H·I, I = round(H·R)      2·n·R·H² (the same but for rounding of H·R)
outside the layers     nothing                      n·H² + 2·H ("pool" and a 2-label "pred" head)
unit                   2 × multiply-adds            multiply-adds
=====================  ===========================  =========================================

So the attention is counted H·A/12 wide instead of 64·A: the two agree only where H = 64·12 = 768 (BERT-base:
11.17 G vs 11.25 G multiply-adds, the whole gap being the n·H² + 2·H outside the layers, 0.7 %). On AutoDistil's
published students (n = 128) the exact multiply-adds are 1.11× the formula's on the base one (12 layers, 9 heads,
H 544, R 3: 4.88 G vs 4.40 G), 1.29× and 1.57× on the two small ones (11, 8, 352, R 4: 2.60 G vs 2.02 G; 11, 7, 256,
R 3: 1.36 G vs 0.87 G) and 2.45× on the tiny one (7, 10, 160, R 3.5: 0.67 G vs 0.27 G); our ``exact`` numbers
(2 × multiply-adds) are twice that again (pinned in ``tests/test_flops_conventions.py``). A budget is only meaningful in the convention of the
teacher count it is a fraction of: pick one (``autodistil search --flops-convention``) and keep it.

What is counted
---------------
Only the matrix products of the encoder layers (plus, in ``autodistil``, its two extra terms). Embedding lookups (no
arithmetic), LayerNorm, softmax, GELU, residual additions, biases and dropout are excluded; they are O(n·H) per
layer and below 1 % of the total for usual shapes. ``exact`` leaves the pooler and task heads out as well.

The closed forms need no model: they evaluate thousands of candidate shapes per second (used as a budget constraint
by ``autodistil``). :func:`count_flops_with_torch` measures a real forward pass with ``FlopCounterMode`` and is what
the tests compare the exact closed form against.

This module imports torch only (no transformers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry
from distiller_nlp.core.shape import parse_shape

__all__ = [
    "FLOPS_CONVENTIONS",
    "FlopsConvention",
    "get_flops_convention",
    "flops",
    "flops_report",
    "shape_dims",
    "autodistil_flops",
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
    BERT-base (12, 768, 12, 3072) = 22,347,251,712 FLOPs (11.17 G multiply-adds; AutoDistil's formula,
    :func:`autodistil_flops`, says 11.25 G multiply-adds: at H = 768 its attention width H·A/12 equals 64·A, and the
    gap is only the n·H² + 2·H it adds outside the layers; on narrower students its H·A/12 attention width is the
    main difference, see the module docstring). This is the ``exact`` convention of :func:`flops`.

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


def autodistil_flops(layers: int, hidden: int, heads: int, mlp_ratio: Any, seq_len: int = 128) -> int:
    """AutoDistil's cost formula, in **multiply-adds** (what the paper and its code call "FLOPs").

    ``L·[3·n·H²·(A/12) + 2·n²·H·(A/12) + n·H² + 2·n·R·H²] + n·H² + 2·H`` with L = layers, A = heads, H = hidden,
    R = mlp_ratio (FFN width / hidden), n = seq_len: ``cal_flops_bert`` of the released code
    (``Code/finetune_plus_search_TaskProxy_glue.py``, github.com/microsoft/autodistil), where the shape is
    given as multiples of BERT-base (L/12, A/12, H/768). The attention is H·A/12 wide (heads as a fraction of
    BERT-base's 12 applied to the hidden size), not heads × head_dim; its output projection is counted H×H;
    the last two terms are a "pool" dense on every token and a 2-label "pred" head. Evaluated exactly (fractions)
    and rounded to the nearest integer. BERT-base (12, 768, 12, 4) = 11,249,124,864 (11.25 G); AutoDistil's tiny
    student (7, 160, 10, 3.5; ``Code/run_yaml/Finetune_Search_WikiBook_TaskProxy_tiny.yaml``) = 274,705,387
    (0.27 G).

    The released code passes truncated multipliers (e.g. hidden 0.708 × 768 = 543.744 for 544, layers 0.917 × 12 =
    11.004): its numbers differ from these by < 0.1 %, below the 2–3 digits the paper prints.
    """
    layers = _positive_int("layers", layers)
    hidden = _positive_int("hidden", hidden)
    heads = _positive_int("heads", heads)
    n = _positive_int("seq_len", seq_len)
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float, Fraction)) or mlp_ratio <= 0:
        raise DistillerError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    a = Fraction(heads, 12)
    r = Fraction(mlp_ratio)
    h2 = hidden * hidden
    per_layer = 3 * n * h2 * a + 2 * n * n * hidden * a + n * h2 + 2 * n * r * h2
    return round(layers * per_layer + n * h2 + 2 * hidden)


# --------------------------------------------------------------------------------------------------------------------
# FLOPs conventions
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlopsConvention:
    """One way of counting the cost of an encoder: ``count(dims, seq_len)`` on :func:`shape_dims`' dims.

    ``unit`` is the string reports carry (``metrics.json``'s ``unit``); ``symbol`` the short word after a number
    ("FLOPs", "multiply-adds"); ``macs_per_unit`` converts a count to multiply-adds (0.5 for 2 × multiply-adds), so
    counts of two conventions can be compared."""

    name: str
    unit: str
    symbol: str
    macs_per_unit: float
    description: str
    count: Callable[[dict, int], int]

    def to_macs(self, value: float) -> float:
        """``value`` (in this convention's unit) in multiply-adds."""
        return value * self.macs_per_unit


def _count_exact(dims: dict, seq_len: int) -> int:
    return encoder_flops(dims["layers"], dims["hidden"], dims["heads"], dims["intermediate"], seq_len,
                         head_dim=dims.get("head_dim"))


def _count_autodistil(dims: dict, seq_len: int) -> int:
    ratio = dims.get("mlp_ratio")
    if ratio is None:
        ratio = Fraction(_positive_int("intermediate", dims["intermediate"]), _positive_int("hidden", dims["hidden"]))
    return autodistil_flops(dims["layers"], dims["hidden"], dims["heads"], ratio, seq_len)


#: The FLOPs conventions by name (``exact`` first: the default of every count, budget and report).
FLOPS_CONVENTIONS: Registry[FlopsConvention] = Registry("FLOPs convention", hint=" (--flops-convention)")
FLOPS_CONVENTIONS.register("exact", FlopsConvention(
    "exact", "FLOPs = 2 x multiply-adds", "FLOPs", 0.5,
    "the encoder's matrix products, attention heads x head_dim wide (encoder_flops; FlopCounterMode agrees)",
    _count_exact))
FLOPS_CONVENTIONS.register("autodistil", FlopsConvention(
    "autodistil", "multiply-adds (AutoDistil's formula)", "multiply-adds", 1.0,
    "AutoDistil's cost formula: attention hidden x heads/12 wide, + n*H^2 + 2H (autodistil_flops)",
    _count_autodistil))


def get_flops_convention(name: Any) -> FlopsConvention:
    """The convention called ``name`` (a :class:`FlopsConvention` passes through); an unknown name is a one-line
    :class:`DistillerError` listing the known ones."""
    if isinstance(name, FlopsConvention):
        return name
    return FLOPS_CONVENTIONS.get(name)


_DIM_KEYS = ("layers", "hidden", "heads", "intermediate", "mlp_ratio", "head_dim")


def _number(name: str, value: Any, kind: type) -> Any:
    """``value`` (a number or its text) as ``kind``; an integral float is an int where ``kind`` is int (YAML or JSON
    may write ``12.0``), any other non-integer there is a :class:`DistillerError`."""
    what = "an integer" if kind is int else "a number"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise DistillerError(f"{name} must be {what}, got {value!r}") from None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise DistillerError(f"{name} must be {what}, got {value!r}")
    if kind is int:
        if value != int(value):
            raise DistillerError(f"{name} must be {what}, got {value!r}")
        return int(value)
    return value


def shape_dims(arch_or_dims: Any) -> dict:
    """``{layers, hidden, heads, intermediate, mlp_ratio, head_dim}`` of an encoder shape, from

    - a string or mapping in the shape grammar (:func:`distiller_nlp.core.shape.parse_shape`:
      ``"layers=12,heads=9,hidden=544,mlp_ratio=3"``, ``{"L": 12, ...}``), with ``intermediate`` or ``mlp_ratio``;
    - a Hugging Face config (``num_hidden_layers``, ``hidden_size``, ...; DistilBERT's names too);
    - any object with ``layers``, ``hidden``, ``heads`` and ``intermediate`` or ``mlp_ratio`` attributes (an
      ``autodistil`` ``Arch``), optionally ``head_dim``.

    A missing ``intermediate`` is ``round(hidden × mlp_ratio)``; a missing ``mlp_ratio`` stays None (the
    ``autodistil`` count then uses intermediate / hidden); a missing ``head_dim`` is None (hidden // heads)."""
    if isinstance(arch_or_dims, (str, Mapping)) and not any(
            isinstance(arch_or_dims, Mapping) and k in arch_or_dims for k in ("num_hidden_layers", "n_layers")):
        raw = parse_shape(arch_or_dims, allowed=_DIM_KEYS, what="shape")
    elif any(_config_get(arch_or_dims, k) is not None for k in ("num_hidden_layers", "n_layers")):
        raw = _shape_from_config(arch_or_dims)
    else:
        raw = {k: getattr(arch_or_dims, k) for k in _DIM_KEYS if getattr(arch_or_dims, k, None) is not None}
    missing = [k for k in ("layers", "hidden", "heads") if k not in raw]
    if missing or ("intermediate" not in raw and "mlp_ratio" not in raw):
        missing += [] if ("intermediate" in raw or "mlp_ratio" in raw) else ["intermediate or mlp_ratio"]
        raise DistillerError(f"cannot count FLOPs of {arch_or_dims!r}: missing {', '.join(missing)}")
    dims: dict = {k: _number(k, raw[k], int) for k in ("layers", "hidden", "heads")}
    dims["mlp_ratio"] = _number("mlp_ratio", raw["mlp_ratio"], float) if raw.get("mlp_ratio") is not None else None
    if raw.get("intermediate") is not None:
        dims["intermediate"] = _number("intermediate", raw["intermediate"], int)
    else:
        ratio = dims["mlp_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float, Fraction)) or ratio <= 0:
            raise DistillerError(f"mlp_ratio must be a positive number, got {ratio!r}")
        dims["intermediate"] = max(1, int(round(dims["hidden"] * ratio)))
    dims["head_dim"] = _number("head_dim", raw["head_dim"], int) if raw.get("head_dim") is not None else None
    return dims


def flops(arch_or_dims: Any, seq_len: int = 128, convention: Any = "exact") -> int:
    """Cost of one forward pass over ONE sequence of ``seq_len`` tokens in ``convention`` (``exact``: FLOPs =
    2 × multiply-adds, :func:`encoder_flops`; ``autodistil``: multiply-adds by AutoDistil's formula,
    :func:`autodistil_flops`). ``arch_or_dims``: anything :func:`shape_dims` reads. An unknown convention is a
    :class:`DistillerError`."""
    conv = get_flops_convention(convention)
    return conv.count(shape_dims(arch_or_dims), seq_len)


def flops_report(arch_or_dims: Any, seq_len: int = 128, convention: Any = "exact") -> dict:
    """The count in ``convention`` and in every other one, each with its unit and in multiply-adds; for
    ``"layers=12,heads=9,hidden=544,mlp_ratio=3,head_dim=64"`` (AutoDistil's base student) in ``autodistil``::

        {"convention": "autodistil", "flops": 4402971712, "unit": "multiply-adds (AutoDistil's formula)",
         "seq_len": 128, "shape": {...}, "counts": {"exact": {"flops": 9758048256, "unit": ...,
         "multiply_adds": 4879024128.0}, "autodistil": {...}}, "exact_over_autodistil": 1.1081}

    ``exact_over_autodistil`` is the ratio of the two counts in multiply-adds."""
    conv = get_flops_convention(convention)
    dims = shape_dims(arch_or_dims)
    counts = {}
    for name, c in FLOPS_CONVENTIONS.items():
        value = c.count(dims, seq_len)
        counts[name] = {"flops": value, "unit": c.unit, "multiply_adds": c.to_macs(value)}
    return {
        "convention": conv.name, "flops": counts[conv.name]["flops"], "unit": conv.unit, "seq_len": int(seq_len),
        "shape": dims, "counts": counts,
        "exact_over_autodistil": round(counts["exact"]["multiply_adds"] / counts["autodistil"]["multiply_adds"], 4),
    }


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
