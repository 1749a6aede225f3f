"""Generation metrics (ROUGE, exact match) and perplexity for causal-LM tasks, computed offline.

The Hub's ``rouge`` metric script cannot be fetched without network, so — as with the GLUE metrics
(:mod:`distiller_nlp.tasks.metrics`) — the toolkit computes ROUGE itself, with Google's ``rouge_score`` package (the
implementation the Hub script wraps), and exposes it through a ``compute(predictions=, references=)`` object.

===============  ==========  =======================================================================================
key              range       definition
===============  ==========  =======================================================================================
``rouge1``       [0, 1]      mean over examples of the ROUGE-1 F-measure (unigram overlap, clipped counts)
``rouge2``       [0, 1]      mean ROUGE-2 F-measure (bigram overlap)
``rougeL``       [0, 1]      mean ROUGE-L F-measure (longest common subsequence of the two token sequences; the
                             sentence-level variant, not ``rougeLsum``)
``exact_match``  [0, 1]      fraction of predictions equal to their reference after :func:`normalize_answer`
===============  ==========  =======================================================================================

ROUGE uses ``rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)``: text is lower-cased,
every run of characters other than ``a-z0-9`` is a separator, and tokens longer than three characters are Porter-
stemmed (so ``arrest`` matches ``arrested``). Values are F-measures in [0, 1] — never percentages (the Hub script's
``evaluate.load("rouge")`` gives the same numbers with ``use_stemmer=True`` and per-example averaging). An empty
prediction scores 0. :func:`perplexity` is ``exp`` of the token-mean negative log-likelihood over response tokens.
"""

from __future__ import annotations

import importlib.util
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from distiller_nlp.core.errors import DistillerError

__all__ = ["GENERATION_METRICS", "ROUGE_INSTALL", "normalize_answer", "generation_metrics", "perplexity",
           "GenerationMetric", "load_generation_metric", "evaluate_generation"]

#: The keys :func:`generation_metrics` returns.
GENERATION_METRICS = ("rouge1", "rouge2", "rougeL", "exact_match")
ROUGE_INSTALL = "pip install rouge_score (or pip install 'distiller-toolkit[lm]')"
_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
_EDGE = string.punctuation + "\u2018\u2019\u201c\u201d"


def _rouge_scorer():
    if importlib.util.find_spec("rouge_score") is None:
        raise DistillerError(f"ROUGE needs the package rouge_score, which is not installed: {ROUGE_INSTALL}")
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE_TYPES), use_stemmer=True)


def normalize_answer(text: str) -> str:
    """What exact match compares: case-folded, whitespace runs collapsed to one space, punctuation and quotes
    stripped from both ends (``' "Paris." '`` → ``paris``; inner punctuation is kept)."""
    return " ".join(str(text).casefold().split()).strip(_EDGE + " ")


def _texts(values: Any, what: str) -> list[str]:
    if isinstance(values, str):
        raise DistillerError(f"{what} must be a list of strings, got one string")
    try:
        out = list(values)
    except TypeError:
        raise DistillerError(f"{what} must be a list of strings, got {type(values).__name__}") from None
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise DistillerError(f"{what} must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
    return out


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{"rouge1", "rouge2", "rougeL", "exact_match"}``: per-example ROUGE F-measures (stemming on) and exact
    matches, averaged over the examples; each in [0, 1] (see the module docstring)."""
    preds, refs = _texts(predictions, "predictions"), _texts(references, "references")
    if len(preds) != len(refs):
        raise DistillerError(f"{len(preds)} predictions but {len(refs)} references")
    if not preds:
        raise DistillerError("no predictions to score")
    scorer = _rouge_scorer()
    sums = dict.fromkeys(_ROUGE_TYPES, 0.0)
    exact = 0
    for p, r in zip(preds, refs):
        scores = scorer.score(r, p)  # rouge_score's order: (target, prediction)
        for k in _ROUGE_TYPES:
            sums[k] += scores[k].fmeasure
        exact += normalize_answer(p) == normalize_answer(r)
    n = len(preds)
    out = {k: sums[k] / n for k in _ROUGE_TYPES}
    out["exact_match"] = exact / n
    return out


@torch.no_grad()
def perplexity(model, batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """``exp(Σ NLL / N)`` over the response tokens of all ``batches`` (a token mean, not a mean of per-example
    perplexities).

    Each batch holds ``input_ids``, ``attention_mask`` and ``labels`` (the Hugging Face convention: ``-100`` on prompt
    and padding; the label at position ``t`` is predicted from position ``t - 1``), e.g. from
    :func:`distiller_nlp.lm.tasks.lm_batches` (right-padded; pass ``position_ids`` too for left-padded batches).
    Log-probabilities are computed in fp32 at the labelled positions only. The model is used as given (call
    ``eval()`` first)."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in batches:
        if "labels" not in batch:
            raise DistillerError("perplexity: every batch needs 'labels' (-100 where a token is not scored)")
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
        labels = batch["labels"].to(device)[:, 1:]
        logits = model(**inputs).logits[:, :-1]
        keep = labels != -100
        if not bool(keep.any()):
            continue
        chosen = logits[keep].float()
        total += float(torch.nn.functional.cross_entropy(chosen, labels[keep], reduction="sum"))
        count += int(keep.sum())
    if count == 0:
        raise DistillerError("perplexity: no response token to score (all labels are -100)")
    return math.exp(total / count)


class GenerationMetric:
    """An ``evaluate``-style metric: ``GenerationMetric().compute(predictions=[...], references=[...])`` →
    :func:`generation_metrics`; ``add_batch(predictions=, references=)`` then ``compute()`` accumulates, like
    ``evaluate`` modules."""

    def __init__(self, name: str = "generation"):
        _rouge_scorer()  # fail at once when rouge_score is missing
        self.name = name
        self.config_name = name
        self.metric_names = GENERATION_METRICS
        self._preds: list[str] = []
        self._refs: list[str] = []

    def add_batch(self, *, predictions: Sequence[str], references: Sequence[str]) -> None:
        """Accumulate a batch for a later :meth:`compute`."""
        self._preds += _texts(predictions, "predictions")
        self._refs += _texts(references, "references")

    def compute(self, *, predictions: Sequence[str] | None = None,
                references: Sequence[str] | None = None) -> dict[str, float]:
        """The metrics of the given (or the accumulated) predictions and references."""
        if predictions is None and references is None:
            predictions, references = self._preds, self._refs
            self._preds, self._refs = [], []
        return generation_metrics(predictions or [], references or [])

    def __repr__(self) -> str:
        return f"GenerationMetric(name={self.name!r}, metrics={list(self.metric_names)})"


def load_generation_metric(task: str = "generation") -> GenerationMetric:
    """The metric object of a causal-LM task (``bbc-headline-gen``; every generation task uses the same metrics)."""
    return GenerationMetric(task)


def evaluate_generation(model, tokenizer, prompts: Sequence[str], references: Sequence[str], *,
                        max_new_tokens: int = 32, batch_size: int = 8, **generate_kwargs):
    """Greedy answers to ``prompts`` (:func:`distiller_nlp.lm.tasks.generate_texts`) scored against ``references``:
    ``(metrics, predictions)``."""
    from distiller_nlp.lm.tasks import generate_texts

    preds = generate_texts(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, batch_size=batch_size,
                           **generate_kwargs)
    return generation_metrics(preds, list(references)), preds

