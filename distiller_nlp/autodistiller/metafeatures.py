"""Dataset meta-features for AutoDistiller: a fixed-size vector describing a task, from its training data and teacher.

:func:`compute_meta_features` returns a flat ``{name: float}`` dict whose keys are always exactly
:data:`META_FEATURE_NAMES` (in that order), whatever the input; a feature that does not apply (a label feature of a
regression task, teacher features without a teacher, ...) is ``float('nan')``. Results are deterministic for a given
``seed``: every sample is drawn with its own seeded generator, and the teacher sees the same batches every call.
Only the training split and the teacher are read, except for the two ``mf_teacher_*`` features, which need an
``eval_set`` and ``teacher_finetuned=True``.

Size and task type
    ``mf_n_train``        number of training examples.
    ``mf_log_n_train``    ``log(n_train)`` (natural log).
    ``mf_num_labels``     ``task.num_labels`` (1 for regression).
    ``mf_is_pair``        1.0 for a sentence-pair task, else 0.0.
    ``mf_is_regression``  1.0 for a regression task, else 0.0 (a single-sentence classification task has both 0).

Token lengths (the tokenizer, without truncation and without special tokens; pairs: both sides summed), over the
training set, or a seeded sample of :data:`MAX_STAT_EXAMPLES` examples when it is larger
    ``mf_len_mean``, ``mf_len_std`` (population std), ``mf_len_p50``, ``mf_len_p90``  of the token counts.
    ``mf_frac_truncated`` share of examples longer than ``max_length`` once special tokens are added
                          (``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` for BERT), i.e. cut at that length.

Labels (all training labels; classification labels < 0 = unlabelled, and non-finite regression targets, are ignored)
    ``mf_label_entropy``  entropy of the class distribution divided by ``log(num_labels)``, in [0, 1]
                          (1 = balanced); NaN for regression or ``num_labels < 2``.
    ``mf_majority_frac``  share of the most frequent class; NaN for regression.
    ``mf_label_std``      population std of the regression targets; NaN for classification.

Vocabulary (same examples as the token lengths, except the type/token ratio)
    ``mf_unk_rate``       share of tokens (special tokens excluded) that are the tokenizer's unk token; 0.0 for a
                          tokenizer without one (byte-level BPE cannot produce unknowns).
    ``mf_type_token_ratio`` distinct lower-cased whitespace words / all words, on a seeded sample of at most
                          :data:`TTR_SAMPLE` examples (a fixed size, so the ratio does not simply shrink with the
                          dataset size; datasets smaller than that use all examples).
    ``mf_word_len_mean``  mean character length of the whitespace words.

Teacher embeddings (a seeded sample of at most ``max_embed_examples`` training examples, truncated to
``max_length`` tokens; the mean over non-padding positions of the teacher's last hidden state, computed in eval
mode under ``torch.no_grad()``; NaN without a teacher). All are independent of the embedding width ``d``:
    ``mf_emb_norm_mean``  mean L2 norm of the embeddings.
    ``mf_emb_cos_to_centroid`` mean cosine similarity of each embedding to the mean embedding (anisotropy).
    ``mf_emb_eff_rank``   participation ratio ``(Σλ)² / Σλ²`` of the covariance eigenvalues ``λ``, divided by ``d``
                          (in (0, 1]; note it is also bounded by ``(n - 1) / d`` for ``n`` sampled examples).
    ``mf_emb_fisher``     between-class / within-class variance: ``Σ_c n_c‖μ_c − μ‖² / Σ_i ‖x_i − μ_{y_i}‖²``
                          (traces of the scatter matrices); NaN for regression or fewer than two classes.
    ``mf_emb_centroid_acc`` leave-one-out nearest-class-centroid accuracy with cosine similarity (each example is
                          compared with its own class centroid computed without it); NaN for regression or fewer
                          than two classes.

Fine-tuned teacher (only with ``teacher_finetuned=True`` and an ``eval_set``; else NaN), on the labelled rows of
``eval_set`` — at most ``max_eval_examples`` of them (default 1,000: a seeded, class-stratified sample for
classification, a seeded random one for regression; ``None`` = all), which keeps the whole computation under a minute
on one CPU core; the sampled score has a standard error of about 1.5 points for an accuracy near 0.75
    ``mf_teacher_dev_score`` the task's main metric (``task.main_metric``) of the teacher
                          (via :func:`distiller_nlp.core.rundir.task_metric_fn`).
    ``mf_teacher_entropy`` mean entropy of the teacher's softmax on ``eval_set`` divided by ``log(num_labels)``;
                          NaN for regression.

Timing is logged (``logging.getLogger(__name__)``, INFO), never returned. :func:`meta_features_cache_key` gives a
short key for caching the result per (training set, eval set, teacher, flag).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from typing import Any, Sequence

import numpy as np

from distiller_nlp.core.errors import DistillerError

logger = logging.getLogger(__name__)

META_FEATURE_NAMES: tuple[str, ...] = (
    "mf_n_train",
    "mf_log_n_train",
    "mf_num_labels",
    "mf_is_pair",
    "mf_is_regression",
    "mf_len_mean",
    "mf_len_std",
    "mf_len_p50",
    "mf_len_p90",
    "mf_frac_truncated",
    "mf_label_entropy",
    "mf_majority_frac",
    "mf_label_std",
    "mf_unk_rate",
    "mf_type_token_ratio",
    "mf_word_len_mean",
    "mf_emb_norm_mean",
    "mf_emb_cos_to_centroid",
    "mf_emb_eff_rank",
    "mf_emb_fisher",
    "mf_emb_centroid_acc",
    "mf_teacher_dev_score",
    "mf_teacher_entropy",
)

#: Token-length and vocabulary statistics use at most this many (seeded-sampled) training examples.
MAX_STAT_EXAMPLES = 20_000
#: The type/token ratio is computed on a seeded sample of at most this many examples.
TTR_SAMPLE = 1_000
#: Bump when a feature's definition changes: it is part of :func:`meta_features_cache_key`.
FEATURES_VERSION = 1

# Tags that give each sample its own generator, so e.g. changing max_embed_examples leaves the other samples alone.
_STATS_TAG, _TTR_TAG, _EMBED_TAG, _EVAL_TAG = 1, 2, 3, 4
_NAN = float("nan")


# --------------------------------------------------------------------------------------------------------------------
# Small numeric helpers (public so they can be tested on their own)
# --------------------------------------------------------------------------------------------------------------------
def normalized_entropy(counts: Sequence[float], num_classes: int | None = None) -> float:
    """Entropy of the distribution ``counts / Σ counts`` divided by ``log(num_classes)`` (default: ``len(counts)``).

    NaN for fewer than two classes or no counts.
    """
    c = np.asarray(counts, dtype=np.float64)
    k = len(c) if num_classes is None else int(num_classes)
    total = c.sum()
    if k < 2 or total <= 0:
        return _NAN
    p = c[c > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(k))


def participation_ratio(eigenvalues: Sequence[float]) -> float:
    """``(Σλ)² / Σλ²`` of non-negative eigenvalues (negative round-off is clipped to 0): how many directions carry
    the variance (``d`` for an isotropic covariance, 1 for a rank-1 one). NaN when all are zero."""
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    sq = float((lam ** 2).sum())
    if sq <= 0:
        return _NAN
    return float(lam.sum() ** 2 / sq)


def covariance_eigenvalues(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of the sample covariance (``ddof=1``) of the rows of ``x`` (``n × d``), via the SVD of the centred
    data; ``min(n, d)`` values, descending."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] < 2:
        return np.zeros(0)
    centred = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(centred, compute_uv=False)
    return s ** 2 / (x.shape[0] - 1)


def fisher_ratio(x: np.ndarray, labels: Sequence[int]) -> float:
    """Between-class / within-class scatter, ``Σ_c n_c‖μ_c − μ‖² / Σ_i ‖x_i − μ_{y_i}‖²``.

    NaN with fewer than two classes present or zero within-class scatter.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    classes = np.unique(y)
    if len(classes) < 2:
        return _NAN
    mu = x.mean(axis=0)
    between = within = 0.0
    for c in classes:
        xc = x[y == c]
        mc = xc.mean(axis=0)
        between += len(xc) * float(((mc - mu) ** 2).sum())
        within += float(((xc - mc) ** 2).sum())
    if within <= 0:
        return _NAN
    return between / within


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


def loo_centroid_accuracy(x: np.ndarray, labels: Sequence[int]) -> float:
    """Leave-one-out nearest-class-centroid accuracy with cosine similarity.

    Each example is assigned to the class whose centroid (the mean embedding of that class; for its own class, the
    mean of the *other* members) is most cosine-similar to it. A class whose only member is the example itself has no
    centroid for it. Ties go to the lower class id. NaN with fewer than two classes present.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(labels)
    classes, yi = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        return _NAN
    counts = np.bincount(yi, minlength=len(classes))
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, yi, x)
    xu = _unit(x)
    # Cosine is scale-invariant, so a centroid's direction is its sum's direction.
    sims = xu @ _unit(sums).T
    rows = np.arange(len(x))
    own = sums[yi] - x
    own_sim = (xu * _unit(own)).sum(axis=1)
    own_sim[counts[yi] <= 1] = -np.inf
    sims[rows, yi] = own_sim
    return float((sims.argmax(axis=1) == yi).mean())


# --------------------------------------------------------------------------------------------------------------------
# Input checks and sampling
# --------------------------------------------------------------------------------------------------------------------
def _check_dataset(ds: Any, what: str, need_pair: bool) -> None:
    cols = getattr(ds, "column_names", None)
    if isinstance(cols, dict):
        raise DistillerError(f"{what} is a DatasetDict (splits {sorted(cols)}); pass one split, e.g. ds['train']")
    if cols is None:
        raise DistillerError(f"{what} must be a datasets.Dataset, got {type(ds).__name__}")
    if len(ds) == 0:
        raise DistillerError(f"{what} is empty: meta-features need at least one example")
    for col in ("text", "label") + (("text_pair",) if need_pair else ()):
        if col not in cols:
            raise DistillerError(f"{what} has no '{col}' column (columns: {', '.join(cols) or 'none'})")


def _sample(n: int, k: int, seed: int, tag: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``min(n, k)`` of ``range(n)`` (all of them when ``n <= k``)."""
    if n <= k:
        return np.arange(n)
    rng = np.random.default_rng([int(seed), tag])
    return np.sort(rng.choice(n, size=k, replace=False))


def _texts(ds: Any, col: str, idx: np.ndarray | None = None) -> list[str]:
    if idx is not None and len(idx) < len(ds):
        ds = ds.select(idx.tolist())
    return ["" if t is None else str(t) for t in list(ds[col])]


def _labels(ds: Any, regression: bool, idx: np.ndarray | None = None) -> np.ndarray:
    if idx is not None and len(idx) < len(ds):
        ds = ds.select(idx.tolist())
    raw = list(ds["label"])
    if regression:
        return np.array([_NAN if v is None else float(v) for v in raw], dtype=np.float64)
    return np.array([-1 if v is None else int(v) for v in raw], dtype=np.int64)


def _label_mask(labels: np.ndarray, regression: bool) -> np.ndarray:
    return np.isfinite(labels) if regression else labels >= 0


# --------------------------------------------------------------------------------------------------------------------
# Feature groups
# --------------------------------------------------------------------------------------------------------------------
def _length_features(texts: list[str], pairs: list[str] | None, tokenizer: Any, max_length: int) -> dict[str, float]:
    lengths = np.zeros(len(texts), dtype=np.int64)
    n_unk = 0
    unk_id = getattr(tokenizer, "unk_token_id", None)
    chunk = 1000
    for start in range(0, len(texts), chunk):
        for side in (texts, pairs):
            if side is None:
                continue
            enc = tokenizer(side[start:start + chunk], add_special_tokens=False, truncation=False, verbose=False)
            ids = enc["input_ids"]
            lengths[start:start + len(ids)] += np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            if unk_id is not None:
                n_unk += sum(i.count(unk_id) for i in ids)
    n_special = int(tokenizer.num_special_tokens_to_add(pair=pairs is not None))
    total = int(lengths.sum())
    return {
        "mf_len_mean": float(lengths.mean()),
        "mf_len_std": float(lengths.std()),
        "mf_len_p50": float(np.percentile(lengths, 50)),
        "mf_len_p90": float(np.percentile(lengths, 90)),
        "mf_frac_truncated": float(((lengths + n_special) > max_length).mean()),
        "mf_unk_rate": (n_unk / total if total else _NAN) if unk_id is not None else 0.0,
    }


def _words(texts: list[str], pairs: list[str] | None) -> list[str]:
    words: list[str] = []
    for side in (texts, pairs):
        if side is not None:
            for t in side:
                words.extend(t.lower().split())
    return words


def _label_features(labels: np.ndarray, task: Any) -> dict[str, float]:
    out = {"mf_label_entropy": _NAN, "mf_majority_frac": _NAN, "mf_label_std": _NAN}
    regression = bool(task.is_regression)
    y = labels[_label_mask(labels, regression)]
    if len(y) == 0:
        return out
    if regression:
        out["mf_label_std"] = float(y.std())
    else:
        k = max(int(task.num_labels), int(y.max()) + 1)
        counts = np.bincount(y, minlength=k)
        out["mf_label_entropy"] = normalized_entropy(counts, k)
        out["mf_majority_frac"] = float(counts.max() / counts.sum())
    return out


def _model_inputs(tokenizer: Any, texts: list[str], pairs: list[str] | None, max_length: int, device: Any):
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
    names = set(getattr(tokenizer, "model_input_names", None) or enc.keys())
    return {k: v.to(device) for k, v in enc.items() if k in names}


def _run_teacher(teacher: Any, tokenizer: Any, texts: list[str], pairs: list[str] | None, *, max_length: int,
                 batch_size: int, want_embeddings: bool, progress: bool, desc: str):
    """Forward ``texts`` through the teacher in length-sorted batches; return (embeddings, logits) in input order
    (float64 numpy; embeddings ``None`` unless asked for, logits ``None`` if the model has none)."""
    import torch

    # Sort by (approximate) length so batches pad little; a stable sort keeps the batches identical across calls.
    approx = [len(t) + (len(pairs[i]) if pairs is not None else 0) for i, t in enumerate(texts)]
    order = np.argsort(np.asarray(approx), kind="stable")
    try:
        device = next(teacher.parameters()).device
    except StopIteration:  # pragma: no cover - a parameterless model
        device = torch.device("cpu")
    embs: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    batches = range(0, len(order), max(1, int(batch_size)))
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch")
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.no_grad():
            for start in batches:
                sel = order[start:start + batch_size]
                bt = [texts[i] for i in sel]
                bp = [pairs[i] for i in sel] if pairs is not None else None
                inputs = _model_inputs(tokenizer, bt, bp, max_length, device)
                out = teacher(**inputs, output_hidden_states=want_embeddings, return_dict=True)
                if want_embeddings:
                    h = out.hidden_states[-1].float()
                    m = inputs["attention_mask"].to(h.dtype).unsqueeze(-1)
                    pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
                    embs.append(pooled.cpu().double().numpy())
                lg = getattr(out, "logits", None)
                if lg is not None:
                    logits.append(lg.float().cpu().double().numpy())
    finally:
        teacher.train(was_training)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    e = np.concatenate(embs)[inverse] if embs else None
    lg_all = np.concatenate(logits)[inverse] if logits else None
    return e, lg_all


def _embedding_features(emb: np.ndarray, labels: np.ndarray, regression: bool) -> dict[str, float]:
    norms = np.linalg.norm(emb, axis=1)
    centroid = emb.mean(axis=0)
    cos = _unit(emb) @ _unit(centroid) if np.linalg.norm(centroid) > 0 else None
    pr = participation_ratio(covariance_eigenvalues(emb))
    out = {
        "mf_emb_norm_mean": float(norms.mean()),
        "mf_emb_cos_to_centroid": float(cos.mean()) if cos is not None else _NAN,
        "mf_emb_eff_rank": pr / emb.shape[1],
        "mf_emb_fisher": _NAN,
        "mf_emb_centroid_acc": _NAN,
    }
    if not regression:
        keep = labels >= 0
        out["mf_emb_fisher"] = fisher_ratio(emb[keep], labels[keep])
        out["mf_emb_centroid_acc"] = loo_centroid_accuracy(emb[keep], labels[keep])
    return out


def _teacher_eval_features(teacher: Any, tokenizer: Any, eval_set: Any, task: Any, *, max_length: int,
                           batch_size: int, progress: bool, max_examples: int | None, seed: int) -> dict[str, float]:
    from distiller_nlp.tasks import task_metric_fn
    from distiller_nlp.tasks.metrics import canonical_metric_name

    regression = bool(task.is_regression)
    labels = _labels(eval_set, regression)
    idx = np.flatnonzero(_label_mask(labels, regression))
    out = {"mf_teacher_dev_score": _NAN, "mf_teacher_entropy": _NAN}
    if len(idx) == 0:
        logger.warning("meta-features: eval set has no labelled rows; teacher dev features are NaN")
        return out
    if max_examples is not None and len(idx) > max_examples:
        if regression:
            idx = idx[_sample(len(idx), int(max_examples), seed, _EVAL_TAG)]
        else:
            from distiller_nlp.tasks import stratified_subset

            sub_seed = int(np.random.default_rng([int(seed), _EVAL_TAG]).integers(2 ** 31))
            idx = idx[stratified_subset(labels[idx], int(max_examples), sub_seed)]
    texts = _texts(eval_set, "text", idx)
    pairs = _texts(eval_set, "text_pair", idx) if task.is_pair else None
    _, logits = _run_teacher(teacher, tokenizer, texts, pairs, max_length=max_length, batch_size=batch_size,
                             want_embeddings=False, progress=progress, desc="meta-features: teacher on eval set")
    want = 1 if regression else int(task.num_labels)
    if logits is None or logits.ndim != 2 or logits.shape[1] != want:
        shape = None if logits is None else tuple(logits.shape)
        raise DistillerError(
            f"teacher_finetuned=True but the teacher's outputs (shape {shape}) do not match task '{task.name}' "
            f"({want} outputs): pass a teacher fine-tuned for the task, or teacher_finetuned=False"
        )
    y = labels[idx]
    scores = task_metric_fn(task)(logits, y)
    main = task.main_metric
    key = main if main in scores else canonical_metric_name(main)
    out["mf_teacher_dev_score"] = float(scores[key])
    if not regression and want >= 2:
        z = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        ent = -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)
        out["mf_teacher_entropy"] = float(ent.mean() / math.log(want))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------------
def compute_meta_features(
    train: Any,
    task: Any,
    tokenizer: Any,
    teacher: Any = None,
    *,
    eval_set: Any = None,
    teacher_finetuned: bool = False,
    max_embed_examples: int = 1000,
    max_eval_examples: int | None = 1000,
    max_length: int = 64,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, float]:
    """The meta-features of a task (see the module docstring), as ``{name: float}`` with keys
    :data:`META_FEATURE_NAMES` in order.

    ``train`` / ``eval_set``: :class:`datasets.Dataset` splits as returned by
    :func:`distiller_nlp.tasks.load_task_data` (``text``, [``text_pair``], ``label``). ``teacher``: a
    ``*ForSequenceClassification`` model (any device) or ``None`` (teacher features NaN). ``teacher_finetuned``: the
    teacher's head is trained for ``task``, so its score and confidence on ``eval_set`` are meaningful.
    ``max_embed_examples``: how many training examples the teacher embeds; ``max_eval_examples``: how many labelled
    ``eval_set`` rows the fine-tuned teacher is scored on (``None`` = all); ``max_length``: truncation length for
    the teacher and the ``mf_frac_truncated`` threshold. Raises :class:`DistillerError` for an empty training set or
    a missing ``text``/``text_pair``/``label`` column.
    """
    t0 = time.perf_counter()
    is_pair, regression = bool(task.is_pair), bool(task.is_regression)
    _check_dataset(train, "training set", is_pair)
    use_eval = teacher is not None and teacher_finetuned and eval_set is not None
    if use_eval:
        _check_dataset(eval_set, "eval set", is_pair)
    if max_eval_examples is not None and int(max_eval_examples) < 1:
        raise DistillerError(f"max_eval_examples must be >= 1 or None, got {max_eval_examples}")
    if int(max_length) < 1:
        raise DistillerError(f"max_length must be >= 1, got {max_length}")

    feats: dict[str, float] = {k: _NAN for k in META_FEATURE_NAMES}
    n = len(train)
    feats.update({
        "mf_n_train": float(n),
        "mf_log_n_train": math.log(n),
        "mf_num_labels": float(task.num_labels),
        "mf_is_pair": float(is_pair),
        "mf_is_regression": float(regression),
    })
    feats.update(_label_features(_labels(train, regression), task))

    stat_idx = _sample(n, MAX_STAT_EXAMPLES, seed, _STATS_TAG)
    texts = _texts(train, "text", stat_idx)
    pairs = _texts(train, "text_pair", stat_idx) if is_pair else None
    feats.update(_length_features(texts, pairs, tokenizer, int(max_length)))
    words = _words(texts, pairs)
    feats["mf_word_len_mean"] = float(np.mean([len(w) for w in words])) if words else _NAN
    ttr_idx = _sample(n, TTR_SAMPLE, seed, _TTR_TAG)
    ttr_words = _words(_texts(train, "text", ttr_idx), _texts(train, "text_pair", ttr_idx) if is_pair else None)
    feats["mf_type_token_ratio"] = len(set(ttr_words)) / len(ttr_words) if ttr_words else _NAN
    t_stats = time.perf_counter()

    if teacher is not None and int(max_embed_examples) > 0:
        idx = _sample(n, int(max_embed_examples), seed, _EMBED_TAG)
        emb, _ = _run_teacher(teacher, tokenizer, _texts(train, "text", idx),
                              _texts(train, "text_pair", idx) if is_pair else None, max_length=int(max_length),
                              batch_size=batch_size, want_embeddings=True, progress=progress,
                              desc="meta-features: teacher embeddings")
        feats.update(_embedding_features(emb, _labels(train, regression, idx), regression))
    t_emb = time.perf_counter()

    if use_eval:
        cap = None if max_eval_examples is None else int(max_eval_examples)
        feats.update(_teacher_eval_features(teacher, tokenizer, eval_set, task, max_length=int(max_length),
                                            batch_size=batch_size, progress=progress, seed=seed, max_examples=cap))
    t_end = time.perf_counter()
    logger.info(
        "meta-features for task %s (%d training examples) in %.1f s: data %.1f s, teacher embeddings %.1f s, "
        "teacher on eval set %.1f s",
        getattr(task, "name", "?"), n, t_end - t0, t_stats - t0, t_emb - t_stats, t_end - t_emb,
    )
    return {k: float(feats[k]) for k in META_FEATURE_NAMES}


def meta_features_cache_key(train: Any, teacher_path: str, teacher_finetuned: bool, eval_set: Any = None) -> str:
    """A 16-hex-digit sha256 key of the datasets' ``_fingerprint``, the teacher path, the flag and the feature
    definitions (:data:`META_FEATURE_NAMES`, :data:`FEATURES_VERSION`). The tokenizer and the keyword arguments of
    :func:`compute_meta_features` are not part of it: callers that vary them must add them to the key."""

    def fp(ds: Any, what: str) -> str | None:
        if ds is None:
            return None
        value = getattr(ds, "_fingerprint", None)
        if not value:
            raise DistillerError(f"{what} has no _fingerprint: pass a datasets.Dataset")
        return str(value)

    payload = {
        "version": FEATURES_VERSION,
        "names": list(META_FEATURE_NAMES),
        "train": fp(train, "training set"),
        "eval": fp(eval_set, "eval set"),
        "teacher": str(teacher_path),
        "finetuned": bool(teacher_finetuned),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]
