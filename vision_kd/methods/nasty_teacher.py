"""``nasty_teacher``: train a *nasty teacher* (Ma, Chen, Wang, Wang, Wang & Wang, "Undistillable: Making A Nasty
Teacher That CANNOT Teach Students", ICLR 2021; code VITA-Group/Nasty-Teacher @2f9c444, ``train_nasty.py``).

The network trained here (the run's ``--student`` slot: the model being made nasty, from scratch) keeps its
accuracy while its tempered outputs move away from those of a frozen, normally trained network of the same task —
the "adversarial network", this run's ``teacher`` role (``--teacher``, else the dataset's default teacher)::

    L = CE(y, z_nasty) − ω·τ²·KL(softmax(z_nasty/τ) ‖ softmax(z_adv/τ))

(:func:`distiller_nlp.core.losses.relational_kd.nasty_teacher_terms`; ω = 0 is plain CE). The exported model is
the nasty teacher: pass its run directory as ``--teacher`` of a ``kd`` run to see students learn worse from it
(the reference's ``train_kd.py``: 0.9·τ²·KL + 0.1·CE, τ = 4 on CIFAR-10 and 20 on CIFAR-100 — our ``kd`` method's
``kd_weight``/``hard_label_weight``/``temperature``).

Defaults (``experiments/*/kd_nasty_*/nasty_*/params.json``): CIFAR-10 τ = 4, ω = 0.04 (ResNet-18, SGD lr 0.1,
160 epochs, ×0.1 at 80/120, batch 128); CIFAR-100 τ = 20, ω = 0.005 (200 epochs, ×0.2 at 60/120/160);
Tiny-ImageNet τ = 20, ω = 0.01. ``temperature: 0`` / ``weight: -1`` (the defaults) pick them by the number of
classes: ≤ 10 → CIFAR-10's, ≤ 100 → CIFAR-100's, more → Tiny-ImageNet's (200 classes). The reference's
``+ 100.0`` (to print a positive loss) is dropped: no gradient changes.

Needs from ``train.py`` (not offered today): the trained network's default architecture should be the adversary's
(the paper makes a ResNet-18 nasty against a ResNet-18); ``train.py`` builds ``cfg.student`` or the dataset's
default *student*, so pass ``--student`` with the teacher's architecture (e.g. ``--student cnn`` on digits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from distiller_nlp.core.config import option
from distiller_nlp.core.losses.relational_kd import nasty_teacher_terms

from .base import METHODS, Method

#: (max classes, τ, ω) of the reference's settings: CIFAR-10, CIFAR-100, Tiny-ImageNet
PAPER_SETTINGS = ((10, 4.0, 0.04), (100, 20.0, 0.005), (None, 20.0, 0.01))


def paper_setting(num_classes: int) -> tuple[float, float]:
    """The reference's (τ, ω) for a task with ``num_classes`` classes (CIFAR-10 / CIFAR-100 / Tiny-ImageNet)."""
    for limit, tau, omega in PAPER_SETTINGS:
        if limit is None or num_classes <= limit:
            return tau, omega
    raise AssertionError("unreachable")


@dataclass
class NastyTeacherParams:
    """Hyper-parameters of ``nasty_teacher``."""

    temperature: float = option(0.0, help="temperature τ_A of the adversarial KL (0 = the paper's for the class "
                                          "count: 4 up to 10 classes, else 20)", min=0)
    weight: float = option(-1.0, help="weight ω of the adversarial KL (-1 = the paper's: 0.04 up to 10 classes, "
                                      "0.005 up to 100, else 0.01)")


@METHODS.register("nasty_teacher")
class NastyTeacher(Method):
    """Trains a nasty teacher against a frozen normal teacher (the ``teacher`` role)."""

    Params = NastyTeacherParams
    teacher_roles = ("teacher",)
    strategy = "offline"

    def __init__(self, student, params, ctx):
        tau, omega = paper_setting(ctx.data.num_outputs)
        params = replace(params, temperature=params.temperature or tau,
                         weight=omega if params.weight < 0 else params.weight)
        super().__init__(student, params, ctx)

    def loss_terms(self, batch):
        """``ce`` and ``adv_kl`` (the KL that is maximised), ``loss = ce − ω·adv_kl``."""
        p = self.params
        logits = self.student_out(batch)["logits"]
        loss, ce, adv = nasty_teacher_terms(logits, batch["teacher_logits"], batch["labels"], p.temperature, p.weight)
        return {"loss": loss, "ce": ce, "adv_kl": adv}
