"""Student architectures and the sub-spaces AutoDistil searches.

An :class:`Arch` is one student shape ``(layers, hidden, heads, mlp_ratio, head_dim)``: the attention width is
``heads × head_dim`` (it may differ from ``hidden``), the FFN width is ``round(hidden × mlp_ratio)``. A
:class:`SubSpace` is the Cartesian product of four value lists (AutoDistil's "few-shot" NAS trains one weight-sharing
SuperLM per compact sub-space instead of one for the whole space). ``--arch`` is written in the one shape grammar of
:mod:`distiller_nlp.core.shape` (:func:`parse_arch`).

Built-in sub-spaces (:data:`BUILTIN_SPACES`):

- the paper's three BERT-base sub-spaces (head dim 64, 256 subnets each) ``bert-base``, ``bert-small``,
  ``bert-tiny`` and the K=1 one-shot space ``bert-oneshot`` (L 1–12, A 1–12, H 64–768 step 64, R 0.5–4.0 step 0.5,
  13,824 subnets, from the released code's ablation);
- three sub-spaces for the packaged MiniLM-L6-H384 teacher (head dim 32) ``minilm-base``, ``minilm-small``,
  ``minilm-tiny`` and ``minilm-oneshot`` (L 1–6, A 1–12, H 64–384 step 64, R 1–4 step 1).

User sub-spaces are YAML files::

    name: my-space
    head_dim: 32
    layers: [2, 3, 4]
    heads: [4, 6]
    hidden: [128, 192]
    mlp_ratio: [2.0, 3.0]

FLOPs follow :mod:`distiller_nlp.core.flops`: by default the ``exact`` convention (FLOPs = 2 × multiply-adds, encoder
only, one sequence); ``Arch.flops(seq_len, convention="autodistil")`` gives AutoDistil's own formula (multiply-adds,
attention counted hidden × heads / 12 wide), the one its paper's budgets and reported FLOPs use.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Iterable, Iterator, Optional

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.shape import parse_shape

__all__ = [
    "Arch",
    "SubSpace",
    "BUILTIN_SPACES",
    "FAMILIES",
    "get_space",
    "load_space",
    "resolve_spaces",
    "parse_arch",
    "ARCH_KEYS",
    "list_spaces",
    "family_for",
]


@dataclass(frozen=True, order=True)
class Arch:
    """One student shape. ``intermediate`` = round(hidden × mlp_ratio); attention width = heads × head_dim."""

    layers: int
    hidden: int
    heads: int
    mlp_ratio: float
    head_dim: int = 64

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise DistillerError(f"Arch.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool) or self.mlp_ratio <= 0:
            raise DistillerError(f"Arch.mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))

    @property
    def intermediate(self) -> int:
        """FFN width: ``round(hidden × mlp_ratio)`` (at least 1)."""
        return max(1, int(round(self.hidden * self.mlp_ratio)))

    @property
    def attention_width(self) -> int:
        """Width of Q/K/V: ``heads × head_dim``."""
        return self.heads * self.head_dim

    @property
    def is_plain_bert(self) -> bool:
        """True when the student exports as a plain ``BertModel`` (heads × head_dim = hidden)."""
        return self.attention_width == self.hidden

    def flops(self, seq_len: int = 128, convention: str = "exact") -> int:
        """Encoder cost of one sequence of ``seq_len`` tokens in a FLOPs ``convention``
        (:data:`distiller_nlp.core.flops.FLOPS_CONVENTIONS`): ``exact`` (default) = FLOPs = 2 × multiply-adds of the
        real matmuls (attention heads × head_dim wide); ``autodistil`` = multiply-adds by AutoDistil's formula
        (attention hidden × heads / 12 wide, FFN hidden × mlp_ratio)."""
        from distiller_nlp.core.flops import encoder_flops, flops

        if convention == "exact":  # the hot path of search and training: no shape parsing
            return encoder_flops(self.layers, self.hidden, self.heads, self.intermediate, seq_len,
                                 head_dim=self.head_dim)
        return flops(self, seq_len, convention)

    def params(self, vocab_size: int = 30522, max_position: int = 512, type_vocab: int = 2) -> int:
        """Parameters of the exported ``BertModel``-like student (embeddings, encoder, pooler)."""
        from distiller_nlp.core.flops import count_encoder_params

        return count_encoder_params(self.layers, self.hidden, self.heads, self.intermediate, head_dim=self.head_dim,
                                    vocab_size=vocab_size, max_position=max_position, type_vocab=type_vocab)

    def to_dict(self) -> dict:
        """The five fields plus the derived ``intermediate``."""
        return {**dataclasses.asdict(self), "intermediate": self.intermediate}

    def __str__(self) -> str:
        return (f"layers={self.layers},hidden={self.hidden},heads={self.heads},mlp_ratio={self.mlp_ratio:g},"
                f"head_dim={self.head_dim}")


ARCH_KEYS = ("layers", "hidden", "heads", "mlp_ratio", "head_dim")


def parse_arch(spec: Any, head_dim: Optional[int] = None) -> Arch:
    """``"layers=4,hidden=192,heads=6,mlp_ratio=3"`` (optional ``head_dim=``), a mapping or an Arch → Arch.

    Read with the one shape grammar, :func:`distiller_nlp.core.shape.parse_shape` (its aliases work too, e.g.
    ``L=4,H=192,A=6,R=3``), restricted to :data:`ARCH_KEYS`. ``head_dim`` is the default when the spec has none
    (64 when that is None as well). An unknown, repeated or missing key, or a value that is not a number, is a
    DistillerError naming it.
    """
    if isinstance(spec, Arch):
        return spec
    if not isinstance(spec, (str, Mapping)):
        raise DistillerError(f"cannot read an architecture from {spec!r}")
    values = parse_shape(spec, allowed=ARCH_KEYS, what="arch", noun="arch ")
    missing = sorted({"layers", "hidden", "heads", "mlp_ratio"} - set(values))
    if missing:
        raise DistillerError(f"arch misses key(s) {', '.join(missing)}")
    try:
        return Arch(
            layers=int(values["layers"]),
            hidden=int(values["hidden"]),
            heads=int(values["heads"]),
            mlp_ratio=float(values["mlp_ratio"]),
            head_dim=int(values.get("head_dim", head_dim or 64)),
        )
    except (TypeError, ValueError) as exc:
        raise DistillerError(f"arch {values}: {exc}") from None


def _values(name: str, values: Any, kind: type, source: str) -> tuple:
    if not isinstance(values, (list, tuple)) or not values:
        raise DistillerError(f"sub-space key '{name}' in {source} must be a non-empty list of values")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise DistillerError(f"sub-space key '{name}' in {source}: {v!r} is not a positive number")
        if kind is int and float(v) != int(v):
            raise DistillerError(f"sub-space key '{name}' in {source}: {v!r} is not an integer")
        out.append(kind(v))
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class SubSpace:
    """A compact search space: the Cartesian product of ``layers × heads × hidden × mlp_ratio`` at fixed head dim."""

    name: str
    layers: tuple
    heads: tuple
    hidden: tuple
    mlp_ratio: tuple
    head_dim: int = 64
    plain_bert: bool = False

    def __post_init__(self) -> None:
        src = f"sub-space '{self.name}'"
        object.__setattr__(self, "layers", _values("layers", self.layers, int, src))
        object.__setattr__(self, "heads", _values("heads", self.heads, int, src))
        object.__setattr__(self, "hidden", _values("hidden", self.hidden, int, src))
        object.__setattr__(self, "mlp_ratio", _values("mlp_ratio", self.mlp_ratio, float, src))
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise DistillerError(f"{src}: head_dim must be a positive integer, got {self.head_dim!r}")
        if self.plain_bert and not any(self._plain_pairs()):
            raise DistillerError(
                f"{src} has no plain-BERT shape (heads × head_dim = hidden with head_dim {self.head_dim}; "
                f"heads {list(self.heads)}, hidden {list(self.hidden)})"
            )

    def _plain_pairs(self) -> Iterator[tuple[int, int]]:
        for a, h in itertools.product(self.heads, self.hidden):
            if a * self.head_dim == h:
                yield a, h

    def restrict_plain_bert(self) -> "SubSpace":
        """The same space restricted to shapes that export as a plain BERT (``--plain-bert``)."""
        return dataclasses.replace(self, plain_bert=True)

    def __iter__(self) -> Iterator[Arch]:
        for layers, heads, hidden, ratio in itertools.product(self.layers, self.heads, self.hidden, self.mlp_ratio):
            if self.plain_bert and heads * self.head_dim != hidden:
                continue
            yield Arch(layers, hidden, heads, ratio, self.head_dim)

    def __len__(self) -> int:
        if self.plain_bert:
            return len(self.layers) * len(self.mlp_ratio) * sum(1 for _ in self._plain_pairs())
        return len(self.layers) * len(self.heads) * len(self.hidden) * len(self.mlp_ratio)

    def __contains__(self, arch: object) -> bool:
        return (
            isinstance(arch, Arch)
            and arch.layers in self.layers
            and arch.heads in self.heads
            and arch.hidden in self.hidden
            and arch.mlp_ratio in self.mlp_ratio
            and arch.head_dim == self.head_dim
            and (not self.plain_bert or arch.is_plain_bert)
        )

    def archs(self) -> list[Arch]:
        """Every subnet of the space, in iteration order (layers, heads, hidden, mlp_ratio)."""
        return list(self)

    def largest(self) -> Arch:
        """The subnet with the most parameters (every dimension at its maximum)."""
        return max(self, key=lambda a: (a.params(), a.flops()))

    def smallest(self) -> Arch:
        """The subnet with the fewest parameters."""
        return min(self, key=lambda a: (a.params(), a.flops()))

    def to_dict(self) -> dict:
        """The YAML/``superlm.json`` form of the space (read back by :meth:`from_dict`)."""
        return {
            "name": self.name,
            "head_dim": self.head_dim,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "hidden": list(self.hidden),
            "mlp_ratio": list(self.mlp_ratio),
            "plain_bert": self.plain_bert,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "sub-space") -> "SubSpace":
        """A space from its mapping form; unknown or missing keys are errors naming them and ``source`` (the name
        defaults to the file name of ``source``)."""
        if not isinstance(data, dict):
            raise DistillerError(f"{source} must hold a mapping, got {type(data).__name__}")
        known = {"name", "head_dim", "layers", "heads", "hidden", "mlp_ratio", "plain_bert"}
        for key in data:
            if key not in known:
                raise DistillerError(f"unknown key '{key}' in {source} (known keys: {', '.join(sorted(known))})")
        missing = sorted({"layers", "heads", "hidden", "mlp_ratio"} - set(data))
        if missing:
            raise DistillerError(f"{source} misses key(s) {', '.join(missing)}")
        head_dim = data.get("head_dim", 64)
        if isinstance(head_dim, bool) or not isinstance(head_dim, int):
            raise DistillerError(f"key 'head_dim' in {source} must be an integer, got {head_dim!r}")
        return cls(
            name=str(data.get("name") or os.path.splitext(os.path.basename(source))[0]),
            layers=data["layers"],
            heads=data["heads"],
            hidden=data["hidden"],
            mlp_ratio=data["mlp_ratio"],
            head_dim=head_dim,
            plain_bert=bool(data.get("plain_bert", False)),
        )


def _steps(start: float, stop: float, step: float) -> tuple:
    n = int(round((stop - start) / step))
    values = [start + i * step for i in range(n + 1)]
    return tuple(int(v) if float(v).is_integer() and isinstance(step, int) else round(float(v), 4) for v in values)


def _r(lo: int, hi: int) -> tuple:
    return tuple(range(lo, hi + 1))


BUILTIN_SPACES: dict[str, SubSpace] = {
    # AutoDistil (Xu et al. 2022) BERT-base sub-spaces, head dim 64, 4^4 = 256 subnets each.
    "bert-base": SubSpace("bert-base", _r(9, 12), _r(9, 12), _steps(544, 640, 32), _steps(2.5, 4.0, 0.5), 64),
    "bert-small": SubSpace("bert-small", _r(9, 12), _r(7, 10), _steps(256, 352, 32), _steps(2.5, 4.0, 0.5), 64),
    "bert-tiny": SubSpace("bert-tiny", _r(4, 7), _r(7, 10), _steps(128, 224, 32), _steps(2.0, 3.5, 0.5), 64),
    # K=1 one-shot space of the released code (13,824 subnets).
    "bert-oneshot": SubSpace("bert-oneshot", _r(1, 12), _r(1, 12), _steps(64, 768, 64), _steps(0.5, 4.0, 0.5), 64),
    # The packaged MiniLM-L6-H384 teacher (head dim 32).
    "minilm-base": SubSpace("minilm-base", _r(3, 6), _r(9, 12), _steps(288, 384, 32), _steps(2.5, 4.0, 0.5), 32),
    "minilm-small": SubSpace("minilm-small", _r(3, 6), _r(6, 9), _steps(192, 288, 32), _steps(2.0, 3.5, 0.5), 32),
    "minilm-tiny": SubSpace("minilm-tiny", _r(2, 5), _r(3, 6), _steps(96, 192, 32), _steps(2.0, 3.5, 0.5), 32),
    "minilm-oneshot": SubSpace("minilm-oneshot", _r(1, 6), _r(1, 12), _steps(64, 384, 64), _steps(1.0, 4.0, 1.0), 32),
}

# Families: the K=3 sub-spaces ("all") and the K=1 space of each teacher.
FAMILIES: dict[str, dict[str, Any]] = {
    "bert": {"k3": ("bert-base", "bert-small", "bert-tiny"), "k1": "bert-oneshot", "head_dim": 64, "hidden": 768},
    "minilm": {"k3": ("minilm-base", "minilm-small", "minilm-tiny"), "k1": "minilm-oneshot", "head_dim": 32,
               "hidden": 384},
}


def list_spaces() -> list[str]:
    """Names of the built-in sub-spaces."""
    return list(BUILTIN_SPACES)


def load_space(path: str) -> SubSpace:
    """Read a user sub-space from a YAML file (``yaml.safe_load``); unknown keys are errors naming key and file."""
    from distiller_nlp.core.config import read_yaml

    return SubSpace.from_dict(read_yaml(path), source=path)


def get_space(name: str, plain_bert: bool = False) -> SubSpace:
    """A built-in sub-space by name, or a YAML file path; ``plain_bert`` restricts it to plain-BERT shapes."""
    if not name:
        raise DistillerError("no sub-space given (use --subspace NAME or --subspaces all)")
    if name in BUILTIN_SPACES:
        space = BUILTIN_SPACES[name]
    elif name.endswith((".yaml", ".yml")) or os.path.sep in name:
        space = load_space(name)
    else:
        raise DistillerError(f"unknown sub-space '{name}' (built in: {', '.join(BUILTIN_SPACES)}; or a YAML file)")
    return space.restrict_plain_bert() if plain_bert else space


def family_for(hidden: int, head_dim: int) -> str:
    """The built-in family whose sub-spaces fit a teacher of this hidden size and head dim."""
    for name, fam in FAMILIES.items():
        if fam["head_dim"] == head_dim and fam["hidden"] <= hidden:
            return name
    raise DistillerError(
        f"no built-in sub-spaces for a teacher with hidden {hidden} and head dim {head_dim}: "
        "pass --subspace FILE.yaml"
    )


def resolve_spaces(names: Iterable[str] | str, teacher_hidden: int, teacher_head_dim: int,
                   plain_bert: bool = False) -> list[SubSpace]:
    """Sub-spaces from names: ``all`` = the teacher family's K=3 sub-spaces, ``oneshot`` = its K=1 space."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[SubSpace] = []
    for name in names:
        if name in ("all", "oneshot"):
            fam = FAMILIES[family_for(teacher_hidden, teacher_head_dim)]
            chosen = fam["k3"] if name == "all" else (fam["k1"],)
            out += [get_space(n, plain_bert) for n in chosen]
        else:
            out.append(get_space(name, plain_bert))
    if not out:
        raise DistillerError("no sub-space given (use --subspace NAME or --subspaces all)")
    return out
