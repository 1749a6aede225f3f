"""A frozen teacher the method runs itself — for methods that need more than the teacher's logits on the stored
images (RRD: the teacher's penultimate feature; role-wise augmentation: the teacher's logits on the student's
augmented batch), which the batch columns ``{role}_logits`` (:mod:`vision_kd.strategies`) do not carry.

The teacher is ``--teacher``, else the dataset's default teacher (trained once and cached), recorded as the run's
``teacher`` (its metrics go into ``metrics.json``). It lives inside the method module with ``requires_grad=False``
(the engine's optimizer skips it; it is checkpointed with the module and never exported) and is kept in eval mode
by :meth:`LiveTeacherMethod.train`; it runs under ``no_grad``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .base import Method


def frozen(model: Optional[nn.Module]) -> Optional[nn.Module]:
    """``model`` in eval mode with every parameter's ``requires_grad`` off (None stays None)."""
    if model is not None:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    return model


class LiveTeacherMethod(Method):
    """Base of a method that holds a frozen teacher module (``self.teacher``, or None) and runs it live."""

    strategy = "offline"

    def __init__(self, student, params, ctx, teacher: Optional[nn.Module] = None):
        super().__init__(student, params, ctx)
        self.teacher = frozen(teacher)

    @classmethod
    def load_teacher(cls, run, role: str = "teacher", **default_fields) -> nn.Module:
        """The frozen teacher of the run: ``--teacher``, else ``run.default_teacher(role, **default_fields)``;
        recorded as the run's ``role`` teacher."""
        path = run.cfg.teacher or run.default_teacher(role, **default_fields)
        teacher = run.load_model(path, "teacher")
        run.record_teacher(role, path)
        return frozen(teacher)

    @classmethod
    def prepare(cls, run) -> dict:
        """The frozen teacher (:meth:`load_teacher`)."""
        return {"teacher": cls.load_teacher(run)}

    def train(self, mode: bool = True):
        """Train/eval the method; the teacher stays in eval mode (its BatchNorm statistics and dropout frozen)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def teacher_out(self, images: torch.Tensor) -> dict:
        """The frozen teacher's output dict (``logits``, ``feature``, ``mid``) under ``no_grad``."""
        with torch.no_grad():
            return self.teacher(images)


__all__ = ["LiveTeacherMethod", "frozen"]
