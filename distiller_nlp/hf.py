"""Our distillation objective inside an existing ``transformers.Trainer`` script.

::

    from transformers import TrainingArguments
    from distiller_nlp.config import KDConfig, MatchConfig
    from distiller_nlp.hf import DistillationTrainer

    trainer = DistillationTrainer(
        model=student, teacher=teacher,                       # plain Hugging Face classifiers
        kd_config=KDConfig(pred_loss="kd", temperature=2.0, hard_label_weight=1.0,
                           intermediate=[MatchConfig(layer_T=6, layer_S=3, loss="hidden_mse")]),
        args=TrainingArguments("out", num_train_epochs=3), train_dataset=train, eval_dataset=dev,
        data_collator=collator, processing_class=tokenizer, compute_metrics=compute_metrics)
    trainer.train()
    trainer.save_model("out/student")                        # the student alone: save_pretrained + tokenizer

:class:`DistillationTrainer` is a ``Trainer`` subclass, not a second training loop: the Trainer's optimizer,
schedule, accumulation, mixed precision, logging, evaluation, checkpoints and DDP all apply. Its ``model`` is our
:class:`~distiller_nlp.kd.module.DistillModule` (the student plus the projections / MI-α critics the matches need,
all trained and — under DDP — synchronised together); ``compute_loss`` runs the frozen teacher on the batch
(:class:`~distiller_nlp.kd.teachers.TeacherRunner`: logits, hidden states, q/k/v; MixUp; several teachers) and
returns the DistillModule's loss — the same number our engine computes on the same batch. The loss components
(``kd``, ``hard_ce``, ``hidden_mse/S3-T6``, ...) are logged beside ``loss``.

Checkpoints hold the student as a plain ``save_pretrained`` checkpoint and the projections / critics in
``distill_state.safetensors``, so ``trainer.train(resume_from_checkpoint=True)`` restores both; ``save_model``
writes the student only (it loads with ``AutoModelForSequenceClassification.from_pretrained``).
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Optional

import torch
from transformers import Trainer

from distiller_nlp.config import KDConfig
from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

__all__ = ["DistillationTrainer", "DISTILL_STATE_FILE"]

DISTILL_STATE_FILE = "distill_state.safetensors"
_STUDENT = "student."


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` whose loss is our KD objective (see the module docstring).

    Args:
        model: the student (a ``PreTrainedModel`` with a sequence-classification head).
        teacher: the fine-tuned teacher (same label set); frozen, put in eval mode and on the Trainer's device.
        kd_config: the KD objective (:class:`~distiller_nlp.config.KDConfig`: prediction loss, temperature, weights,
            intermediate matches or a mapping, MixUp, schedules).
        teachers: more teachers whose soft targets are averaged with ``teacher``'s.
        is_regression: the task is a regression (one output; MSE-type losses).
        **kwargs: everything ``Trainer`` takes (``args``, ``train_dataset``, ``data_collator``, ...).
    """

    def __init__(self, model=None, teacher=None, kd_config: Optional[KDConfig] = None, teachers=None,
                 is_regression: bool = False, **kwargs):
        from distiller_nlp.kd.matches import resolve_matches
        from distiller_nlp.kd.module import DistillModule
        from distiller_nlp.kd.teachers import TeacherRunner

        if model is None or teacher is None:
            raise DistillerError("DistillationTrainer needs model= (the student) and teacher=")
        for name, m in (("model", model), ("teacher", teacher)):
            if not hasattr(m, "config"):
                raise DistillerError(f"DistillationTrainer: {name} must be a Hugging Face PreTrainedModel, got "
                                     f"{type(m).__name__}")
        kd = kd_config if kd_config is not None else KDConfig(pred_loss="kd")
        matches = resolve_matches(kd, teacher.config, model.config, source="kd_config")
        module = DistillModule(model, kd, matches, teacher.config, is_regression=is_regression)
        self.teacher = teacher.eval()
        self.extra_teachers = [t.eval() for t in (teachers or [])]
        for t in (self.teacher, *self.extra_teachers):
            for p in t.parameters():
                p.requires_grad_(False)
        self.teacher_runner = TeacherRunner(self.teacher, module, self.extra_teachers) if module.needs_teacher else None
        self._components: dict[str, list] = {}
        super().__init__(model=module, **kwargs)
        if self.args.label_names is None:
            self.label_names = ["labels"]  # DistillModule.forward(batch) names no labels for Trainer to find
        self.can_return_loss = True
        for t in (self.teacher, *self.extra_teachers):
            t.to(self.args.device)

    @property
    def distill_module(self):
        """The (unwrapped) :class:`~distiller_nlp.kd.module.DistillModule`."""
        return self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model

    @property
    def student(self):
        """The student being trained (a plain ``PreTrainedModel``)."""
        return self.distill_module.student

    # ------------------------------------------------------------------------------------------- data columns
    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            params = inspect.signature(self.model.student.forward).parameters
            self._signature_columns = list(params) + ["label", "label_ids", "labels"] + [
                f"teacher_{k}" for k in ("input_ids", "attention_mask", "token_type_ids")]

    # ------------------------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs: dict, return_outputs: bool = False, num_items_in_batch=None):
        """The DistillModule's loss on ``inputs`` with the teacher's outputs added; with ``return_outputs``
        ``(loss, {"loss", "logits"})`` (the student's logits, for evaluation)."""
        from distiller_nlp.tasks import model_inputs

        module = self.distill_module
        if self.state.max_steps:
            module.set_progress(min(1.0, self.state.global_step / self.state.max_steps))
        batch = dict(inputs)
        if "labels" not in batch and "label" in batch:
            batch["labels"] = batch.pop("label")
        if self.teacher_runner is not None:
            with torch.no_grad():
                batch = self.teacher_runner(batch)
        out = model(batch)
        loss = out["loss"]
        if module.training:
            for key, value in out.items():
                if key != "loss":
                    self._components.setdefault(key, []).append(float(value.detach()))
        if not return_outputs:
            return loss
        with torch.no_grad():
            logits = module.student(**model_inputs(batch)).logits
        return loss, {"loss": loss, "logits": logits}

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Add the mean of every loss component since the last log (``kd``, ``hard_ce``, each match) to training
        logs."""
        if "loss" in logs and self._components:
            for key, values in self._components.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._components = {}
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------------------------------- saving
    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        """The student as a plain ``save_pretrained`` checkpoint (+ tokenizer, training args) and, beside it, the
        projections / critics / EMD weights in ``distill_state.safetensors``."""
        from safetensors.torch import save_file

        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        module = self.distill_module
        full = state_dict if state_dict is not None else module.state_dict()
        student_state = {k[len(_STUDENT):]: v for k, v in full.items() if k.startswith(_STUDENT)}
        module.student.save_pretrained(output_dir, state_dict=student_state)
        aux = {k: v.detach().cpu().contiguous() for k, v in full.items() if not k.startswith(_STUDENT)}
        if aux:
            save_file(aux, os.path.join(output_dir, DISTILL_STATE_FILE), metadata={"format": "pt"})
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from safetensors.torch import load_file

        module = self.accelerator.unwrap_model(model if model is not None else self.model)
        weights = os.path.join(resume_from_checkpoint, "model.safetensors")
        if not os.path.isfile(weights):
            raise DistillerError(f"checkpoint {resume_from_checkpoint} has no model.safetensors (not written by "
                                 "DistillationTrainer?)")
        state = {_STUDENT + k: v for k, v in load_file(weights).items()}
        aux_path = os.path.join(resume_from_checkpoint, DISTILL_STATE_FILE)
        if os.path.isfile(aux_path):
            state.update(load_file(aux_path))
        missing, unexpected = module.load_state_dict(state, strict=False)
        # tied weights may be stored once; anything else missing or unexpected is a real mismatch
        real = [k for k in missing if not k.startswith(_STUDENT)] + list(unexpected)
        if real:
            raise DistillerError(f"checkpoint {resume_from_checkpoint} does not fit this DistillationTrainer: "
                                 f"{', '.join(real[:5])}")

    def _load_best_model(self) -> None:
        self._load_from_checkpoint(self.state.best_model_checkpoint)
