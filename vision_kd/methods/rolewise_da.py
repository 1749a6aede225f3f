"""``rolewise_da``: Role-Wise Data Augmentation for KD (Fu, Geng, Duan, Zhuang, Yuan, Trischler, Lin, Pal & Dong,
arXiv 2004.08861) — at small scale, with fixed (not searched) policies.

The paper: data-augmentation *agents with distinct roles* produce different training data for the teacher and the
student. Code bigaidream-projects/role-kd @42a9362 (TensorFlow, Python 2.7; only an evaluation script is released):
policies are PBA (Population Based Augmentation) schedules over 15 PIL operations, each ``(name, probability,
magnitude 0..10)`` (``pba/utils.py::parse_policy``), applied per image by choosing how many operations to apply —
0, 1 or 2 with probabilities 0.2 / 0.3 / 0.5 — and walking the shuffled policy, applying each operation with its
probability until that many have been applied (``pba/augmentation_transforms_hp.py::apply_policy``). Stage α
searches the teacher's policy while training the teacher; stage β searches the student's policy while the student
is distilled from that teacher (``results/..._KD_search/pbt_policy_{0..15}.txt``: a population of 16, the student
2-bit, λ = 0.4, Adam lr 1e-3, 200 epochs, batch 128); the final student trains with its own policy.

Here, the same structure with one method and two ``stage`` values:

- ``stage: teacher`` — the role-α agent: the trained network is a teacher, ``CE`` on images augmented by
  ``teacher_policy``;
- ``stage: student`` (default) — the role-β agent: the student is distilled from a frozen teacher on images
  augmented by ``student_policy``; the teacher sees the *same* augmented images (its soft labels are for the
  student's data): ``hard_label_weight·CE + kd_weight·kd(τ)``. The teacher is ``--teacher``, else a default teacher
  trained once (and cached) by this very method with ``stage: teacher`` and ``teacher_policy``.

Simplified, stated exactly: (1) no policy *search* — PBA's population training and its explore/exploit schedule
(``pba/search.py``) are replaced by the two fixed policies given as params (our defaults below, not the searched
ones); (2) 9 tensor operations instead of PBA's 15 PIL ones (``translate_x/y``, ``rotate``, ``shear_x/y``,
``cutout``, ``contrast``, ``brightness``, ``invert``; PBA magnitude ranges: 30°, shear 0.3, translation 10/32 and
cutout 20/32 of the side, enhance factors 0.1..1.9); (3) full-precision student — the paper's low-bit (2-bit
DoReFa-style) quantised student is not built; (4) the KD term is Hinton KD (τ 4) weighted by the reference's
λ = 0.4 (``--lamb 0.4``) instead of its feature-based ``MHGD-RKD-SVD`` distillation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distiller_nlp.core.config import option
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import hard_ce_loss, kd_loss

from .base import METHODS
from .live_teacher import LiveTeacherMethod

#: PBA's magnitude scale (``PARAMETER_MAX``)
LEVEL_MAX = 10
#: how many operations an image gets (PBA ``apply_policy`` for cifar: 0, 1, 2 with these probabilities)
COUNT_PROBS = (0.2, 0.3, 0.5)
OPS = ("translate_x", "translate_y", "rotate", "shear_x", "shear_y", "cutout", "contrast", "brightness", "invert")
STAGES = ("student", "teacher")


def parse_policy(text: str) -> list[tuple[str, float, int]]:
    """``"op:prob:level,..."`` → ``[(op, prob, level)]`` (prob in [0, 1], level in 0..10); errors name the item."""
    out = []
    for item in (s.strip() for s in str(text).split(",") if s.strip()):
        parts = item.split(":")
        if len(parts) != 3 or parts[0] not in OPS:
            raise DistillerError(f"policy item '{item}' must be op:prob:level with op one of {', '.join(OPS)}")
        try:
            prob, level = float(parts[1]), int(parts[2])
        except ValueError:
            raise DistillerError(f"policy item '{item}': prob must be a number and level an integer") from None
        if not (0.0 <= prob <= 1.0 and 0 <= level <= LEVEL_MAX):
            raise DistillerError(f"policy item '{item}': prob must be in [0, 1] and level in 0..{LEVEL_MAX}")
        out.append((parts[0], prob, level))
    return out


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta[None], list(x[None].shape), align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def apply_op(x: torch.Tensor, op: str, level: int) -> torch.Tensor:
    """One operation at magnitude ``level`` on one image (C, H, W) (a random sign for the geometric ones)."""
    m = level / LEVEL_MAX
    sign = 1.0 if bool(torch.rand(()) < 0.5) else -1.0
    eye = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    if op in ("translate_x", "translate_y"):
        theta = eye.clone()
        theta[0 if op == "translate_x" else 1, 2] = sign * m * (10 / 32) * 2  # grid units: the side is 2
        return _affine(x, theta)
    if op == "rotate":
        a = math.radians(sign * 30.0 * m)
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype,
                             device=x.device)
        return _affine(x, theta)
    if op in ("shear_x", "shear_y"):
        theta = eye.clone()
        if op == "shear_x":
            theta[0, 1] = sign * 0.3 * m
        else:
            theta[1, 0] = sign * 0.3 * m
        return _affine(x, theta)
    if op == "cutout":
        h, w = x.shape[-2:]
        size = int(round(m * (20 / 32) * min(h, w)))
        if size <= 0:
            return x
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y0, y1 = max(0, cy - size // 2), min(h, cy + size - size // 2)
        x0, x1 = max(0, cx - size // 2), min(w, cx + size - size // 2)
        x = x.clone()
        x[..., y0:y1, x0:x1] = 0.0
        return x
    factor = 0.1 + 1.8 * m  # PIL ImageEnhance range of PBA's enhancers
    if op == "contrast":
        mean = x.mean(dim=(-2, -1), keepdim=True)
        return (x - mean) * factor + mean
    if op == "brightness":
        return x * factor
    if op == "invert":
        lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
        return lo + hi - x
    raise DistillerError(f"unknown augmentation op '{op}'")


def apply_policy(images: torch.Tensor, policy: list) -> torch.Tensor:
    """PBA's per-image policy application on a batch (B, C, H, W): each image draws how many operations it gets
    (0/1/2 with probabilities :data:`COUNT_PROBS`), walks the policy in a random order and applies each operation
    with its probability until that many were applied. Draws from torch's global RNG (seeded by the engine)."""
    if not policy:
        return images
    counts = torch.multinomial(torch.tensor(COUNT_PROBS), len(images), replacement=True)
    out = []
    for x, count in zip(images, counts.tolist()):
        for j in torch.randperm(len(policy)).tolist():
            if count == 0:
                break
            op, prob, level = policy[j]
            if bool(torch.rand(()) < prob):
                x = apply_op(x, op, level)
                count -= 1
        out.append(x)
    return torch.stack(out)


@dataclass
class RolewiseDAParams:
    """Hyper-parameters of ``rolewise_da``."""

    stage: str = option("student", help="student (distil with student_policy from a frozen teacher) or teacher "
                                        "(train a teacher with teacher_policy and CE)")
    teacher_policy: str = option("translate_x:0.5:3,translate_y:0.5:3,rotate:0.3:3,cutout:0.3:4",
                                 help="the teacher's augmentation agent: op:prob:level items (level 0..10)")
    student_policy: str = option("translate_x:0.3:2,translate_y:0.3:2,contrast:0.3:3,brightness:0.3:3",
                                 help="the student's augmentation agent: op:prob:level items (level 0..10)")
    kd_weight: float = option(0.4, help="weight λ of the KD term (role-kd --lamb 0.4)")
    temperature: float = option(4.0, help="KD temperature τ")
    hard_label_weight: float = option(1.0, help="weight of the cross-entropy on the labels")


@METHODS.register("rolewise_da")
class RolewiseDA(LiveTeacherMethod):
    """Role-wise augmentation: a teacher-role agent (``stage: teacher``) and a student-role agent (KD)."""

    Params = RolewiseDAParams

    def __init__(self, student, params, ctx, teacher=None):
        super().__init__(student, params, ctx, teacher)
        if params.stage not in STAGES:
            raise DistillerError(f"params.stage must be student or teacher, got '{params.stage}'")
        self.policy = parse_policy(params.teacher_policy if params.stage == "teacher" else params.student_policy)
        if params.stage == "student" and teacher is None:
            raise DistillerError("rolewise_da (stage student) needs a frozen teacher (RolewiseDA.prepare loads it)")

    @classmethod
    def prepare(cls, run) -> dict:
        """Stage ``teacher``: nothing. Stage ``student``: the frozen teacher — ``--teacher``, else this method's
        ``stage: teacher`` run with the same ``teacher_policy`` (trained once, cached as the default teacher)."""
        p = run.params
        if p.stage == "teacher":
            return {"teacher": None}
        parse_policy(p.teacher_policy)
        return {"teacher": cls.load_teacher(run, method=cls.name,
                                            params={"stage": "teacher", "teacher_policy": p.teacher_policy})}

    def loss_terms(self, batch):
        """Stage teacher: ``ce`` on teacher-augmented images. Stage student: ``ce`` + ``kd`` on student-augmented
        images, the teacher's logits on the same images."""
        p = self.params
        x, labels = batch["pixel_values"], batch["labels"]
        if self.training:
            x = apply_policy(x, self.policy)
        logits = self.student(x)["logits"]
        ce = hard_ce_loss(logits, labels)
        if p.stage == "teacher":
            return {"loss": ce, "ce": ce}
        kd = kd_loss(logits, self.teacher_out(x)["logits"].float(), p.temperature)
        return {"loss": p.hard_label_weight * ce + p.kd_weight * kd, "ce": ce, "kd": kd}
