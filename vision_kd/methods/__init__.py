"""Vision KD methods, one file each, registered in ``METHODS`` (``--method`` name → class).

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
``rrd``            live frozen teacher ``hard_ce`` + ``relational_kd_loss`` (FIFO bank of teacher embeddings)
``ckd``            offline teacher     ``comparative_kd_terms`` (MSE of sample differences; cached teacher)
``nasty_teacher``  offline teacher     ``hard_ce`` − ω·``kd`` against a frozen normal teacher (trains a teacher)
``rolewise_da``    live frozen teacher ``hard_ce`` + ``kd`` on role-specific augmentation (teacher / student)
``rdd``            live frozen teacher segmentation: RDD-weighted/selected CE + pixel ``kd``
=================  ==================  =====================================================================

A new method is one ``@METHODS.register(name)`` class in one file (see :mod:`vision_kd.methods.base`) and one import
line below.
"""

from __future__ import annotations

from .base import METHODS, Method, MethodContext, get_method

# Each import registers its method; this order is the order of ``vision-kd list`` and the ``--method`` help.
from .ce import CE
from .kd import KD
from .dkd import DKD
from .nkd import NKD
from .uskd import USKD
from .bdkd import BDKD
from .lwkd import LWKD
from .landmark_kd import LandmarkKD
from .rrd import RRD
from .ckd import CKD
from .nasty_teacher import NastyTeacher
from .rolewise_da import RolewiseDA
from .rdd import RDD

__all__ = ["METHODS", "Method", "MethodContext", "get_method", "CE", "KD", "DKD", "NKD", "USKD", "BDKD", "LWKD",
           "LandmarkKD", "RRD", "CKD", "NastyTeacher", "RolewiseDA", "RDD"]
