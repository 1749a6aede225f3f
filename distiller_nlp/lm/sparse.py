"""Sparse teacher targets: the teacher's top-k next-token log-probabilities, their token ids, and the rest.

Storing a causal-LM teacher's full distribution costs ``V`` numbers per token (49,152 for SmolLM2: 96 KiB in fp16);
offline distillation toolkits keep only the top-k: Arcee's DistillKit ("sparse distributions (top-k)") and Axolotl's
KD trainer (``axolotl/core/trainers/kd/topk_logprob/forward_kl.py``: per position ``target_token_ids`` and
``target_logprobs`` of shape ``[B, T, K]``; its loss is Σ_k p_k (log p_k - log q_k) over the K stored tokens only, with
the student's log-probabilities from the full-vocabulary ``logsumexp`` — or renormalised over the K tokens with
``top_k_before_softmax`` — and no term for the tail). We keep, per token,

- ``indices``  (…, k): the teacher's k most likely token ids, most likely first;
- ``logprobs`` (…, k): their log-probabilities under the *full* teacher softmax at temperature τ (not renormalised);
- ``rest_logprob`` (…): ``log(1 - Σ_k p)``, the log of the mass the teacher puts on every other token, computed
  exactly as ``logsumexp(z_rest / τ) - logsumexp(z / τ)`` (never as ``log1p(-sum)``, which cancels when the top-k
  covers almost everything).

**Convention for the divergences** (:mod:`distiller_nlp.lm.divergences`): teacher and student are compared on k + 1
atoms: the k stored tokens, where the student's log-probability is ``log_softmax(z_S / τ)`` gathered at the indices,
and one "rest" bucket, where the student's log-mass is ``logsumexp`` of its logits over every *other* token minus its
full ``logsumexp``. Both coarsened distributions sum to 1, so every divergence stays a divergence (≥ 0, 0 iff the
coarsened distributions agree) and, with k = V (no rest bucket), equals the dense loss. This is the "tail bucket"
variant of top-k KD; Axolotl's truncated sum (no tail term) is not a divergence (it can go negative for reverse KL
and ignores the mass the student puts outside the top-k), and renormalising the top-k drops the teacher's
uncertainty about the tail.

:func:`to_columns` / :func:`from_columns` store the targets as ``datasets`` columns (per example: a list per token of
k ints, of k floats, and one float), the toolkit's rule for derived data ("cached teacher outputs are ``datasets``
columns cached by fingerprint"); :func:`column_features` gives compact Arrow types (uint16 ids when V ≤ 65,536,
float16 values) whose size :func:`bytes_per_token` reports against dense storage.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = [
    "COLUMNS",
    "SparseTargets",
    "bytes_per_token",
    "column_features",
    "from_columns",
    "sparse_targets",
    "to_columns",
]

#: column names written by :func:`to_columns` (after the prefix)
COLUMNS = ("topk_ids", "topk_logprobs", "rest_logprob")

_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


@dataclass
class SparseTargets:
    """Top-k teacher targets: ``indices`` / ``logprobs`` of shape ``(..., k)``, ``rest_logprob`` of shape ``(...)``,
    over a vocabulary of ``vocab_size`` tokens, computed at softmax temperature ``temperature``."""

    indices: torch.Tensor
    logprobs: torch.Tensor
    rest_logprob: torch.Tensor
    vocab_size: int
    temperature: float = 1.0

    def __post_init__(self):
        if self.indices.shape != self.logprobs.shape:
            raise DistillerError(f"sparse targets: indices {tuple(self.indices.shape)} and logprobs "
                                 f"{tuple(self.logprobs.shape)} must have the same shape")
        if tuple(self.rest_logprob.shape) != tuple(self.indices.shape[:-1]):
            raise DistillerError(f"sparse targets: rest_logprob {tuple(self.rest_logprob.shape)} must have shape "
                                 f"{tuple(self.indices.shape[:-1])}")
        if not 1 <= self.indices.shape[-1] <= self.vocab_size:
            raise DistillerError(f"sparse targets: k = {self.indices.shape[-1]} must be in [1, {self.vocab_size}]")

    @property
    def k(self) -> int:
        return int(self.indices.shape[-1])

    @property
    def shape(self) -> torch.Size:
        """The leading (token) shape, e.g. ``(B, T)``."""
        return self.indices.shape[:-1]

    def to(self, device) -> SparseTargets:
        return SparseTargets(self.indices.to(device), self.logprobs.to(device), self.rest_logprob.to(device),
                             self.vocab_size, self.temperature)

    def probs_mass(self) -> torch.Tensor:
        """Σ of the stored probabilities plus the rest, per token (1 up to rounding; a consistency check)."""
        return self.logprobs.float().exp().sum(-1) + self.rest_logprob.float().exp()


@torch.no_grad()
def sparse_targets(teacher_logits: torch.Tensor, k: int, temperature: float = 1.0,
                   chunk_size: int = 1024) -> SparseTargets:
    """Top-k targets from teacher logits ``(..., V)``, computed in fp32, ``chunk_size`` tokens at a time.

    ``k`` larger than V is cut to V (then ``rest_logprob`` is ``-inf``: no mass is left)."""
    tau = float(temperature)
    if not math.isfinite(tau) or tau <= 0:
        raise DistillerError(f"temperature must be a positive number, got {temperature!r}")
    if int(k) < 1:
        raise DistillerError(f"k must be a positive integer, got {k!r}")
    vocab = teacher_logits.shape[-1]
    k = min(int(k), vocab)
    lead = teacher_logits.shape[:-1]
    flat = teacher_logits.reshape(-1, vocab)
    idx_out = torch.empty(flat.shape[0], k, dtype=torch.long, device=flat.device)
    lp_out = torch.empty(flat.shape[0], k, dtype=torch.float32, device=flat.device)
    rest_out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], max(1, int(chunk_size))):
        z = flat[start:start + chunk_size].float() / tau
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        values, idx = z.topk(k, dim=-1)
        idx_out[start:start + chunk_size] = idx
        lp_out[start:start + chunk_size] = values - lse
        if k < vocab:
            rest = torch.logsumexp(z.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True) - lse
            rest_out[start:start + chunk_size] = rest.squeeze(-1)
        else:
            rest_out[start:start + chunk_size] = float("-inf")
    return SparseTargets(idx_out.reshape(*lead, k), lp_out.reshape(*lead, k), rest_out.reshape(lead), vocab, tau)


def to_columns(targets: SparseTargets, lengths: Sequence[int] | None = None,
               prefix: str = "teacher_") -> dict[str, list]:
    """``datasets`` columns for batch targets of shape ``(B, T, k)``: one row per example; row ``b`` holds its first
    ``lengths[b]`` tokens (default: all ``T``), each a list of k ids / k log-probabilities / one rest log-mass.

    ``Dataset.from_dict(to_columns(t), features=column_features(V))`` stores them compactly."""
    if targets.indices.dim() != 3:
        raise DistillerError(f"to_columns expects (B, T, k) targets, got {tuple(targets.indices.shape)}")
    b, t, _ = targets.indices.shape
    lengths = [t] * b if lengths is None else [int(n) for n in lengths]
    if len(lengths) != b or any(not 0 <= n <= t for n in lengths):
        raise DistillerError(f"lengths {lengths} must be {b} numbers in [0, {t}]")
    ids = targets.indices.cpu().tolist()
    lps = targets.logprobs.float().cpu().tolist()
    rest = targets.rest_logprob.float().cpu().tolist()
    return {
        f"{prefix}topk_ids": [ids[i][:n] for i, n in enumerate(lengths)],
        f"{prefix}topk_logprobs": [lps[i][:n] for i, n in enumerate(lengths)],
        f"{prefix}rest_logprob": [rest[i][:n] for i, n in enumerate(lengths)],
    }


def from_columns(rows: Mapping[str, Sequence], vocab_size: int, temperature: float = 1.0,
                 length: int | None = None, prefix: str = "teacher_", device=None) -> SparseTargets:
    """Batch targets ``(B, T, k)`` from the columns of :func:`to_columns` (a ``datasets`` batch: ``dataset[a:b]``).

    Rows are right-padded to ``length`` (default: the longest row); a padded position holds a valid dummy
    distribution (uniform over k + 1 atoms) and must be masked out of the loss."""
    try:
        ids, lps, rest = (rows[f"{prefix}{c}"] for c in COLUMNS)
    except KeyError as e:
        raise DistillerError(f"sparse teacher columns: {e.args[0]!r} missing (have {', '.join(rows)})") from None
    if not len(ids):
        raise DistillerError("sparse teacher columns are empty")
    k = next((len(tok) for row in ids for tok in row), None)
    if k is None:
        raise DistillerError("sparse teacher columns hold no token")
    t = max(len(r) for r in ids) if length is None else int(length)
    b = len(ids)
    fill = -math.log(k + 1)
    idx = torch.arange(k).repeat(b, t, 1)
    lp = torch.full((b, t, k), fill, dtype=torch.float32)
    rp = torch.full((b, t), fill, dtype=torch.float32)
    for i in range(b):
        n = min(len(ids[i]), t)
        if n:
            idx[i, :n] = torch.as_tensor(ids[i][:n], dtype=torch.long)
            lp[i, :n] = torch.as_tensor(lps[i][:n], dtype=torch.float32)
            rp[i, :n] = torch.as_tensor(rest[i][:n], dtype=torch.float32)
    out = SparseTargets(idx, lp, rp, int(vocab_size), float(temperature))
    return out.to(device) if device is not None else out


def _index_dtype(vocab: int) -> str:
    return "uint16" if vocab <= 2 ** 16 else "int32"


def column_features(vocab_size: int, dtype: str = "float16", prefix: str = "teacher_"):
    """``datasets.Features`` for the columns of :func:`to_columns`: ids as uint16 (V ≤ 65,536) or int32, values as
    ``dtype`` (float16 or float32). float16 keeps log-probabilities to ~1e-3 relative; use float32 to be exact."""
    import datasets

    if dtype not in ("float16", "float32"):
        raise DistillerError(f"dtype must be float16 or float32, got {dtype!r}")
    nested = getattr(datasets, "List", None) or datasets.Sequence
    return datasets.Features({
        f"{prefix}topk_ids": nested(nested(datasets.Value(_index_dtype(vocab_size)))),
        f"{prefix}topk_logprobs": nested(nested(datasets.Value(dtype))),
        f"{prefix}rest_logprob": nested(datasets.Value(dtype)),
    })


def bytes_per_token(k: int, vocab: int, dtype: str = "float16") -> dict:
    """Storage per token: sparse top-k (``k`` ids of the smallest integer type holding ``vocab`` ids + ``k`` values
    + 1 rest value, values in ``dtype``) against the dense distribution in fp16 and fp32.

    ``bytes_per_token(32, 49152)`` → ``{"sparse": 130, "dense_fp16": 98304, "dense_fp32": 196608, ...}``: the
    Arrow payload, without the list offsets (4 bytes per token and per list)."""
    if dtype not in _DTYPE_BYTES:
        raise DistillerError(f"dtype must be one of {', '.join(_DTYPE_BYTES)}, got {dtype!r}")
    k, vocab = int(k), int(vocab)
    if not 1 <= k <= vocab:
        raise DistillerError(f"k must be in [1, {vocab}], got {k}")
    index_bytes = 2 if _index_dtype(vocab) == "uint16" else 4
    value_bytes = _DTYPE_BYTES[dtype]
    sparse = k * (index_bytes + value_bytes) + value_bytes
    return {"k": k, "vocab": vocab, "dtype": dtype, "sparse": sparse, "dense_fp16": 2 * vocab, "dense_fp32": 4 * vocab,
            "dense_fp16_over_sparse": 2 * vocab / sparse, "dense_fp32_over_sparse": 4 * vocab / sparse}
