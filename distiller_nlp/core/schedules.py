"""Schedules for KD hyper-parameters (temperature, loss weights) over training progress p ∈ [0, 1].

``constant``: v₀; ``linear``: v₀ + (v₁ − v₀)·p; ``cosine``: v₀ + (v₁ − v₀)·(1 − cos πp)/2 (starts and ends flat).
"""

from __future__ import annotations

import math

from distiller_nlp.core.errors import DistillerError

KINDS = ("constant", "linear", "cosine")


def schedule_value(kind: str, start: float, final: float | None, progress: float) -> float:
    """The scheduled value at ``progress`` (clamped to [0, 1]); ``final`` None means "stay at ``start``"."""
    if kind not in KINDS:
        raise DistillerError(f"schedule kind '{kind}' must be one of {', '.join(KINDS)}")
    if kind == "constant" or final is None:
        return float(start)
    p = min(1.0, max(0.0, float(progress)))
    frac = p if kind == "linear" else 0.5 * (1.0 - math.cos(math.pi * p))
    return float(start) + (float(final) - float(start)) * frac
