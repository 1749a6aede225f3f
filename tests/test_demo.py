"""The demo's table logic (no training): mean ± sample std over seeds, KD − no-KD differences, FLOPs at 128 tokens."""

import pytest

from distiller_nlp.demo import flops_at_128, format_table, summarize, PROTOCOL


def _row(model, seed, dev, test):
    return {"model": model, "seed": seed, "eval_accuracy": dev, "test_accuracy": test, "params": 10,
            "encoder_flops": 654311424, "train_runtime_s": 10.0, "examples_per_s": 5.0}


def test_summary_mean_std_and_differences():
    rows = [_row("student: no KD", 1, 0.60, 0.50), _row("student: no KD", 2, 0.70, 0.52),
            _row("student: logit KD", 1, 0.66, 0.55), _row("student: logit KD", 2, 0.74, 0.57)]
    s = summarize(rows)
    assert s["student: no KD"]["eval_accuracy"] == pytest.approx(0.65)
    assert s["student: no KD"]["eval_accuracy_std"] == pytest.approx(0.0707106781, abs=1e-9)  # sample std of .6, .7
    assert s["student: logit KD"]["eval_accuracy_minus_no_kd"] == pytest.approx(0.05)
    assert s["student: logit KD"]["test_accuracy_minus_no_kd"] == pytest.approx(0.05)
    table = format_table({"summary": s, "protocol": PROTOCOL, "precision": "no"})
    assert "0.6500 ± 0.0707" in table and "+5.00 points" in table and "0.654" in table


def test_flops_at_128_from_run_metrics():
    m = {"student_layers": 3, "student_hidden": 256, "student_heads": 8, "student_intermediate": 1024,
         "student_head_dim": 32}
    assert flops_at_128(m, "student") == 654311424  # closed form, see test_flops.py
    assert flops_at_128({}, "student") is None


def test_one_subset_seed_gives_every_run_the_same_examples():
    """The demo protocol's ``subset_seed``: students of seeds 1 and 2 see the teacher's training subset and one dev
    subset; without it each run seed draws its own (the behaviour of PROTOCOL_V1)."""
    from distiller_nlp.config import DataConfig
    from distiller_nlp.demo import PROTOCOL_V1
    from distiller_nlp.tasks.loading import load_data_config

    fixed = DataConfig(task="tweets", max_train_examples=60, max_eval_examples=30, subset_seed=42)
    a, _ = load_data_config(fixed, seed=1)
    b, _ = load_data_config(fixed, seed=2)
    assert a["train"]["text"] == b["train"]["text"] and a["validation"]["text"] == b["validation"]["text"]
    assert len(a["validation"]) == 30
    free = DataConfig(task="tweets", max_train_examples=60, max_eval_examples=30)
    c, _ = load_data_config(free, seed=1)
    d, _ = load_data_config(free, seed=2)
    assert c["train"]["text"] != d["train"]["text"]
    assert PROTOCOL["subset_seed"] == 42 and "subset_seed" not in PROTOCOL_V1
