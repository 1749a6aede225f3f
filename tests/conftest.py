"""Shared fixtures: offline environment, a tiny random BERT backbone with the packaged (real) WordPiece tokenizer, and
a small SST-2-format dataset the tests write themselves (sentences built from sentiment words, so a model can learn it).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "DISTILLER_NLP_CACHE" not in os.environ:  # the precision probe's verdicts: per test session, not the user's cache
    import tempfile

    os.environ["DISTILLER_NLP_CACHE"] = tempfile.mkdtemp(prefix="distiller-nlp-cache-")

import random  # noqa: E402

import pytest  # noqa: E402

POSITIVE = ["good", "great", "happy", "love", "excellent", "nice", "wonderful", "fun", "best", "amazing"]
NEGATIVE = ["bad", "awful", "sad", "hate", "terrible", "poor", "boring", "worst", "angry", "horrible"]
FILLER = ["the", "movie", "was", "really", "today", "this", "i", "it", "so", "very", "day", "food", "and", "my"]

# The tiny backbone: L=2, H=32, A=4 (head size 8), I=64; the students in the tests use head size 8 too.
TINY_BACKBONE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=64)


def make_sentences(n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` (sentence, label) pairs: label 1 iff the sentence holds more positive than negative words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILLER, 4)
        strong = POSITIVE if label else NEGATIVE
        words += rng.sample(strong, 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_sst2_dir(path, n_train=96, n_dev=37, seed=0) -> str:
    """A GLUE SST-2 directory: ``train.tsv`` and ``dev.tsv`` with header ``sentence\\tlabel``."""
    os.makedirs(path, exist_ok=True)
    for name, n, s in (("train.tsv", n_train, seed), ("dev.tsv", n_dev, seed + 1)):
        with open(os.path.join(path, name), "w", encoding="utf-8") as fh:
            fh.write("sentence\tlabel\n")
            for text, label in make_sentences(n, s):
                fh.write(f"{text}\t{label}\n")
    return str(path)


@pytest.fixture(scope="session")
def sst2_dir(tmp_path_factory):
    return write_sst2_dir(tmp_path_factory.mktemp("sst2"))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A tiny random ``BertModel`` (no classifier) saved with the packaged MiniLM tokenizer: a stand-in encoder
    checkpoint for ``finetune-teacher``; it is *not* a valid teacher until fine-tuned."""
    import torch
    from transformers import BertConfig, BertModel

    from distiller_nlp.models import load_tokenizer

    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, **TINY_BACKBONE))
    out = tmp_path_factory.mktemp("backbone")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_backbone, sst2_dir):
    """The tiny backbone fine-tuned on the test SST-2 data through the real ``finetune-teacher`` command."""
    from distiller_nlp.cli import main

    out = str(tmp_path_factory.mktemp("teacher") / "run")
    code = main(["finetune-teacher", "--model", tiny_backbone, "--task", "sst2", "--data-dir", sst2_dir,
                 "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--max-length", "16", "--precision", "no",
                 "--report-to", "none", "--output-dir", out])
    assert code == 0
    return out
