"""``autodistil_bert``: a BERT whose attention width (heads × head_dim) may differ from its hidden size.

AutoDistil students keep the teacher's head dim, so their attention width is ``heads × head_dim`` while their hidden
size is searched separately; transformers' ``BertModel`` ties the two (head size = hidden / heads). This model type
is ``BertModel`` with the query/key/value projections ``hidden → heads·head_dim`` and the attention output projection
``heads·head_dim → hidden``; everything else (names of the weights included) is BERT's. Importing ``autodistil``
registers it with ``AutoConfig``, ``AutoModel`` and ``AutoModelForSequenceClassification``, so
``AutoModel.from_pretrained(dir)`` works without ``trust_remote_code``. Students whose heads × head_dim equals
hidden are exported as plain ``BertModel`` instead (loadable with nothing of ours installed).
"""

from __future__ import annotations

from torch import nn
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, BertConfig,
                          BertForSequenceClassification, BertModel)

__all__ = ["AutoDistilBertConfig", "AutoDistilBertModel", "AutoDistilBertForSequenceClassification"]


class AutoDistilBertConfig(BertConfig):
    """A :class:`~transformers.BertConfig` with an explicit ``head_dim`` (attention width = heads × head_dim)."""

    model_type = "autodistil_bert"

    def __init__(self, head_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.head_dim = int(head_dim)
        # transformers' BertSelfAttention refuses hidden % heads != 0 unless the config has ``embedding_size``
        # (ALBERT/ELECTRA style); BERT's embeddings never read it. The projections are rebuilt below anyway.
        self.embedding_size = self.hidden_size


def _rebuild_attention(model: nn.Module, config: AutoDistilBertConfig) -> None:
    width = config.num_attention_heads * config.head_dim
    for layer in model.encoder.layer:
        sa = layer.attention.self
        sa.attention_head_size = config.head_dim
        sa.all_head_size = width
        sa.scaling = config.head_dim ** -0.5
        sa.query = nn.Linear(config.hidden_size, width)
        sa.key = nn.Linear(config.hidden_size, width)
        sa.value = nn.Linear(config.hidden_size, width)
        layer.attention.output.dense = nn.Linear(width, config.hidden_size)


class AutoDistilBertModel(BertModel):
    """``BertModel`` with attention projections of width ``heads × head_dim`` (see the module docstring)."""

    config_class = AutoDistilBertConfig

    def __init__(self, config: AutoDistilBertConfig, add_pooling_layer: bool = True):
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        _rebuild_attention(self, config)
        self.post_init()


class AutoDistilBertForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` over an :class:`AutoDistilBertModel` encoder."""

    config_class = AutoDistilBertConfig

    def __init__(self, config: AutoDistilBertConfig):
        super().__init__(config)
        _rebuild_attention(self.bert, config)
        self.post_init()


def register() -> None:
    """Register the model type with the Auto classes (idempotent)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if AutoDistilBertConfig.model_type in CONFIG_MAPPING:
        return
    AutoConfig.register(AutoDistilBertConfig.model_type, AutoDistilBertConfig)
    AutoModel.register(AutoDistilBertConfig, AutoDistilBertModel)
    AutoModelForSequenceClassification.register(AutoDistilBertConfig, AutoDistilBertForSequenceClassification)
    from distiller_nlp.core.capture import EncoderLayout, register_encoder_layout

    register_encoder_layout(AutoDistilBertConfig.model_type, EncoderLayout(
        note="AutoDistil BERT (head size independent of hidden / heads): BERT's module paths"))


register()
