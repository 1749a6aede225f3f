"""Model cards: every export writes README.md with Hub metadata (base_model = the teacher, tags, model-index with the
measured metrics) and a body that says how the model was made; credentials are redacted; --push-to-hub uploads."""

import json
import os

import pytest
from huggingface_hub import ModelCard

from distiller_nlp.cli import main
from distiller_nlp.core.card import redact, render_model_card, CardInfo, set_invocation
from distiller_nlp.core.errors import DistillerError


@pytest.fixture(scope="module")
def distilled(tiny_teacher, sst2_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "student"
    code = main(["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
                 "layers=1,hidden=16,heads=2,intermediate=32", "--epochs", "1", "--batch-size", "16",
                 "--max-length", "16", "--precision", "no", "--report-to", "none", "--mapping", "skip",
                 "--temperature", "2", "--hard-label-weight", "0.5", "--output-dir", str(out)])
    assert code == 0
    return out


def test_distilled_student_card_reads_back(distilled, tiny_teacher):
    card = ModelCard.load(str(distilled / "README.md"))
    m = json.loads((distilled / "metrics.json").read_text())
    assert card.data.base_model == tiny_teacher
    assert {"distillation", "knowledge-distillation", "kd-kd"} <= set(card.data.tags)
    assert card.data.datasets == ["nyu-mll/glue"] and card.data.pipeline_tag == "text-classification"
    (res,) = [r for r in card.data.eval_results if r.dataset_split == "validation"]
    assert res.metric_type == "accuracy" and res.metric_value == pytest.approx(m["eval_accuracy"], abs=1e-6)
    assert res.dataset_config == "sst2"
    text = card.text
    # teacher, shape against the teacher, the pipeline, the data, the command
    assert f"`{tiny_teacher}`" in text and "| layers | 1 | 2 |" in text and "| hidden size | 16 | 32 |" in text
    assert f"{m['flops_ratio']:.3f} of the FLOPs" in text
    assert "`kd` (T = 2.0, kd_weight 1.0)" in text and "**hard-label cross-entropy weight**: 0.5" in text
    assert "`hidden_mse/S1-T2`" in text and "skip (hidden, hidden_mse)" in text
    assert "96 original" in text and "**eval examples**: 37" in text
    assert "distiller-nlp distill --teacher" in text and "--temperature 2" in text
    # the teacher's own card (written by finetune-teacher) names its base model, which the student's card repeats
    assert "itself fine-tuned from" in text


def test_finetuned_teacher_has_a_card(tiny_teacher, tiny_backbone):
    card = ModelCard.load(os.path.join(tiny_teacher, "README.md"))
    assert card.data.base_model == tiny_backbone and "teacher" in card.data.tags
    assert "cross-entropy on the labels" in card.text and "4 epochs" in card.text


def test_packaged_teacher_is_named_by_its_hub_id_and_licence():
    from distiller_nlp.models import model_source

    src = model_source("minilm")
    assert src == {"id": "sentence-transformers/all-MiniLM-L6-v2", "license": "apache-2.0", "base": None}


def test_redaction_everywhere_a_card_writes():
    assert redact("--storage postgresql://bob:s3cret@db:5432/optuna") == "--storage postgresql://bob:***@db:5432/optuna"
    assert redact("--set hub_token=hf_abc x --set hpo.password=pw") == "--set hub_token=*** x --set hpo.password=***"
    set_invocation("distiller-nlp", ["hpo", "--storage", "postgresql://u:pw@h/db"])
    try:
        text = render_model_card(CardInfo(title="t", summary="s"))
    finally:
        set_invocation(None, [])
    assert "pw@" not in text and "postgresql://u:***@h/db" in text


def test_push_to_hub_offline_is_one_line_error(distilled, monkeypatch):
    from distiller_nlp.core.card import push_to_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DistillerError, match="HF_HUB_OFFLINE") as e:
        push_to_hub(str(distilled), "me/student")
    assert "\n" not in str(e.value)
    with pytest.raises(DistillerError, match="not a Hub repository id"):
        push_to_hub(str(distilled), "no-slash")


def test_push_to_hub_uploads_the_directory(distilled, monkeypatch):
    import huggingface_hub

    from distiller_nlp.core.card import push_to_hub

    calls = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: calls.append(("upload", kw["repo_id"], kw)))
    url = push_to_hub(str(distilled), "me/student")
    assert url == "https://huggingface.co/me/student"
    assert [c[:2] for c in calls] == [("create", "me/student"), ("upload", "me/student")]
    up = calls[1][2]
    assert up["folder_path"] == str(distilled) and "checkpoints/*" in up["ignore_patterns"]
    assert os.path.isfile(os.path.join(up["folder_path"], "README.md"))


def test_push_to_hub_failure_is_one_line(distilled, monkeypatch):
    import huggingface_hub

    from distiller_nlp.core.card import push_to_hub

    def boom(self, repo_id, **kw):
        raise OSError("connection refused\nretry later")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", boom)
    with pytest.raises(DistillerError) as e:
        push_to_hub(str(distilled), "me/student")
    assert str(e.value) == f"cannot push {distilled} to me/student: connection refused"


def test_push_to_hub_flag(tiny_teacher, sst2_dir, tmp_path, monkeypatch, capsys):
    """``--push-to-hub``: offline, refused before anything is written; online, the finished directory (with its
    card) is uploaded and ``metrics.json`` says where."""
    import huggingface_hub

    args = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
            "layers=1,hidden=16,heads=2,intermediate=32", "--max-steps", "2", "--max-length", "16", "--precision",
            "no", "--report-to", "none", "--push-to-hub", "me/tiny"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*args, "--output-dir", str(tmp_path / "off")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: cannot push to me/tiny: HF_HUB_OFFLINE is set"] and not (tmp_path / "off").exists()
    uploads = []
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder",
                        lambda self, **kw: uploads.append(sorted(os.listdir(kw["folder_path"]))))
    assert main([*args, "--output-dir", str(tmp_path / "on")]) == 0
    assert len(uploads) == 1 and {"README.md", "model.safetensors", "metrics.json"} <= set(uploads[0])
    assert json.loads((tmp_path / "on" / "metrics.json").read_text()).get("pushed_to") is None  # written before
