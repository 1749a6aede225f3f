"""Vision KD methods, one file each; ``METHODS`` maps the ``--method`` name to its class.

=================  ==================  =====================================================================
name               strategy            losses (from ``distiller_nlp.core.losses``)
=================  ==================  =====================================================================
``ce``             self (no teacher)   ``hard_ce`` (classification) / ``logits_mse`` (landmarks)
``kd``             offline teacher     ``hard_ce`` + ``kd``
``dkd``            offline teacher     ``hard_ce`` + warm-up · ``dkd``
``nkd``            offline teacher     ``hard_ce`` + ``nkd``
``uskd``           self                ``hard_ce`` + ``uskd`` terms (weak head on the middle feature)
``bdkd``           online co-training  student ``hard_ce`` + ``bdkd``; teacher ``hard_ce`` + reverse ``kd``
``lwkd``           adversarial         ``hard_ce`` + ``kd`` from a synthetic-data teacher + GAN term
``landmark_kd``    offline, 2 teachers ``landmark_kd`` (main + ALoss tough + ALoss tolerant)
=================  ==================  =====================================================================
"""

from __future__ import annotations

from distiller_nlp.core.errors import DistillerError

from .base import Method
from .bdkd import BDKD
from .ce import CE
from .dkd import DKD
from .kd import KD
from .landmark_kd import LandmarkKD
from .lwkd import LWKD
from .nkd import NKD
from .uskd import USKD

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (CE, KD, DKD, NKD, USKD, BDKD, LWKD, LandmarkKD)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise DistillerError(f"unknown method '{name}'; known methods: {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["METHODS", "Method", "get_method", "CE", "KD", "DKD", "NKD", "USKD", "BDKD", "LWKD", "LandmarkKD"]
