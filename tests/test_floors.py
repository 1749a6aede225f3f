"""The majority-class and TF-IDF floors every text run is compared with (issue #22 item 3)."""

import json
import os

import datasets
import pytest

from distiller_nlp.tasks import get_task
from distiller_nlp.tasks.floors import compute_floors, floor_card_row, floor_warning


def _split(rows):
    return datasets.Dataset.from_dict({"text": [r[0] for r in rows], "label": [r[1] for r in rows]})


def test_floors_match_hand_computed_values():
    task = get_task("sst2")
    # the word "good" / "bad" decides the label; 5 of 9 training labels are 1, so the majority class is 1
    train = _split([("good film", 1), ("good plot", 1), ("good cast", 1), ("good end", 1), ("good song", 1),
                    ("bad film", 0), ("bad plot", 0), ("bad end", 0), ("bad song", 0)])
    dev = _split([("good show", 1), ("bad show", 0), ("bad cast", 0), ("bad day", 0)])
    test = _split([("good one", 1), ("bad one", 0)])
    f = compute_floors({"train": train, "validation": dev, "test": test}, task)
    assert f["floor_majority_eval_accuracy"] == pytest.approx(1 / 4)  # predicts 1 everywhere: 1 of 4 right
    assert f["floor_majority_test_accuracy"] == pytest.approx(1 / 2)
    assert f["floor_tfidf_eval_accuracy"] == 1.0 and f["floor_tfidf_test_accuracy"] == 1.0
    assert f["floors_s"] >= 0


def test_regression_floors_are_mean_and_ridge():
    task = get_task("stsb")
    mk = lambda rows: datasets.Dataset.from_dict(  # noqa: E731
        {"text": [r[0] for r in rows], "text_pair": [r[0] for r in rows], "label": [float(r[1]) for r in rows]})
    train = mk([("alpha", 0), ("beta", 1), ("gamma", 2), ("delta", 3), ("alpha beta", 0.5), ("gamma delta", 2.5)])
    dev = mk([("alpha", 0), ("delta", 3), ("beta", 1)])
    f = compute_floors({"train": train, "validation": dev}, task)
    assert abs(f["floor_majority_eval_pearson"]) < 1e-3  # a constant predictor correlates with nothing
    assert f["floor_tfidf_eval_pearson"] > 0.9


def test_the_warning_fires_below_the_floor_only():
    task = get_task("sst2")
    floors = {"floor_tfidf_eval_accuracy": 0.655, "floor_majority_eval_accuracy": 0.622}
    line = floor_warning({"eval_accuracy": 0.640, **floors}, task, "teacher", "try a higher --lr")
    assert line and "0.6400 does not beat the TF-IDF floor 0.6550 (majority class 0.6220)" in line and "\n" not in line
    assert floor_warning({"eval_accuracy": 0.70, **floors}, task, "teacher", "x") is None
    assert "does not beat" in floor_card_row({"eval_accuracy": 0.64, **floors, "floor_warning": line}, task)


def test_a_weak_distill_run_records_its_floors_and_warns(tiny_teacher, sst2_dir, tmp_path):
    from distiller_nlp.cli import main

    out = tmp_path / "weak"
    args = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
            "layers=1,hidden=16,heads=2,intermediate=32", "--student-init", "random", "--max-steps", "1",
            "--lr", "1e-6", "--precision", "no", "--report-to", "none", "--max-length", "16", "--output-dir",
            str(out)]
    assert main(args) == 0
    m = json.load(open(out / "metrics.json"))
    assert m["floor_tfidf_eval_accuracy"] > 0.9  # the fixture's word rule is easy for a bag of words
    assert "does not beat the TF-IDF floor" in m["floor_warning"]
    assert "does not beat the TF-IDF floor" in open(os.path.join(out, "README.md")).read()
    off = tmp_path / "off"
    assert main(args[:-1] + [str(off), "--no-floors"]) == 0
    assert "floor_tfidf_eval_accuracy" not in json.load(open(off / "metrics.json"))


def test_floors_of_a_single_class_or_wordless_training_split():
    task = get_task("sst2")
    dev = _split([("good", 1), ("bad", 0)])
    f = compute_floors({"train": _split([("good", 1), ("fine", 1)]), "validation": dev}, task)
    assert f["floor_tfidf_eval_accuracy"] == f["floor_majority_eval_accuracy"] == 0.5
    f = compute_floors({"train": _split([("!", 1), ("?", 0), ("!!", 1)]), "validation": dev}, task)
    assert 0.0 <= f["floor_tfidf_eval_accuracy"] <= 1.0


def test_vision_pixel_floors_match_hand_computed_values_and_warn_only_a_weak_run():
    import torch

    from vision_kd.data.base import TensorImageDataset
    from vision_kd.floors import pixel_floor_warning, pixel_floors

    # class = whether the left or the right pixel is lit: logistic regression on pixels separates it exactly;
    # 3 of 5 training labels are 0, so the majority class is 0
    def ds(rows):
        return TensorImageDataset(torch.tensor([[[[a, b]]] for a, b, _ in rows], dtype=torch.float32),
                                  torch.tensor([y for _, _, y in rows]))

    train = ds([(1, 0, 0), (1, 0, 0), (1, 0, 0), (0, 1, 1), (0, 1, 1)])
    dev, test = ds([(0, 1, 1), (1, 0, 0), (0, 1, 1), (0, 1, 1)]), ds([(1, 0, 0), (0, 1, 1)])
    f = pixel_floors(train, {"validation": dev, "test": test})
    assert f["floor_majority_eval_accuracy"] == pytest.approx(1 / 4) and f["floor_majority_test_accuracy"] == 0.5
    assert f["floor_pixels_eval_accuracy"] == 1.0 and f["floor_pixels_test_accuracy"] == 1.0
    weak = pixel_floor_warning({"eval_accuracy": 0.75, **f}, who="kd")
    assert weak and "does not beat the pixel floor 1.0000" in weak and "\n" not in weak
    assert pixel_floor_warning({"eval_accuracy": 1.0, "floor_pixels_eval_accuracy": 0.9}) is None


def test_a_vision_run_records_its_floors(tmp_path):
    from vision_kd.cli import main as vmain

    out = tmp_path / "ce"
    assert vmain(["train", "--method", "ce", "--dataset", "digits", "--student", "mlp_small", "--epochs", "1",
                  "--max-steps", "2", "--lr", "1e-6", "--threads", "1", "--report-to", "none",
                  "--output-dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["floor_pixels_eval_accuracy"] > 0.8 and 0 < m["floor_majority_eval_accuracy"] < 0.2  # real digits
    assert "floor_pixels_test_accuracy" in m and "pixel floor" in m["floor_warning"]  # 2 steps at 1e-6: weak
