"""Augmentation: EDA-style random stage (hand-checked properties), determinism, pairs, fingerprint cache, distill."""

import collections
import json

import datasets
import numpy as np
import pytest

from distiller_nlp.augment import augment_dataset, build_augmenter, list_augmenters
from distiller_nlp.cli import main
from distiller_nlp.core.errors import DistillerError

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world", "single", ""]


def _rngs(n, seed=0):
    return [np.random.default_rng([seed, 0, i]) for i in range(n)]


def test_random_stage_actions():
    swap = build_augmenter("random", 0.3).augment(TEXTS, _rngs(4))
    assert collections.Counter(swap[0].split()) == collections.Counter(TEXTS[0].split()) and swap[0] != TEXTS[0]
    assert swap[2:] == ["single", ""]  # fewer than two words: unchanged
    delete = build_augmenter("random", 0.5, {"action": "delete"}).augment(TEXTS, _rngs(4))
    assert 1 <= len(delete[0].split()) < 9 and all(w in TEXTS[0].split() for w in delete[0].split())
    insert = build_augmenter("random", 0.3, {"action": "insert"}).augment(TEXTS, _rngs(4))
    assert len(insert[0].split()) == 9 + 3 and set(insert[0].split()) == set(TEXTS[0].split())  # round(.3*9)=3
    assert insert[2] == "single single"


def test_errors():
    assert "random" in list_augmenters()
    with pytest.raises(DistillerError, match="unknown augmentation stage 'contextua'"):
        build_augmenter("contextua", 0.3)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(DistillerError, match="aug_p"):
            build_augmenter("random", bad)
    with pytest.raises(DistillerError, match="action"):
        build_augmenter("random", 0.3, {"action": "shuffle"})


def test_augment_dataset_deterministic_pairs_and_cached(tmp_path):
    ds = datasets.Dataset.from_dict({"text": TEXTS[:2] * 3, "text_pair": ["a b c d", "e f g h"] * 3,
                                     "label": [0, 1] * 3})
    path = tmp_path / "ds"
    ds.save_to_disk(str(path))
    ds = datasets.load_from_disk(str(path))  # file-backed, so map results are cached on disk
    a = augment_dataset(ds, ["random"], aug_p=0.5, copies=2, seed=3)
    b = augment_dataset(ds, ["random"], aug_p=0.5, copies=2, seed=3)
    c = augment_dataset(ds, ["random"], aug_p=0.5, copies=2, seed=4)
    col = lambda d, k: list(d[k])  # noqa: E731 - datasets returns lazy Column objects
    assert len(a) == 12 and col(a, "label") == col(ds, "label") * 2
    assert col(a, "text") == col(b, "text") and col(a, "text_pair") == col(b, "text_pair")
    assert col(a, "text") != col(c, "text")
    assert all(sorted(x.split()) == sorted(y.split()) for x, y in zip(col(a, "text_pair"), col(ds, "text_pair") * 2))
    assert col(a, "text")[:6] != col(a, "text")[6:]  # the two copies differ
    assert a._fingerprint == b._fingerprint != c._fingerprint
    # independent of batching: a batch of one gives the same texts
    one = ds.map(lambda x: x, batched=True, batch_size=1)
    assert col(augment_dataset(one, ["random"], aug_p=0.5, copies=1, seed=3), "text") == col(a, "text")[:6]


def test_distill_with_random_augmentation(tiny_teacher, sst2_dir, tmp_path, capsys):
    out = tmp_path / "aug"
    args = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
            "layers=1,hidden=16,heads=2,intermediate=32", "--max-steps", "3", "--precision", "no", "--report-to",
            "none", "--max-length", "16", "--augment", "random", "--aug-p", "0.2", "--aug-copies", "2"]
    assert main(args + ["--output-dir", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_examples"] == 3 * 96 and m["train_examples_original"] == 96
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(args[:-6] + ["--augment", "random,nope", "--output-dir", str(bad)]) == 2
    assert "unknown augmentation stage 'nope'" in capsys.readouterr().err and not bad.exists()


def _tiny_pair():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=3))
    student = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=3))
    return teacher.eval(), student


def test_mixup_inputs_mix_embeddings_and_masks():
    import torch

    from distiller_nlp.kd.teachers import mixup_inputs

    _, student = _tiny_pair()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    batch = {"input_ids": torch.randint(0, 50, (3, 4)), "attention_mask": mask,
             "mix_lambda": torch.tensor(0.25), "mix_perm": torch.tensor([2, 0, 1])}
    out = mixup_inputs(student, batch)
    emb = student.get_input_embeddings()(batch["input_ids"])
    torch.testing.assert_close(out["inputs_embeds"][:3], emb)
    torch.testing.assert_close(out["inputs_embeds"][3:], 0.25 * emb + 0.75 * emb[[2, 0, 1]])
    assert out["attention_mask"][3:].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]]  # union with row π(i)


def test_mixup_step_labels_both_halves():
    import torch
    import torch.nn.functional as F

    from distiller_nlp.config import KDConfig
    from distiller_nlp.kd.module import DistillModule
    from distiller_nlp.kd.teachers import TeacherRunner, mixup_inputs
    from distiller_nlp.kd.matches import resolve_matches

    teacher, student = _tiny_pair()
    kd = KDConfig(pred_loss="kd", hard_label_weight=1.0, mixup=True)
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    batch = {"input_ids": torch.randint(0, 50, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 1])}
    torch.manual_seed(5)
    with torch.no_grad():
        prepared = TeacherRunner(teacher, module)(batch)
    assert prepared["teacher_logits"].shape == (8, 3) and 0 <= float(prepared["mix_lambda"]) <= 1
    module.eval()
    with torch.no_grad():
        out = module(prepared)
        logits = student(**mixup_inputs(student, prepared)).logits
    y, lam, perm = batch["labels"], prepared["mix_lambda"], prepared["mix_perm"]
    expected = 0.5 * (F.cross_entropy(logits[:4], y)
                      + lam * F.cross_entropy(logits[4:], y) + (1 - lam) * F.cross_entropy(logits[4:], y[perm]))
    assert float(out["hard_ce"]) == pytest.approx(float(expected), rel=1e-5)
    assert torch.isfinite(out["loss"])


def test_distill_cli_with_mixup_uses_the_cache_for_originals(tiny_teacher, sst2_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    args = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
            "layers=1,hidden=16,heads=2,intermediate=32", "--max-steps", "2", "--precision", "no", "--report-to",
            "none", "--max-length", "16", "--mixup", "--hard-label-weight", "1"]
    assert main(args + ["--output-dir", str(tmp_path / "a"), "--teacher-cache", "auto"]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["teacher_cached"] is True
    capsys.readouterr()
    # copies regenerated during training cannot be cached: an explicit cache is refused, naming why
    code = main(args + ["--output-dir", str(tmp_path / "b"), "--teacher-cache", str(tmp_path), "--augment", "random",
                        "--reaug-every", "1"])
    assert code == 2 and "augmented copies change" in capsys.readouterr().err


def test_synonym_action_needs_local_wordnet(monkeypatch, tmp_path):
    """Without NLTK's WordNet data: a clear error naming the fix, never a download."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(DistillerError, match="nltk.downloader wordnet"):
        build_augmenter("random", 0.3, {"action": "synonym"})


def test_synonym_action_replaces_words_with_synonyms(monkeypatch):
    from types import SimpleNamespace

    from distiller_nlp.augment import random_words

    table = {"quick": ["fast", "speedy"], "lazy": ["idle"]}

    class FakeWordNet:
        def synsets(self, word):
            return [SimpleNamespace(lemmas=lambda w=word: [SimpleNamespace(name=lambda n=n: n)
                                                          for n in table.get(w, [])])]

    monkeypatch.setattr(random_words, "_wordnet", lambda: FakeWordNet())
    aug = build_augmenter("random", 0.5, {"action": "synonym"})
    out = aug.augment([TEXTS[0]], _rngs(1))[0].split()
    src = TEXTS[0].split()
    changed = [(a, b) for a, b in zip(src, out) if a != b]
    assert len(out) == len(src) and changed and all(b in table[a] for a, b in changed)
