"""Intermediate matches: ``kd.intermediate`` (explicit, TextBrewer-style) and ``kd.mapping`` (a strategy of
:data:`~distiller_nlp.kd.mapping.MAPPING_STRATEGIES`) resolved into concrete (teacher layer, student layer) pairs,
checked against both models and the loss registry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from distiller_nlp.config import FEATURES, POOLS, KDConfig, MatchConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import list_losses, loss_kind

logger = logging.getLogger(__name__)


@dataclass
class ResolvedMatch:
    """An intermediate match with layers checked against both models and a module key for its projection/critic."""

    layer_T: int
    layer_S: int
    feature: str
    loss: str
    weight: float
    proj: str
    params: dict
    module_key: Optional[str] = None
    emd: bool = False  # one entry of an EMD mapping's cost matrix (weighted by the transport plan, not summed)
    pool: str = "none"  # hidden states: none (per token), cls or mean (one vector per sequence)

    @property
    def name(self) -> str:
        """The name the match's loss is logged under, e.g. ``hidden_mse/S2-T4`` (``.../cls`` when pooled)."""
        return f"{self.loss}/S{self.layer_S}-T{self.layer_T}" + (f"/{self.pool}" if self.pool != "none" else "")

    @property
    def token_level(self) -> bool:
        """Whether the match compares the models token by token (needs one tokenization for both)."""
        return self.feature != "hidden" or self.pool == "none"


def config_layers(config) -> int:
    """Encoder layers of a config (BERT-family or DistilBERT names)."""
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers"))


def config_hidden(config) -> int:
    """Hidden width of a config."""
    return int(getattr(config, "hidden_size", None) or getattr(config, "dim"))


def config_heads(config) -> int:
    """Attention heads of a config."""
    return int(getattr(config, "num_attention_heads", None) or getattr(config, "n_heads"))


#: keys of ``kd.mapping.params`` that configure the EMD mapping itself (never passed to the loss)
EMD_PARAMS = ("emd_temperature", "emd_weights")


def emd_options(params: dict, loss: str, source: str = "config") -> tuple[str, float]:
    """``(rule, temperature)`` of an EMD mapping's layer-weight update from ``kd.mapping.params``.

    ``emd_weights``: ``bert_emd`` (BERT-EMD's cost attention, softmax with ``emd_temperature``), ``bert_emd_linear``
    (BERT-EMD's released code: normalised inverse costs, no softmax) or ``uniform`` (Distiller: fixed uniform weights);
    see :func:`~distiller_nlp.kd.mapping.emd_update_weights`. Unset, it is ``bert_emd`` — except for ``mi_alpha``,
    whose pair costs are −MI bounds (often negative, where BERT-EMD's rule has no meaning): ``uniform``, as in
    Distiller, the only EMD + MI-α pipeline published. ``emd_temperature`` (default 1.0) must be positive.
    """
    from distiller_nlp.kd.mapping import EMD_WEIGHT_RULES

    can_be_negative = loss == "mi_alpha"
    rule = params.get("emd_weights", "uniform" if can_be_negative else "bert_emd")
    if rule not in EMD_WEIGHT_RULES:
        raise DistillerError(f"kd.mapping.params.emd_weights '{rule}' in {source} must be one of "
                             f"{', '.join(EMD_WEIGHT_RULES)}")
    if can_be_negative and rule != "uniform":
        raise DistillerError(f"kd.mapping.params.emd_weights '{rule}' in {source}: loss {loss} gives negative pair "
                             "costs (−MI bounds), which BERT-EMD's weight update cannot price; use uniform")
    temperature = params.get("emd_temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise DistillerError(f"kd.mapping.params.emd_temperature {temperature!r} in {source} must be a positive number")
    return rule, float(temperature)


def _check_heads(where: str, feature: str, params: dict, teacher_config, student_config, source: str) -> None:
    """``attention_score`` compares teacher and student scores head by head: the head counts must agree, unless the
    match says ``params.num_heads`` (then both models' q/k are split into that many relation heads)."""
    if feature != "attention_scores":
        return
    n = params.get("num_heads")
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DistillerError(f"{where}.params.num_heads {n!r} in {source} must be a positive integer")
        return
    h_t, h_s = config_heads(teacher_config), config_heads(student_config)
    if h_t != h_s:
        raise DistillerError(
            f"{where}: attention_score compares attention scores head by head, but the teacher has {h_t} heads and "
            f"the student {h_s}; set {where}.params.num_heads: N to split both models' q/k into N relation heads "
            "(MiniLMv2-style; N must divide both q/k widths)")


def resolve_matches(kd: KDConfig, teacher_config, student_config, source: str = "config") -> list[ResolvedMatch]:
    """Expand ``kd.mapping`` and validate ``kd.intermediate`` into concrete (teacher layer, student layer) matches."""
    from distiller_nlp.kd.mapping import MAPPING_STRATEGIES, layer_mapping

    lt, ls = config_layers(teacher_config), config_layers(student_config)
    out: list[ResolvedMatch] = []
    known = set(list_losses())

    def check(m: MatchConfig, where: str) -> None:
        if m.feature not in FEATURES:
            raise DistillerError(f"{where}.feature '{m.feature}' in {source} must be one of {', '.join(FEATURES)}")
        if m.loss not in known:
            raise DistillerError(f"{where}.loss '{m.loss}' in {source} is not a registered loss "
                                 f"(known: {', '.join(sorted(known))})")
        # the registry says what each loss compares; a user loss registered without a kind is trusted
        if m.feature == "hidden" and loss_kind(m.loss) not in ("hidden", "any"):
            raise DistillerError(f"{where}.loss '{m.loss}' in {source} does not apply to hidden states "
                                 f"(it compares {loss_kind(m.loss)})")
        if m.feature == "attention_scores" and m.loss != "attention_score":
            raise DistillerError(f"{where}: feature attention_scores needs loss attention_score, got '{m.loss}'")
        if m.proj not in ("auto", "linear", "none"):
            raise DistillerError(f"{where}.proj '{m.proj}' in {source} must be auto, linear or none")
        pool = getattr(m, "pool", "none")
        if pool not in POOLS:
            raise DistillerError(f"{where}.pool '{pool}' in {source} must be one of {', '.join(POOLS)}")
        if pool != "none" and m.feature != "hidden":
            raise DistillerError(f"{where}.pool '{pool}' in {source} applies to hidden states only, not {m.feature}")

    for i, m in enumerate(kd.intermediate):
        where = f"kd.intermediate[{i}]"
        check(m, where)
        _check_heads(where, m.feature, m.params, teacher_config, student_config, source)
        pairs = layer_mapping("explicit", lt, ls, feature=m.feature, pairs=[(m.layer_T, m.layer_S)])
        (t, s), = pairs
        out.append(ResolvedMatch(t, s, m.feature, m.loss, m.weight, m.proj, dict(m.params), module_key=f"m{i}",
                                 pool=m.pool))
    if kd.mapping is not None:
        mp = kd.mapping
        as_match = MatchConfig(feature=mp.feature, loss=mp.loss, weight=mp.weight, proj=mp.proj, params=mp.params,
                               pool=mp.pool)
        check(as_match, "kd.mapping")
        if mp.strategy not in MAPPING_STRATEGIES:
            raise DistillerError(f"kd.mapping.strategy '{mp.strategy}' in {source} must be one of "
                                 f"{', '.join(MAPPING_STRATEGIES.names())}")
        params = {k: v for k, v in mp.params.items() if k not in EMD_PARAMS}
        _check_heads("kd.mapping", mp.feature, params, teacher_config, student_config, source)
        if MAPPING_STRATEGIES.meta(mp.strategy).get("transport"):
            emd_options(mp.params, mp.loss, source)
            # EMD: the strategy's pairs form the cost matrix, weighted by the transport plan; the embeddings (hidden
            # layer 0) are matched directly. MI-α: one critic (+ baseline) per (student, teacher) pair and one for the
            # embeddings, so each pair's cost is its own estimate (Distiller: experiments/distiller.py ll. 146-229,
            # used as critic[s·L_T + t] and critic[-1] in src/Distiller/textbrewer/distiller_emd.py ll. 171, 213);
            # projections are per student layer (Distiller's projs[s]).
            def module_key(s: int, t: int) -> str:
                return f"mapping_S{s}_T{t}" if mp.loss == "mi_alpha" else f"mapping_S{s}"

            if mp.feature == "hidden" and mp.include_embeddings:
                out.append(ResolvedMatch(0, 0, mp.feature, mp.loss, mp.weight, mp.proj, dict(params),
                                         module_key=module_key(0, 0), pool=mp.pool))
            for t, s in MAPPING_STRATEGIES.get(mp.strategy)(lt, ls, mp.feature):
                out.append(ResolvedMatch(t, s, mp.feature, mp.loss, mp.weight, mp.proj, dict(params),
                                         module_key=module_key(s, t), emd=True, pool=mp.pool))
            return out
        pairs = layer_mapping(mp.strategy, lt, ls, feature=mp.feature)
        for t, s in pairs:
            if mp.feature == "hidden" and s == 0 and not mp.include_embeddings:
                continue
            # skip/last: one critic shared by every layer of a mapping (as Distiller does); projections are per layer.
            key = "mapping" if mp.loss == "mi_alpha" else f"mapping_S{s}"
            out.append(ResolvedMatch(t, s, mp.feature, mp.loss, mp.weight, mp.proj, dict(params), module_key=key,
                                     pool=mp.pool))
    return out


