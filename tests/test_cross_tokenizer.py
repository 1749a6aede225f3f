"""A teacher with another tokenizer than the student's: each side tokenizes the raw text, logit losses and pooled
(sequence-level) matches work, token-level matches are refused naming both tokenizers, the cache keys on the
teacher's tokenizer."""

import json
import os

import pytest
import torch

from conftest import FILLER, NEGATIVE, POSITIVE, TINY_BACKBONE

from distiller_nlp.config import DataConfig, DistillConfig, KDConfig, MatchConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import TrainArgs


@pytest.fixture(scope="module")
def word_student(tmp_path_factory):
    """A tiny BERT student with its own word-level WordPiece vocabulary (ids unrelated to MiniLM's)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("word_student")
    words = sorted(set(POSITIVE + NEGATIVE + FILLER))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *reversed(words)]
    # (transformers 5: the vocab_file argument is ignored by the fast tokenizer, the vocab dict is not)
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(1)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(vocab), num_labels=2, **TINY_BACKBONE))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _cfg(teacher, student, data_dir, out, **kd):
    return DistillConfig(teacher=teacher, student=student, output_dir=str(out),
                         data=DataConfig(task="sst2", data_dir=data_dir),
                         kd=KDConfig(**{"pred_loss": "kd", "temperature": 2.0, **kd}),
                         train=TrainArgs(epochs=1, batch_size=16, lr=1e-3, max_length=16, precision="no",
                                         report_to="none", logging_steps=2))


def test_prepared_run_tokenizes_each_side(tiny_teacher, word_student, sst2_dir, tmp_path):
    from distiller_nlp.kd.setup import prepare_distillation
    from distiller_nlp.models import load_tokenizer
    from distiller_nlp.tasks import teacher_model_inputs

    run = prepare_distillation(_cfg(tiny_teacher, word_student, sst2_dir, tmp_path / "r"))
    assert run.cross_tokenizer
    cols = run.tok["train"].column_names
    assert {"input_ids", "teacher_input_ids", "teacher_attention_mask", "labels"} <= set(cols)
    # the eval splits carry the student's tokenization only
    assert not any(c.startswith("teacher_") for d in run.evals.values() for c in d.column_names)
    t_tok, s_tok = load_tokenizer(tiny_teacher), load_tokenizer(word_student)
    text = "the movie was really good"
    row = run.tok["train"][0]
    assert row["teacher_input_ids"] != row["input_ids"]
    assert s_tok(text)["input_ids"] != t_tok(text)["input_ids"]
    batch = run.collate([run.tok["train"][i] for i in range(5)])
    assert batch["input_ids"].shape[0] == batch["teacher_input_ids"].shape[0] == 5
    # each side padded with its own pad id to its own longest row
    t_in = teacher_model_inputs(batch)
    assert set(t_in) >= {"input_ids", "attention_mask"} and t_in["input_ids"] is batch["teacher_input_ids"]
    longest = max(len(run.tok["train"][i]["teacher_input_ids"]) for i in range(5))
    assert batch["teacher_input_ids"].shape[1] == longest
    # the teacher runner feeds the teacher its own ids: logits equal a direct forward on the teacher's tokenization
    from distiller_nlp.kd.teachers import TeacherRunner

    run.teacher.eval()
    out = TeacherRunner(run.teacher, run.module)(batch)
    with torch.no_grad():
        ref = run.teacher(**t_in).logits
    assert torch.allclose(out["teacher_logits"], ref)


@pytest.mark.parametrize("cache", [pytest.param("off", marks=pytest.mark.slow), "auto"])
def test_cross_tokenizer_distill_logits_and_pooled_match(tiny_teacher, word_student, sst2_dir, tmp_path, cache):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from distiller_nlp.kd.distillation import distill

    cfg = _cfg(tiny_teacher, word_student, sst2_dir, tmp_path / "run", hard_label_weight=1.0,
               intermediate=[MatchConfig(layer_T=2, layer_S=2, feature="hidden", loss="hidden_mse", pool="cls"),
                             MatchConfig(layer_T=1, layer_S=1, feature="hidden", loss="cosine", pool="mean")])
    cfg.teacher_cache = cache
    m = distill(cfg)
    assert m["teacher_cached"] is (cache == "auto")
    hist = json.load(open(tmp_path / "run" / "history.json"))
    keys = set().union(*(set(r) for r in hist["train"]))
    assert {"kd", "hidden_mse/S2-T2/cls", "cosine/S1-T1/mean"} <= keys
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in hist["train"])
    # the exported student reads its own tokenizer
    tok = AutoTokenizer.from_pretrained(tmp_path / "run")
    assert len(tok) == len(AutoTokenizer.from_pretrained(word_student))
    AutoModelForSequenceClassification.from_pretrained(tmp_path / "run")


def test_token_level_match_refused_naming_both_tokenizers(tiny_teacher, word_student, sst2_dir, tmp_path):
    from distiller_nlp.kd.setup import prepare_distillation

    for match in (MatchConfig(layer_T=2, layer_S=2, feature="hidden", loss="hidden_mse"),
                  MatchConfig(layer_T=2, layer_S=2, feature="attention_scores", loss="attention_score")):
        with pytest.raises(DistillerError) as e:
            prepare_distillation(_cfg(tiny_teacher, word_student, sst2_dir, tmp_path / "x", intermediate=[match]))
        msg = str(e.value)
        assert "\n" not in msg and "token by token" in msg and "pool" in msg
        assert "30,522 tokens" in msg and f"{len(set(POSITIVE + NEGATIVE + FILLER)) + 5:,} tokens" in msg
    with pytest.raises(DistillerError, match="mixup"):
        prepare_distillation(_cfg(tiny_teacher, word_student, sst2_dir, tmp_path / "x", mixup=True))
    assert not os.path.exists(tmp_path / "x")


def test_cli_token_level_match_exit_2(tiny_teacher, word_student, sst2_dir, tmp_path, capsys):
    from distiller_nlp.cli import main

    code = main(["distill", "--teacher", tiny_teacher, "--student", word_student, "--task", "sst2", "--data-dir",
                 sst2_dir, "--mapping", "skip", "--max-length", "16", "--precision", "no", "--report-to", "none",
                 "--output-dir", str(tmp_path / "cli")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token by token" in err[0]
    assert not os.path.exists(tmp_path / "cli")


def test_cache_key_changes_with_teacher_tokenizer(tiny_teacher, word_student, sst2_dir, tmp_path):
    from distiller_nlp.kd import teacher_cache as tc
    from distiller_nlp.kd.setup import prepare_distillation
    from distiller_nlp.models import load_tokenizer

    run = prepare_distillation(_cfg(tiny_teacher, word_student, sst2_dir, tmp_path / "k"))
    key = tc.cache_key_for(run)
    assert tc.tokenizer_fingerprint(load_tokenizer(tiny_teacher)) != tc.tokenizer_fingerprint(
        load_tokenizer(word_student))
    run.teacher_tokenizer = load_tokenizer(word_student)  # same data, another teacher tokenizer -> another key
    assert tc.cache_key_for(run) != key


def test_pool_hidden_identities():
    from distiller_nlp.kd.module import pool_hidden

    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.equal(pool_hidden(h, mask, "cls"), h[:, :1])
    mean = pool_hidden(h, mask, "mean")
    assert torch.allclose(mean[0, 0], h[0, :2].mean(0)) and torch.allclose(mean[1, 0], h[1].mean(0))
    # a mask longer than the (cached, shorter) hidden rows is cut to the common length
    assert torch.allclose(pool_hidden(h[:, :2], mask, "mean")[1, 0], h[1, :2].mean(0))
    from transformers import BertConfig

    from distiller_nlp.kd.matches import resolve_matches

    c = BertConfig(**TINY_BACKBONE)
    with pytest.raises(DistillerError, match="hidden states only"):
        resolve_matches(KDConfig(intermediate=[MatchConfig(layer_T=1, layer_S=1, feature="attention_scores",
                                                           loss="attention_score", pool="cls")]), c, c)


def test_cross_tokenizer_regression_task(tiny_backbone, word_student, tmp_path):
    """A regression task (STS-B format: sentence pairs → score): each side tokenizes the pair, logits_mse + a pooled
    match train the 1-output student."""
    from distiller_nlp.cli import main

    from conftest import make_sentences

    data = tmp_path / "stsb"
    data.mkdir()
    for name, n, seed in (("train.tsv", 48, 0), ("dev.tsv", 16, 1)):
        a, b = make_sentences(n, seed), make_sentences(n, seed + 7)
        rows = [f"{s1}\t{s2}\t{2.5 + 2.5 * (l1 == l2) - 1.0 * (l1 != l2):.1f}" for (s1, l1), (s2, l2) in zip(a, b)]
        (data / name).write_text("sentence1\tsentence2\tscore\n" + "\n".join(rows) + "\n")
    fast = ["--max-length", "24", "--precision", "no", "--report-to", "none", "--batch-size", "16"]
    teacher = tmp_path / "teacher"
    assert main(["finetune-teacher", "--model", tiny_backbone, "--task", "stsb", "--data-dir", str(data),
                 "--max-steps", "4", *fast, "--output-dir", str(teacher)]) == 0
    student = word_student  # a 2-label checkpoint: its head is re-initialised for the 1-output task
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kd:\n  pred_loss: logits_mse\n  hard_label_weight: 1.0\n  intermediate:\n"
                      "    - {layer_T: 2, layer_S: 2, loss: hidden_mse, pool: cls}\n")
    out = tmp_path / "run"
    assert main(["distill", "--config", str(recipe), "--teacher", str(teacher), "--student", str(student), "--task",
                 "stsb", "--data-dir", str(data), "--max-steps", "4", *fast, "--output-dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert "eval_pearson" in m and m["global_step"] == 4
    hist = json.loads((out / "history.json").read_text())
    assert any("hidden_mse/S2-T2/cls" in r for r in hist["train"])
