"""SuperLM: an elastic, weight-sharing BERT whose every subnet is a student of an AutoDistil sub-space.

Weight sharing is by *leading slices* (AutoDistil, HAT, DynaBERT): a subnet with hidden size H, A heads of the fixed
head dim d and FFN width I uses ``W[:out, :in]`` of every projection (``out``/``in`` among H, A·d and I), the first H
columns of the embedding tables and the first H entries of every LayerNorm. The attention width A·d is decoupled
from H. Depth: ``uniform`` keeps encoder layers ``⌊i·L_max/L⌋`` (AutoDistil/DynaBERT), ``first`` keeps ``0..L-1``.

The module names and weight names are BERT's (``embeddings.word_embeddings``, ``encoder.layer.{i}.attention.self.query``,
...), so a SuperLM is initialised from any BERT checkpoint by copying its state dict, ``FeatureCapture`` finds its
layers and q/k/v projections, and the saved SuperLM weights are a valid ``BertModel`` checkpoint (the largest subnet).

::

    slm = SuperLM.from_teacher("minilm")
    slm.set_active(Arch(layers=4, hidden=192, heads=6, mlp_ratio=3.0, head_dim=32))
    hidden = slm(input_ids, attention_mask)          # (B, S, 192), the active subnet's last hidden state
    student = slm.extract()                           # BertModel with exactly these weights (1e-5)
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.rundir import write_text_atomic

from .subspaces import Arch, SubSpace

__all__ = ["SuperLM", "layer_map", "save_superlm", "load_superlm", "SUPERLM_FILE", "LAYER_SELECTIONS"]

SUPERLM_FILE = "superlm.json"
WEIGHTS_FILE = "model.safetensors"
LAYER_SELECTIONS = ("uniform", "first")


def layer_map(layers: int, max_layers: int, selection: str = "uniform") -> list[int]:
    """0-based teacher/SuperLM layer indices a ``layers``-deep subnet keeps.

    ``uniform``: ``⌊i·max_layers/layers⌋`` for i < layers (12 → 9 keeps 0,1,2,4,5,6,8,9,10; 6 → 4 keeps 0,1,3,4);
    ``first``: ``0..layers-1``.
    """
    if not 1 <= layers <= max_layers:
        raise DistillerError(f"a subnet of {layers} layers does not fit a SuperLM of {max_layers} layers")
    if selection == "uniform":
        return [(i * max_layers) // layers for i in range(layers)]
    if selection == "first":
        return list(range(layers))
    raise DistillerError(f"unknown layer selection '{selection}' (use {' or '.join(LAYER_SELECTIONS)})")


# ------------------------------------------------------------------------------------------------ elastic modules

class ElasticLinear(nn.Linear):
    """``nn.Linear`` that uses the leading ``weight[:active_out, :active_in]`` slice."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.active_in, self.active_out = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W[:out, :in]ᵀ + b[:out]``."""
        bias = self.bias[: self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[: self.active_out, : self.active_in], bias)

    def active_state(self) -> dict:
        """The active slices of ``weight`` (and ``bias``), as views."""
        out = {"weight": self.weight[: self.active_out, : self.active_in]}
        if self.bias is not None:
            out["bias"] = self.bias[: self.active_out]
        return out


class ElasticLayerNorm(nn.LayerNorm):
    """LayerNorm over the first ``active`` features, with the leading slice of its affine parameters."""

    def __init__(self, size: int, eps: float):
        super().__init__(size, eps=eps)
        self.active = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm of ``x`` (last dim = ``active``) with the leading affine slices."""
        a = self.active
        return F.layer_norm(x, (a,), self.weight[:a], self.bias[:a], self.eps)

    def active_state(self) -> dict:
        """The active slices of ``weight`` and ``bias``, as views."""
        return {"weight": self.weight[: self.active], "bias": self.bias[: self.active]}


class ElasticEmbedding(nn.Embedding):
    """Embedding table whose vectors are cut to their first ``active`` dimensions."""

    def __init__(self, num: int, dim: int, padding_idx: Optional[int] = None):
        super().__init__(num, dim, padding_idx=padding_idx)
        self.active = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Vectors of ``ids``, cut to their first ``active`` dimensions."""
        return F.embedding(ids, self.weight[:, : self.active], self.padding_idx)

    def active_state(self) -> dict:
        """The active columns of the table, as a view."""
        return {"weight": self.weight[:, : self.active]}


_ELASTIC = (ElasticLinear, ElasticLayerNorm, ElasticEmbedding)


class _Box(nn.Module):
    """A named container (keeps BERT's module paths, e.g. ``attention.self.query``)."""

    def __init__(*args: nn.Module, **modules: nn.Module):
        (box,) = args
        nn.Module.__init__(box)
        for name, module in modules.items():
            box.add_module(name, module)


class SuperEmbeddings(nn.Module):
    """BERT's embeddings (word + token type + position, LayerNorm, dropout) over elastic tables."""

    def __init__(self, config):
        super().__init__()
        H = config.hidden_size
        self.word_embeddings = ElasticEmbedding(config.vocab_size, H, getattr(config, "pad_token_id", None))
        self.position_embeddings = ElasticEmbedding(config.max_position_embeddings, H)
        self.token_type_embeddings = ElasticEmbedding(config.type_vocab_size, H)
        self.LayerNorm = ElasticLayerNorm(H, config.layer_norm_eps)
        self.dropout = config.hidden_dropout_prob

    def forward(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """``(B, S, active hidden)`` embeddings; positions are ``0..S-1``, token types default to 0."""
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(positions)
        return F.dropout(self.LayerNorm(x), self.dropout, self.training)


class SuperLayer(nn.Module):
    """One elastic BERT encoder layer (post-LayerNorm self-attention and FFN) under BERT's module names; the active
    head count is ``heads``, the head dim fixed."""

    def __init__(self, config, head_dim: int):
        super().__init__()
        from transformers.activations import ACT2FN

        H, I = config.hidden_size, config.intermediate_size
        W = config.num_attention_heads * head_dim
        eps = config.layer_norm_eps
        self.attention = _Box(
            self=_Box(query=ElasticLinear(H, W), key=ElasticLinear(H, W), value=ElasticLinear(H, W)),
            output=_Box(dense=ElasticLinear(W, H), LayerNorm=ElasticLayerNorm(H, eps)),
        )
        self.intermediate = _Box(dense=ElasticLinear(H, I))
        self.output = _Box(dense=ElasticLinear(I, H), LayerNorm=ElasticLayerNorm(H, eps))
        self.act = ACT2FN[config.hidden_act]
        self.head_dim = head_dim
        self.heads = config.num_attention_heads
        self.hidden_dropout = config.hidden_dropout_prob
        self.attention_dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The layer's output for ``x`` ``(B, S, H)``; ``mask`` is an additive ``(B, 1, 1, S)`` attention mask or
        None."""
        sa = self.attention.self
        b, s, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(sa.query(x)), heads(sa.key(x)), heads(sa.value(x))
        ctx = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        ctx = ctx.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        out = self.attention.output
        x = out.LayerNorm(F.dropout(out.dense(ctx), self.hidden_dropout, self.training) + x)
        h = self.output.dense(self.act(self.intermediate.dense(x)))
        return self.output.LayerNorm(F.dropout(h, self.hidden_dropout, self.training) + x)


# ------------------------------------------------------------------------------------------------ SuperLM

def _head_dim(config) -> int:
    head_dim = getattr(config, "head_dim", None)
    if head_dim:
        return int(head_dim)
    if config.hidden_size % config.num_attention_heads:
        raise DistillerError(f"hidden size {config.hidden_size} is not divisible by "
                             f"{config.num_attention_heads} heads and the config has no head_dim")
    return config.hidden_size // config.num_attention_heads


class SuperLM(nn.Module):
    """Elastic BERT (see module docstring). ``config`` is the teacher's BERT config (the largest shape)."""

    def __init__(self, config, layer_selection: str = "uniform"):
        super().__init__()
        if layer_selection not in LAYER_SELECTIONS:
            raise DistillerError(f"unknown layer selection '{layer_selection}' (use {' or '.join(LAYER_SELECTIONS)})")
        self.config = config
        self.layer_selection = layer_selection
        self.head_dim = _head_dim(config)
        self.embeddings = SuperEmbeddings(config)
        self.encoder = _Box(layer=nn.ModuleList(SuperLayer(config, self.head_dim)
                                                for _ in range(config.num_hidden_layers)))
        self.pooler = _Box(dense=ElasticLinear(config.hidden_size, config.hidden_size))
        self.active_arch: Optional[Arch] = None
        self.active_layers: list[int] = []
        self.set_active(self.max_arch())

    # ---------------------------------------------------------------------------------------- construction
    @classmethod
    def from_teacher(cls, teacher: Any, layer_selection: str = "uniform") -> "SuperLM":
        """A SuperLM initialised from a BERT checkpoint (path, ``minilm`` or Hub id) or a loaded BERT model."""
        if isinstance(teacher, nn.Module):
            model = teacher
        else:
            from transformers import AutoModel

            from distiller_nlp.models import quiet_transformers, resolve_model_path

            path = resolve_model_path(teacher)
            with quiet_transformers():
                model = AutoModel.from_pretrained(path)
        model = getattr(model, "bert", model)
        config = model.config
        if getattr(config, "model_type", None) not in ("bert", "autodistil_bert"):
            raise DistillerError(f"a SuperLM needs a BERT checkpoint, got model type '{config.model_type}'")
        slm = cls(config, layer_selection)
        slm.load_bert_state(model.state_dict())
        return slm

    def load_bert_state(self, state: dict) -> None:
        """Copy a ``BertModel`` state dict (keys with or without the ``bert.`` prefix) into the SuperLM."""
        state = {k[5:] if k.startswith("bert.") else k: v for k, v in state.items()}
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise DistillerError(f"the teacher checkpoint has no weight '{missing[0]}' "
                                 f"({len(missing)} SuperLM weights missing): not a BERT encoder with a pooler?")
        for k, v in own.items():
            if state[k].shape != v.shape:
                raise DistillerError(f"teacher weight '{k}' has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
        self.load_state_dict({k: state[k] for k in own})

    # ---------------------------------------------------------------------------------------- active subnet
    @property
    def max_layers(self) -> int:
        """Encoder layers of the SuperLM (the teacher's)."""
        return self.config.num_hidden_layers

    def max_arch(self) -> Arch:
        """The largest subnet: the teacher's own shape."""
        c = self.config
        return Arch(c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                    c.intermediate_size / c.hidden_size, self.head_dim)

    def check_fits(self, arch: Arch) -> None:
        """DistillerError naming the dimension when ``arch`` is not a subnet of this SuperLM."""
        c = self.config
        problems = []
        if arch.head_dim != self.head_dim:
            problems.append(f"head_dim {arch.head_dim} != the SuperLM's {self.head_dim}")
        if arch.layers > c.num_hidden_layers:
            problems.append(f"layers {arch.layers} > {c.num_hidden_layers}")
        if arch.hidden > c.hidden_size:
            problems.append(f"hidden {arch.hidden} > {c.hidden_size}")
        if arch.heads > c.num_attention_heads:
            problems.append(f"heads {arch.heads} > {c.num_attention_heads}")
        if arch.intermediate > c.intermediate_size:
            problems.append(f"FFN width {arch.intermediate} (hidden × mlp_ratio) > {c.intermediate_size}")
        if problems:
            raise DistillerError(f"arch {arch} is not a subnet of this SuperLM: {'; '.join(problems)}")

    def check_space(self, space: SubSpace) -> None:
        """Every subnet of ``space`` must fit (checked on the space's maxima)."""
        biggest = Arch(max(space.layers), max(space.hidden), max(space.heads), 1.0, space.head_dim)
        self.check_fits(biggest)
        widest = max(h * r for h in space.hidden for r in space.mlp_ratio)
        if round(widest) > self.config.intermediate_size:
            raise DistillerError(f"sub-space '{space.name}' needs an FFN width of {round(widest)} but the teacher has "
                                 f"{self.config.intermediate_size}")

    def set_active(self, arch: Arch) -> "SuperLM":
        """Make ``arch`` the active subnet (every later forward and :meth:`extract` use it)."""
        self.check_fits(arch)
        H, W, I = arch.hidden, arch.attention_width, arch.intermediate
        emb = self.embeddings
        for table in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings):
            table.active = H
        emb.LayerNorm.active = H
        for layer in self.encoder.layer:
            layer.heads = arch.heads
            sa = layer.attention.self
            for lin in (sa.query, sa.key, sa.value):
                lin.active_in, lin.active_out = H, W
            layer.attention.output.dense.active_in, layer.attention.output.dense.active_out = W, H
            layer.attention.output.LayerNorm.active = H
            layer.intermediate.dense.active_in, layer.intermediate.dense.active_out = H, I
            layer.output.dense.active_in, layer.output.dense.active_out = I, H
            layer.output.LayerNorm.active = H
        self.pooler.dense.active_in = self.pooler.dense.active_out = H
        self.active_arch = arch
        self.active_layers = layer_map(arch.layers, self.max_layers, self.layer_selection)
        return self

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Last hidden state ``(B, S, H)`` of the active subnet."""
        x = self.embeddings(input_ids, token_type_ids)
        mask = None
        if attention_mask is not None:
            keep = attention_mask[:, None, None, :].bool()
            mask = torch.zeros(keep.shape, dtype=x.dtype, device=x.device).masked_fill(
                ~keep, torch.finfo(x.dtype).min)
        for i in self.active_layers:
            x = self.encoder.layer[i](x, mask)
        return x

    @property
    def last_qkv_layer(self) -> int:
        """1-based index (FeatureCapture convention) of the active subnet's last layer."""
        return self.active_layers[-1] + 1

    # ---------------------------------------------------------------------------------------- extraction
    def active_state_dict(self) -> dict:
        """The active subnet's weights under ``BertModel`` names (kept layers renumbered 0..L-1), cloned."""
        renumber = {f"encoder.layer.{i}.": f"encoder.layer.{j}." for j, i in enumerate(self.active_layers)}
        out = {}
        for name, module in self.named_modules():
            if not isinstance(module, _ELASTIC):
                continue
            if name.startswith("encoder.layer."):
                prefix = ".".join(name.split(".")[:3]) + "."
                if prefix not in renumber:
                    continue
                name = renumber[prefix] + name[len(prefix):]
            for key, tensor in module.active_state().items():
                out[f"{name}.{key}"] = tensor.detach().clone().contiguous()
        return out

    def student_config(self, arch: Optional[Arch] = None, num_labels: Optional[int] = None):
        """``BertConfig`` when heads × head_dim = hidden, else ``AutoDistilBertConfig`` (our registered type)."""
        from transformers import BertConfig

        from .modeling import AutoDistilBertConfig

        arch = arch or self.active_arch
        data = self.config.to_dict()
        for key in ("model_type", "architectures", "_name_or_path", "transformers_version", "head_dim",
                    "embedding_size", "auto_map", "id2label", "label2id", "num_labels"):
            data.pop(key, None)
        data.update(num_hidden_layers=arch.layers, hidden_size=arch.hidden, num_attention_heads=arch.heads,
                    intermediate_size=arch.intermediate)
        if num_labels:
            data["num_labels"] = int(num_labels)
        if arch.is_plain_bert:
            return BertConfig(**data)
        return AutoDistilBertConfig(head_dim=arch.head_dim, **data)

    def extract(self, arch: Optional[Arch] = None, num_labels: Optional[int] = None):
        """A standalone student with the (given or active) subnet's weights.

        ``BertModel`` (or ``BertForSequenceClassification`` with ``num_labels``, new classifier) when heads ×
        head_dim = hidden, else the registered ``autodistil_bert`` equivalents. In eval mode its last hidden state
        equals this SuperLM's forward of the same subnet (to float rounding).
        """
        from transformers import AutoModel, AutoModelForSequenceClassification

        from distiller_nlp.models import quiet_transformers

        if arch is not None:
            self.set_active(arch)
        config = self.student_config(num_labels=num_labels)
        auto = AutoModelForSequenceClassification if num_labels else AutoModel
        with quiet_transformers():
            model = auto.from_config(config)
        state = self.active_state_dict()
        if num_labels:
            state = {f"bert.{k}": v for k, v in state.items()}
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if "position_ids" not in k and not k.startswith("classifier.")]
        if missing or result.unexpected_keys:
            raise DistillerError(f"extract: weights do not match the student ({(missing + result.unexpected_keys)[0]})")
        return model.eval()


# ------------------------------------------------------------------------------------------------ persistence

def save_superlm(superlm: SuperLM, directory: str, space: Optional[SubSpace] = None, tokenizer: Any = None,
                 extra: Optional[dict] = None) -> str:
    """Write ``config.json`` (the teacher-sized BERT config), ``model.safetensors`` (BERT weight names),
    ``superlm.json`` (sub-space, layer selection, ``extra``) and the tokenizer; each file atomically."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    superlm.config.save_pretrained(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in superlm.state_dict().items()}
    tmp = os.path.join(directory, f".{WEIGHTS_FILE}.tmp-{os.getpid()}")
    save_file(state, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(directory, WEIGHTS_FILE))
    meta = {"layer_selection": superlm.layer_selection, "head_dim": superlm.head_dim,
            "space": space.to_dict() if space is not None else None, **(extra or {})}
    write_text_atomic(os.path.join(directory, SUPERLM_FILE), json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return directory


def load_superlm(directory: str) -> tuple[SuperLM, Optional[SubSpace], dict]:
    """``(superlm, space, meta)`` from a directory written by :func:`save_superlm`."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    meta_path = os.path.join(directory, SUPERLM_FILE)
    if not os.path.isfile(meta_path):
        raise DistillerError(f"{directory} is not a SuperLM directory (no {SUPERLM_FILE}; train one with "
                             "`autodistil train-superlm`)")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    config = AutoConfig.from_pretrained(directory)
    slm = SuperLM(config, meta.get("layer_selection", "uniform"))
    slm.load_bert_state(load_file(os.path.join(directory, WEIGHTS_FILE)))
    space = SubSpace.from_dict(meta["space"], source=meta_path) if meta.get("space") else None
    return slm, space, meta
