"""``--precision auto`` on a CPU, decided by measurement: a short probe of the run's own matmul and attention shapes in
fp32 and under bf16 autocast, the faster one kept, the verdict cached per machine and shape class.

Why measure: a CPU whose flags promise bf16 (AVX-512 bf16, AMX) does not always deliver it for a run's shapes (small
widths, short sequences, a torch build whose oneDNN path is missing), and an AVX2-only CPU runs bf16 hundreds of times
slower than fp32. Flags are therefore only the gate (no bf16 instructions: fp32 without probing); the probe decides.

The probe (:func:`measure`): for each of the run's distinct linear shapes (at most four, the largest first) and its
attention shape, one forward + backward of ``F.linear`` / ``scaled_dot_product_attention`` on random data, fp32 and
bf16-autocast interleaved, the best of three rounds after a warm-up round (the weights stay fp32 in bf16 mode, as
under autocast in training). Rows are capped at 256 tokens: a pass takes 20-50 ms, the whole probe ~0.3 s on two
cores, and the ratio matches the one at 1,024 rows within 3 % (2.38 vs 2.47 on an AVX-512-bf16 EPYC). bf16 is chosen only when it is
at least :data:`MARGIN` faster (the difference must exceed the probe's noise; otherwise fp32 keeps full precision at
the same speed). A bf16 pass slower than 10 × the fp32 one stops the probe early.

The cache: ``$DISTILLER_NLP_CACHE`` (default ``~/.cache/distiller_nlp``) ``/precision_probe.json``, one entry per key =
CPU model + the flags that matter + torch version + threads + shape class (tokens rounded up to a power of two, the
linear and attention shapes), written atomically; a corrupt or unreadable file is ignored and replaced. Under several
processes rank 0 decides and the other ranks take its verdict (:func:`decide` with ``broadcast``), so every rank
computes in the same precision.

Depends on torch only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Iterable, Optional

import torch

__all__ = ["ProbeShapes", "GENERIC_SHAPES", "MARGIN", "shapes_from_models", "shapes_from_configs", "cpu_facts",
           "measure", "decide", "cache_path", "last_probe"]

logger = logging.getLogger(__name__)

#: bf16 must be at least this much faster than fp32 (time ratio fp32 / bf16) to be chosen.
MARGIN = 1.05
#: Rows of every probed matmul are capped at this many tokens (the ratio is stable beyond it; the probe stays short).
MAX_PROBE_TOKENS = 256
#: Flags that decide whether bf16 kernels exist at all (gate) and that key the cache.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx512_vnni", "avx2")

_MEMO: dict = {}
_LAST: dict = {}


@dataclasses.dataclass(frozen=True)
class ProbeShapes:
    """What to time: ``tokens`` rows (batch × sequence) through each ``(in, out)`` linear, and attention of shape
    ``(batch, heads, seq, head_dim)`` (None: no attention)."""

    tokens: int
    linears: tuple
    attention: Optional[tuple] = None

    def shape_class(self) -> dict:
        """The cache's view: tokens rounded up to a power of two, the shapes as they are."""
        tokens = 1 << max(0, int(self.tokens) - 1).bit_length()
        return {"tokens": tokens, "linears": [list(s) for s in self.linears],
                "attention": list(self.attention) if self.attention else None}


#: Used when the caller knows no model (a BERT-small-like block: 32 × 64 tokens, width 384, FFN 1536, 12 heads).
GENERIC_SHAPES = ProbeShapes(tokens=2048, linears=((384, 1536), (1536, 384), (384, 384)), attention=(32, 12, 64, 32))


def _top_linears(dims: Iterable[tuple], limit: int = 4) -> tuple:
    unique = sorted({(int(i), int(o)) for i, o in dims if i > 0 and o > 0}, key=lambda s: (-s[0] * s[1], s))
    return tuple(unique[:limit])


def shapes_from_models(models: Iterable, batch_size: int, seq_len: int = 1) -> Optional[ProbeShapes]:
    """The probe of the ``nn.Linear`` layers of ``models`` (student, teacher, a module holding them) at
    ``batch_size × seq_len`` rows when one of them is a sequence model (a submodule whose ``config`` names attention
    heads; its attention is probed too), ``batch_size`` rows otherwise. None when no model has a linear layer."""
    dims, attention = [], None
    for model in models:
        if model is None:
            continue
        for mod in model.modules():
            if isinstance(mod, torch.nn.Linear):
                dims.append((mod.in_features, mod.out_features))
            cfg = getattr(mod, "config", None)
            if attention is None and cfg is not None and not isinstance(cfg, dict):
                attention = _attention_of(cfg, batch_size, seq_len)
    linears = _top_linears(dims)
    if not linears:
        return None
    rows = int(batch_size) * (int(seq_len) if attention else 1)
    return ProbeShapes(tokens=rows, linears=linears, attention=attention)


def _attention_of(cfg, batch_size: int, seq_len: int) -> Optional[tuple]:
    heads = getattr(cfg, "num_attention_heads", None)
    hidden = getattr(cfg, "hidden_size", None)
    if not heads or not hidden or seq_len <= 1:
        return None
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return (int(batch_size), int(heads), int(seq_len), int(head_dim))


def shapes_from_configs(configs: Iterable, batch_size: int, seq_len: int) -> Optional[ProbeShapes]:
    """The probe of transformer configs (``hidden_size``, ``intermediate_size``, ``num_attention_heads``): the
    attention projections (h → h), the FFN (h → i, i → h); for a model before its weights are loaded."""
    dims, attention = [], None
    for cfg in configs:
        hidden = getattr(cfg, "hidden_size", None)
        if not hidden:
            continue
        inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
        dims += [(hidden, inter), (inter, hidden), (hidden, hidden)]
        if attention is None:
            attention = _attention_of(cfg, batch_size, seq_len)
    linears = _top_linears(dims)
    if not linears:
        return None
    return ProbeShapes(tokens=int(batch_size) * int(seq_len), linears=linears, attention=attention)


def cpu_facts() -> dict:
    """CPU model, the bf16-relevant flags (from ``/proc/cpuinfo``, else torch's own probes), torch version, threads."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not model and line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif not flags and line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if model and flags:
                    break
    except OSError:
        pass
    if not flags:  # no /proc/cpuinfo (macOS, Windows): ask torch
        for flag, name in (("amx_tile", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"),
                           ("avx512f", "_is_avx512_supported"), ("avx2", "_is_avx2_supported")):
            probe = getattr(torch.cpu, name, None)
            if probe is not None and probe():
                flags.add(flag)
    import platform

    return {"cpu": model or platform.processor() or platform.machine(),
            "flags": {f: f in flags for f in BF16_FLAGS}, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def has_bf16_instructions(facts: Optional[dict] = None) -> bool:
    """The gate: AVX-512 bf16 or AMX tiles (the CPU kernels of oneDNN's fast bf16 path)."""
    flags = (facts or cpu_facts())["flags"]
    return bool(flags.get("avx512_bf16") or flags.get("amx_bf16") or flags.get("amx_tile"))


def cache_path() -> str:
    root = os.environ.get("DISTILLER_NLP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "distiller_nlp")
    return os.path.join(root, "precision_probe.json")


def _key(facts: dict, shapes: ProbeShapes) -> str:
    blob = json.dumps({"machine": facts, "shapes": shapes.shape_class()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: str, key: str, entry: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = _read_cache(path)
        data[key] = entry
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".precision_probe-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: the verdict is still used for this process
        logger.debug("precision probe: cannot write %s (%s)", path, exc)


def _linear_pass(x, w, g, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = torch.nn.functional.linear(x, w)
    y.backward(g.to(y.dtype))


def _attention_pass(q, k, v, g, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    y.backward(g.to(y.dtype))


def _workloads(shapes: ProbeShapes) -> list:
    gen = torch.Generator().manual_seed(0)
    rows = max(1, min(int(shapes.tokens), MAX_PROBE_TOKENS))
    work = []
    for d_in, d_out in shapes.linears:
        x = torch.randn(rows, d_in, generator=gen, requires_grad=True)
        w = torch.randn(d_out, d_in, generator=gen, requires_grad=True)
        g = torch.randn(rows, d_out, generator=gen)
        work.append((_linear_pass, (x, w, g)))
    if shapes.attention:
        b, h, t, d = shapes.attention
        b = max(1, min(b, MAX_PROBE_TOKENS // max(1, t)))
        q, k, v = (torch.randn(b, h, t, d, generator=gen, requires_grad=True) for _ in range(3))
        work.append((_attention_pass, (q, k, v, torch.randn(b, h, t, d, generator=gen))))
    return work


def measure(shapes: ProbeShapes, rounds: int = 3, timer: Callable[[], float] = time.perf_counter) -> dict:
    """Time the probe in fp32 and bf16 autocast (see the module docstring); returns ``{"fp32_ms", "bf16_ms",
    "ratio"}`` with ``ratio`` = fp32 time / bf16 time (> 1: bf16 is faster)."""
    work = _workloads(shapes)
    best = {False: math.inf, True: math.inf}
    for r in range(rounds + 1):  # round 0 warms both paths up (oneDNN primitive creation) and is not counted
        for bf16 in (False, True):
            t0 = timer()
            for fn, tensors in work:
                fn(*tensors, bf16=bf16)
            if r > 0:
                best[bf16] = min(best[bf16], timer() - t0)
        if r > 0 and best[True] > 10 * best[False]:  # bf16 far slower (no fast kernels): no need for more rounds
            break
    fp32, bf16 = best[False], best[True]
    return {"fp32_ms": round(fp32 * 1e3, 3), "bf16_ms": round(bf16 * 1e3, 3),
            "ratio": round(fp32 / bf16, 3) if bf16 > 0 else math.inf}


def last_probe() -> dict:
    """The probe result behind this process's latest ``auto`` decision on a CPU (empty when none was made)."""
    return dict(_LAST)


def decide(shapes: Optional[ProbeShapes] = None, broadcast: Optional[Callable] = None,
           is_main: bool = True, measure_fn: Callable = measure) -> str:
    """``bf16`` or ``no`` for this CPU and these shapes (:data:`GENERIC_SHAPES` when None); see the module docstring.

    ``broadcast(obj) -> obj``: under several processes, makes every rank return rank 0's verdict (``is_main`` says
    whether this is rank 0; only rank 0 probes and writes the cache)."""
    shapes = shapes or GENERIC_SHAPES
    facts = cpu_facts()
    key = _key(facts, shapes)
    entry = None
    if is_main:
        entry = _MEMO.get(key)
        if entry is None and has_bf16_instructions(facts):
            path = cache_path()
            entry = _read_cache(path).get(key)
            if not (isinstance(entry, dict) and entry.get("verdict") in ("bf16", "no")):
                result = measure_fn(shapes)
                verdict = "bf16" if result["ratio"] >= MARGIN else "no"
                entry = {"verdict": verdict, **result, "shapes": shapes.shape_class(), "cpu": facts["cpu"],
                         "torch": facts["torch"], "threads": facts["threads"],
                         "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "source": "measured"}
                _write_cache(path, key, entry)
            else:
                entry = dict(entry, source="cache")
        elif entry is None:
            entry = {"verdict": "no", "ratio": None, "source": "no bf16 instructions (AVX-512 bf16 / AMX)",
                     "cpu": facts["cpu"]}
        _MEMO[key] = entry
    if broadcast is not None:
        entry = broadcast(entry)
    _LAST.clear()
    _LAST.update(entry)
    verdict = entry["verdict"]
    if entry.get("ratio") is not None:
        logger.info("precision auto: %s (bf16 autocast %.2fx the speed of fp32 on this CPU's probe of the run's "
                    "shapes, %s)", "bf16" if verdict == "bf16" else "fp32", entry["ratio"], entry["source"])
    else:
        logger.info("precision auto: fp32 (%s)", entry["source"])
    return verdict
