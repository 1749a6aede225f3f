"""Regression distillation losses: the facial-landmark KD-Loss (Fard & Mahoor, CVIU 2022, "Facial Landmark Points
Detection Using Knowledge Distillation-Based Neural Networks", arXiv 2111.07047; official code in TensorFlow).

Every tensor holds landmark coordinates of the same shape (e.g. (B, 2·L)); the losses work per coordinate and
average over all of them. ``x̂`` is the student's prediction, ``x`` the ground truth, ``x_T`` a teacher's prediction
(Tough teacher: trained on the ground truth; Tolerant teacher: trained on ASM-smoothed landmarks).
"""

from __future__ import annotations

import torch

from distiller_nlp.core.errors import DistillerError

from .registry import register_loss


def _check_same(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise DistillerError(f"landmark tensors must have the same shape, got {shapes}")


def assist_weights(
    student: torch.Tensor,
    target: torch.Tensor,
    teacher: torch.Tensor,
    attract: float,
    repel: float,
    band: float = 0.15,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-coordinate weight ``m`` and the reflected teacher ``x_T'`` of ALoss (both detached).

    The teacher is mirrored to the student's side of the ground truth: ``x_T' = x + sign(x̂ − x)·|x_T − x|``, with
    ``d_T = |x_T − x|`` and ``e = |x̂ − x|``:
    ``m = attract`` when the student is beyond the teacher (``e > d_T``); ``m = repel`` (negative) when it lies
    between ``band·d_T`` and the teacher (``band·d_T ≤ e ≤ d_T``); ``m = 0`` closer to the ground truth.
    """
    _check_same(student=student, target=target, teacher=teacher)
    with torch.no_grad():
        x_hat, x, x_t = student.float(), target.float(), teacher.float()
        side = torch.sign(x_hat - x)
        d_t = (x_t - x).abs()
        e = (x_hat - x).abs()
        reflected = x + side * d_t
        m = torch.zeros_like(x_hat)
        m = torch.where(e > d_t, torch.full_like(m, float(attract)), m)
        m = torch.where((e >= band * d_t) & (e <= d_t) & (side != 0), torch.full_like(m, float(repel)), m)
    return m, reflected


@register_loss("aloss", kind="landmarks", takes=("target", "teacher"))
def assistive_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    teacher: torch.Tensor,
    attract: float = 1.9,
    repel: float = -0.45,
    band: float = 0.15,
) -> torch.Tensor:
    """ALoss of one teacher: ``mean(m · |x_T' − x̂|)`` with ``m`` and ``x_T'`` from :func:`assist_weights`.

    Paper/code weights: Tough teacher attract 1.9, repel −0.45; Tolerant teacher attract 1.8, repel −0.4. Beyond the
    teacher the student is pulled to it (towards the ground truth); between the band and the teacher a negative
    weight pushes it away from the teacher, again towards the ground truth.
    """
    m, reflected = assist_weights(student, target, teacher, attract, repel, band)
    return (m * (reflected - student.float()).abs()).mean()


@register_loss("landmark_main", kind="landmarks", takes=("target", "teacher"))
def landmark_main_loss(student: torch.Tensor, target: torch.Tensor, tolerant: torch.Tensor) -> torch.Tensor:
    """KD-Loss main term per coordinate, with ``e = |x − x̂|`` and the tolerant distance ``d = |x − x_tol|``:
    ``3·e`` if ``e ≤ d`` else ``e² + 3d − d²`` (continuous at e = d); averaged over all coordinates."""
    _check_same(student=student, target=target, tolerant=tolerant)
    e = (target.float() - student.float()).abs()
    d = (target.float() - tolerant.float()).abs().detach()
    return torch.where(e <= d, 3 * e, e**2 + 3 * d - d**2).mean()


@register_loss("landmark_kd", kind="landmarks", takes=("target", "teacher"))
def landmark_kd_loss(
    student: torch.Tensor,
    target: torch.Tensor,
    tough: torch.Tensor,
    tolerant: torch.Tensor,
    main_weight: float = 2.0,
    tough_weight: float = 1.0,
    tolerant_weight: float = 1.0,
    tough_attract: float = 1.9,
    tough_repel: float = -0.45,
    tolerant_attract: float = 1.8,
    tolerant_repel: float = -0.4,
) -> torch.Tensor:
    """KD-Loss = ``2·main + ALoss_tough + ALoss_tol`` (weights and attraction/repulsion values of the official code)."""
    return (float(main_weight) * landmark_main_loss(student, target, tolerant)
            + float(tough_weight) * assistive_loss(student, target, tough, tough_attract, tough_repel)
            + float(tolerant_weight) * assistive_loss(student, target, tolerant, tolerant_attract, tolerant_repel))


__all__ = ["assist_weights", "assistive_loss", "landmark_main_loss", "landmark_kd_loss"]
