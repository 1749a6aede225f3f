"""GLUE metric as a local ``evaluate`` module script (the Hub's ``glue`` script cannot be fetched offline).

Load it by path; it never touches the Hub::

    import evaluate
    from distiller_nlp.tasks.metrics import GLUE_METRIC_SCRIPT
    metric = evaluate.load(GLUE_METRIC_SCRIPT, config_name="mrpc")
    metric.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    # {'accuracy': 0.666..., 'f1': 0.666..., 'combined_score': 0.666...}

Config names: the GLUE tasks (cola, sst2, mrpc, stsb, qqp, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli,
ax) plus ``tweets`` and ``bbc-headlines``. Values are in each metric's own range (never percentages); the
definitions, degenerate cases (constant inputs → correlation 0.0) and ``combined_score`` are documented in
:mod:`distiller_nlp.tasks.metrics`, which does the computing.
"""

import datasets
import evaluate

from distiller_nlp.tasks.metrics import REGRESSION_TASKS, TASK_METRICS, compute_task_metrics

_DESCRIPTION = (
    "GLUE metrics computed offline by distiller_nlp: accuracy, binary F1 (positive class 1), macro F1, Matthews "
    "correlation, Pearson and Spearman correlation, and GLUE's combined_score (mean of accuracy and F1 for "
    "MRPC/QQP, of Pearson and Spearman for STS-B)."
)

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  booktitle={ICLR},
  year={2019}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (float scores for stsb).
    references: gold class ids (float scores for stsb).
Returns: a dict with the task's metrics, e.g. {"accuracy"} (sst2, mnli, qnli, rte, wnli), {"matthews"} (cola),
    {"accuracy", "f1", "combined_score"} (mrpc, qqp), {"pearson", "spearman", "combined_score"} (stsb),
    {"accuracy", "f1_macro"} (tweets, bbc-headlines).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DistillerGlue(evaluate.Metric):
    """``evaluate`` metric for the GLUE tasks and the toolkit's packaged text tasks (config name = task name)."""

    def _info(self):
        if self.config_name not in TASK_METRICS:
            raise KeyError(
                f"unknown config name {self.config_name!r} for the distiller_nlp GLUE metric; "
                f"use one of: {', '.join(TASK_METRICS)}"
            )
        dtype = "float32" if self.config_name in REGRESSION_TASKS else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
            format="numpy",
        )

    def _compute(self, predictions, references):
        return compute_task_metrics(TASK_METRICS[self.config_name], predictions, references)
