"""The meta-dataset (records from real runs, file and shard storage, bad tables) and AutoDistiller's recommender
(a planted best pipeline, a recipe ``run`` accepts, --verify, the documented fallback)."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from distiller_nlp.cli import main
from distiller_nlp.config import DistillConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.autodistiller.metadataset import (append_records, load_meta_dataset, ratio_kind, score_ratio,
                                                     shipped_meta_dataset_path)
from distiller_nlp.autodistiller.metafeatures import META_FEATURE_NAMES
from distiller_nlp.autodistiller.pipeline_space import default_pipeline, load_space, pipeline_key

SHAPE = "layers=1,hidden=16,heads=2,intermediate=32"
FAST = ["--epochs", "1", "--batch-size", "16", "--max-length", "16", "--precision", "no", "--report-to", "none"]


def test_ratio_kinds():
    assert ratio_kind("accuracy", False) == "ratio" and ratio_kind("matthews", False) == "difference"
    assert ratio_kind("combined_score", True) == "difference"
    assert score_ratio(0.8, 0.9, "ratio") == pytest.approx(0.8 / 0.9)
    assert score_ratio(0.2, 0.5, "difference") == pytest.approx(-0.3)
    assert math.isnan(score_ratio(0.2, 0.0, "ratio")) and math.isnan(score_ratio(None, 0.5, "ratio"))


# ------------------------------------------------------------------------------------------------ synthetic table

PLANTED = {"augment": "random", "aug_p": 0.3, "mixup": False, "pred_loss": "soft_ce", "temperature": 2.0,
           "kd_weight": 1.0, "hard_label_weight": 0.0, "inter_loss": "mi_alpha", "mi_alpha": 0.9,
           "mapping": "skip", "inter_weight": 1.0, "lr": 3e-4}


def planted_effect(p: dict) -> float:
    """The synthetic truth: MI-alpha, random augmentation and soft CE help, MixUp hurts; PLANTED has it all."""
    return (0.04 * (p.get("inter_loss") == "mi_alpha") + 0.03 * (p.get("augment") == "random")
            + 0.02 * (p.get("pred_loss") == "soft_ce") - 0.03 * bool(p.get("mixup")))


def is_rival(p: dict) -> bool:
    return planted_effect(p) >= planted_effect(PLANTED) - 1e-9 and pipeline_key(p) != pipeline_key(PLANTED)


def synthetic_meta(n_datasets=6, n_pipelines=40, seed=0, context=None) -> pd.DataFrame:
    """A meta-table whose score ratio follows :func:`planted_effect` plus noise."""
    rng = np.random.default_rng(seed)
    pipes = load_space().candidates(n_pipelines - 1, seed=seed) + [PLANTED]
    rows = []
    for d in range(n_datasets):
        ctx = {k: float(rng.normal()) for k in META_FEATURE_NAMES} if context is None else dict(context)
        ctx["mf_n_train"] = 1000.0 + 200 * d
        for p in pipes:
            for s in (1, 2):
                rows.append({"dataset": f"d{d}", "family": "synthetic", "pipeline": json.dumps(p),
                             "pipeline_id": pipeline_key(p), "seed": s, "ratio_kind": "ratio",
                             "score_ratio": 0.90 + planted_effect(p) + float(rng.normal(0, 0.005)),
                             "teacher_params": 2.2e7, "student_params": 1.0e6, "student_layers": 2.0,
                             "student_hidden": 128.0, "teacher_flops": 1e9, "student_flops": 1e8, **ctx})
    return pd.DataFrame(rows)


def test_recommender_ranks_a_planted_best_pipeline_first():
    from distiller_nlp.autodistiller.recommender import rank_pipelines

    meta = synthetic_meta()
    cands = [p for p in load_space().candidates(60, seed=7, include=[default_pipeline(DistillConfig())])
             if not is_rival(p)] + [PLANTED]
    ctx = {**{k: 0.1 for k in META_FEATURE_NAMES}, "teacher_params": 2.2e7, "student_params": 1.0e6,
           "student_layers": 2.0, "student_hidden": 128.0, "teacher_flops": 1e9, "student_flops": 1e8,
           "ratio_kind": "ratio"}
    pred = rank_pipelines(meta, ctx, cands)
    assert pipeline_key(cands[int(np.argmax(pred))]) == pipeline_key(PLANTED)
    assert pred.max() - np.median(pred) > 0.04


def test_meta_dataset_storage_and_bad_tables(tmp_path):
    rows = synthetic_meta(n_datasets=1, n_pipelines=2).to_dict("records")
    f = tmp_path / "m.parquet"
    append_records(str(f), rows[:1])
    append_records(str(f), rows[1:])
    assert len(load_meta_dataset(str(f))) == len(rows)
    d = tmp_path / "shards"
    append_records(str(d), rows[:2])
    append_records(str(d), rows[2:])
    assert len(load_meta_dataset(str(d))) == len(rows) and len(os.listdir(d)) == 2
    import datasets  # the table is datasets-readable

    assert datasets.load_dataset("parquet", data_files=str(f), split="train").num_rows == len(rows)
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DistillerError, match="unreadable"):
        load_meta_dataset(str(tmp_path / "bad.parquet"))
    pd.DataFrame({"dataset": [], "family": [], "score_ratio": [], "pipeline": []}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DistillerError, match="empty"):
        load_meta_dataset(str(tmp_path / "e.parquet"))
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DistillerError, match="column 'dataset'"):
        load_meta_dataset(str(tmp_path / "x.parquet"))
    with pytest.raises(DistillerError, match="not found"):
        load_meta_dataset(str(tmp_path / "missing.parquet"))
    os.makedirs(tmp_path / "nothing")
    with pytest.raises(DistillerError, match="no .parquet"):
        load_meta_dataset(str(tmp_path / "nothing"))


# ------------------------------------------------------------------------------------------------ real runs

def test_distill_appends_a_record(tiny_teacher, sst2_dir, tmp_path, capsys):
    table = tmp_path / "meta.parquet"
    for seed in ("1", "2"):
        code = main(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir,
                     "--student-shape", SHAPE, *FAST, "--seed", seed, "--mapping", "skip", "--inter-loss",
                     "hidden_mse", "--meta-dataset", str(table), "--meta-family", "synthetic-sst2",
                     "--output-dir", str(tmp_path / f"d{seed}")])
        assert code == 0
    df = load_meta_dataset(str(table))
    assert len(df) == 2 and set(df["seed"]) == {1, 2}
    r = df.iloc[0]
    metrics = json.loads((tmp_path / "d1" / "metrics.json").read_text())
    assert r["student_score"] == pytest.approx(metrics["eval_accuracy"])
    assert r["score_ratio"] == pytest.approx(r["student_score"] / r["teacher_score"])
    assert r["family"] == "synthetic-sst2" and r["dataset"].startswith("sst2@") and r["task_type"] == "single"
    assert r["p_inter_loss"] == "hidden_mse" and r["p_mapping"] == "skip" and r["p_augment"] == "none"
    assert json.loads(r["pipeline"])["inter_loss"] == "hidden_mse"
    assert r["student_layers"] == 1 and r["teacher_layers"] == 2 and r["student_flops"] < r["teacher_flops"]
    assert all(c in df.columns for c in META_FEATURE_NAMES) and r["mf_n_train"] == 96
    assert 0 <= r["teacher_score"] <= 1 and r["wall_s"] > 0
    # --lr auto (the default when FAST gives no --lr): the record's lr is the chosen value, never the 0 marker
    assert all(df["p_lr"] > 0) and r["p_lr"] == pytest.approx(metrics["lr_auto_chosen"])  # a short run: 5e-5


def test_a_teacher_without_a_classifier_leaves_its_embedding_features_out(tiny_backbone, tiny_teacher, sst2_dir):
    from distiller_nlp.autodistiller.recommender import EMBEDDING_FEATURES, RatioModel

    raw, tuned = _context_like(tiny_backbone, sst2_dir), _context_like(tiny_teacher, sst2_dir)
    assert EMBEDDING_FEATURES and all(math.isnan(raw[k]) for k in EMBEDDING_FEATURES)
    assert all(math.isfinite(tuned[k]) for k in EMBEDDING_FEATURES)
    assert raw["mf_n_train"] == tuned["mf_n_train"] and math.isfinite(raw["mf_len_mean"])
    # the regressor is then fitted without every feature the new dataset lacks, and only those
    meta = synthetic_meta(n_datasets=3, n_pipelines=10)
    full, lacking = RatioModel().fit(meta), RatioModel().fit(meta, context=raw)
    assert set(full.columns) - set(lacking.columns) == {k for k in META_FEATURE_NAMES if not math.isfinite(raw[k])}
    assert RatioModel().fit(meta, context=tuned).columns == [
        c for c in full.columns if c not in META_FEATURE_NAMES or math.isfinite(tuned[c])]


def test_dataset_distance_is_rms_z_with_a_cap():
    from distiller_nlp.autodistiller.recommender import MAX_FEATURE_Z, dataset_distances

    meta = pd.DataFrame({"dataset": ["a", "b"], "mf_len_mean": [10.0, 20.0], "mf_frac_truncated": [0.0, 0.0]})
    # len: mean 15, spread 5 -> z = (10-12)/5 = -0.4 and (20-12)/5 = 1.6; truncation: constant 0 -> spread 1e-6,
    # capped; features missing in the context (all others) are skipped
    d = dict(dataset_distances(meta, {"mf_len_mean": 12.0, "mf_frac_truncated": 0.0}))
    assert d["a"] == pytest.approx(math.sqrt((0.4 ** 2 + 0) / 2)) and d["b"] == pytest.approx(math.sqrt(1.6 ** 2 / 2))
    far = dict(dataset_distances(meta, {"mf_len_mean": 15.0, "mf_frac_truncated": 0.004}))
    assert far["a"] == pytest.approx(math.sqrt((1.0 + MAX_FEATURE_Z ** 2) / 2))


def _context_like(teacher, data_dir):
    """The meta-features of the test dataset itself (so the synthetic table is 'near' it)."""
    from distiller_nlp.autodistiller.recommender import new_dataset_context
    from distiller_nlp.core.config import load_config

    cfg = load_config(DistillConfig, None, {"teacher": teacher, "data.task": "sst2", "data.data_dir": data_dir,
                                            "student_shape": SHAPE})
    return new_dataset_context(cfg)["context"]


def test_recommend_writes_a_recipe_run_accepts_and_verify(tiny_teacher, sst2_dir, tmp_path, capsys):
    ctx = _context_like(tiny_teacher, sst2_dir)
    table = tmp_path / "meta.parquet"
    synthetic_meta(context={k: v for k, v in ctx.items() if k.startswith("mf_")}).to_parquet(table)
    out = tmp_path / "rec"
    code = main(["recommend", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir,
                 "--student-shape", SHAPE, *FAST, "--meta-dataset", str(table), "--top-k", "1", "--verify",
                 "--candidates", "40", "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "too little data" not in printed
    cands = pd.read_csv(out / "candidates.csv")
    assert len(cands) == 40 and cands["is_default"].sum() == 1
    assert not cands["pipeline"].str.contains("contextual").any()  # no masked LM configured: left out
    assert "contextual augmentation are left out" in printed
    verify = pd.read_csv(out / "verify.csv")
    assert list(verify["run"]) == ["default", "top1"] and verify["eval_accuracy"].between(0, 1).all()
    # the recipe runs as is
    code = main(["run", str(out / "recommended.yaml"), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
                 "--meta-dataset", str(tmp_path / "runs.parquet")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "student" / "config.json").is_file()
    rec = load_meta_dataset(str(tmp_path / "runs.parquet"))
    assert len(rec) == 1 and rec["source"].iloc[0] == "run"
    assert json.loads(rec["pipeline"].iloc[0]) == json.loads((out / "summary.json").read_text())["top"][0]


def test_recommend_falls_back_to_rules_far_from_the_meta_dataset(tiny_teacher, sst2_dir, tmp_path, capsys):
    table = tmp_path / "meta.parquet"
    far = {k: 50.0 for k in META_FEATURE_NAMES}
    synthetic_meta(context=far).to_parquet(table)
    out = tmp_path / "rec"
    code = main(["recommend", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir,
                 "--student-shape", SHAPE, *FAST, "--meta-dataset", str(table), "--candidates", "20",
                 "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "too little data near this dataset" in printed
    s = json.loads((out / "summary.json").read_text())
    assert not s["trusted"] and s["top"][0]["inter_loss"] == "mi_alpha" and s["top"][0]["mapping"] == "skip"
    assert s["top"][0]["augment"] == "random"  # small set; no contextual masked LM configured in this recipe


def test_recommend_bad_meta_dataset_exit_2(tiny_teacher, sst2_dir, tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("garbage")
    code = main(["recommend", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir,
                 "--meta-dataset", str(bad), "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "bad.parquet" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


@pytest.mark.skipif(not shipped_meta_dataset_path().is_file(), reason="the shipped meta-dataset is not built yet")
def test_shipped_meta_dataset_is_complete():
    df = load_meta_dataset()
    assert df["dataset"].nunique() >= 8 and df["family"].nunique() >= 2
    per = df.groupby("dataset")["pipeline_id"].nunique()
    assert (per >= 20).all()
    assert np.isfinite(df["score_ratio"]).all()


@pytest.mark.parametrize("n, regression, stages, expect", [
    (800, False, ["random", "contextual"], {"augment": "random+contextual", "pred_loss": "soft_ce", "mapping": "skip"}),
    (800, False, ["random"], {"augment": "random", "pred_loss": "soft_ce", "mapping": "skip"}),
    (60_000, False, ["random"], {"augment": "none", "pred_loss": "logits_mse", "mapping": "skip"}),
    (400_000, False, ["random"], {"augment": "none", "pred_loss": "logits_mse", "mapping": "emd"}),
    (5_000, True, [], {"augment": "none", "pred_loss": "logits_mse", "mapping": "skip"}),
])
def test_fallback_rules(n, regression, stages, expect):
    from distiller_nlp.autodistiller.recommender import rule_pipeline

    base = default_pipeline(DistillConfig())
    p, why = rule_pipeline({"mf_n_train": float(n), "mf_is_regression": float(regression)}, stages, base)
    assert {k: p[k] for k in expect} == expect
    assert p["inter_loss"] == "mi_alpha" and p["mi_alpha"] == 0.9 and not p["mixup"] and p.get("lr") == base.get("lr")
    assert ("aug_p" in p) == (p["augment"] != "none") and str(n) in why


def _benchmark(name: str):
    """A script of ``benchmarks/`` imported as a module."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_holdout_evidence_recovers_a_planted_pipeline():
    """benchmarks/autodistiller.py on a table with a planted truth: the held-out top-1 is the planted pipeline and
    beats the default beyond seed noise on every held-out dataset."""
    evidence = _benchmark("autodistiller")
    BASE_LR, evaluate_holdout = evidence.BASE_LR, evidence.evaluate_holdout

    base = dict(default_pipeline(DistillConfig()), lr=BASE_LR)
    parts = []
    for fam, seed in (("famA", 0), ("famB", 1)):
        df = synthetic_meta(n_datasets=3, n_pipelines=20, seed=seed)
        df["family"], df["dataset"] = fam, df["dataset"] + fam
        extra = []
        for d in df["dataset"].unique():
            row = df[df["dataset"] == d].iloc[0].to_dict()
            for s in (1, 2):
                extra.append({**row, "pipeline": json.dumps(base), "pipeline_id": pipeline_key(base), "seed": s,
                              "score_ratio": 0.90 + 0.001 * s})
        parts += [df, pd.DataFrame(extra)]
    meta = pd.concat(parts, ignore_index=True)
    meta["student_score"] = meta["score_ratio"] * 0.7
    held = sorted(meta.loc[meta["family"] == "famA", "dataset"].unique())
    # the fallback rules' runs: one pipeline, 2 seeds per dataset, scored 0.01 under the default on the first
    rules = pd.DataFrame([{"dataset": d, "seed": s, "pipeline": json.dumps(PLANTED),
                           "student_score": (0.90 + 0.0015) * 0.7 - (0.01 if i == 0 else -0.02)}
                          for i, d in enumerate(held) for s in (1, 2)])
    rows = evaluate_holdout(meta, held, "family famA", rules)
    assert len(rows) == 3
    for i, r in enumerate(rows):
        assert r["top1_rank_actual"] == 1 and r["vs_default"] == "win" and r["spearman"] > 0.5
        assert not r["top1_is_default"] and r["top1_score"] > r["default_score"]
        assert r["delta_rules_vs_default"] == pytest.approx(-0.01 if i == 0 else 0.02)
        assert r["vs_default_rules"] == ("loss" if i == 0 else "win")
        assert r["acted_score"] == (r["top1_score"] if r["trusted"] else r["rules_score"])


def test_meta_builder_workers_share_runs_through_locks(tmp_path, monkeypatch):
    """benchmarks/meta_dataset.py: a run another worker holds is skipped (non-blocking), free again once released."""
    meta_dataset = _benchmark("meta_dataset")

    monkeypatch.setattr(meta_dataset, "WORK", str(tmp_path))
    with meta_dataset._lock("run-x") as first:
        assert first is True
        with meta_dataset._lock("run-x", wait=False) as second:  # a second open file description: another worker
            assert second is False
        with meta_dataset._lock("run-y", wait=False) as other:
            assert other is True
    with meta_dataset._lock("run-x", wait=False) as again:
        assert again is True
