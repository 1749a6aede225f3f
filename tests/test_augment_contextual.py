"""Model-based augmentation stages: ``contextual`` (masked-LM substitution) and ``back_translation`` (MarianMT-style
en → pivot → en), on tiny random checkpoints the tests build (a WordPiece vocabulary written here; a SentencePiece
model trained here): determinism, independence of batch size, what may and may not change, pairs through
``augment_dataset``, the fingerprint cache, and the errors for missing checkpoints and bad parameters."""

import json
import os
import re
import shutil

import datasets
import numpy as np
import pytest

from distiller_nlp.augment import augment_dataset, build_augmenter, list_augmenters
from distiller_nlp.core.errors import DistillerError

WORDS = ("the a movie was good bad great awful happy sad day food and i it so very really love hate nice fun "
         "this is today").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", ".", ",", "!", "1", "##s", "##ly", "##ing"] + WORDS
WHOLE = set(WORDS)  # what a replacement may be (no specials, [unused0], punctuation, digits, ##pieces)

TEXTS = ["The movie was good, really!", "i love it so much @user http://x.co", "", "hello",
         "Day and food were nice and fun", "this is a very sad day"]


def _rngs(n, seed=0):
    return [np.random.default_rng([seed, 0, i]) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory):
    """A tiny random ``BertForMaskedLM`` with a 36-entry WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_mlm")
    (d / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    tok = BertTokenizer(vocab=str(d / "vocab.txt"))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, max_position_embeddings=64))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_marian(tmp_path_factory):
    """Two tiny random ``MarianMTModel`` checkpoints (forward, backward) sharing a SentencePiece model trained here."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    d = tmp_path_factory.mktemp("tiny_marian")
    sents = ["the movie was good", "i love this day", "the food was bad and sad", "it is so very nice",
             "das ist gut", "ich liebe den tag"] * 20
    (d / "corpus.txt").write_text("\n".join(sents), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "sp"), vocab_size=40,
                                   model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=1, unk_id=2,
                                   pad_id=0, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(d / "sp.model"))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    for name in ("source.spm", "target.spm"):
        shutil.copy(d / "sp.model", d / name)
    (d / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tok = MarianTokenizer(str(d / "source.spm"), str(d / "target.spm"), str(d / "vocab.json"))
    cfg = MarianConfig(vocab_size=len(vocab), d_model=16, encoder_layers=1, decoder_layers=1,
                       encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                       max_position_embeddings=64, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                       forced_eos_token_id=1)
    out = {}
    for seed, name in ((1, "forward"), (2, "backward")):
        torch.manual_seed(seed)
        path = d / name
        MarianMTModel(cfg).save_pretrained(path)
        tok.save_pretrained(path)
        out[f"{name}_model"] = str(path)
    return out


# ------------------------------------------------------------------------------------------------ contextual

def test_registered():
    assert {"random", "contextual", "back_translation"} <= set(list_augmenters())


def test_contextual_whole_words_deterministic_and_batch_independent(tiny_mlm):
    aug = build_augmenter("contextual", 0.5, {"model": tiny_mlm, "batch_size": 2})
    a = aug.augment(TEXTS, _rngs(len(TEXTS)))
    one = build_augmenter("contextual", 0.5, {"model": tiny_mlm, "batch_size": 1}).augment(TEXTS, _rngs(len(TEXTS)))
    assert a == one  # independent of batch size
    rev = build_augmenter("contextual", 0.5, {"model": tiny_mlm, "batch_size": 4}).augment(
        TEXTS[::-1], _rngs(len(TEXTS))[::-1])
    assert rev[::-1] == a  # ... and of the other texts of the batch
    assert aug.augment(TEXTS, _rngs(len(TEXTS))) == a
    assert aug.augment(TEXTS, _rngs(len(TEXTS), seed=1)) != a
    assert a[2] == ""
    for src, new in zip(TEXTS, a):
        assert re.sub(r"\w", "", src) == re.sub(r"\w", "", new) or "@" in src  # punctuation and spacing kept
        s, n = src.split(), new.split()
        assert len(s) == len(n)
        changed = [(x, y) for x, y in zip(s, n) if x != y]
        if src:
            assert len(changed) == min(len(changed), max(1, round(0.5 * len(s))))
        for x, y in changed:
            core = re.sub(r"^\W+|\W+$", "", y)
            assert core.lower() in WHOLE and core.lower() != re.sub(r"^\W+|\W+$", "", x).lower()
            assert core[:1].isupper() == x[:1].isupper()  # capitalisation copied
    # round(0.5 * 5) = 2 of "The movie was good, really!" replaced, the comma and "!" stay where they were
    s, n = TEXTS[0].split(), a[0].split()
    assert sum(x != y for x, y in zip(s, n)) == 2 and n[3].endswith(",") and n[4].endswith("!")
    # mentions and URLs are never touched
    assert a[1].split()[-2:] == ["@user", "http://x.co"]


def test_contextual_top_p_and_temperature(tiny_mlm):
    from distiller_nlp.augment.contextual import nucleus_draw

    p = np.array([0.1, 0.5, 0.3, 0.1])
    assert nucleus_draw(p, 0.5, 0.99) == 1  # nucleus {1}
    assert [nucleus_draw(p, 0.8, u) for u in (0.0, 0.62, 0.63)] == [1, 1, 2]  # nucleus {1, 2}: 0.625 / 0.375
    assert nucleus_draw(p, 1.0, 0.999) == 3  # ties broken by index
    greedy = build_augmenter("contextual", 1.0, {"model": tiny_mlm, "top_p": 1e-9})
    texts = ["the movie was good"] * 3
    out = greedy.augment(texts, _rngs(3))
    assert len(set(out)) == 1  # top_p -> 0 is argmax decoding: every seed gives the same words
    hot = build_augmenter("contextual", 1.0, {"model": tiny_mlm, "temperature": 50.0}).augment(
        ["the movie was good"] * 8, _rngs(8))
    assert len(set(hot)) > 1


def test_contextual_pairs_and_fingerprint_cache(tiny_mlm, tmp_path, monkeypatch):
    from distiller_nlp.augment.contextual import ContextualAugmenter

    ds = datasets.Dataset.from_dict({"text": ["the movie was good", "i hate this sad day"] * 2,
                                     "text_pair": ["it was really nice", "so very bad"] * 2, "label": [1, 0] * 2})
    ds.save_to_disk(str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    calls = []
    real = ContextualAugmenter.augment
    monkeypatch.setattr(ContextualAugmenter, "augment", lambda self, t, r: calls.append(len(t)) or real(self, t, r))
    params = {"contextual": {"model": tiny_mlm}}
    a = augment_dataset(ds, ["contextual"], aug_p=0.3, copies=2, seed=5, params=params)
    first = len(calls)
    b = augment_dataset(ds, ["contextual"], aug_p=0.3, copies=2, seed=5, params=params)
    assert first == 4 and len(calls) == first  # second call: loaded from the cache, the model is not run
    assert a._fingerprint == b._fingerprint
    assert list(a["text"]) == list(b["text"]) and list(a["label"]) == [1, 0] * 4
    for col in ("text", "text_pair"):
        new, old = list(a[col]), list(ds[col]) * 2
        assert all(len(x.split()) == len(y.split()) for x, y in zip(new, old))
        assert all(sum(p != q for p, q in zip(x.split(), y.split())) == max(1, round(0.3 * len(y.split())))
                   for x, y in zip(new, old))
    assert list(a["text"])[:4] != list(a["text"])[4:]  # the copies differ
    c = augment_dataset(ds, ["random", "contextual"], aug_p=0.3, seed=5, params=params)  # a pipeline of stages
    assert len(c) == 4


def test_contextual_errors(tiny_mlm, tmp_path):
    from transformers import BertConfig, BertModel

    with pytest.raises(DistillerError, match=r"no masked-LM checkpoint given.*contextual\.model"):
        build_augmenter("contextual", 0.3)
    with pytest.raises(DistillerError) as err:
        build_augmenter("contextual", 0.3, {"model": "nobody/no-such-mlm"})
    msg = str(err.value)
    assert "'nobody/no-such-mlm' not found offline" in msg and "train-mlm" in msg
    assert "--aug-param contextual.model=DIR" in msg and "--augment random" in msg
    with pytest.raises(DistillerError, match="no such model directory|not found"):
        build_augmenter("contextual", 0.3, {"model": str(tmp_path / "missing")})
    headless = tmp_path / "headless"
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(headless)
    shutil.copy(os.path.join(tiny_mlm, "vocab.txt"), headless / "vocab.txt")
    for name in ("tokenizer_config.json", "tokenizer.json"):
        if os.path.exists(os.path.join(tiny_mlm, name)):
            shutil.copy(os.path.join(tiny_mlm, name), headless / name)
    aug = build_augmenter("contextual", 0.3, {"model": str(headless)})  # loading is lazy ...
    with pytest.raises(DistillerError, match="no trained masked-LM head.*train-mlm"):
        aug.augment(["the movie was good"], _rngs(1))  # ... and refuses a checkpoint whose head would be random
    for bad in (0.0, 1.5):
        for stage in ("contextual", "back_translation"):
            with pytest.raises(DistillerError, match="aug_p"):
                build_augmenter(stage, bad, {"model": tiny_mlm} if stage == "contextual" else {})
    with pytest.raises(DistillerError, match="top_p"):
        build_augmenter("contextual", 0.3, {"model": tiny_mlm, "top_p": 1.5})
    with pytest.raises(DistillerError, match="bad parameters"):
        build_augmenter("contextual", 0.3, {"model": tiny_mlm, "top_k": 5})


# ------------------------------------------------------------------------------------------------ back-translation

def _bt(tiny_marian, aug_p, **kw):
    return build_augmenter("back_translation", aug_p, {**tiny_marian, "max_length": 10, **kw})


BT_TEXTS = ["the movie was good", "i love this day", "", "it is so very nice", "the food was bad", "das ist gut"]


def test_back_translation_beam_and_sampling(tiny_marian):
    n = len(BT_TEXTS)
    chosen = [bool(t) and np.random.default_rng([0, 0, i]).random() < 0.6 for i, t in enumerate(BT_TEXTS)]
    assert 0 < sum(chosen) < n - 1
    for kw in ({}, {"top_p": 0.9}, {"top_p": 0.5, "temperature": 2.0}):
        a = _bt(tiny_marian, 0.6, batch_size=2, **kw).augment(BT_TEXTS, _rngs(n))
        b = _bt(tiny_marian, 0.6, batch_size=1, **kw).augment(BT_TEXTS, _rngs(n))
        assert a == b  # deterministic and independent of batch size
        for text, new, picked in zip(BT_TEXTS, a, chosen):
            assert (new != text) == picked  # aug_p: whether an example is back-translated at all
    sampled = [_bt(tiny_marian, 1.0, top_p=1.0).augment(["the movie was good"] * 4, _rngs(4, seed=s))
               for s in (0, 1)]
    assert sampled[0] != sampled[1] and len(set(sampled[0])) > 1  # sampling is seeded per example
    beam = _bt(tiny_marian, 1.0).augment(["the movie was good"] * 3, _rngs(3))
    assert len(set(beam)) == 1  # beam search: no randomness beyond which examples are chosen


def test_back_translation_pairs_and_errors(tiny_marian, tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["the movie was good", "i love this day"],
                                     "text_pair": ["it is so very nice", "the food was bad"], "label": [1, 0]})
    a = augment_dataset(ds, ["back_translation"], aug_p=1.0, seed=2, params={"back_translation": {
        **tiny_marian, "max_length": 10, "top_p": 0.9}})
    b = augment_dataset(ds, ["back_translation"], aug_p=1.0, seed=2, params={"back_translation": {
        **tiny_marian, "max_length": 10, "top_p": 0.9, "batch_size": 1}})
    assert list(a["text"]) == list(b["text"]) and list(a["text_pair"]) == list(b["text_pair"])
    assert all(x != y for x, y in zip(list(a["text"]) + list(a["text_pair"]), list(ds["text"]) + list(ds["text_pair"])))
    assert list(a["label"]) == [1, 0]
    with pytest.raises(DistillerError) as err:
        build_augmenter("back_translation", 0.3)  # the Helsinki-NLP defaults are not in the offline cache
    msg = str(err.value)
    assert "'Helsinki-NLP/opus-mt-en-de' not found offline" in msg
    assert "--aug-param back_translation.forward_model=DIR" in msg and "--augment random" in msg
    with pytest.raises(DistillerError, match="backward_model"):
        build_augmenter("back_translation", 0.3, {"forward_model": tiny_marian["forward_model"]})
    with pytest.raises(DistillerError, match="num_beams"):
        _bt(tiny_marian, 0.3, num_beams=0)
    # a multilingual pivot token (Distiller: ">>fr<<" with opus-mt-en-ROMANCE) is prepended to the source only
    aug = _bt(tiny_marian, 1.0, target_prefix=">>fr<<")
    seen = []
    real = aug._translate
    aug._translate = lambda path, param, texts, seeds: seen.append(list(texts)) or real(path, param, texts, seeds)
    aug.augment(["the movie was good"], _rngs(1))
    assert seen[0] == [">>fr<< the movie was good"] and not seen[1][0].startswith(">>fr<<")
