"""``train_mlm``: continued masked-LM training with the shared engine on a tiny random BERT encoder (no MLM head, like
the packaged MiniLM): the loss falls, the result loads with ``AutoModelForMaskedLM`` and feeds the ``contextual``
augmenter, ``--resume`` continues to the same result, and the command-line wrapper follows the conventions."""

import argparse
import json
import os
import shutil

import numpy as np
import pytest

from conftest import make_sentences
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.augment.mlm import MLMConfig, evaluate_mlm, load_mlm_config, train_mlm
from distiller_nlp.cli import add_train_mlm_parser, run_train_mlm

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "##s"] + sorted(
    {w for text, _ in make_sentences(200, 0) for w in text.split()})


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny random ``BertModel`` (encoder only: the masked-LM head will be new) with its WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("encoder")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=32)).save_pretrained(d)
    BertTokenizer(vocab=str(d / "vocab.txt")).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "texts.txt"
    # 8 distinct sentences, each 15 times: a tiny model can learn them within a few dozen steps
    path.write_text("\n".join(t for t, _ in make_sentences(8, 3) * 15) + "\n\n", encoding="utf-8")
    return str(path)


def _cfg(encoder, corpus, out, steps=30, **kw):
    kw.setdefault("mlm_probability", 0.3)  # more targets per step: a clear drop within a few dozen steps
    cfg = MLMConfig(model=encoder, corpus=corpus, output_dir=str(out), **kw)
    t = cfg.train
    t.max_steps, t.batch_size, t.lr, t.max_length, t.precision, t.report_to = steps, 16, 1e-2, 16, "no", "none"
    t.eval_steps, t.logging_steps, t.warmup_ratio = steps // 2, 2, 0.0
    return cfg


def test_train_mlm_lowers_loss_and_writes_a_loadable_masked_lm(encoder, corpus, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from distiller_nlp.augment import build_augmenter
    from distiller_nlp.augment.mlm import load_mlm_corpus

    out = tmp_path / "mlm"
    cfg = _cfg(encoder, corpus, out)
    train_texts, eval_texts = load_mlm_corpus(cfg)
    assert len(train_texts) == 108 and len(eval_texts) == 12  # 10 % of the 120 lines held out (empty lines dropped)
    tok = AutoTokenizer.from_pretrained(encoder)
    before = evaluate_mlm(AutoModelForMaskedLM.from_pretrained(encoder), tok, train_texts, max_length=16,
                          mlm_probability=0.3)
    m = train_mlm(cfg)
    assert m["global_step"] == 30 and m["train_examples"] == 108 and m["eval_examples"] == 12
    assert any(k.startswith("cls.predictions") for k in m["new_head_weights"])  # the head was new
    assert m["eval_loss"] < m["eval_loss_before"] - 0.3
    assert m["eval_perplexity"] == pytest.approx(np.exp(m["eval_loss"]))
    assert m["eval_perplexity_before"] == pytest.approx(np.exp(m["eval_loss_before"]))
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["eval_loss"] == pytest.approx(m["eval_loss"]) and "train_runtime_s" in on_disk
    assert (out / "model.safetensors").is_file() and (out / "config.yaml").is_file()
    assert not (out / "best").exists()
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(out / "README.md"))
    assert card.data.pipeline_tag == "fill-mask" and card.data.base_model == str(encoder)
    assert f"{m['eval_perplexity']:.2f}" in card.text and "masked" in card.text
    model = AutoModelForMaskedLM.from_pretrained(out)  # plain transformers, nothing of ours
    after = evaluate_mlm(model, AutoTokenizer.from_pretrained(out), train_texts, max_length=16, mlm_probability=0.3)
    assert after["loss"] < before["loss"] - 0.3  # on the training texts too
    held = evaluate_mlm(str(out), tok, eval_texts, max_length=16, mlm_probability=0.3, seed=cfg.train.seed,
                        precision="no")  # the run trained and evaluated in fp32: same precision, same loss
    assert held["loss"] == pytest.approx(m["eval_loss"], rel=1e-5)  # the exported model is the one evaluated
    # the result is a masked LM the contextual augmenter accepts
    text = "the movie was really good"
    new = build_augmenter("contextual", 0.4, {"model": str(out)}).augment([text], [np.random.default_rng(0)])[0]
    assert new != text and len(new.split()) == 5


def test_train_mlm_resume_continues_to_the_same_result(encoder, corpus, tmp_path):
    from distiller_nlp.core.engine import list_checkpoints

    def cfg(out):
        # length-grouped batches (the default here): their loader has its own generator, so the lazily created
        # iterator no longer shifts the global RNG stream that the masking and dropout draw from
        return _cfg(encoder, corpus, out, steps=8)

    full = train_mlm(cfg(tmp_path / "full"))
    out = tmp_path / "cut"
    first = train_mlm(cfg(out))
    ckpts = [os.path.basename(p) for p in list_checkpoints(str(out))]
    assert ckpts == ["checkpoint-00000004", "checkpoint-00000007"]  # at the evaluation, at the end of the epoch
    shutil.rmtree(list_checkpoints(str(out))[-1])  # as if killed at step 6
    with pytest.raises(DistillerError, match="not empty"):
        train_mlm(cfg(out))
    # resume from step 4 (across the epoch boundary at step 7): the same final model and metrics
    resumed = train_mlm(cfg(out), resume=True)
    assert resumed["global_step"] == 8
    assert resumed["eval_loss"] == pytest.approx(full["eval_loss"], rel=1e-5)
    assert resumed["eval_loss_before"] == first["eval_loss_before"]


def test_train_mlm_errors_and_cli(encoder, corpus, tmp_path, capsys):
    from distiller_nlp.core.cli import cli_main

    with pytest.raises(DistillerError, match="corpus file not found"):
        train_mlm(_cfg(encoder, str(tmp_path / "nope.txt"), tmp_path / "a"))
    with pytest.raises(DistillerError, match="mlm_probability"):
        train_mlm(_cfg(encoder, corpus, tmp_path / "b", mlm_probability=0.0))
    # the masked-LM defaults of train (64 tokens, lr 1e-4) survive flags and files that set other train keys
    cfg = load_mlm_config(None, {"train.max_steps": 5, "output_dir": "x"})
    assert (cfg.train.max_steps, cfg.train.max_length, cfg.train.lr, cfg.model) == (5, 64, 1e-4, "minilm")
    (tmp_path / "c.yaml").write_text("train: {max_length: 32}\nmlm_probability: 0.2\n")
    cfg = load_mlm_config(str(tmp_path / "c.yaml"), {"train.lr": 0.001})
    assert (cfg.train.max_length, cfg.train.lr, cfg.train.group_by_length, cfg.mlm_probability) == (32, 1e-3, True, 0.2)
    with pytest.raises(DistillerError, match="unknown key 'train.nope' in .*c2.yaml"):
        (tmp_path / "c2.yaml").write_text("train: {nope: 1}\n")
        load_mlm_config(str(tmp_path / "c2.yaml"))
    parser = argparse.ArgumentParser(prog="distiller-nlp")
    add_train_mlm_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli"
    args = ["train-mlm", "--model", encoder, "--corpus", corpus, "--max-steps", "2", "--batch-size", "8",
            "--max-length", "16", "--precision", "no", "--report-to", "none", "--output-dir", str(out)]
    assert cli_main(parser, run_train_mlm, args) == 0
    assert "held-out perplexity" in capsys.readouterr().out
    assert cli_main(parser, run_train_mlm, args) == 2  # non-empty output dir without --resume/--overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli_main(parser, run_train_mlm, args + ["--overwrite", "--set", "bogus=1"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
