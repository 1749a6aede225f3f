"""Forward hooks that capture intermediate features of Transformer encoders, for every attention backend.

Layer indexing (used throughout the toolkit, see ``distiller_nlp.kd.mapping``):

- hidden states: index 0 = the embeddings output, index i (1..L) = output of encoder layer i; these are exactly the
  entries of the model's ``output_hidden_states=True`` tuple (checked per family in ``tests/test_capture_families.py``);
- q/k/v: index i (1..L) = outputs of the query / key / value ``nn.Linear`` of encoder layer i, shape
  (batch, seq, heads × head_dim), before the reshape into heads.

transformers 5.x returns no attention maps under the default SDPA attention (``output_attentions=True`` only
warns), and eager attention returns post-softmax probabilities. Capturing the q/k/v projections works for every
backend; attention scores, probabilities and MiniLM relations are computed from them in ``core.losses``.

Where the parts are is an :class:`EncoderLayout` (dotted module paths, torchdistill-style), looked up by
``config.model_type`` in :data:`ENCODER_LAYOUTS` (no transformers import). Paths are relative to the base model
(``model.<base_model_prefix>``, e.g. ``model.bert``) and, failing that, to the model itself, so task-head models and
bare encoders (``AutoModel``) use the same entry. Registered families (hidden 0 = ``embeddings`` unless said):

- bert, roberta, xlm-roberta, camembert, ernie, data2vec-text: ``encoder.layer[i].attention.self.{query,key,value}``;
- electra: the same, hidden 0 = ``embeddings_project`` when present (embedding_size ≠ hidden_size);
- xlm-roberta-xl, megatron-bert, roberta-prelayernorm (pre-LayerNorm): the same, hidden L = output of the final
  LayerNorm (``encoder.LayerNorm``, ``encoder.ln``, ``LayerNorm``) as in ``output_hidden_states``; their q/k/v are
  projections of LayerNorm(h);
- distilbert: ``transformer.layer[i].attention.{q_lin,k_lin,v_lin}``;
- deberta-v2 (also v3 checkpoints): ``encoder.layer[i].attention.self.{query_proj,key_proj,value_proj}``, hidden 1 =
  ``encoder.conv``'s output when the config has ``conv_kernel_size > 0``;
- mpnet: ``encoder.layer[i].attention.attn.{q,k,v}``.

Relative positions, honestly: DeBERTa-v2's attention adds disentangled content↔position terms (c2p, p2c) and MPNet's
adds a learned relative position bias to Q·Kᵀ. Scores that ``core.losses`` recomputes from the captured q/k are the
content-to-content term q_h·k_hᵀ/√head_dim only, not the logits the model's softmax sees (DeBERTa also divides by
√(head_dim·(1 + #position terms))). DeBERTa v1 (one fused ``in_proj``) is not registered: its hidden states are
found by the fallback below, its q/k/v cannot be captured.

Another architecture: ``register_encoder_layout("my-type", EncoderLayout(layers="blocks", q="attn.wq", ...))``, or
per capture ``FeatureCapture(model, ..., layout={"layers": "backbone.blocks", "q": "attn.wq", ...})``. An
unregistered type that has BERT's layout (``.embeddings`` + ``.encoder.layer``/``.transformer.layer``) is still
found by duck typing (logged once at info level; it assumes post-LayerNorm layers, i.e. no final norm after layer
L); anything else is a one-line DistillerError saying how to add it.

Wrapped models (DDP / DataParallel ``.module``) are unwrapped.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.registry import Registry

__all__ = ["ENCODER_LAYOUTS", "EncoderLayout", "FeatureCapture", "encoder_layout", "find_encoder_layers",
           "num_layers", "register_encoder_layout", "unwrap_model"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderLayout:
    """Module paths of an encoder (dots between attribute names; a number indexes a ``ModuleList``).

    ``embeddings`` and ``layers`` are relative to the base model (``model.<base_model_prefix>``, or the model itself
    when it has none, or when the path is not found there); ``q``, ``k``, ``v`` are relative to one encoder layer
    (``None``: the layout has no usable projections, only hidden states can be captured).
    ``embeddings_project``: a module after the embeddings whose output is hidden state 0 when it exists (ELECTRA with
    embedding size ≠ hidden size). ``first_layer_output``: a module after layer 1 whose output is hidden state 1 when
    it exists (DeBERTa-v2's ``encoder.conv``). ``last_layer_output``: a module after layer L whose output is hidden
    state L when it exists (the final LayerNorm of pre-LayerNorm encoders). ``note`` is free text for messages.
    """

    embeddings: str = "embeddings"
    layers: str = "encoder.layer"
    q: str | None = "attention.self.query"
    k: str | None = "attention.self.key"
    v: str | None = "attention.self.value"
    embeddings_project: str | None = None
    first_layer_output: str | None = None
    last_layer_output: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            optional = f.name not in ("embeddings", "layers", "note")
            if f.name == "note":
                if not isinstance(value, str):
                    raise DistillerError(f"encoder layout note must be a string, got {value!r}")
            elif not (value is None and optional) and not _is_path(value):
                raise DistillerError(f"encoder layout {f.name} must be a dotted module path"
                                     f"{' or None' if optional else ''}, got {value!r}")
        if len({self.q is None, self.k is None, self.v is None}) > 1:
            raise DistillerError(f"encoder layout: give all of q, k, v or none of them (got q={self.q!r}, "
                                 f"k={self.k!r}, v={self.v!r})")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], source: str = "the encoder layout") -> EncoderLayout:
        """A layout from a dict such as ``{"layers": "encoder.layer", "q": "attention.self.query", ...}`` (missing
        keys take BERT's paths); an unknown key is a DistillerError naming it."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in spec if k not in known]
        if unknown:
            raise DistillerError(f"unknown key '{unknown[0]}' in {source} (known: {', '.join(known)})")
        return cls(**dict(spec))

    @property
    def has_qkv(self) -> bool:
        """Whether the layout names the query/key/value projections."""
        return self.q is not None


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and all(part.strip() == part and part for part in value.split("."))


def _normalize_type(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _check_layout(name: str, obj: Any, meta: dict) -> None:
    if not isinstance(obj, EncoderLayout):
        raise DistillerError(f"encoder layout for '{name}' must be an EncoderLayout, got {type(obj).__name__}")


ENCODER_LAYOUTS: Registry[EncoderLayout] = Registry(
    "encoder layout", normalize=_normalize_type, check=_check_layout,
    hint=" (add one with distiller_nlp.core.capture.register_encoder_layout)")
"""``config.model_type`` (lower case, ``_`` read as ``-``) → :class:`EncoderLayout`."""


def register_encoder_layout(model_type: str, layout: EncoderLayout | Mapping[str, Any], *,
                            override: bool = False) -> EncoderLayout:
    """Tell :class:`FeatureCapture` where the parts of ``model_type`` models are (``layout``: an
    :class:`EncoderLayout` or a dict of its fields). A type taken by other paths raises unless ``override=True``. Returns the layout.

    ::

        register_encoder_layout("my-encoder", {"embeddings": "embed", "layers": "blocks",
                                               "q": "attn.wq", "k": "attn.wk", "v": "attn.wv"})
    """
    if isinstance(layout, Mapping):
        layout = EncoderLayout.from_dict(layout, f"the encoder layout of '{model_type}'")
    if not override and model_type in ENCODER_LAYOUTS and ENCODER_LAYOUTS.get(model_type) == layout:
        return ENCODER_LAYOUTS.get(model_type)  # the same paths again (e.g. a module imported twice): a no-op
    return ENCODER_LAYOUTS.register(model_type, layout, override=override)


_BERT = EncoderLayout(note="BERT: <base>.embeddings, <base>.encoder.layer[i].attention.self.{query,key,value}")
for _type in ("bert", "roberta", "xlm-roberta", "camembert", "ernie", "data2vec-text"):
    register_encoder_layout(_type, _BERT)
# pre-LayerNorm encoders: output_hidden_states' last entry is after the final LayerNorm (q/k/v read LayerNorm(h))
for _type, _norm in (("xlm-roberta-xl", "encoder.LayerNorm"), ("megatron-bert", "encoder.ln"),
                     ("roberta-prelayernorm", "LayerNorm")):
    register_encoder_layout(_type, EncoderLayout(
        last_layer_output=_norm, note=f"pre-LayerNorm BERT: hidden L is <base>.{_norm}'s output"))
register_encoder_layout("electra", EncoderLayout(
    embeddings_project="embeddings_project",
    note="ELECTRA: BERT's paths; with embedding_size ≠ hidden_size, hidden 0 is <base>.embeddings_project's output"))
register_encoder_layout("distilbert", EncoderLayout(
    layers="transformer.layer", q="attention.q_lin", k="attention.k_lin", v="attention.v_lin",
    note="DistilBERT: <base>.transformer.layer[i].attention.{q_lin,k_lin,v_lin}"))
register_encoder_layout("deberta-v2", EncoderLayout(
    q="attention.self.query_proj", k="attention.self.key_proj", v="attention.self.value_proj",
    first_layer_output="encoder.conv",
    note="DeBERTa-v2/v3: disentangled relative attention; scores from q/k omit the c2p/p2c position terms; with "
         "conv_kernel_size > 0, hidden 1 is <base>.encoder.conv's output"))
register_encoder_layout("mpnet", EncoderLayout(
    q="attention.attn.q", k="attention.attn.k", v="attention.attn.v",
    note="MPNet: <base>.encoder.layer[i].attention.attn.{q,k,v}; scores from q/k omit the relative position bias"))
# decoder-only causal LMs (llama and its relatives): hidden 0 = the token embeddings, hidden L = after the final norm
# (as in output_hidden_states); q/k/v are the projections of the pre-attention RMSNorm'd input. With grouped-query
# attention k and v are narrower than q (num_key_value_heads × head_dim).
for _type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo2", "granite", "smollm3"):
    register_encoder_layout(_type, EncoderLayout(
        embeddings="embed_tokens", layers="layers", q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj",
        last_layer_output="norm",
        note=f"{_type} (decoder): <base>.layers[i].self_attn.{{q,k,v}}_proj; hidden L is <base>.norm's output"))
del _type, _norm


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip wrappers that keep the real model in ``.module`` (DistributedDataParallel, DataParallel, ...)."""
    seen = 0
    while isinstance(getattr(model, "module", None), nn.Module) and seen < 8:
        model = model.module
        seen += 1
    return model


def _get_path(obj: Any, path: str | Iterable[str]) -> Any:
    """The module at a dotted path (a number indexes a ModuleList / Sequential), or None."""
    parts = path.split(".") if isinstance(path, str) else path
    for name in parts:
        if isinstance(obj, (nn.ModuleList, nn.Sequential)) and name.isdigit():
            obj = obj[int(name)] if int(name) < len(obj) else None
        else:
            obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _model_type(module: Any) -> str | None:
    model_type = getattr(getattr(module, "config", None), "model_type", None)
    return model_type if isinstance(model_type, str) and model_type else None


def _search_roots(owner: nn.Module) -> list[nn.Module]:
    """Where a layout's top-level paths are looked up: the base model (``owner.<base_model_prefix>``), then owner."""
    prefix = getattr(owner, "base_model_prefix", None)
    base = getattr(owner, prefix, None) if isinstance(prefix, str) and prefix else None
    return [base, owner] if isinstance(base, nn.Module) and base is not owner else [owner]


@dataclass
class _Encoder:
    """A layout bound to one model: the modules whose outputs are hidden states 0..L, and the layers."""

    layout: EncoderLayout
    model_type: str | None
    source: str  # where the layout came from: "registry", "given", "duck typing"
    embeddings: nn.Module  # hooked for hidden state 0
    layers: list[nn.Module]
    outputs: list[nn.Module]  # hooked for hidden states 1..L

    def qkv(self, index: int) -> dict[str, nn.Module]:
        layer = self.layers[index - 1]
        what = f"model type '{self.model_type}'" if self.model_type else type(layer).__name__
        if not self.layout.has_qkv:
            raise DistillerError(
                f"cannot find the query/key/value projections of encoder layer {index} ({type(layer).__name__}, "
                f"{what}): its encoder layout names none; expected .attention.self.{{query,key,value}} or "
                f".attention.{{q_lin,k_lin,v_lin}}, or give q/k/v paths with register_encoder_layout(...) or "
                f"FeatureCapture(..., layout=...)")
        out = {}
        for key in ("q", "k", "v"):
            path = getattr(self.layout, key)
            module = _get_path(layer, path)
            if not isinstance(module, nn.Module):
                raise DistillerError(
                    f"cannot find the {key} projection of encoder layer {index} ({type(layer).__name__}, {what}) "
                    f"at '{path}' ({self.source} layout); fix it with register_encoder_layout(..., override=True) "
                    f"or FeatureCapture(..., layout=...)")
            out[key] = module
        return out


def _bind(layout: EncoderLayout, owner: nn.Module, model_type: str | None, source: str) -> _Encoder:
    roots = _search_roots(owner)

    def find(path: str | None) -> Any:
        if path is None:
            return None
        for root in roots:
            found = _get_path(root, path)
            if found is not None:
                return found
        return None

    def missing(field: str, path: str) -> DistillerError:
        where = " or ".join(type(r).__name__ for r in roots)
        what = f"model type '{model_type}'" if model_type else type(owner).__name__
        return DistillerError(
            f"encoder layout of {what} ({source}): no {field} module at '{path}' in {where}; fix it with "
            f"register_encoder_layout(..., override=True) or FeatureCapture(..., layout=...)")

    embeddings = find(layout.embeddings)
    if not isinstance(embeddings, nn.Module):
        raise missing("embeddings", layout.embeddings)
    layers = find(layout.layers)
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)) or len(layers) == 0:
        raise missing("layers (a non-empty ModuleList)", layout.layers)
    layers = list(layers)
    project = find(layout.embeddings_project)
    if isinstance(project, nn.Module):
        embeddings = project
    outputs = list(layers)
    first = find(layout.first_layer_output)
    if isinstance(first, nn.Module):
        outputs[0] = first
    last = find(layout.last_layer_output)
    if isinstance(last, nn.Module):
        if len(outputs) == 1 and outputs[0] is not layers[0]:
            raise DistillerError(f"encoder layout of model type '{model_type}': a one-layer encoder cannot have both "
                                 "first_layer_output and last_layer_output")
        outputs[-1] = last
    return _Encoder(layout, model_type, source, embeddings, layers, outputs)


_LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers")
_QKV_NAMES = (
    ("attention.self.", ("query", "key", "value")),  # BERT / RoBERTa / ELECTRA
    ("attention.", ("q_lin", "k_lin", "v_lin")),  # DistilBERT
    ("attention.", ("query", "key", "value")),
    ("attention.", ("q_proj", "k_proj", "v_proj")),
    ("self_attn.", ("query", "key", "value")),
    ("self_attn.", ("q_proj", "k_proj", "v_proj")),
)
_NOTED: set[str] = set()


def _duck_typed(root: nn.Module) -> tuple[EncoderLayout, nn.Module] | None:
    """The BERT-like layout (``.embeddings`` + a layer list) of ``root`` or its outermost matching submodule."""
    for _, module in root.named_modules():
        if not isinstance(getattr(module, "embeddings", None), nn.Module):
            continue
        for path in _LAYER_PATHS:
            layers = _get_path(module, path)
            if isinstance(layers, (nn.ModuleList, nn.Sequential)) and len(layers) > 0:
                qkv: dict = {"q": None, "k": None, "v": None}
                for prefix, names in _QKV_NAMES:
                    if all(isinstance(_get_path(layers[0], prefix + n), nn.Module) for n in names):
                        qkv = dict(zip(("q", "k", "v"), (prefix + n for n in names)))
                        break
                project = "embeddings_project" if isinstance(getattr(module, "embeddings_project", None),
                                                             nn.Module) else None
                return EncoderLayout(layers=path, embeddings_project=project, note="found by duck typing",
                                     **qkv), module
    return None


def _resolve(model: nn.Module, layout: EncoderLayout | Mapping[str, Any] | str | None = None) -> _Encoder:
    root = unwrap_model(model)
    if not isinstance(root, nn.Module):
        raise DistillerError(f"expected a torch.nn.Module, got {type(model).__name__}")
    model_type = _model_type(root)
    if layout is not None:
        if isinstance(layout, str):
            layout = ENCODER_LAYOUTS.get(layout)
        elif isinstance(layout, Mapping):
            layout = EncoderLayout.from_dict(layout)
        elif not isinstance(layout, EncoderLayout):
            raise DistillerError(f"layout must be an EncoderLayout, a dict of its fields or a registered model "
                                 f"type, got {type(layout).__name__}")
        return _bind(layout, root, model_type, "given")
    # a registered type: the model itself, else the outermost submodule with one (a model inside a wrapper)
    for _, module in root.named_modules():
        mt = _model_type(module)
        if mt is not None and mt in ENCODER_LAYOUTS:
            return _bind(ENCODER_LAYOUTS.get(mt), module, mt, "registry")
        model_type = model_type or mt
    found = _duck_typed(root)
    if found is not None:
        guessed, owner = found
        key = model_type or type(root).__name__
        if key not in _NOTED:
            _NOTED.add(key)
            logger.info("model type %r has no registered encoder layout; using the BERT-like layout found by duck "
                        "typing (layers at '%s', q at '%s'); register_encoder_layout(%r, ...) makes it explicit",
                        model_type, guessed.layers, guessed.q, model_type or "my-type")
        return _bind(guessed, owner, model_type, "duck typing")
    raise DistillerError(
        f"cannot find encoder layers in {type(root).__name__} (model type '{model_type or 'unknown'}'): no registered "
        f"encoder layout (known: {', '.join(ENCODER_LAYOUTS.names())}) and no BERT-like .embeddings + .encoder.layer; "
        f"describe it with register_encoder_layout('{model_type or 'my-type'}', EncoderLayout(embeddings=..., "
        f"layers=..., q=..., k=..., v=...)) or FeatureCapture(..., layout={{'layers': ..., 'q': ..., ...}})")


def encoder_layout(model: nn.Module) -> EncoderLayout:
    """The :class:`EncoderLayout` :class:`FeatureCapture` uses for ``model`` (registered, or found by duck typing)."""
    return _resolve(model).layout


def find_encoder_layers(model: nn.Module, layout=None) -> tuple[nn.Module, list[nn.Module]]:
    """Return ``(embeddings_module, [encoder layer 1, ..., encoder layer L])`` of an encoder.

    The embeddings module is the one whose output is hidden state 0 (ELECTRA's ``embeddings_project`` when present).
    ``layout``: an :class:`EncoderLayout`, a dict of its fields or a registered model type; by default the layout
    registered for ``config.model_type``, else BERT's found by duck typing. Raises DistillerError otherwise.
    """
    encoder = _resolve(model, layout)
    return encoder.embeddings, encoder.layers


def num_layers(model: nn.Module, layout=None) -> int:
    """Number of encoder layers L of a model (hidden-state indices run 0..L)."""
    return len(_resolve(model, layout).layers)


def _first_tensor(output: Any) -> torch.Tensor:
    """A layer may return a tensor, a tuple/list (first element = hidden states) or a ModelOutput."""
    while not isinstance(output, torch.Tensor):
        if isinstance(output, (tuple, list)) and len(output) > 0:
            output = output[0]
        elif hasattr(output, "last_hidden_state"):
            output = output.last_hidden_state
        else:
            raise DistillerError(f"cannot take hidden states from a layer output of type {type(output).__name__}")
    return output


def _validate_layers(layers: Any, low: int, high: int, what: str) -> tuple[int, ...]:
    if layers is None:
        return ()
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = (layers,)
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise DistillerError(f"{what} layer index {layer!r} is not an integer")
        if not low <= layer <= high:
            raise DistillerError(
                f"{what} layer index {layer} out of range: the model has {high} encoder layers "
                f"(valid {what} indices {low}..{high})"
            )
        if layer not in out:
            out.append(layer)
    return tuple(sorted(out))



class FeatureCapture:
    """Context manager that records hidden states and q/k/v projections of chosen layers during forward passes.

    ::

        with FeatureCapture(model, hidden_layers=(0, 3), qkv_layers=(3,)) as cap:
            out = model(**inputs)
        cap.hidden[3]        # (B, seq, H), output of encoder layer 3; cap.hidden[0] = embeddings output
        cap.qkv[3]["q"]      # (B, seq, heads·head_dim), output of layer 3's query Linear (also "k", "v")

    Only the requested layers are hooked and stored. Entering clears previous captures and attaches the hooks;
    leaving removes them (also when the block raises), while the captured tensors stay readable. For a long-lived
    capture (hooks kept over a training loop) use :meth:`attach` / :meth:`remove` and call :meth:`clear` each step.
    If a layer runs several times while attached, the last output wins (note: gradient checkpointing re-runs layers
    in backward, so read the captures before calling ``backward``).

    ``detach=False`` keeps the autograd graph (needed to train a student through an intermediate loss);
    ``detach=True`` stores detached tensors (for a teacher). Indices out of range raise DistillerError naming the
    index and the number of layers: hidden indices are 0..L, q/k/v indices 1..L.

    ``layout`` names the module paths for this capture (an :class:`EncoderLayout`, a dict of its fields such as
    ``{"layers": "backbone.blocks", "q": "attn.wq", "k": "attn.wk", "v": "attn.wv"}``, or a registered model type);
    by default the layout registered for ``model.config.model_type`` is used (see the module docstring).
    """

    def __init__(
        self,
        model: nn.Module,
        hidden_layers: Iterable[int] | int | None = (),
        qkv_layers: Iterable[int] | int | None = (),
        detach: bool = False,
        layout: EncoderLayout | Mapping[str, Any] | str | None = None,
    ) -> None:
        self.model = model
        self._encoder = _resolve(model, layout)
        self.layout = self._encoder.layout
        self.model_type = self._encoder.model_type
        self.embeddings, self.layers = self._encoder.embeddings, self._encoder.layers
        n = len(self.layers)
        self.hidden_layers = _validate_layers(hidden_layers, 0, n, "hidden")
        self.qkv_layers = _validate_layers(qkv_layers, 1, n, "q/k/v")
        self.detach = bool(detach)
        # resolve the q/k/v modules now so a missing projection fails at construction
        self._qkv_targets = {i: self._encoder.qkv(i) for i in self.qkv_layers}
        self.hidden: dict[int, torch.Tensor] = {}
        self.qkv: dict[int, dict[str, torch.Tensor]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def num_layers(self) -> int:
        """Number of encoder layers of the captured model."""
        return len(self.layers)

    @property
    def attached(self) -> bool:
        """True while hooks are registered."""
        return bool(self._handles)

    def clear(self) -> None:
        """Drop all captured tensors (fresh dicts; dicts handed out earlier are left untouched)."""
        self.hidden = {}
        self.qkv = {}

    def _keep(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach() if self.detach else tensor

    def _hidden_hook(self, index: int):
        def hook(module, args, output):
            self.hidden[index] = self._keep(_first_tensor(output))

        return hook

    def _qkv_hook(self, index: int, key: str):
        def hook(module, args, output):
            self.qkv.setdefault(index, {})[key] = self._keep(_first_tensor(output))

        return hook

    def attach(self) -> FeatureCapture:
        """Clear previous captures and register the forward hooks (no-op if already attached)."""
        if self._handles:
            return self
        self.clear()
        try:
            for i in self.hidden_layers:
                module = self.embeddings if i == 0 else self._encoder.outputs[i - 1]
                self._handles.append(module.register_forward_hook(self._hidden_hook(i)))
            for i, mods in self._qkv_targets.items():
                for key, module in mods.items():
                    self._handles.append(module.register_forward_hook(self._qkv_hook(i, key)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook this capture registered (captured tensors are kept until :meth:`clear`)."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()

    def __enter__(self) -> FeatureCapture:
        return self.attach()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.remove()
        return False

    def __repr__(self) -> str:
        return (
            f"FeatureCapture(hidden_layers={self.hidden_layers}, qkv_layers={self.qkv_layers}, "
            f"detach={self.detach}, attached={self.attached})"
        )
