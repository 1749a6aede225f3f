"""The fast held-out scorer gives the straightforward reference's scores (tiny random SuperLM, 1e-5)."""

import pytest
import torch
from transformers import BertConfig, BertModel

from autodistil.search import HeldOutScorer, ReferenceHeldOutScorer
from autodistil.subspaces import SubSpace
from autodistil.superlm import SuperLM

CFG = dict(vocab_size=120, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
           max_position_embeddings=40)
SPACE = SubSpace("tiny-test", (1, 2, 3, 4), (2, 3, 4), (32, 48, 64), (1.0, 2.0), 16)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batches(seed: int = 3):
    """Right-padded batches of unequal sizes and lengths, one with a row shorter than any other batch's longest."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for size, seq in ((5, 17), (4, 9), (3, 23)):
        ids = torch.randint(1, 120, (size, seq), generator=g)
        lengths = torch.randint(2, seq + 1, (size,), generator=g)
        lengths[0] = seq
        mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
        ids = ids * mask
        tt = torch.zeros_like(ids)
        tt[:, seq // 2:] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": tt * mask})
    return out


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = BertModel(BertConfig(**CFG)).eval()
    torch.manual_seed(1)
    slm = SuperLM.from_teacher(teacher)
    with torch.no_grad():  # a SuperLM that differs from its teacher (as after training)
        for p in slm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return teacher, slm.eval()


@pytest.mark.parametrize("kind,selection,bucket_size", [("kl", "uniform", 2), ("kl", "first", 64),
                                                        ("mse", "uniform", 64), ("mse", "first", 2)])
def test_fast_scores_equal_reference(models, kind, selection, bucket_size):
    teacher, slm = models
    slm.layer_selection = selection
    batches = _batches()
    archs = list(SPACE)[::3]
    ref = ReferenceHeldOutScorer(teacher, batches, 0, 4, kind)
    fast = HeldOutScorer(teacher, batches, 0, 4, kind, bucket_size=bucket_size)
    expected = {a: ref(slm, a) for a in archs}
    got = fast.score_many(slm, archs)
    assert set(got) == set(archs)
    for a in archs:
        assert got[a] == pytest.approx(expected[a], rel=1e-5, abs=1e-5), a
        assert fast(slm, a) == pytest.approx(expected[a], rel=1e-5, abs=1e-5), a
    assert len({round(v, 4) for v in expected.values()}) > 1  # the scores do discriminate
    slm.layer_selection = "uniform"


def test_fast_scorer_middle_teacher_layer_and_relation_heads(models):
    teacher, slm = models
    batches = _batches(7)
    archs = list(SPACE)[1::11]
    ref = ReferenceHeldOutScorer(teacher, batches, 2, 3, "kl")
    fast = HeldOutScorer(teacher, batches, 2, 3, "kl", bucket_size=4)
    got = fast.score_many(slm, archs)
    for a in archs:  # relation heads that do not divide every width (truncation)
        assert got[a] == pytest.approx(ref(slm, a), rel=1e-5, abs=1e-5), a


def test_fast_scorer_bf16_autocast_runs(models):
    teacher, slm = models
    batches = _batches(5)
    archs = list(SPACE)[::17]
    ref = ReferenceHeldOutScorer(teacher, batches, 0, 4, "kl")
    fast = HeldOutScorer(teacher, batches, 0, 4, "kl", autocast_bf16=True, bucket_size=8)
    got = fast.score_many(slm, archs)
    for a in archs:  # bf16 forward, fp32 relations: close to the fp32 score, not equal
        assert got[a] == pytest.approx(ref(slm, a), rel=0.1, abs=0.02), a
