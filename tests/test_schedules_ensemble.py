"""KD schedules (temperature / loss weights over training), several teachers with averaged soft targets, and the
optimizer choice. Formulas against hand-computed values; the multi-teacher identity (two copies of one teacher
average to that teacher) end to end on the command line."""

import json
import math
import os

import pytest
import torch

from distiller_nlp.cli import main
from distiller_nlp.config import KDConfig, ScheduleConfig, DistillConfig
from distiller_nlp.core.train_args import TrainArgs
from distiller_nlp.core.config import load_config
from distiller_nlp.core.schedules import schedule_value
from distiller_nlp.kd.ensemble import ensemble_logits
from distiller_nlp.core.errors import DistillerError

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"
FAST = ["--precision", "no", "--report-to", "none", "--max-length", "16", "--batch-size", "16", "--optim", "adamw"]


def test_schedule_values_by_hand():
    assert schedule_value("constant", 4.0, 1.0, 0.7) == 4.0
    assert schedule_value("linear", 2.0, 1.0, 0.25) == pytest.approx(1.75)
    assert schedule_value("linear", 2.0, 1.0, 1.5) == pytest.approx(1.0)  # clamped
    assert schedule_value("cosine", 0.0, 1.0, 0.5) == pytest.approx(0.5)
    assert schedule_value("cosine", 0.0, 1.0, 0.25) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert schedule_value("cosine", 3.0, 1.0, 0.0) == 3.0 and schedule_value("cosine", 3.0, 1.0, 1.0) == 1.0
    with pytest.raises(DistillerError, match="step"):
        schedule_value("step", 1.0, 2.0, 0.5)


def test_schedules_load_from_yaml_and_drive_the_module(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from distiller_nlp.kd.module import DistillModule

    recipe = tmp_path / "r.yaml"
    recipe.write_text("kd:\n  temperature: 4\n  schedules:\n    temperature: {kind: linear, final: 1}\n"
                      "    kd_weight: {kind: cosine, final: 0}\n")
    cfg = load_config(DistillConfig, str(recipe))
    assert isinstance(cfg.kd.schedules["temperature"], ScheduleConfig)
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=2))
    module = DistillModule(bert, cfg.kd, [], bert.config)
    module.set_progress(0.5)
    assert module.current("temperature") == pytest.approx(2.5)
    assert module.current("kd_weight") == pytest.approx(0.5)
    assert module.current("hard_label_weight") == 0.0 and module.current("intermediate_weight") == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("kd:\n  schedules:\n    temprature: {kind: linear, final: 1}\n")
    with pytest.raises(DistillerError, match="temprature"):
        DistillModule(bert, load_config(DistillConfig, str(bad)).kd, [], bert.config)
    with pytest.raises(DistillerError, match="final"):
        DistillModule(bert, KDConfig(schedules={"kd_weight": ScheduleConfig(kind="linear")}), [], bert.config)


def test_ensemble_is_the_mean_probability_at_temperature():
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(5, 4, generator=g) * 3 for _ in range(3))
    for t in (1.0, 2.0, 4.0):
        z = ensemble_logits([a, b, c], t)
        mean = (torch.softmax(a / t, -1) + torch.softmax(b / t, -1) + torch.softmax(c / t, -1)) / 3
        assert torch.allclose(torch.softmax(z / t, -1), mean, atol=1e-6)
        # one teacher (or copies of one) is that teacher
        assert torch.allclose(torch.softmax(ensemble_logits([a, a], t) / t, -1), torch.softmax(a / t, -1), atol=1e-6)
    assert torch.allclose(ensemble_logits([a, b], 2.0, average_logits=True), (a + b) / 2)


def test_optimizer_choice():
    from distiller_nlp.core.engine import make_optimizer

    m = torch.nn.Linear(3, 2)
    assert make_optimizer(m, TrainArgs(), "cpu").defaults["fused"] is True
    assert make_optimizer(m, TrainArgs(optim="adamw"), "cpu").defaults["foreach"] is False
    with pytest.raises(DistillerError, match="optim"):
        TrainArgs(optim="sgd").validate()


def test_two_copies_of_one_teacher_equal_that_teacher(tiny_teacher, sst2_dir, tmp_path):
    """Averaging a teacher with itself must not change training: same metrics as the single teacher."""
    common = ["distill", "--task", "sst2", "--data-dir", sst2_dir, "--student-shape", STUDENT, *FAST,
              "--max-steps", "6", "--logging-steps", "1", "--pred-loss", "kd", "--temperature", "2", "--set",
              "kd.schedules={temperature: {kind: linear, final: 1}, hard_label_weight: {kind: cosine, final: 1}}"]
    assert main([*common, "--teacher", tiny_teacher, "--output-dir", str(tmp_path / "one")]) == 0
    assert main([*common, "--teacher", tiny_teacher, "--teacher", tiny_teacher,
                 "--output-dir", str(tmp_path / "two")]) == 0
    read = [json.load(open(os.path.join(tmp_path, d, "history.json"))) for d in ("one", "two")]
    losses = [[e["loss"] for e in h["train"]] for h in read]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], rel=1e-4)
    cfg = json.load(open(tmp_path / "two" / "metrics.json"))
    assert cfg["eval_accuracy"] == pytest.approx(json.load(open(tmp_path / "one" / "metrics.json"))["eval_accuracy"])
