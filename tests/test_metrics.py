"""GLUE metrics pinned against hand-computed values, and the offline ``evaluate`` path."""

import math
import os
import warnings

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

from distiller_nlp.tasks import metrics as M  # noqa: E402
from distiller_nlp.core.errors import DistillerError  # noqa: E402


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _confusion(tp, tn, fp, fn):
    """(predictions, references) with the given binary confusion matrix."""
    preds = [1] * tp + [0] * tn + [1] * fp + [0] * fn
    refs = [1] * tp + [0] * tn + [0] * fp + [1] * fn
    return preds, refs


def test_accuracy_by_hand():
    assert M.accuracy([0, 1, 1, 0, 1], [0, 1, 0, 0, 0]) == pytest.approx(3 / 5)
    # 2-D predictions are logits: arg-max
    assert M.accuracy(np.array([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0]]), [0, 1, 1]) == pytest.approx(2 / 3)


def test_f1_by_hand():
    preds, refs = _confusion(tp=2, tn=2, fp=1, fn=1)
    assert M.f1(preds, refs) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2TP/(2TP+FP+FN) = 2/3
    preds, refs = _confusion(tp=5, tn=1, fp=3, fn=0)
    assert M.f1(preds, refs) == pytest.approx(10 / 13)
    assert M.f1([0, 0, 0], [0, 0, 0]) == 0.0  # no positives anywhere: defined as 0
    with pytest.raises(DistillerError, match="label 2"):
        M.f1([0, 1, 2], [0, 1, 1])


def test_f1_macro_by_hand():
    # class 0: F1 1; class 1: TP 1, FN 1 -> 2/3; class 2: TP 1, FP 1 -> 2/3
    assert M.f1_macro([0, 1, 2, 2], [0, 1, 1, 2]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


@pytest.mark.parametrize("tp,tn,fp,fn", [(3, 4, 1, 2), (10, 2, 5, 1), (1, 1, 3, 4)])
def test_matthews_formula(tp, tn, fp, fn):
    preds, refs = _confusion(tp, tn, fp, fn)
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert M.matthews_corrcoef(preds, refs) == pytest.approx(expected)


def test_matthews_known_values():
    assert M.matthews_corrcoef(*_confusion(3, 4, 1, 2)) == pytest.approx(10 / math.sqrt(600))
    assert M.matthews_corrcoef([0, 1, 0, 1], [0, 1, 0, 1]) == pytest.approx(1.0)
    assert M.matthews_corrcoef([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert M.matthews_corrcoef([0, 1, 2, 2, 1], [0, 1, 2, 2, 1]) == pytest.approx(1.0)  # multi-class


def test_pearson_spearman_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 5, 9]
    # dx = (-1.5,-.5,.5,1.5), dy = (-3,-1,0,4): Σdxdy = 11, Σdx² = 5, Σdy² = 26
    assert M.pearson(x, y) == pytest.approx(11 / math.sqrt(5 * 26))
    # ties get their average rank: ranks x = (1, 2.5, 2.5, 4), y = (1, 3, 2, 4) -> 4.5 / sqrt(4.5 * 5)
    assert M.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    cubic = [1, 8, 27, 64]
    assert M.spearman([1, 2, 3, 4], cubic) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3, 4], cubic) < 0.99
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_degenerate_cases_are_zero_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert M.matthews_corrcoef([1, 1, 1, 1], [0, 1, 0, 1]) == 0.0  # constant predictions
        assert M.matthews_corrcoef([0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant references
        assert M.pearson([2.0, 2.0, 2.0], [0.0, 1.0, 5.0]) == 0.0
        assert M.spearman([0.0, 1.0, 5.0], [3.0, 3.0, 3.0]) == 0.0
        assert M.pearson([1.0], [2.0]) == 0.0
        out = M.compute_task_metrics(["pearson", "spearman"], [1.0, 1.0], [0.0, 4.0])
    assert out == {"pearson": 0.0, "spearman": 0.0, "combined_score": 0.0}


def test_compute_task_metrics_combined_scores():
    preds, refs = _confusion(tp=2, tn=2, fp=1, fn=1)
    out = M.compute_task_metrics(M.TASK_METRICS["mrpc"], preds, refs)
    assert set(out) == {"accuracy", "f1", "combined_score"}
    assert out["accuracy"] == pytest.approx(4 / 6) and out["f1"] == pytest.approx(2 / 3)
    assert out["combined_score"] == pytest.approx((4 / 6 + 2 / 3) / 2)
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0]
    out = M.compute_task_metrics(["pearson", "spearman"], x, y)
    assert out["spearman"] == pytest.approx(1.0)
    assert out["combined_score"] == pytest.approx((11 / math.sqrt(130) + 1.0) / 2)
    assert M.compute_task_metrics(["matthews_correlation"], *_confusion(3, 4, 1, 2)) == {
        "matthews": pytest.approx(10 / math.sqrt(600))
    }
    # values in their own range, never percentages
    assert 0.0 <= M.compute_task_metrics(["accuracy"], [1, 1], [1, 1])["accuracy"] == 1.0


def test_input_errors():
    with pytest.raises(DistillerError, match="differ in length"):
        M.accuracy([0, 1], [0])
    with pytest.raises(DistillerError, match="zero examples"):
        M.accuracy([], [])
    with pytest.raises(DistillerError, match="unknown metric 'bleu'"):
        M.compute_task_metrics(["bleu"], [0], [0])
    with pytest.raises(DistillerError, match="combined_score"):
        M.compute_task_metrics(["combined_score"], [0], [0])
    with pytest.raises(DistillerError, match="no metrics defined for task 'nope'"):
        M.load_metric("nope")


def test_task_metric_fallback_and_add_batch():
    m = M.TaskMetric(["accuracy", "f1"])
    m.add_batch(predictions=[1, 1], references=[1, 0])
    m.add_batch(predictions=np.array([0, 0]), references=np.array([1, 0]))
    out = m.compute()
    assert out["accuracy"] == pytest.approx(0.5) and out["f1"] == pytest.approx(0.5)

    class Spec:  # anything with name + metric_names, like data.TaskSpec for a custom dataset
        name = "custom-topics"
        metric_names = ("accuracy", "f1_macro")

    metric = M.load_metric(Spec())
    assert isinstance(metric, M.TaskMetric)
    assert metric.compute(predictions=[0, 1, 2], references=[0, 1, 1])["accuracy"] == pytest.approx(2 / 3)


def test_evaluate_load_offline_local_script():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(M.GLUE_METRIC_SCRIPT, config_name="sst2")
    assert isinstance(metric, evaluate.EvaluationModule)
    assert metric.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": pytest.approx(0.75)}

    mrpc = M.load_metric("mrpc")
    assert isinstance(mrpc, evaluate.EvaluationModule)  # the evaluate path, not the fallback
    preds, refs = _confusion(tp=2, tn=2, fp=1, fn=1)
    assert mrpc.compute(predictions=preds, references=refs) == pytest.approx(
        {"accuracy": 4 / 6, "f1": 2 / 3, "combined_score": (4 / 6 + 2 / 3) / 2}
    )
    stsb = M.load_metric("stsb")  # float features
    out = stsb.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[2.0, 4.0, 5.0, 9.0])
    assert out["pearson"] == pytest.approx(11 / math.sqrt(130), rel=1e-6)
    cola = M.load_metric("cola")
    cola.add_batch(predictions=[1, 1, 1], references=[1, 0, 1])
    assert cola.compute() == {"matthews": 0.0}
    assert set(M.load_metric("tweets").compute(predictions=[0, 1, 2], references=[0, 1, 2])) == {"accuracy", "f1_macro"}
    with pytest.raises(KeyError, match="unknown config name 'nope'"):
        evaluate.load(M.GLUE_METRIC_SCRIPT, config_name="nope")


def test_load_metric_falls_back_when_evaluate_fails(monkeypatch):
    evaluate = pytest.importorskip("evaluate")

    def broken(*args, **kwargs):
        raise OSError("read-only cache")

    monkeypatch.setattr(evaluate, "load", broken)
    metric = M.load_metric("qqp")
    assert isinstance(metric, M.TaskMetric)
    assert metric.compute(predictions=[1, 0], references=[1, 1]) == pytest.approx(
        {"accuracy": 0.5, "f1": 2 / 3, "combined_score": (0.5 + 2 / 3) / 2}
    )
