"""The nine GLUE tasks, registered with their Hub columns, raw-file header aliases, label names and metrics."""

from __future__ import annotations

import logging
from typing import Any

from distiller_nlp.tasks.metrics import TASK_METRICS
from distiller_nlp.tasks.spec import TaskSpec, register_task

logger = logging.getLogger(__name__)

def _glue(name: str, text: str, pair: str | None, labels: list[str] | None, **kw: Any) -> TaskSpec:
    metrics = TASK_METRICS[name]
    main = "combined_score" if len(metrics) > 1 else metrics[0]
    return TaskSpec(
        name=name,
        text_column=text,
        text_pair_column=pair,
        num_labels=len(labels) if labels else 1,
        label_names=labels,
        is_regression=labels is None,
        metric_names=metrics,
        main_metric=main,
        family=f"glue-{name}",
        hub_path="nyu-mll/glue",
        hub_name=name,
        **kw,
    )


_PAIR_ALIASES = {"text_aliases": ("sentence1",), "text_pair_aliases": ("sentence2",)}
for _spec in (
    _glue(
        "cola", "sentence", None, ["unacceptable", "acceptable"],
        headerless_columns=("source", "label", "original_label", "sentence"),
        description="CoLA: is the sentence grammatically acceptable? (Matthews correlation)",
    ),
    _glue("sst2", "sentence", None, ["negative", "positive"], description="SST-2: movie-review sentence sentiment"),
    _glue(
        "mrpc", "sentence1", "sentence2", ["not_equivalent", "equivalent"],
        text_aliases=("#1 String",), text_pair_aliases=("#2 String",), label_aliases=("Quality",),
        description="MRPC: are the two sentences paraphrases? (accuracy and F1)",
    ),
    _glue(
        "stsb", "sentence1", "sentence2", None, label_aliases=("score",),
        description="STS-B: semantic similarity score 0-5 (Pearson and Spearman)",
    ),
    _glue(
        "qqp", "question1", "question2", ["not_duplicate", "duplicate"], label_aliases=("is_duplicate",),
        description="QQP: are the two Quora questions duplicates? (accuracy and F1)",
    ),
    _glue(
        "mnli", "premise", "hypothesis", ["entailment", "neutral", "contradiction"],
        text_aliases=("sentence1",), text_pair_aliases=("sentence2",), label_aliases=("gold_label",),
        eval_splits=("validation_matched", "validation_mismatched"), test_splits=("test_matched", "test_mismatched"),
        description="MNLI: premise/hypothesis entailment (accuracy on matched; mismatched reported too)",
    ),
    _glue(
        "qnli", "question", "sentence", ["entailment", "not_entailment"],
        description="QNLI: does the sentence answer the question?",
    ),
    _glue("rte", "sentence1", "sentence2", ["entailment", "not_entailment"], description="RTE: entailment"),
    _glue(
        "wnli", "sentence1", "sentence2", ["not_entailment", "entailment"],
        description="WNLI: Winograd NLI (note: label order differs from RTE/QNLI)",
    ),
):
    register_task(_spec)


