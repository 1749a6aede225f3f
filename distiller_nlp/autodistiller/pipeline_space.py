"""The Distiller pipeline search space: one YAML file, used by ``distiller-nlp hpo`` and ``distiller-nlp recommend``.

A pipeline is a dict of the canonical parameters below (``params``). A space file gives, for each parameter it
searches, either ``choices`` (a list), a range (``low``/``high``, optional ``log: true`` or ``step``; ``int: true``
for integers) or a fixed ``value``; parameters it does not name keep the base recipe's value::

    name: distiller
    params:
      augment: {choices: [none, random, contextual, random+contextual]}   # ordered stages joined by '+'
      aug_p: {choices: [0.1, 0.3, 0.5]}
      pred_loss: {choices: [kd, soft_ce, logits_mse]}
      inter_loss: {choices: [none, hidden_mse, hidden_ce, cosine, pkd, mi_alpha]}
      mi_alpha: {choices: [0.0, 0.1, 0.5, 0.7, 0.9, 1.0]}
      lr: {low: 5.0e-5, high: 5.0e-4, log: true}

=====================  ================================  ==============================================
parameter              recipe key                        searched only when
=====================  ================================  ==============================================
``augment``            ``augment.stages``                always ('none' or stages joined by '+')
``aug_p``              ``augment.aug_p``                 ``augment`` is not 'none'
``mixup``              ``kd.mixup``                      always
``pred_loss``          ``kd.pred_loss``                  always
``temperature``        ``kd.temperature``                ``pred_loss`` is not 'none'
``kd_weight``          ``kd.kd_weight``                  ``pred_loss`` is not 'none'
``hard_label_weight``  ``kd.hard_label_weight``          always
``inter_loss``         ``kd.mapping.loss``               always ('none' = no intermediate objective)
``mi_alpha``           ``kd.mapping.params.alpha``       ``inter_loss`` is 'mi_alpha'
``mapping``            ``kd.mapping.strategy``           ``inter_loss`` is not 'none'
``inter_weight``       ``kd.mapping.weight``             ``inter_loss`` is not 'none'
``lr``                 ``train.lr``                      always
=====================  ================================  ==============================================

Loss and stage names are the registries' canonical names (``distiller_nlp.core.losses.list_losses()``,
``distiller_nlp.augment.list_augmenters()``); an unknown one is an error naming it. :func:`pipeline_params` reads
the same parameters back from any recipe, so runs made outside a search describe their pipeline the same way.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from distiller_nlp.core.errors import DistillerError

NONE = "none"
# parameter -> (recipe key, value type)
PARAMS: dict[str, tuple[str, type]] = {
    "augment": ("augment.stages", str),
    "aug_p": ("augment.aug_p", float),
    "mixup": ("kd.mixup", bool),
    "pred_loss": ("kd.pred_loss", str),
    "temperature": ("kd.temperature", float),
    "kd_weight": ("kd.kd_weight", float),
    "hard_label_weight": ("kd.hard_label_weight", float),
    "inter_loss": ("kd.mapping.loss", str),
    "mi_alpha": ("kd.mapping.params.alpha", float),
    "mapping": ("kd.mapping.strategy", str),
    "inter_weight": ("kd.mapping.weight", float),
    "lr": ("train.lr", float),
}


def default_space_path() -> Path:
    """The shipped ``spaces/distiller.yaml`` (package data; the space ``hpo`` and ``recommend`` use by default)."""
    from distiller_nlp.resources import SPACES

    return SPACES / "distiller.yaml"


def is_active(name: str, params: dict) -> bool:
    """Whether parameter ``name`` matters given the other (already chosen) parameters."""
    if name == "aug_p":
        return params.get("augment", NONE) != NONE
    if name in ("temperature", "kd_weight"):
        return params.get("pred_loss", "kd") != NONE
    if name == "mi_alpha":
        return params.get("inter_loss", NONE) == "mi_alpha"
    if name in ("mapping", "inter_weight"):
        return params.get("inter_loss", NONE) != NONE
    return True


@dataclass
class ParamSpec:
    """How one parameter is searched: ``choices``, a ``low``/``high`` range (``log``, ``step``, ``int``) or a fixed
    ``value``."""

    name: str
    choices: Optional[list] = None
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    integer: bool = False
    value: Any = None

    @property
    def fixed(self) -> bool:
        """True when the parameter has a fixed value (no choices, no range)."""
        return self.choices is None and self.low is None

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can take (a fixed parameter takes only its value)."""
        if self.fixed:
            return value == self.value
        if self.choices is not None:
            return value in self.choices
        return isinstance(value, (int, float)) and float(self.low) <= float(value) <= float(self.high)

    def suggest(self, trial) -> Any:
        """The value an Optuna trial proposes (``suggest_categorical`` / ``suggest_float`` / ``suggest_int``)."""
        if self.fixed:
            return self.value
        if self.choices is not None:
            return trial.suggest_categorical(self.name, self.choices)
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)

    def sample(self, rng: np.random.Generator) -> Any:
        """A uniformly drawn value (log-uniform for ``log`` ranges)."""
        if self.fixed:
            return self.value
        if self.choices is not None:
            return self.choices[int(rng.integers(len(self.choices)))]
        lo, hi = float(self.low), float(self.high)
        if self.step:
            n = int(math.floor((hi - lo) / self.step + 1e-9)) + 1
            v = lo + self.step * int(rng.integers(n))
        elif self.log:
            v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        else:
            v = rng.uniform(lo, hi)
        return int(round(v)) if self.integer else float(v)


class SearchSpace:
    """A validated pipeline space (see the module docstring); ``params`` maps parameter names to :class:`ParamSpec`."""

    def __init__(self, params: dict[str, ParamSpec], name: str = "distiller", source: str = "the space"):
        self.params = params
        self.name = name
        self.source = source

    # ------------------------------------------------------------------------------------------------ sampling
    def _order(self) -> list[str]:
        return [p for p in PARAMS if p in self.params]

    def suggest(self, trial) -> dict:
        """The pipeline an Optuna trial proposes (conditional parameters only where they matter)."""
        out: dict = {}
        for name in self._order():
            if is_active(name, out):
                out[name] = self.params[name].suggest(trial)
        return out

    def sample(self, rng: np.random.Generator) -> dict:
        """One pipeline drawn from the space with ``rng`` (inactive parameters omitted)."""
        out: dict = {}
        for name in self._order():
            if is_active(name, out):
                out[name] = self.params[name].sample(rng)
        return out

    def candidates(self, n: int, seed: int = 0, include: Optional[list] = None) -> list[dict]:
        """``n`` distinct pipelines: ``include`` first (e.g. the default), then seeded random draws."""
        rng = np.random.default_rng(seed)
        seen, out = set(), []
        for p in list(include or []):
            key = pipeline_key(p)
            if key not in seen:
                seen.add(key)
                out.append(dict(p))
        tries = 0
        while len(out) < n and tries < 50 * n:
            tries += 1
            p = self.sample(rng)
            key = pipeline_key(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
        return out

    def to_dict(self) -> dict:
        """The space as the mapping a space file holds."""
        d = {}
        for name, s in self.params.items():
            if s.choices is not None:
                d[name] = {"choices": list(s.choices)}
            elif s.low is not None:
                d[name] = {"low": s.low, "high": s.high, **({"log": True} if s.log else {}),
                           **({"step": s.step} if s.step else {}), **({"int": True} if s.integer else {})}
            else:
                d[name] = {"value": s.value}
        return {"name": self.name, "params": d}


def pipeline_key(params: dict) -> str:
    """A stable short id of a pipeline (the same dict in any key order gives the same id)."""
    blob = json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ validation

def _check_value(name: str, value: Any, source: str) -> Any:
    from distiller_nlp.augment import list_augmenters
    from distiller_nlp.core.losses import list_losses, loss_kind, prediction_losses
    from distiller_nlp.kd.mapping import MAPPING_STRATEGIES

    typ = PARAMS[name][1]
    where = f"params.{name} in {source}"
    if typ is bool:
        if not isinstance(value, bool):
            raise DistillerError(f"{where}: '{value}' must be true or false")
        return value
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DistillerError(f"{where}: '{value}' must be a number")
        value = float(value)
        if name in ("aug_p",) and not 0 < value <= 1:
            raise DistillerError(f"{where}: aug_p {value} must be in (0, 1]")
        if name == "mi_alpha" and not 0 <= value <= 1:
            raise DistillerError(f"{where}: mi_alpha {value} must be in [0, 1]")
        if name in ("temperature", "lr") and value <= 0:
            raise DistillerError(f"{where}: {name} {value} must be positive")
        if value < 0:
            raise DistillerError(f"{where}: {name} {value} must not be negative")
        return value
    value = str(value)
    if name == "augment":
        if value != NONE:
            known = list_augmenters()
            for stage in value.split("+"):
                if stage not in known:
                    raise DistillerError(f"{where}: unknown augmentation stage '{stage}' (stages: {', '.join(known)}; "
                                         "join a pipeline with '+', e.g. random+contextual)")
    elif name == "pred_loss":
        known = [*prediction_losses(), NONE]
        if value not in known:
            raise DistillerError(f"{where}: unknown prediction loss '{value}' ({', '.join(known)})")
    elif name == "inter_loss":
        hidden = [n for n in list_losses() if loss_kind(n) == "hidden"]
        if value != NONE and value not in hidden:
            raise DistillerError(f"{where}: unknown intermediate loss '{value}' (none, {', '.join(hidden)})")
    elif name == "mapping":
        if value not in MAPPING_STRATEGIES:
            raise DistillerError(f"{where}: unknown mapping '{value}' ({', '.join(MAPPING_STRATEGIES.names())})")
    return value


def _param_spec(name: str, raw: Any, source: str) -> ParamSpec:
    where = f"params.{name} in {source}"
    if name not in PARAMS:
        raise DistillerError(f"{where}: unknown parameter (parameters: {', '.join(PARAMS)})")
    if not isinstance(raw, dict):
        raw = {"choices": raw} if isinstance(raw, list) else {"value": raw}
    allowed = {"choices", "low", "high", "log", "step", "int", "value"}
    extra = set(raw) - allowed
    if extra:
        raise DistillerError(f"{where}: unknown key '{sorted(extra)[0]}' (keys: choices, low/high/log/step/int, value)")
    kinds = [k for k in ("choices", "low", "value") if k in raw]
    if len(kinds) != 1 or (("low" in raw) != ("high" in raw)):
        raise DistillerError(f"{where}: give exactly one of 'choices', 'low'+'high' or 'value'")
    if "choices" in raw:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise DistillerError(f"{where}: 'choices' must be a non-empty list")
        choices = [_check_value(name, c, source) for c in choices]
        return ParamSpec(name, choices=choices)
    if "value" in raw:
        return ParamSpec(name, value=_check_value(name, raw["value"], source))
    if PARAMS[name][1] is not float:
        raise DistillerError(f"{where}: a range needs a numeric parameter; use 'choices'")
    low, high = _check_value(name, raw["low"], source), _check_value(name, raw["high"], source)
    if low >= high:
        raise DistillerError(f"{where}: low {low} must be below high {high}")
    log = bool(raw.get("log", False))
    step = raw.get("step")
    if log and step:
        raise DistillerError(f"{where}: 'log' and 'step' cannot be combined")
    return ParamSpec(name, low=low, high=high, log=log, step=float(step) if step else None,
                     integer=bool(raw.get("int", False)))


def space_from_dict(data: Any, source: str = "the space") -> SearchSpace:
    """Validate a parsed space (see the module docstring) into a :class:`SearchSpace`."""
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict) or not data["params"]:
        raise DistillerError(f"{source} must be a mapping with a non-empty 'params' mapping")
    extra = set(data) - {"name", "params"}
    if extra:
        raise DistillerError(f"unknown key '{sorted(extra)[0]}' in {source} (keys: name, params)")
    params = {name: _param_spec(name, raw, source) for name, raw in data["params"].items()}
    return SearchSpace(params, name=str(data.get("name", "distiller")), source=source)


def load_space(path: Optional[str] = None) -> SearchSpace:
    """Read and validate a space YAML: a path, a shipped space's name (``distiller``) or the default
    :func:`default_space_path`."""
    from distiller_nlp.core.config import read_yaml
    from distiller_nlp.resources import SPACES

    path = str(path or default_space_path())
    if not os.path.isfile(path) and (SPACES / f"{path.removesuffix('.yaml')}.yaml").is_file():
        path = str(SPACES / f"{path.removesuffix('.yaml')}.yaml")
    if not os.path.isfile(path):
        raise DistillerError(f"search space file not found: {path}")
    return space_from_dict(read_yaml(path), source=path)


# ------------------------------------------------------------------------------------------------ recipes

def apply_params(cfg, params: dict):
    """A copy of the recipe ``cfg`` (a :class:`~distiller_nlp.config.DistillConfig`) running pipeline ``params``.

    Parameters not in ``params`` keep the recipe's values; ``inter_loss: none`` removes the mapping (explicit
    ``kd.intermediate`` matches of the recipe stay); ``augment: none`` removes the augmentation stages.
    """
    from distiller_nlp.config import MappingConfig

    out = copy.deepcopy(cfg)
    for name in params:
        if name not in PARAMS:
            raise DistillerError(f"unknown pipeline parameter '{name}' (parameters: {', '.join(PARAMS)})")
    p = dict(params)
    if "augment" in p:
        out.augment.stages = [] if p["augment"] == NONE else str(p["augment"]).split("+")
    if "aug_p" in p and out.augment.stages:
        out.augment.aug_p = float(p["aug_p"])
    if "mixup" in p:
        out.kd.mixup = bool(p["mixup"])
    for name in ("pred_loss", "temperature", "kd_weight", "hard_label_weight"):
        if name in p:
            setattr(out.kd, name, p[name] if name == "pred_loss" else float(p[name]))
    if "inter_loss" in p:
        if p["inter_loss"] == NONE:
            out.kd.mapping = None
        else:
            m = out.kd.mapping or MappingConfig()
            if m.loss != p["inter_loss"]:
                m.params = {}
            m.loss = p["inter_loss"]
            out.kd.mapping = m
    if out.kd.mapping is not None:
        if "mapping" in p:
            out.kd.mapping.strategy = p["mapping"]
        if "inter_weight" in p:
            out.kd.mapping.weight = float(p["inter_weight"])
        if "mi_alpha" in p and out.kd.mapping.loss == "mi_alpha":
            out.kd.mapping.params = {**out.kd.mapping.params, "alpha": float(p["mi_alpha"])}
    if "lr" in p:
        out.train.lr = float(p["lr"])
    return out


def pipeline_params(cfg) -> dict:
    """The canonical parameters of any recipe (inactive ones omitted), e.g. for a meta-dataset record."""
    from distiller_nlp.config import resolve_kd_defaults
    from distiller_nlp.core.losses.mutual_info import MI_ALPHA_DEFAULT

    kd, a = resolve_kd_defaults(cfg.kd), cfg.augment
    out: dict = {"augment": "+".join(a.stages) if a.stages else NONE}
    if a.stages:
        out["aug_p"] = float(a.aug_p)
    out["mixup"] = bool(kd.mixup)
    out["pred_loss"] = kd.pred_loss
    if kd.pred_loss != NONE:
        out["temperature"] = float(kd.temperature)
        out["kd_weight"] = float(kd.kd_weight)
    out["hard_label_weight"] = float(kd.hard_label_weight)
    m = kd.mapping
    if m is None and kd.intermediate:  # explicit matches: described by their first loss
        first = kd.intermediate[0]
        out["inter_loss"] = first.loss
        if first.loss == "mi_alpha":
            out["mi_alpha"] = float(first.params.get("alpha", MI_ALPHA_DEFAULT))
        out["mapping"] = "explicit"
        out["inter_weight"] = float(first.weight)
    elif m is None:
        out["inter_loss"] = NONE
    else:
        out["inter_loss"] = m.loss
        if m.loss == "mi_alpha":
            out["mi_alpha"] = float(m.params.get("alpha", MI_ALPHA_DEFAULT))
        out["mapping"] = m.strategy
        out["inter_weight"] = float(m.weight)
    if cfg.train.lr > 0:  # --lr auto (0) before the run has chosen: no value to record or enqueue
        out["lr"] = float(cfg.train.lr)
    return out


def default_pipeline(cfg) -> dict:
    """The baseline every recommendation is measured against: the recipe with logit KD only (its prediction loss,
    temperature and weights; no augmentation, no MixUp, no intermediate objective)."""
    p = pipeline_params(cfg)
    p.update({"augment": NONE, "mixup": False, "inter_loss": NONE})
    if p["pred_loss"] == NONE:
        p["pred_loss"] = "kd"
        from distiller_nlp.config import resolve_kd_defaults

        p["temperature"], p["kd_weight"] = float(resolve_kd_defaults(cfg.kd).temperature), 1.0
    for name in ("aug_p", "mi_alpha", "mapping", "inter_weight"):
        p.pop(name, None)
    return p


def describe_pipeline(params: dict) -> str:
    """One line, e.g. ``random+contextual(p=0.3) · mixup · kd T=2 · mi_alpha(0.9)/skip ×1 · lr 1e-04``."""
    parts = []
    if params.get("augment", NONE) != NONE:
        parts.append(f"{params['augment']}(p={params.get('aug_p', '?')})")
    if params.get("mixup"):
        parts.append("mixup")
    pl = params.get("pred_loss", "kd")
    if pl != NONE:
        parts.append(" ".join([pl] + [f"{k}={params[n]}" for k, n in (("T", "temperature"), ("w", "kd_weight"))
                                      if n in params]))
    if params.get("hard_label_weight"):
        parts.append(f"hard {params['hard_label_weight']}")
    il = params.get("inter_loss", NONE)
    if il != NONE:
        alpha = f"({params['mi_alpha']})" if il == "mi_alpha" and "mi_alpha" in params else ""
        parts.append(f"{il}{alpha}/{params.get('mapping', 'skip')}"
                     + (f" ×{params['inter_weight']}" if "inter_weight" in params else ""))
    if "lr" in params:
        parts.append(f"lr {params['lr']:.0e}")
    return " · ".join(parts) or "(recipe as is)"
