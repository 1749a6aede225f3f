"""``autodistil`` end to end on a tiny random BERT teacher: train-superlm (and resume), search under a budget,
extract, and the one-line errors."""

import csv
import json
import os
import shutil
from fractions import Fraction

import pytest
import torch
from safetensors.torch import load_file

from autodistil.cli import main
from test_autodistil_superlm import _one_thread  # noqa: F401  (autouse fixture: one intra-op thread)

SPACE_YAML = "name: tiny\nhead_dim: 16\nlayers: [1, 2]\nheads: [2, 4]\nhidden: [32, 64]\nmlp_ratio: [1.0, 2.0]\n"
COMMON = ["--task", "tweets", "--max-train-examples", "48", "--batch-size", "8", "--max-length", "24",
          "--precision", "no", "--report-to", "none", "--relation-heads", "4", "--warmup-ratio", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertConfig, BertModel

    from distiller_nlp.models import load_tokenizer

    root = tmp_path_factory.mktemp("autodistil")
    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    teacher = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=128, max_position_embeddings=32))
    teacher.save_pretrained(root / "teacher")
    tok.save_pretrained(root / "teacher")
    (root / "space.yaml").write_text(SPACE_YAML)
    out = str(root / "superlm")
    code = main(["train-superlm", "--teacher", str(root / "teacher"), "--subspace", str(root / "space.yaml"),
                 "--max-steps", "4", "--save-steps", "2", "--output-dir", out, *COMMON])
    assert code == 0
    return root, out


def test_train_superlm_writes_a_superlm(setup):
    _, out = setup
    for name in ("superlm.json", "model.safetensors", "config.json", "metrics.json", "tokenizer.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["global_step"] == 4 and metrics["subnets"] == 16 and metrics["train_loss"] > 0


def test_resume_matches_uninterrupted_run(setup, tmp_path):
    root, out = setup
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    os.remove(os.path.join(resumed, "metrics.json"))  # as if killed after the step-2 checkpoint
    assert sorted(os.listdir(os.path.join(resumed, "checkpoints"))) == ["checkpoint-00000002"]
    code = main(["train-superlm", "--teacher", str(root / "teacher"), "--subspace", str(root / "space.yaml"),
                 "--max-steps", "4", "--save-steps", "2", "--output-dir", resumed, "--resume", *COMMON])
    assert code == 0
    a = load_file(os.path.join(out, "model.safetensors"))
    b = load_file(os.path.join(resumed, "model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6
    assert json.load(open(os.path.join(resumed, "superlm.json")))["steps"] == 4


def _search(superlm: str, res: str, *flags: str) -> tuple[dict, list]:
    """Run ``autodistil search`` (must succeed); its metrics.json and candidates.csv rows."""
    assert main(["search", "--superlm", superlm, "--max-length", "24", "--output-dir", res, *flags]) == 0
    metrics = json.load(open(os.path.join(res, "metrics.json")))
    return metrics, list(csv.DictReader(open(os.path.join(res, "candidates.csv"))))


def test_search_honours_the_budget_and_exports_a_student(setup, tmp_path):
    from transformers import AutoModel

    _, out = setup
    res = str(tmp_path / "search")
    metrics, rows = _search(out, res, "--budget-ratio", "0.3", "--task", "tweets", "--heldout-examples", "16",
                            "--relation-heads", "4", "--precision", "no")
    assert len(rows) == 16
    for row in rows:
        assert (row["fits_budget"] == "True") == (int(row["flops"]) <= metrics["budget_flops"])
        assert (row["score"] != "") == (row["fits_budget"] == "True")
    assert metrics["chosen_flops"] <= metrics["budget_flops"] == pytest.approx(0.3 * metrics["teacher_flops"])
    best = min(float(r["score"]) for r in rows if r["score"])
    assert metrics["chosen_score"] == pytest.approx(best, rel=1e-5)
    assert os.path.isfile(os.path.join(res, "pareto.png"))
    student = AutoModel.from_pretrained(os.path.join(res, "student"))
    assert student.config.num_hidden_layers == metrics["chosen_layers"]
    assert student.config.hidden_size == metrics["chosen_hidden"]


def _autodistil_macs(layers, heads, hidden, ratio, n):
    """AutoDistil's cost formula (``cal_flops_bert``), evaluated here by hand, in multiply-adds."""
    a, r = Fraction(heads, 12), Fraction(ratio)
    h2 = hidden * hidden
    return round(layers * (3 * n * h2 * a + 2 * n * n * hidden * a + n * h2 + 2 * n * r * h2) + n * h2 + 2 * hidden)


def test_search_in_the_autodistil_convention(setup, tmp_path):
    _, out = setup
    metrics, rows = _search(out, str(tmp_path / "ad"), "--budget-ratio", "0.3", "--flops-convention", "autodistil",
                            "--task", "tweets", "--heldout-examples", "16", "--relation-heads", "4",
                            "--precision", "no")
    # the teacher (2 layers, 4 heads, hidden 64, FFN 128 = R 2) at 24 tokens: per layer 3·24·64²·(4/12) = 98,304,
    # 2·24²·64·(4/12) = 24,576, 24·64² = 98,304, 2·24·2·64² = 393,216; + 24·64² + 2·64 outside the layers
    teacher = 2 * (98_304 + 24_576 + 98_304 + 393_216) + 98_304 + 128
    assert teacher == _autodistil_macs(2, 4, 64, 2, 24) == 1_327_232
    assert metrics["flops_convention"] == "autodistil" and "multiply-adds" in metrics["unit"]
    assert metrics["teacher_flops"] == teacher
    assert metrics["budget_flops"] == pytest.approx(0.3 * teacher)  # the budget in the autodistil unit
    for row in rows:
        own = _autodistil_macs(int(row["layers"]), int(row["heads"]), int(row["hidden"]), float(row["mlp_ratio"]), 24)
        assert int(row["flops"]) == own
        assert (row["fits_budget"] == "True") == (own <= 0.3 * teacher)
    assert 0 < metrics["candidates_fitting"] < len(rows)
    assert metrics["chosen_flops"] == metrics["chosen_flops_autodistil"] <= metrics["budget_flops"]
    # exact: 2 × L·[3·n·H·W + 2·n²·W + n·W·H + 2·n·H·I], W = heads × 16, I = round(H·R)
    n, L, H, W = 24, metrics["chosen_layers"], metrics["chosen_hidden"], metrics["chosen_heads"] * 16
    inter = round(H * metrics["chosen_mlp_ratio"])
    assert metrics["chosen_flops_exact"] == 2 * L * (3 * n * H * W + 2 * n * n * W + n * W * H + 2 * n * H * inter)
    assert metrics["relation_kind"] == "mse"  # the default score, over real tokens only


def test_resume_with_another_objective_is_refused(setup, tmp_path, capsys):
    root, out = setup
    resumed = str(tmp_path / "resumed")
    shutil.copytree(out, resumed)
    os.remove(os.path.join(resumed, "metrics.json"))
    code = main(["train-superlm", "--teacher", str(root / "teacher"), "--subspace", str(root / "space.yaml"),
                 "--max-steps", "4", "--save-steps", "2", "--output-dir", resumed, "--resume", *COMMON,
                 "--relation-kind", "kl"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "started with objective kind=mse" in err and "--relation-kind mse" in err
    assert len(err.splitlines()) == 1


def test_search_budget_no_candidate_meets(setup, tmp_path, capsys):
    _, out = setup
    res = str(tmp_path / "none")
    code = main(["search", "--superlm", out, "--budget", "1000", "--max-length", "24", "--output-dir", res])
    err = capsys.readouterr().err
    # 2 x [3·n·H·W + 2·n²·W + n·W·H + 2·n·H·I] at n=24, H=W=I=32, one layer = 2 x 184,320
    assert code == 2 and "smallest candidate" in err and "needs 368,640 FLOPs" in err
    assert len(err.strip().splitlines()) == 1
    assert not os.path.exists(res)


def test_extract_command(setup, tmp_path):
    from transformers import AutoModel, BertModel

    _, out = setup
    code = main(["extract", "--superlm", out, "--arch", "layers=1,hidden=32,heads=2,mlp_ratio=2",
                 "--output-dir", str(tmp_path / "s")])
    assert code == 0 and isinstance(AutoModel.from_pretrained(str(tmp_path / "s")), BertModel)
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(tmp_path / "s" / "README.md"))  # the student's model card
    assert "autodistil" in card.data.tags and "distillation" in card.data.tags
    assert "layers=1" in card.text and "relation distillation" in card.text and "autodistil extract" in card.text
    code = main(["extract", "--superlm", out, "--arch", "layers=1,hidden=64,heads=8,mlp_ratio=2",
                 "--output-dir", str(tmp_path / "t")])
    assert code == 2


def test_bad_input_is_one_line_error(tmp_path, capsys):
    assert main(["train-superlm", "--subspace", "nope", "--output-dir", str(tmp_path / "x")]) == 2
    assert "unknown sub-space 'nope'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: minilm\nsubspacez: all\n")
    assert main(["train-superlm", "--config", str(bad), "--output-dir", str(tmp_path / "y")]) == 2
    assert "unknown key 'subspacez'" in capsys.readouterr().err
    assert main(["search", "--superlm", str(tmp_path), "--budget", "1", "--budget-ratio", "0.2",
                 "--output-dir", str(tmp_path / "z")]) == 2
    assert "exactly one of --budget" in capsys.readouterr().err


def test_search_task_proxy(setup, tmp_path):
    _, out = setup
    metrics, rows = _search(out, str(tmp_path / "proxy"), "--budget", "500000", "--score", "task-proxy",
                            "--proxy-k", "4", "--proxy-steps", "2", "--set", "proxy.eval_examples=24")
    rows = [r for r in rows if r["score"]]
    assert metrics["score"] == "task-proxy" and len(rows) == metrics["candidates_scored"] == 2
    assert all(-1.0 <= float(r["score"]) <= 0.0 for r in rows)  # minus accuracy
    assert metrics["chosen_flops"] <= metrics["budget_flops"]
