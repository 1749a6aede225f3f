"""Dataset meta-features for AutoDistiller: hand-computed label, length, vocabulary and embedding statistics, the fixed
key set, determinism, teacher features, caching keys and input errors (tiny WordPiece tokenizer, tiny random BERT)."""

import math

import datasets
import numpy as np
import pytest

from distiller_nlp.tasks import TaskSpec, get_task
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.autodistiller.metafeatures import (META_FEATURE_NAMES, compute_meta_features,
                                                      covariance_eigenvalues, fisher_ratio, loo_centroid_accuracy,
                                                      meta_features_cache_key, normalized_entropy, participation_ratio)

WORDS = ("the a movie film was is good bad great awful happy sad cat dog sat on mat i it love hate very so really "
         "this that day food and my").split()
TEACHER_KEYS = ("mf_emb_norm_mean", "mf_emb_cos_to_centroid", "mf_emb_eff_rank", "mf_emb_fisher",
                "mf_emb_centroid_acc", "mf_teacher_dev_score", "mf_teacher_entropy")
SINGLE = get_task("sst2")
PAIR = get_task("rte")
PAIR_REG = get_task("stsb")
SINGLE_REG = TaskSpec(name="toy-reg", is_regression=True, metric_names=("pearson", "spearman"),
                      main_metric="combined_score")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece tokenizer whose vocabulary is the special tokens plus whole ``WORDS``: any other word is [UNK]."""
    from transformers import BertTokenizerFast

    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab=str(vocab))
    assert tok.vocab_size == 5 + len(WORDS)
    return tok


def _model(tokenizer, num_labels):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, num_labels=num_labels)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture(scope="module")
def teacher(tokenizer):
    return _model(tokenizer, 2)


@pytest.fixture(scope="module")
def reg_teacher(tokenizer):
    return _model(tokenizer, 1)


def _data(n, seed=0, pair=False, regression=False):
    rng = np.random.default_rng(seed)
    cols = {"text": [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 9)))) for _ in range(n)]}
    if pair:
        cols["text_pair"] = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 6)))) for _ in range(n)]
    cols["label"] = rng.uniform(0, 5, size=n).tolist() if regression else [i % 2 for i in range(n)]
    return datasets.Dataset.from_dict(cols)


def _same(a, b):
    return list(a) == list(b) and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


# --------------------------------------------------------------------------------------------------------------------
# Helpers, pinned by hand
# --------------------------------------------------------------------------------------------------------------------
def test_entropy_and_participation_ratio_by_hand():
    assert normalized_entropy([5, 5]) == pytest.approx(1.0)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert normalized_entropy([3, 1]) == pytest.approx(h)
    assert normalized_entropy([4, 0, 0], 3) == pytest.approx(0.0)
    assert math.isnan(normalized_entropy([7], 1))
    assert participation_ratio([1, 1, 1, 1]) == pytest.approx(4.0)
    assert participation_ratio([3, 0, 0]) == pytest.approx(1.0)
    assert participation_ratio([2, 1]) == pytest.approx(9 / 5)
    assert math.isnan(participation_ratio([0, 0]))
    # A centred sample with covariance diag(2, 8) / 3 (ddof=1): eigenvalues 8/3 and 2/3, PR = (10/3)² / (68/9).
    x = np.array([[1.0, 0], [-1, 0], [0, 2], [0, -2]])
    assert sorted(covariance_eigenvalues(x)) == pytest.approx([2 / 3, 8 / 3])
    assert participation_ratio(covariance_eigenvalues(x)) == pytest.approx(100 / 68)


def test_fisher_ratio_and_nearest_centroid_by_hand():
    x = np.array([[0.0], [2.0], [10.0], [12.0]])
    # μ = 6, μ0 = 1, μ1 = 11: between = 2·25 + 2·25 = 100, within = 4·1 = 4.
    assert fisher_ratio(x, [0, 0, 1, 1]) == pytest.approx(25.0)
    assert math.isnan(fisher_ratio(x, [1, 1, 1, 1]))
    rng = np.random.default_rng(0)
    sep = np.concatenate([rng.normal(0, 0.1, (10, 3)) + [5, 0, 0], rng.normal(0, 0.1, (10, 3)) + [0, 5, 0],
                          rng.normal(0, 0.1, (10, 3)) + [0, 0, 5]])
    y = np.repeat([0, 1, 2], 10)
    assert loo_centroid_accuracy(sep, y) == 1.0
    assert loo_centroid_accuracy(sep, np.roll(y, 10)) == 1.0  # label ids need not match any order
    # Leave-one-out: the only member of class 1 has no own-class centroid, so it goes to class 0.
    assert loo_centroid_accuracy(np.array([[1.0, 0], [1, 0.1], [0, 1]]), [0, 0, 1]) == pytest.approx(2 / 3)
    assert math.isnan(loo_centroid_accuracy(sep, np.zeros(30, dtype=int)))


# --------------------------------------------------------------------------------------------------------------------
# compute_meta_features
# --------------------------------------------------------------------------------------------------------------------
def test_label_size_and_task_type_features(tokenizer):
    bal = datasets.Dataset.from_dict({"text": ["good movie"] * 4, "label": [0, 1, 0, 1]})
    f = compute_meta_features(bal, SINGLE, tokenizer)
    assert f["mf_label_entropy"] == pytest.approx(1.0) and f["mf_majority_frac"] == 0.5
    assert math.isnan(f["mf_label_std"])
    assert (f["mf_n_train"], f["mf_log_n_train"], f["mf_num_labels"]) == (4.0, pytest.approx(math.log(4)), 2.0)
    assert (f["mf_is_pair"], f["mf_is_regression"]) == (0.0, 0.0)
    skew = datasets.Dataset.from_dict({"text": ["good movie"] * 4, "label": [1, 1, 0, 1]})
    f = compute_meta_features(skew, SINGLE, tokenizer)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert f["mf_label_entropy"] == pytest.approx(h) and f["mf_majority_frac"] == 0.75
    reg = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "text_pair": ["x", "y", "z"], "label": [1.0, 2.0, 3.0]})
    f = compute_meta_features(reg, PAIR_REG, tokenizer)
    assert f["mf_label_std"] == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert math.isnan(f["mf_label_entropy"]) and math.isnan(f["mf_majority_frac"])
    assert (f["mf_is_pair"], f["mf_is_regression"], f["mf_num_labels"]) == (1.0, 1.0, 1.0)


def test_lengths_unknown_words_and_type_token_ratio(tokenizer):
    # Token counts 2 and 4 (every word is in the vocabulary); with [CLS]/[SEP] they are 4 and 6 > max_length=5.
    ds = datasets.Dataset.from_dict({"text": ["good movie", "the cat sat on"], "label": [0, 1]})
    f = compute_meta_features(ds, SINGLE, tokenizer, max_length=5)
    assert (f["mf_len_mean"], f["mf_len_std"], f["mf_len_p50"]) == (3.0, 1.0, 3.0)
    assert f["mf_len_p90"] == pytest.approx(3.8) and f["mf_frac_truncated"] == 0.5
    assert f["mf_unk_rate"] == 0.0
    # Pairs: both sides summed, three special tokens: 2 + 1 = 3 (+3 = 6 > 5) and 1 + 1 = 2 (+3 = 5, not cut).
    pairs = datasets.Dataset.from_dict({"text": ["good movie", "cat"], "text_pair": ["bad", "dog"], "label": [0, 1]})
    f = compute_meta_features(pairs, PAIR, tokenizer, max_length=5)
    assert f["mf_len_mean"] == 2.5 and f["mf_frac_truncated"] == 0.5
    # Unknown words: "qqq" and "xyzzy" are one [UNK] each, 2 of 6 tokens.
    unk = datasets.Dataset.from_dict({"text": ["good movie qqq", "bad xyzzy film"], "label": [0, 1]})
    assert compute_meta_features(unk, SINGLE, tokenizer)["mf_unk_rate"] == pytest.approx(2 / 6)
    # Words (lower-cased): the cat the dog | the cat sat → 4 distinct of 7; mean word length (3·7 + 0) / 7 = 3.
    corpus = datasets.Dataset.from_dict({"text": ["the cat the dog", "The CAT sat"], "label": [0, 1]})
    f = compute_meta_features(corpus, SINGLE, tokenizer)
    assert f["mf_type_token_ratio"] == pytest.approx(4 / 7) and f["mf_word_len_mean"] == pytest.approx(3.0)
    corpus = datasets.Dataset.from_dict({"text": ["a movie", "a"], "label": [0, 1]})
    assert compute_meta_features(corpus, SINGLE, tokenizer)["mf_word_len_mean"] == pytest.approx(7 / 3)


@pytest.mark.parametrize("task,pair,regression", [(SINGLE, False, False), (PAIR, True, False),
                                                  (PAIR_REG, True, True), (SINGLE_REG, False, True)])
def test_fixed_key_set_and_teacher_none(tokenizer, teacher, reg_teacher, task, pair, regression):
    ds = _data(24, pair=pair, regression=regression)
    f = compute_meta_features(ds, task, tokenizer)
    assert tuple(f) == META_FEATURE_NAMES and all(isinstance(v, float) for v in f.values())
    assert all(math.isnan(f[k]) for k in TEACHER_KEYS)
    model = reg_teacher if regression else teacher
    g = compute_meta_features(ds, task, tokenizer, model, eval_set=ds)
    assert tuple(g) == META_FEATURE_NAMES
    finite = ["mf_emb_norm_mean", "mf_emb_cos_to_centroid", "mf_emb_eff_rank"]
    finite += [] if regression else ["mf_emb_fisher", "mf_emb_centroid_acc"]
    assert all(math.isfinite(g[k]) for k in finite), g
    assert 0 < g["mf_emb_eff_rank"] <= 1 and -1 <= g["mf_emb_cos_to_centroid"] <= 1
    if regression:
        assert math.isnan(g["mf_emb_fisher"]) and math.isnan(g["mf_emb_centroid_acc"])
    # Not fine-tuned: no dev features even with an eval set.
    assert math.isnan(g["mf_teacher_dev_score"]) and math.isnan(g["mf_teacher_entropy"])
    assert {k: f[k] for k in f if k not in TEACHER_KEYS} == {k: g[k] for k in g if k not in TEACHER_KEYS}


def test_deterministic_and_sampled(tokenizer, teacher):
    ds = _data(40, seed=1)
    teacher.train()  # the call switches to eval mode and back
    a = compute_meta_features(ds, SINGLE, tokenizer, teacher, max_embed_examples=16, batch_size=5, seed=3)
    assert teacher.training
    teacher.eval()
    b = compute_meta_features(ds, SINGLE, tokenizer, teacher, max_embed_examples=16, batch_size=5, seed=3)
    assert _same(a, b)
    c = compute_meta_features(ds, SINGLE, tokenizer, teacher, max_embed_examples=16, batch_size=5, seed=4)
    assert c["mf_emb_norm_mean"] != a["mf_emb_norm_mean"]  # another sample of 16
    # Batching does not change the embeddings beyond float noise.
    d = compute_meta_features(ds, SINGLE, tokenizer, teacher, max_embed_examples=16, batch_size=64, seed=3)
    assert d["mf_emb_norm_mean"] == pytest.approx(a["mf_emb_norm_mean"], rel=1e-4)


def test_finetuned_teacher_dev_features(tokenizer, teacher, reg_teacher):
    train, dev = _data(20, seed=0), _data(15, seed=1)
    f = compute_meta_features(train, SINGLE, tokenizer, teacher, eval_set=dev, teacher_finetuned=True)
    assert 0.0 <= f["mf_teacher_dev_score"] <= 1.0 and 0.0 <= f["mf_teacher_entropy"] <= 1.0
    assert math.isnan(compute_meta_features(train, SINGLE, tokenizer, teacher, teacher_finetuned=True)
                      ["mf_teacher_dev_score"])  # no eval set
    rtrain, rdev = _data(20, pair=True, regression=True), _data(15, seed=1, pair=True, regression=True)
    g = compute_meta_features(rtrain, PAIR_REG, tokenizer, reg_teacher, eval_set=rdev, teacher_finetuned=True)
    assert -1.0 <= g["mf_teacher_dev_score"] <= 1.0 and math.isnan(g["mf_teacher_entropy"])
    # A capped eval set (a stratified sample of 6 of 15) is scored deterministically.
    c1 = compute_meta_features(train, SINGLE, tokenizer, teacher, eval_set=dev, teacher_finetuned=True,
                               max_eval_examples=6, max_embed_examples=4)
    c2 = compute_meta_features(train, SINGLE, tokenizer, teacher, eval_set=dev, teacher_finetuned=True,
                               max_eval_examples=6, max_embed_examples=4)
    assert _same(c1, c2) and round(c1["mf_teacher_dev_score"] * 6, 6) % 1 == 0  # a multiple of 1/6
    full = compute_meta_features(train, SINGLE, tokenizer, teacher, eval_set=dev, teacher_finetuned=True,
                                 max_eval_examples=None)
    assert full["mf_teacher_dev_score"] == f["mf_teacher_dev_score"]  # 15 rows < the default cap of 1000
    with pytest.raises(DistillerError, match="outputs"):  # a 1-output head is not a 2-class teacher
        compute_meta_features(train, SINGLE, tokenizer, reg_teacher, eval_set=dev, teacher_finetuned=True)


def test_input_errors(tokenizer):
    with pytest.raises(DistillerError, match="training set is empty"):
        compute_meta_features(datasets.Dataset.from_dict({"text": [], "label": []}), SINGLE, tokenizer)
    with pytest.raises(DistillerError, match="'label'"):
        compute_meta_features(datasets.Dataset.from_dict({"text": ["a"], "y": [0]}), SINGLE, tokenizer)
    with pytest.raises(DistillerError, match="'text'"):
        compute_meta_features(datasets.Dataset.from_dict({"sentence": ["a"], "label": [0]}), SINGLE, tokenizer)
    with pytest.raises(DistillerError, match="'text_pair'"):
        compute_meta_features(datasets.Dataset.from_dict({"text": ["a"], "label": [0]}), PAIR, tokenizer)
    dd = datasets.DatasetDict({"train": _data(4)})
    with pytest.raises(DistillerError, match="DatasetDict"):
        compute_meta_features(dd, SINGLE, tokenizer)


def test_cache_key():
    train, dev = _data(10), _data(6, seed=1)
    k = meta_features_cache_key(train, "runs/t", True, dev)
    assert len(k) == 16 and k == meta_features_cache_key(_data(10), "runs/t", True, _data(6, seed=1))
    others = {meta_features_cache_key(train, "runs/t", False, dev), meta_features_cache_key(train, "runs/u", True, dev),
              meta_features_cache_key(train, "runs/t", True), meta_features_cache_key(dev, "runs/t", True, train)}
    assert k not in others and len(others) == 4
