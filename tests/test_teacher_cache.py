"""Teacher-output caching: cached columns equal the live teacher to fp16 precision, the KD loss from the cache equals
the live one, caches are keyed and refused on mismatch, and distill runs from a cache without the teacher forward."""

import json
import os

import pytest
import torch

from distiller_nlp.kd import teacher_cache as tc
from distiller_nlp.cli import main
from distiller_nlp.config import DistillConfig
from distiller_nlp.core.config import load_config
from distiller_nlp.kd.teachers import TeacherRunner
from distiller_nlp.kd.teacher_cache import cache_key_for
from distiller_nlp.kd.setup import prepare_distillation

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"


def _cfg(teacher, data, **over):
    ov = {"teacher": teacher, "data.task": "sst2", "data.data_dir": data, "student_shape": STUDENT,
          "kd.pred_loss": "kd", "kd.temperature": 2.0, "kd.mapping.strategy": "skip", "kd.mapping.loss": "hidden_mse",
          "train.max_length": 16, "train.precision": "no", "train.report_to": "none", "train.batch_size": 8}
    ov.update(over)
    return load_config(DistillConfig, None, ov)


def test_cached_columns_equal_live_teacher_and_give_the_same_loss(tiny_teacher, sst2_dir, tmp_path):
    run = prepare_distillation(_cfg(tiny_teacher, sst2_dir))
    layers = run.module.teacher_hidden_layers
    assert layers == [0, 2]  # skip mapping 2 -> 1 layers, embeddings included
    key = cache_key_for(run)
    ds = tc.compute_teacher_outputs(run.tok["train"], run.teacher, key, layers, batch_size=7,
                                    pad_token_id=run.tokenizer.pad_token_id, cache_file=str(tmp_path / "c.arrow"))
    assert set(tc.teacher_columns(ds)) == {"teacher_logits", "teacher_hidden_0", "teacher_hidden_2"}
    cached = tc.as_cached_format(ds)
    items = [cached[i] for i in range(10)]
    batch = run.collate(items)
    live_batch = run.collate([run.tok["train"][i] for i in range(10)])
    assert batch["teacher_hidden_2"].shape == (10, live_batch["input_ids"].shape[1], 32)
    live = TeacherRunner(run.teacher, run.module)(live_batch)
    from_cache = tc.CachedTeacher()(batch)
    torch.testing.assert_close(from_cache["teacher_logits"], live["teacher_logits"], rtol=2e-3, atol=2e-3)
    mask = live_batch["attention_mask"].bool()
    for layer in layers:
        a, b = from_cache["teacher_hidden"][layer], live["teacher_hidden"][layer]
        torch.testing.assert_close(a[mask], b[mask], rtol=2e-3, atol=2e-3)
        assert float(a[~mask].abs().sum()) == 0.0  # padding is not stored; it is zero-filled on collation
    run.module.eval()
    with torch.no_grad():
        loss_live = run.module(live)["loss"]
        loss_cached = run.module(from_cache)["loss"]
    assert float(loss_cached) == pytest.approx(float(loss_live), rel=1e-3)


def test_key_depends_on_teacher_data_and_layers(tiny_teacher, tiny_backbone, sst2_dir):
    fp = tc.teacher_fingerprint(tiny_teacher)
    assert fp == tc.teacher_fingerprint(tiny_teacher) and fp != tc.teacher_fingerprint(tiny_backbone)
    base = tc.cache_key(fp, "data1", [0, 2])
    assert base == tc.cache_key(fp, "data1", [2, 0])
    assert len({base, tc.cache_key(fp, "data2", [0, 2]), tc.cache_key(fp, "data1", [2]),
                tc.cache_key("other", "data1", [0, 2]), tc.cache_key(fp, "data1", [0, 2], aug_seed=1)}) == 5


def test_cache_teacher_command_then_distill_from_it(tiny_teacher, sst2_dir, tmp_path, capsys):
    cache = tmp_path / "cache"
    flags = ["--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape", STUDENT,
             "--pred-loss", "kd", "--mapping", "last", "--inter-loss", "cosine", "--max-length", "16",
             "--precision", "no", "--report-to", "none"]
    assert main(["cache-teacher", *flags, "--output-dir", str(cache)]) == 0
    meta = json.loads((cache / "teacher_cache.json").read_text())
    assert meta["examples"] == 96 and meta["hidden_layers"] == [1, 2]
    out = tmp_path / "student"
    assert main(["distill", *flags, "--max-steps", "4", "--teacher-cache", str(cache), "--output-dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["teacher_cached"] is True and m["global_step"] == 4
    # the same cache for another layer set (skip mapping -> layers 0, 2) is refused, nothing written
    capsys.readouterr()
    bad = tmp_path / "bad"
    args = ["distill", *flags, "--max-steps", "2", "--teacher-cache", str(cache), "--output-dir", str(bad)]
    args[args.index("last")] = "skip"
    assert main(args) == 2
    assert "computed for another teacher" in capsys.readouterr().err and not bad.exists()


def test_auto_cache_is_reused_and_matches_live_training(tiny_teacher, sst2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    common = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
              STUDENT, "--pred-loss", "kd", "--temperature", "2", "--max-steps", "12", "--lr", "3e-3",
              "--max-length", "16", "--precision", "no", "--report-to", "none", "--batch-size", "8"]
    assert main(common + ["--teacher-cache", "auto", "--output-dir", str(tmp_path / "a")]) == 0
    files = list((tmp_path / "cache" / "teacher_outputs").rglob("*.arrow"))
    assert len(files) == 1
    stamp = os.path.getmtime(files[0])
    assert main(common + ["--teacher-cache", "auto", "--output-dir", str(tmp_path / "b")]) == 0
    assert os.path.getmtime(files[0]) == stamp  # second run read the cache, did not recompute it
    assert main(common + ["--output-dir", str(tmp_path / "live")]) == 0
    a, live = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "live"))
    assert a["teacher_cached"] is True and live["teacher_cached"] is False
    assert a["train_loss"] == pytest.approx(live["train_loss"], rel=2e-2)
    assert abs(a["eval_accuracy"] - live["eval_accuracy"]) <= 2 / 37


def test_attention_score_matches_cannot_use_a_cache(tiny_teacher, sst2_dir, tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
                 STUDENT, "--set", "kd.intermediate=[{layer_T: 2, layer_S: 1, feature: attention_scores, "
                 "loss: attention_score, params: {num_heads: 2}}]", "--teacher-cache", str(tmp_path), "--precision", "no",
                 "--output-dir", str(out)])
    assert code == 2 and "q/k" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra", [[], ["--mixup"]], ids=["plain", "mixup"])
def test_fp32_cache_gives_the_live_loss_curve(tiny_teacher, sst2_dir, tmp_path, monkeypatch, extra):
    """With float32 storage the cached run follows the live run's loss curve step by step (1e-5) — with MixUp too,
    where the cache serves the originals and the teacher runs on the mixed copies only."""
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    common = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
              STUDENT, "--pred-loss", "kd", "--temperature", "2", "--mapping", "skip", "--inter-loss", "hidden_mse",
              "--max-steps", "10", "--lr", "3e-3", "--logging-steps", "1", "--max-length", "16", "--precision", "no",
              "--report-to", "none", "--batch-size", "8", *extra]
    assert main(common + ["--teacher-cache", "auto", "--set", "teacher_cache_dtype=float32",
                          "--output-dir", str(tmp_path / "cached")]) == 0
    assert main(common + ["--output-dir", str(tmp_path / "live")]) == 0
    curves = [json.loads((tmp_path / d / "history.json").read_text())["train"] for d in ("cached", "live")]
    assert [e["step"] for e in curves[0]] == list(range(1, 11))
    for a, b in zip(*curves):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)
    assert json.loads((tmp_path / "cached" / "metrics.json").read_text())["teacher_cached"] is True
