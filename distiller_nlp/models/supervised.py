"""A sequence classifier as the engine's trainable module: plain supervised training on the labels."""

from __future__ import annotations

from torch import nn

from distiller_nlp.core.losses import hard_ce_loss
from distiller_nlp.tasks import model_inputs


class SupervisedModule(nn.Module):
    """Plain supervised training of a sequence classifier (CE on labels; MSE for regression)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def predict(self, batch):
        """The model's logits."""
        return self.model(**model_inputs(batch)).logits

    def forward(self, batch):
        """``{"loss": CE(labels, logits)}`` (MSE for one output)."""
        loss = hard_ce_loss(self.predict(batch), batch["labels"])
        return {"loss": loss}
