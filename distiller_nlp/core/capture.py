"""Forward hooks that capture intermediate features of BERT-family encoders, for every attention backend.

Layer indexing (used throughout the toolkit, see ``distiller_nlp.kd.mapping``):

- hidden states: index 0 = output of the embeddings module, index i (1..L) = output of encoder layer i;
  these are exactly the entries of a model's ``output_hidden_states=True`` tuple;
- q/k/v: index i (1..L) = outputs of the query / key / value ``nn.Linear`` of encoder layer i, shape
  (batch, seq, heads × head_dim), before the reshape into heads.

transformers 5.x returns no attention maps under the default SDPA attention (``output_attentions=True`` only
warns), and eager attention returns post-softmax probabilities. Capturing the q/k/v projections works for every
backend; attention scores, probabilities and MiniLM relations are computed from them in ``core.losses``.

Submodules are found by duck typing (no transformers import):

- BERT, RoBERTa, ELECTRA, ...: ``<base>.embeddings`` and ``<base>.encoder.layer[i].attention.self.{query,key,value}``
  (ELECTRA's ``<base>.embeddings_project``, when present, is the layer-0 output);
- DistilBERT: ``<base>.embeddings`` and ``<base>.transformer.layer[i].attention.{q_lin,k_lin,v_lin}``.

Wrapped models (DDP / DataParallel ``.module``) are unwrapped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from distiller_nlp.core.errors import DistillerError

__all__ = ["FeatureCapture", "find_encoder_layers", "num_layers", "unwrap_model"]

_LAYER_PATHS = (("encoder", "layer"), ("transformer", "layer"), ("encoder", "layers"))
_QKV_NAMES = (
    ("self", ("query", "key", "value")),  # BERT / RoBERTa / ELECTRA: layer.attention.self.query
    (None, ("q_lin", "k_lin", "v_lin")),  # DistilBERT: layer.attention.q_lin
    (None, ("query", "key", "value")),
    (None, ("q_proj", "k_proj", "v_proj")),
)


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip wrappers that keep the real model in ``.module`` (DistributedDataParallel, DataParallel, ...)."""
    seen = 0
    while isinstance(getattr(model, "module", None), nn.Module) and seen < 8:
        model = model.module
        seen += 1
    return model


def _get_path(obj: Any, path: Iterable[str]) -> Any:
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def find_encoder_layers(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """Return ``(embeddings_module, [encoder layer 1, ..., encoder layer L])`` of a BERT-family model.

    Searches the (unwrapped) model and its submodules, outermost first, for a module with an ``embeddings``
    submodule and a layer list at ``encoder.layer``, ``transformer.layer`` (DistilBERT) or ``encoder.layers``.
    If that module also has ``embeddings_project`` (ELECTRA with embedding size ≠ hidden size) the projection is
    returned as the embeddings module, since its output is what layer 1 receives. Raises DistillerError otherwise.
    """
    root = unwrap_model(model)
    if not isinstance(root, nn.Module):
        raise DistillerError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for _, module in root.named_modules():
        embeddings = getattr(module, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            continue
        for path in _LAYER_PATHS:
            layers = _get_path(module, path)
            if isinstance(layers, (nn.ModuleList, nn.Sequential)) and len(layers) > 0:
                project = getattr(module, "embeddings_project", None)
                if isinstance(project, nn.Module):
                    embeddings = project
                return embeddings, list(layers)
    raise DistillerError(
        f"cannot find encoder layers in {type(root).__name__}: expected a module with .embeddings and "
        ".encoder.layer (BERT/RoBERTa) or .transformer.layer (DistilBERT)"
    )


def num_layers(model: nn.Module) -> int:
    """Number of encoder layers L of a BERT-family model (hidden-state indices run 0..L)."""
    return len(find_encoder_layers(model)[1])


def _qkv_modules(layer: nn.Module, index: int) -> dict[str, nn.Module]:
    attention = getattr(layer, "attention", None)
    if attention is None:
        attention = getattr(layer, "self_attn", None)
    if isinstance(attention, nn.Module):
        for sub, names in _QKV_NAMES:
            owner = getattr(attention, sub, None) if sub else attention
            if not isinstance(owner, nn.Module):
                continue
            mods = [getattr(owner, n, None) for n in names]
            if all(isinstance(m, nn.Module) for m in mods):
                return dict(zip(("q", "k", "v"), mods))
    raise DistillerError(
        f"cannot find the query/key/value projections of encoder layer {index} ({type(layer).__name__}): expected "
        ".attention.self.{query,key,value} or .attention.{q_lin,k_lin,v_lin}"
    )


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
    """

    def __init__(
        self,
        model: nn.Module,
        hidden_layers: Iterable[int] | int | None = (),
        qkv_layers: Iterable[int] | int | None = (),
        detach: bool = False,
    ) -> None:
        self.model = model
        self.embeddings, self.layers = find_encoder_layers(model)
        n = len(self.layers)
        self.hidden_layers = _validate_layers(hidden_layers, 0, n, "hidden")
        self.qkv_layers = _validate_layers(qkv_layers, 1, n, "q/k/v")
        self.detach = bool(detach)
        # resolve the q/k/v modules now so a missing projection fails at construction
        self._qkv_targets = {i: _qkv_modules(self.layers[i - 1], i) for i in self.qkv_layers}
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
                module = self.embeddings if i == 0 else self.layers[i - 1]
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
