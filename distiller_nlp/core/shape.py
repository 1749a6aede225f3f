"""One shape grammar for encoder students: ``--student-shape`` (distiller-nlp) and ``--arch`` (autodistil).

A shape is written ``key=value`` pairs joined by commas, e.g. ``layers=3,hidden=256,heads=8,intermediate=1024``.
Keys (any case): ``layers``/``L``/``num_hidden_layers``, ``hidden``/``H``/``hidden_size``,
``heads``/``A``/``num_attention_heads``, ``intermediate``/``I``/``ffn``/``intermediate_size`` (the FFN width),
``mlp_ratio``/``R`` (the FFN width as a multiple of ``hidden``) and ``head_dim``/``d``. :func:`parse_shape` reads
the grammar for both; :class:`StudentShape` is the distiller-nlp student, ``autodistil.subspaces.Arch`` the
AutoDistil search point (``mlp_ratio`` instead of ``intermediate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from distiller_nlp.core.errors import DistillerError

__all__ = ["SHAPE_ALIASES", "parse_shape", "StudentShape", "parse_student_shape"]

#: Every key of the shape grammar and its aliases (lower case) -> canonical name.
SHAPE_ALIASES = {
    "layers": "layers", "l": "layers", "num_hidden_layers": "layers",
    "hidden": "hidden", "h": "hidden", "hidden_size": "hidden",
    "heads": "heads", "a": "heads", "num_attention_heads": "heads",
    "intermediate": "intermediate", "i": "intermediate", "ffn": "intermediate", "intermediate_size": "intermediate",
    "mlp_ratio": "mlp_ratio", "r": "mlp_ratio",
    "head_dim": "head_dim", "d": "head_dim",
}


def parse_shape(spec: Any, *, allowed: tuple, what: str = "student shape", noun: str = "") -> dict[str, Any]:
    """Read the shape grammar: ``"k=v,k=v"`` or a mapping → ``{canonical key: raw value}``.

    ``allowed``: the canonical keys this kind of shape takes. An unknown key (``{what}: unknown {noun}key``), a
    repeated key (also through an alias) or a part without ``=`` is a :class:`DistillerError` naming it; values are
    returned as given (the caller converts and checks them)."""
    items: list[tuple[str, Any]] = []
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    elif isinstance(spec, str):
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise DistillerError(f"{what}: '{part}' is not key=value (in '{spec}')")
            key, value = part.split("=", 1)
            items.append((key.strip(), value.strip()))
    else:
        raise DistillerError(f"{what} must be a string like 'layers=3,hidden=256,heads=8', got {spec!r}")
    values: dict[str, Any] = {}
    for key, value in items:
        canon = SHAPE_ALIASES.get(key.lower())
        if canon is None or canon not in allowed:
            prefix = f"{what}: " if not noun else ""
            raise DistillerError(f"{prefix}unknown {noun}key '{key}' (use {', '.join(allowed)})")
        if canon in values:
            raise DistillerError(f"{what}: '{canon}' given twice (key '{key}')")
        values[canon] = value
    return values


def _check_positive(key: str, value: Any, what: str = "student shape") -> int:
    if isinstance(value, bool):
        raise DistillerError(f"{what}: {key}={value!r} is not an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise DistillerError(f"{what}: {key}={value!r} is not an integer") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise DistillerError(f"{what}: {key}={value!r} is not an integer")
        value = int(value)
    if not isinstance(value, int):
        raise DistillerError(f"{what}: {key}={value!r} is not an integer")
    if value <= 0:
        raise DistillerError(f"{what}: {key}={value} must be positive")
    return value


@dataclass
class StudentShape:
    """A BERT-family encoder shape: ``layers`` (L), ``hidden`` (H), ``heads`` (A), ``intermediate`` (I, FFN width)
    and ``head_dim`` (d; None → H // A, which then requires H divisible by A). ``str(shape)`` is the flag form
    ``layers=3,hidden=256,heads=8,intermediate=1024`` (``head_dim`` appears only when it differs from H // A)."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    head_dim: Optional[int] = None

    def __post_init__(self) -> None:
        self.layers = _check_positive("layers", self.layers)
        self.hidden = _check_positive("hidden", self.hidden)
        self.heads = _check_positive("heads", self.heads)
        self.intermediate = _check_positive("intermediate", self.intermediate)
        if self.head_dim is None:
            if self.hidden % self.heads != 0:
                raise DistillerError(
                    f"student shape: hidden={self.hidden} is not divisible by heads={self.heads}"
                )
            self.head_dim = self.hidden // self.heads
        else:
            self.head_dim = _check_positive("head_dim", self.head_dim)

    @property
    def attention_width(self) -> int:
        """A·d, the width of Q/K/V."""
        return self.heads * int(self.head_dim)

    def as_dict(self) -> dict[str, int]:
        """``{"layers", "hidden", "heads", "intermediate", "head_dim"}``."""
        return {
            "layers": self.layers,
            "hidden": self.hidden,
            "heads": self.heads,
            "intermediate": self.intermediate,
            "head_dim": int(self.head_dim),
        }

    def __str__(self) -> str:
        text = f"layers={self.layers},hidden={self.hidden},heads={self.heads},intermediate={self.intermediate}"
        if self.hidden % self.heads != 0 or self.head_dim != self.hidden // self.heads:
            text += f",head_dim={self.head_dim}"
        return text


def parse_student_shape(spec: Any) -> StudentShape:
    """Parse ``"layers=3,hidden=256,heads=8,intermediate=1024"`` (or a mapping, or a StudentShape) into a StudentShape.

    The grammar of :func:`parse_shape` with keys ``layers``, ``hidden``, ``heads``, ``intermediate`` (default
    4 × hidden) and optionally ``head_dim``. An unknown, repeated or missing key, a non-integer or non-positive
    value, or hidden not divisible by heads (without head_dim) is a DistillerError naming it.
    """
    if isinstance(spec, StudentShape):
        return spec
    raw = parse_shape(spec, allowed=("layers", "hidden", "heads", "intermediate", "head_dim"))
    values = {k: _check_positive(k, v) for k, v in raw.items()}
    for required in ("layers", "hidden", "heads"):
        if required not in values:
            raise DistillerError(f"student shape: missing key '{required}' in '{spec}'")
    values.setdefault("intermediate", 4 * values["hidden"])
    return StudentShape(**values)
