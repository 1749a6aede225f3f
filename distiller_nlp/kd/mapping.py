"""Layer mapping: which teacher layer each student layer is matched with in an intermediate-layer loss.

Layer indexing (the same as ``distiller_nlp.core.capture``):

- hidden-state features: layer 0 = embeddings output, layer i = output of encoder layer i (1..L), i.e. the
  indices of a Hugging Face ``output_hidden_states`` tuple;
- attention features (scores, probabilities, q/k/v relations): layer i = self-attention of encoder layer i (1..L);
  there is no layer 0.

Strategies are entries of :data:`MAPPING_STRATEGIES` (one decorated function each: ``(teacher_layers,
student_layers, feature) -> [(teacher_layer, student_layer), ...]``), so a new one is usable in ``kd.mapping.strategy``,
``--mapping``, search spaces and AutoDistiller at once. Built in (Distiller, He et al. 2021, ``cal_layer_mapping``;
L_T, L_S = teacher/student layer counts):

- ``skip`` (uniform, "every k-th layer", PKD/TinyBERT): hidden i = 0..L_S ↔ teacher ⌊i·L_T/L_S⌋;
  attention i = 1..L_S ↔ teacher ⌊i·L_T/L_S⌋. (Distiller writes the attention rule 0-based as
  ⌊(i+1)k − 1⌋ for student i = 0..L_S−1; adding 1 to both sides gives the 1-based rule, since ⌊x − 1⌋ + 1 = ⌊x⌋.)
- ``last``: hidden i = 0..L_S ↔ teacher L_T − L_S + i — so the student's embeddings output (0) is matched with
  teacher layer L_T − L_S (an encoder layer output unless L_T = L_S), exactly as in Distiller;
  attention i = 1..L_S ↔ teacher L_T − L_S + i.
- ``emd`` (BERT-EMD, Li et al. 2020): every student layer against every teacher layer (1..L), the costs weighted by
  an earth mover's transport plan between layer weights that adapt during training — BERT-EMD's cost attention, or
  fixed uniform weights as Distiller runs it (``kd.mapping.params.emd_weights``; registered with ``transport=True``;
  :func:`emd_flow`, :func:`emd_update_weights`).
- ``explicit`` (``kd.intermediate``, not a registry entry): the given ``(teacher_layer, student_layer)`` pairs,
  validated.

Floors use exact integer arithmetic (i·L_T // L_S). Distiller computes ``int(i * (L_T / L_S))`` in floating point,
which for some shapes truncates i·L_T/L_S = L_T to L_T − 1 (e.g. 15 → 11 layers maps the last student layer to
teacher layer 14); we keep the exact value.

This module does not need torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

__all__ = [
    "MAPPING_STRATEGIES",
    "HIDDEN_FEATURES",
    "ATTENTION_FEATURES",
    "feature_layer_range",
    "layer_mapping",
    "emd_flow",
    "emd_update_weights",
    "EMD_WEIGHT_RULES",
]

#: Layer-mapping strategies of ``kd.mapping.strategy``: ``name -> (teacher_layers, student_layers, feature) -> pairs``;
#: metadata ``transport=True`` marks a strategy whose pairs are weighted by a transport plan (EMD) instead of summed.
MAPPING_STRATEGIES: Registry = Registry("mapping strategy", plural="mapping strategies",
                                        normalize=lambda name: name.lower())
#: features whose layer 0 is the embeddings output
HIDDEN_FEATURES = ("hidden",)
#: features that live in the self-attention of encoder layers 1..L
ATTENTION_FEATURES = ("attention", "attention_scores", "attention_probs", "qk_relation", "vv_relation", "relation")


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DistillerError(f"{name} must be a positive integer, got {value!r}")
    return value


def feature_layer_range(feature: str, num_layers: int) -> tuple[int, int]:
    """Valid layer indices ``(low, high)`` of ``feature`` in a model with ``num_layers`` encoder layers.

    ``hidden`` → (0, L) (0 = embeddings output); attention features → (1, L).
    """
    num_layers = _count("num_layers", num_layers)
    if feature in HIDDEN_FEATURES:
        return 0, num_layers
    if feature in ATTENTION_FEATURES:
        return 1, num_layers
    raise DistillerError(
        f"unknown feature {feature!r} for layer mapping (valid: {', '.join(HIDDEN_FEATURES + ATTENTION_FEATURES)})"
    )


def _check_layer(role: str, layer: Any, feature: str, low: int, high: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise DistillerError(f"{role} layer {layer!r} is not an integer")
    if not low <= layer <= high:
        raise DistillerError(f"{role} layer {layer} out of range for feature {feature!r} (valid {low}..{high})")
    return layer


def _pair(item: Any) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        if "layer_T" not in item or "layer_S" not in item:
            raise DistillerError(f"layer pair {dict(item)!r} needs keys layer_T and layer_S")
        return item["layer_T"], item["layer_S"]
    if isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
        raise DistillerError(f"layer pair {item!r} is not a (teacher_layer, student_layer) pair")
    item = tuple(item)
    if len(item) != 2:
        raise DistillerError(f"layer pair {item!r} is not a (teacher_layer, student_layer) pair")
    return item


def layer_mapping(
    strategy: str,
    teacher_layers: int,
    student_layers: int,
    feature: str = "hidden",
    pairs: Iterable[Any] | None = None,
) -> list[tuple[int, int]]:
    """The ``(teacher_layer, student_layer)`` pairs to match for ``feature`` under ``strategy``.

    See the module docstring for the formulas and the layer indexing. Examples (BERT-base → TinyBERT-4,
    L_T = 12, L_S = 4):

    - ``skip``/hidden: (0,0), (3,1), (6,2), (9,3), (12,4); ``skip``/attention: (3,1), (6,2), (9,3), (12,4)
    - ``last``/hidden: (8,0), (9,1), (10,2), (11,3), (12,4); ``last``/attention: (9,1), (10,2), (11,3), (12,4)

    ``explicit`` takes ``pairs`` as ``(teacher, student)`` tuples or ``{"layer_T": t, "layer_S": s}`` mappings and
    returns them as tuples in the given order. ``skip`` and ``last`` need 1 ≤ student_layers ≤ teacher_layers. Raises
    DistillerError for an unknown strategy/feature, out-of-range layers (naming the layer and the valid range),
    duplicate pairs, or ``pairs`` given to a preset strategy.
    """
    teacher_layers = _count("teacher_layers", teacher_layers)
    student_layers = _count("student_layers", student_layers)
    key = strategy.lower() if isinstance(strategy, str) else strategy
    valid = [n for n in MAPPING_STRATEGIES.names() if not MAPPING_STRATEGIES.meta(n).get("transport")]
    if key != "explicit" and (key not in valid):
        raise DistillerError(f"unknown layer-mapping strategy {strategy!r} (valid: {', '.join(valid + ['explicit'])})")
    t_low, t_high = feature_layer_range(feature, teacher_layers)
    s_low, s_high = feature_layer_range(feature, student_layers)

    if key == "explicit":
        if pairs is None:
            raise DistillerError("layer-mapping strategy 'explicit' needs pairs=[(teacher_layer, student_layer), ...]")
        out: list[tuple[int, int]] = []
        for item in pairs:
            t, s = _pair(item)
            pair = (
                _check_layer("teacher", t, feature, t_low, t_high),
                _check_layer("student", s, feature, s_low, s_high),
            )
            if pair in out:
                raise DistillerError(f"duplicate layer pair (teacher {pair[0]}, student {pair[1]})")
            out.append(pair)
        if not out:
            raise DistillerError("layer-mapping strategy 'explicit' got an empty list of pairs")
        return out

    if pairs is not None:
        raise DistillerError(f"pairs are only used by strategy 'explicit', not {key!r}")
    mapping = [(int(t), int(s)) for t, s in MAPPING_STRATEGIES.get(key)(teacher_layers, student_layers, feature)]
    for t, s in mapping:  # a strategy's pairs must be valid layers
        _check_layer("teacher", t, feature, t_low, t_high)
        _check_layer("student", s, feature, s_low, s_high)
    return mapping


def _no_deeper_student(name: str, teacher_layers: int, student_layers: int) -> None:
    if student_layers > teacher_layers:
        raise DistillerError(
            f"strategy {name!r} needs student_layers ({student_layers}) <= teacher_layers ({teacher_layers}); "
            "use strategy 'explicit' with pairs"
        )


@MAPPING_STRATEGIES.register("skip")
def skip_mapping(teacher_layers: int, student_layers: int, feature: str = "hidden") -> list[tuple[int, int]]:
    """Every k-th teacher layer: student layer i ↔ teacher ⌊i·L_T/L_S⌋ (i from 0 for hidden states, from 1 for
    attention features)."""
    _no_deeper_student("skip", teacher_layers, student_layers)
    low, high = feature_layer_range(feature, student_layers)
    return [(i * teacher_layers // student_layers, i) for i in range(low, high + 1)]


@MAPPING_STRATEGIES.register("last")
def last_mapping(teacher_layers: int, student_layers: int, feature: str = "hidden") -> list[tuple[int, int]]:
    """The teacher's last layers: student layer i ↔ teacher L_T − L_S + i."""
    _no_deeper_student("last", teacher_layers, student_layers)
    low, high = feature_layer_range(feature, student_layers)
    return [(teacher_layers - student_layers + i, i) for i in range(low, high + 1)]


@MAPPING_STRATEGIES.register("emd", transport=True)
def emd_mapping(teacher_layers: int, student_layers: int, feature: str = "hidden") -> list[tuple[int, int]]:
    """BERT-EMD: every student layer 1..L_S against every teacher layer 1..L_T; the pipeline weights the pair costs by
    the transport plan :func:`emd_flow` (the embeddings, hidden layer 0, are matched directly)."""
    return [(t, s) for s in range(1, student_layers + 1) for t in range(1, teacher_layers + 1)]


# ------------------------------------------------------------------------------------------------ EMD mapping

def emd_flow(weights_s, weights_t, cost):
    """Earth mover's distance transport plan (BERT-EMD, Li et al. EMNLP 2020) between student and teacher layers.

    ``weights_s`` (L_S,) and ``weights_t`` (L_T,) are distributions (non-negative, summing to 1); ``cost`` (L_S, L_T)
    the per-pair distillation losses. Returns the flow F (L_S, L_T) minimising Σ F_ij C_ij subject to
    Σ_j F_ij = w_S_i and Σ_i F_ij = w_T_j, F ≥ 0 (a small linear program, solved with SciPy's HiGHS).
    """
    import numpy as np
    from scipy.optimize import linprog

    ws = np.asarray(weights_s, dtype=np.float64)
    wt = np.asarray(weights_t, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if c.shape != (len(ws), len(wt)):
        raise DistillerError(f"emd_flow: cost shape {c.shape} does not match weights ({len(ws)}, {len(wt)})")
    if not np.all(np.isfinite(c)):
        raise DistillerError("emd_flow: the cost matrix has non-finite entries (a diverging intermediate loss)")
    ws, wt = ws / ws.sum(), wt / wt.sum()
    n, m = c.shape
    a_eq = np.zeros((n + m, n * m))
    for i in range(n):
        a_eq[i, i * m:(i + 1) * m] = 1.0
    for j in range(m):
        a_eq[n + j, j::m] = 1.0
    res = linprog(c.reshape(-1), A_eq=a_eq[:-1], b_eq=np.concatenate([ws, wt])[:-1], bounds=(0, None),
                  method="highs")
    if not res.success:  # pragma: no cover - a feasible bounded problem always solves
        raise DistillerError(f"emd_flow: transport problem failed ({res.message})")
    return np.clip(res.x.reshape(n, m), 0.0, None)


#: rules of :func:`emd_update_weights` (``kd.mapping.params.emd_weights``)
EMD_WEIGHT_RULES = ("bert_emd", "bert_emd_linear", "uniform")


def _cost_attention(weights, transported, cheapest, temperature: float, rule: str):
    """One side of :func:`emd_update_weights`: per-unit costs → normalised inverse costs → new weights."""
    import numpy as np

    # c̄_i = (Σ_j F_ij C_ij) / w_i; a layer that holds (numerically) no weight moves no mass, so its per-unit cost is
    # taken as the cheapest pair it could use (its marginal cost) instead of 0/0.
    held = weights > 1e-9
    per_unit = np.where(held, transported / np.where(held, weights, 1.0), cheapest)
    total = float(per_unit.sum())
    if not total > 0.0:  # every pair is free: nothing to prefer, keep the weights
        return weights / weights.sum()
    per_unit = np.maximum(per_unit, total * 1e-12)  # a free layer: a huge but finite score
    score = total / per_unit  # w̄_i = Σ_k c̄_k / c̄_i: dimensionless, so the rule does not see the loss scale
    if rule == "bert_emd_linear":
        return score / score.sum()
    z = score / float(temperature)
    z = np.exp(z - z.max())
    return z / z.sum()


def emd_update_weights(weights_s, weights_t, flow, cost, temperature: float = 1.0, rule: str = "bert_emd"):
    """New layer weights after a step: BERT-EMD's "cost attention" (Li et al., EMNLP 2020, §3 "weight update"), or
    Distiller's fixed uniform weights.

    For a student layer i (teacher layers likewise, summing over the other axis), with the current weights w and the
    step's plan F and costs C:

    1. transported cost per unit of weight ``c̄_i = Σ_j F_ij C_ij / w_i``;
    2. normalised inverse cost ``w̄_i = (Σ_k c̄_k) / c̄_i`` — a ratio of costs, so multiplying every cost by a
       constant leaves it (and the new weights) unchanged;
    3. ``rule="bert_emd"`` (default; the paper's rule): ``w_i = softmax(w̄ / temperature)_i``, i.e.
       ``w_i ∝ exp(w̄_i / T)`` with ``T = kd.mapping.params.emd_temperature`` (BERT-EMD's ``--T_emd``, default 1).
       Code: the ``softmax(... / T)`` at the end of ``get_new_layer_weight`` in Distiller's vendored copy,
       ``src/Distiller/textbrewer/emd.py`` ll. 8-38, and of ``get_new_feature_weight`` in
       ``src/Distiller/textbrewer/distiller_emd.py`` ll. 236-262; steps 1-2 are ``get_new_layer_weight`` in
       lxk00/BERT-EMD ``bert_emd/emd_task_distill.py`` ll. 272-299.
       ``rule="bert_emd_linear"``: ``w_i = w̄_i / Σ_k w̄_k`` (no softmax, the temperature unused) — what
       lxk00/BERT-EMD's released code does since its 2021-08-06 update ("division by addition", README;
       ``emd_task_distill.py`` ll. 301-302).
       ``rule="uniform"``: ``w = 1/L`` on both sides, always — Distiller as run: its call of the update is
       commented out (``distiller_emd.py`` ll. 202-205), so the weights stay at their uniform start (ll. 61-62).

    The bert_emd rules need non-negative costs (a negative one has no meaning as a transport price, e.g. a −MI
    bound): :class:`DistillerError` otherwise. A layer with (numerically) zero weight gets its cheapest pair's cost as
    ``c̄``; a zero ``c̄`` is floored at 10⁻¹² of their sum; all-zero costs keep the weights. Both results are
    distributions.
    """
    import numpy as np

    ws = np.asarray(weights_s, dtype=np.float64)
    wt = np.asarray(weights_t, dtype=np.float64)
    if rule not in EMD_WEIGHT_RULES:
        raise DistillerError(f"emd_update_weights: rule {rule!r} must be one of {', '.join(EMD_WEIGHT_RULES)}")
    if rule == "uniform":
        return np.full(ws.shape, 1.0 / ws.size), np.full(wt.shape, 1.0 / wt.size)
    if isinstance(temperature, bool) or not float(temperature) > 0:
        raise DistillerError(f"emd_update_weights: temperature must be positive, got {temperature!r}")
    c = np.asarray(cost, dtype=np.float64)
    f = np.asarray(flow, dtype=np.float64)
    if c.shape != (ws.size, wt.size) or f.shape != c.shape:
        raise DistillerError(f"emd_update_weights: flow {f.shape} and cost {c.shape} must be ({ws.size}, {wt.size})")
    if not np.all(np.isfinite(c)):
        raise DistillerError("emd_update_weights: the cost matrix has non-finite entries")
    if (c < 0).any():
        raise DistillerError(f"emd_update_weights: rule {rule!r} needs non-negative pair costs, got min {c.min():.4g} "
                             "(use kd.mapping.params.emd_weights: uniform for a loss that can be negative)")
    moved = f * c
    return (_cost_attention(ws, moved.sum(1), c.min(1), temperature, rule),
            _cost_attention(wt, moved.sum(0), c.min(0), temperature, rule))
