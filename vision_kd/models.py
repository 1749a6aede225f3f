"""Small image models for vision KD, written here (torchvision/timm are optional and never required).

Every model maps ``x: (B, C, H, W)`` to a dict with
- ``logits``  (B, num_outputs): class logits, or 2·L landmark coordinates for regression students;
- ``feature`` (B, feature_dim): the penultimate representation (input of the classifier);
- ``mid``     (B, mid_dim): a pooled middle-stage representation (USKD's weak classifier reads it).

Architectures (``--student NAME`` or ``NAME:key=value,...`` to change a constructor argument):

================  ==============================================================================================
``mlp``           flatten → 256 → 256 → out (the digits teacher of the seed study)
``mlp_small``     flatten → 32 → out (a small digits student)
``cnn``           3×3 conv 32 → conv 64 → max-pool → conv 64 → GAP → out (8×8 or larger inputs)
``cnn_flat``      the same with the flattened map instead of GAP (keeps position: the landmark teacher)
``resnet8x4``     CIFAR ResNet, widths 32/64/128/256, 1 basic block per stage (RepDistiller's resnet8x4 shape)
``resnet32x4``    the same with 5 blocks per stage (resnet32x4 shape, the usual CIFAR teacher)
``vit_tiny``      patch embedding + 4 pre-norm Transformer blocks (dim 64, 4 heads) + class token
``timm:NAME``     any timm model, when timm is installed (never required)
================  ==============================================================================================

A saved model is a directory with ``model.safetensors`` and ``vision_model.json`` (architecture, its arguments and the
input/output shapes), reloaded by :func:`load_model`; nothing is pickled.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from distiller_nlp.core.errors import DistillerError

MODEL_FILE = "model.safetensors"
SPEC_FILE = "vision_model.json"


class VisionModel(nn.Module):
    """Base class: records the input/output shapes and the constructor spec needed to rebuild the model."""

    mid_dim: int
    feature_dim: int

    def __init__(self, in_channels: int, image_size: int, num_outputs: int):
        super().__init__()
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.num_outputs = int(num_outputs)
        self.spec: dict = {}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a :class:`DistillerError` unless ``x`` is a batch of images of the model's input shape."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise DistillerError(
                f"{self.spec.get('arch', type(self).__name__)} expects images of shape {expected}, got "
                f"{tuple(x.shape[1:])}"
            )


# ------------------------------------------------------------------------------------------------------ MLP / CNN

class MLP(VisionModel):
    """Flattened image → ReLU hidden layers (``hidden``, with ``dropout``) → head; ``mid`` is the first hidden
    layer's output, ``feature`` the last one's."""

    def __init__(self, in_channels, image_size, num_outputs, hidden=(256, 256), dropout: float = 0.0):
        super().__init__(in_channels, image_size, num_outputs)
        hidden = [int(h) for h in (hidden if isinstance(hidden, (list, tuple)) else [hidden])]
        if not hidden:
            raise DistillerError("mlp needs at least one hidden layer")
        dims = [in_channels * image_size * image_size] + hidden
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden[-1], num_outputs)
        self.mid_dim = hidden[0]
        self.feature_dim = hidden[-1]

    def forward(self, x):
        """``{"logits", "feature", "mid"}`` of images ``x`` (B, C, H, W)."""
        h = x.flatten(1)
        mid = None
        for layer in self.layers:
            h = self.dropout(F.relu(layer(h)))
            mid = h if mid is None else mid
        return {"logits": self.head(h), "feature": h, "mid": mid}


class SmallCNN(VisionModel):
    """Three 3×3 conv layers; ``flatten=True`` feeds the head the flattened (pooled-by-2) map instead of the global
    average, which keeps *where* things are (what landmark regression needs)."""

    def __init__(self, in_channels, image_size, num_outputs, width: int = 32, flatten: bool = False):
        super().__init__(in_channels, image_size, num_outputs)
        w = int(width)
        self.flatten = bool(flatten)
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.conv3 = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w),
                                   nn.ReLU())
        side = image_size // 2 if image_size >= 2 else image_size
        self.feature_dim = 2 * w * side * side if self.flatten else 2 * w
        self.head = nn.Linear(self.feature_dim, num_outputs)
        self.mid_dim = 2 * w

    def forward(self, x):
        """``{"logits", "feature", "mid"}`` of images ``x`` (B, C, H, W)."""
        h = self.conv2(self.conv1(x))
        mid = h.mean(dim=(2, 3))
        h = self.conv3(F.max_pool2d(h, 2) if h.shape[-1] >= 2 else h)
        feature = h.flatten(1) if self.flatten else h.mean(dim=(2, 3))
        return {"logits": self.head(feature), "feature": feature, "mid": mid}


# ------------------------------------------------------------------------------------------------------ ResNet

class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers with a residual connection (1×1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        """The block's output feature map."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(VisionModel):
    """CIFAR-style ResNet (He et al. 2016, as in RepDistiller's ``resnet8x4``/``resnet32x4``): a 3×3 stem and three
    stages of ``blocks`` basic blocks with strides 1/2/2; ``widths`` = (stem, stage1, stage2, stage3)."""

    def __init__(self, in_channels, image_size, num_outputs, blocks: int = 1, widths=(32, 64, 128, 256)):
        super().__init__(in_channels, image_size, num_outputs)
        widths = [int(w) for w in widths]
        if len(widths) != 4:
            raise DistillerError(f"resnet widths must hold 4 numbers (stem + 3 stages), got {widths}")
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            layers = []
            for b in range(int(blocks)):
                layers.append(BasicBlock(cin, w, stride=(1 if i == 0 or b > 0 else 2)))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(widths[-1], num_outputs)
        self.mid_dim = widths[2]
        self.feature_dim = widths[3]

    def forward(self, x):
        """``{"logits", "feature", "mid"}`` of images ``x`` (B, C, H, W)."""
        h = self.stem(x)
        h = self.stages[0](h)
        h = self.stages[1](h)
        mid = h.mean(dim=(2, 3))
        h = self.stages[2](h)
        feature = h.mean(dim=(2, 3))
        return {"logits": self.head(feature), "feature": feature, "mid": mid}


# ------------------------------------------------------------------------------------------------------ tiny ViT

class ViTBlock(nn.Module):
    """A pre-norm Transformer block: multi-head self-attention and a GELU MLP, each with a residual connection."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        """The block applied to tokens ``x`` (B, N, dim)."""
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(VisionModel):
    """A tiny Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches, a class token, learned positions,
    pre-norm blocks; ``mid`` is the class token after the first half of the blocks (USKD's DeiT recipe reads an
    intermediate class token too)."""

    def __init__(self, in_channels, image_size, num_outputs, patch: int = 0, dim: int = 64, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__(in_channels, image_size, num_outputs)
        patch = int(patch) or (2 if image_size <= 16 else 4)
        if image_size % patch:
            raise DistillerError(f"vit_tiny: image size {image_size} is not a multiple of the patch size {patch}")
        n = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(dim, heads, mlp_ratio) for _ in range(int(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_outputs)
        self.mid_dim = dim
        self.feature_dim = dim

    def forward(self, x):
        """``{"logits", "feature", "mid"}`` of images ``x`` (B, C, H, W)."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1) + self.pos
        mid = None
        half = max(1, len(self.blocks) // 2)
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i + 1 == half:
                mid = tokens[:, 0]
        feature = self.norm(tokens)[:, 0]
        return {"logits": self.head(feature), "feature": feature, "mid": mid}


# ------------------------------------------------------------------------------------------------------ timm

class TimmModel(VisionModel):
    """Any ``timm`` model (``--student timm:resnet18``), used only when timm is installed; never required.

    ``feature`` is the pooled pre-logits representation (``forward_head(..., pre_logits=True)``); timm exposes no
    generic middle stage, so ``mid`` is the same vector (USKD's weak head then reads the penultimate feature)."""

    def __init__(self, in_channels, image_size, num_outputs, name: str = ""):
        super().__init__(in_channels, image_size, num_outputs)
        try:
            import timm
        except ImportError:
            raise DistillerError(f"architecture 'timm:{name}' needs the timm package (pip install timm)") from None
        try:
            self.net = timm.create_model(name, pretrained=False, num_classes=num_outputs, in_chans=in_channels)
        except Exception as exc:  # unknown timm name, bad arguments
            raise DistillerError(f"timm cannot build '{name}': {str(exc).splitlines()[0]}") from None
        self.feature_dim = self.mid_dim = int(self.net.num_features)

    def forward(self, x):
        """``{"logits", "feature", "mid"}`` of images ``x`` (B, C, H, W)."""
        feature = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return {"logits": self.net.get_classifier()(feature), "feature": feature, "mid": feature}


# ------------------------------------------------------------------------------------------------------ registry

ARCHS: dict[str, tuple[Callable, dict]] = {
    "mlp": (MLP, {"hidden": [256, 256]}),
    "mlp_small": (MLP, {"hidden": [32]}),
    "cnn": (SmallCNN, {}),
    "cnn_flat": (SmallCNN, {"flatten": True}),
    "resnet8x4": (CifarResNet, {"blocks": 1, "widths": [32, 64, 128, 256]}),
    "resnet32x4": (CifarResNet, {"blocks": 5, "widths": [32, 64, 128, 256]}),
    "vit_tiny": (TinyViT, {}),
    "timm": (TimmModel, {}),  # "timm:NAME", only when timm is installed
}


def _parse_value(raw: str):
    import yaml

    if "/" in raw:  # "hidden=64/64" -> [64, 64]
        return [yaml.safe_load(p) for p in raw.split("/")]
    return yaml.safe_load(raw)


def parse_arch(spec: str) -> tuple[str, dict]:
    """``"mlp:hidden=64/32,dropout=0.1"`` -> ``("mlp", {"hidden": [64, 32], "dropout": 0.1})``;
    ``"timm:resnet18"`` -> ``("timm", {"name": "resnet18"})``."""
    name, _, rest = str(spec).partition(":")
    name = name.strip()
    if name == "timm":
        return name, {"name": rest.strip()}
    if name not in ARCHS:
        raise DistillerError(f"unknown architecture '{name}'; known: {', '.join(sorted(ARCHS))}")
    kwargs = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, raw = item.partition("=")
        if not eq:
            raise DistillerError(f"architecture option '{item}' in '{spec}' must be KEY=VALUE")
        kwargs[key.strip()] = _parse_value(raw.strip())
    return name, kwargs


def build_model(arch: str, in_channels: int, image_size: int, num_outputs: int, seed: int | None = None,
                **extra) -> VisionModel:
    """Build architecture ``arch`` (a name from :data:`ARCHS`, optionally ``name:key=value,...``)."""
    name, kwargs = parse_arch(arch)
    cls, defaults = ARCHS[name]
    kwargs = {**defaults, **kwargs, **extra}
    if seed is not None:
        torch.manual_seed(int(seed))
    try:
        model = cls(in_channels, image_size, num_outputs, **kwargs)
    except TypeError as exc:
        raise DistillerError(f"architecture '{arch}': {exc}") from None
    model.spec = {"arch": name, "kwargs": kwargs, "in_channels": int(in_channels), "image_size": int(image_size),
                  "num_outputs": int(num_outputs)}
    return model


def save_model(model: VisionModel, directory: str, extra: dict | None = None) -> None:
    """Write ``model.safetensors`` + ``vision_model.json`` into ``directory`` (files appear atomically)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = os.path.join(directory, f".{MODEL_FILE}.tmp-{os.getpid()}")
    save_file(state, tmp)
    os.replace(tmp, os.path.join(directory, MODEL_FILE))
    spec = {**model.spec, **(extra or {})}
    tmp = os.path.join(directory, f".{SPEC_FILE}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(spec, fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(directory, SPEC_FILE))


def read_spec(directory: str) -> dict:
    """The ``vision_model.json`` of a saved model directory (a directory without both files is an error)."""
    path = os.path.join(directory, SPEC_FILE)
    if not os.path.isfile(path) or not os.path.isfile(os.path.join(directory, MODEL_FILE)):
        raise DistillerError(f"{directory} is not a saved vision_kd model (needs {SPEC_FILE} and {MODEL_FILE})")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_model(directory: str) -> VisionModel:
    """Rebuild a model saved by :func:`save_model` and load its weights (safetensors)."""
    from safetensors.torch import load_file

    spec = read_spec(directory)
    model = build_model(spec["arch"], spec["in_channels"], spec["image_size"], spec["num_outputs"], **spec["kwargs"])
    missing, unexpected = model.load_state_dict(load_file(os.path.join(directory, MODEL_FILE)), strict=False)
    if missing or unexpected:
        raise DistillerError(f"weights in {directory} do not match architecture {spec['arch']}: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.spec.update({k: v for k, v in spec.items() if k not in model.spec})
    return model


def count_parameters(model: nn.Module) -> int:
    """The number of parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHS", "VisionModel", "MLP", "SmallCNN", "CifarResNet", "TinyViT", "TimmModel", "parse_arch", "build_model",
           "save_model", "load_model", "read_spec", "count_parameters"]
