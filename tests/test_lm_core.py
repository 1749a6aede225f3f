"""Causal-LM distillation core (issue #21): token divergences pinned to hand-computed values and identities, sparse
top-k targets, KV-cached generation, and the speculative-KD replacement rule — on a tiny random Llama."""

import math

import numpy as np
import pytest
import torch

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import get_loss, loss_kind, prediction_losses
from distiller_nlp.lm import (DIVERGENCES, bytes_per_token, column_features, from_columns, generate, lm_divergence,
                              lm_fkl, lm_jsd, lm_rkl, lm_skew_fkl, lm_skew_rkl, lm_tv, on_policy_batch, skd_accept,
                              skd_generate, sparse_targets, to_columns, use_student_samples)
from distiller_nlp.lm.divergences import token_fkl, token_tv

NAMES = list(DIVERGENCES)
PARAMS = {"lm_skew_fkl": {"alpha": 0.1}, "lm_skew_rkl": {"alpha": 0.1}, "lm_jsd": {"beta": 0.5}}


def rand_logits(*shape, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def div(name, s, t, mask=None, **kw):
    return lm_divergence(name, s, t, mask, **{**PARAMS.get(name, {}), **kw})


# ----------------------------------------------------------------------------------------- hand-computed values

P = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]  # teacher, 2 tokens over a 3-word vocabulary
Q = [[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]  # student


def kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)


def mean2(f):
    return (f(P[0], Q[0]) + f(P[1], Q[1])) / 2


def mix(a, b, w):
    return [w * x + (1 - w) * y for x, y in zip(a, b)]


def test_divergences_match_hand_computed_values():
    s, t = torch.tensor(Q).log()[None], torch.tensor(P).log()[None]  # (1, 2, 3): logits = log-probabilities
    a, b = 0.1, 0.3
    expected = {
        "lm_fkl": mean2(lambda p, q: kl(p, q)),
        "lm_rkl": mean2(lambda p, q: kl(q, p)),
        "lm_skew_fkl": mean2(lambda p, q: kl(p, mix(p, q, a))),
        "lm_skew_rkl": mean2(lambda p, q: kl(q, mix(p, q, 1 - a))),
        "lm_tv": mean2(lambda p, q: 0.5 * sum(abs(x - y) for x, y in zip(p, q))),
    }
    # by hand for the first token: KL(p||q) = .5 ln(.5/.2) + .3 ln(.3/.5) + .2 ln(.2/.3)
    assert math.isclose(kl(P[0], Q[0]), 0.5 * math.log(2.5) + 0.3 * math.log(0.6) + 0.2 * math.log(2 / 3))
    assert math.isclose(expected["lm_tv"], (0.6 / 2 + 0.6 / 2) / 2)  # ½(.3+.2+.1), ½(.2+.3+.1)
    assert get_loss("lm_fkl")(s, t).item() == pytest.approx(expected["lm_fkl"], abs=1e-6)
    assert lm_rkl(s, t).item() == pytest.approx(expected["lm_rkl"], abs=1e-6)
    assert lm_skew_fkl(s, t, alpha=a).item() == pytest.approx(expected["lm_skew_fkl"], abs=1e-6)
    assert lm_skew_rkl(s, t, alpha=a).item() == pytest.approx(expected["lm_skew_rkl"], abs=1e-6)
    assert lm_tv(s, t).item() == pytest.approx(expected["lm_tv"], abs=1e-6)
    for beta in (0.5, b):  # TRL: m = β p + (1-β) q; β KL(p||m) + (1-β) KL(q||m)
        want = mean2(lambda p, q: beta * kl(p, mix(p, q, beta)) + (1 - beta) * kl(q, mix(p, q, beta)))
        assert lm_jsd(s, t, beta=beta).item() == pytest.approx(want, abs=1e-6)
    # τ = 2 softens both (p_i ∝ p_i^{1/2}) and multiplies the KL family by τ² = 4; TV is not rescaled
    soft = [[math.sqrt(x) / sum(math.sqrt(y) for y in row) for x in row] for row in (P[0], P[1], Q[0], Q[1])]
    want = 4 * (kl(soft[0], soft[2]) + kl(soft[1], soft[3])) / 2
    assert lm_fkl(s, t, temperature=2.0).item() == pytest.approx(want, abs=1e-6)
    want_tv = (0.5 * np.abs(np.subtract(soft[0], soft[2])).sum() + 0.5 * np.abs(np.subtract(soft[1], soft[3])).sum()) / 2
    assert lm_tv(s, t, temperature=2.0).item() == pytest.approx(want_tv, abs=1e-6)


# ------------------------------------------------------------------------------------------------- identities


@pytest.mark.parametrize("name", NAMES)
def test_divergence_of_a_distribution_with_itself_is_zero(name):
    z = rand_logits(2, 5, 11)
    assert div(name, z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert div(name, z, rand_logits(2, 5, 11, seed=1)).item() > 1e-3


def test_skew_at_alpha_zero_is_plain_kl_and_jsd_limits():
    s, t = rand_logits(2, 4, 9), rand_logits(2, 4, 9, seed=1)
    fkl, rkl = lm_fkl(s, t).item(), lm_rkl(s, t).item()
    assert lm_skew_fkl(s, t, alpha=0.0).item() == pytest.approx(fkl, rel=1e-6)
    assert lm_skew_rkl(s, t, alpha=0.0).item() == pytest.approx(rkl, rel=1e-6)
    assert lm_skew_fkl(s, t, alpha=1.0).item() == 0.0
    # the end points are KL exactly (TRL's special cases) ...
    assert lm_jsd(s, t, beta=0.0).item() == pytest.approx(fkl, rel=1e-6)
    assert lm_jsd(s, t, beta=1.0).item() == pytest.approx(rkl, rel=1e-6)
    # ... and the formula approaches them scaled: JSD(β)/β → KL(p||q), JSD(β)/(1-β) → KL(q||p)
    eps = 1e-4
    assert lm_jsd(s, t, beta=eps).item() / eps == pytest.approx(fkl, rel=1e-2)
    assert lm_jsd(s, t, beta=1 - eps).item() / eps == pytest.approx(rkl, rel=1e-2)
    gaps = [abs(lm_jsd(s, t, beta=e).item() / e - fkl) for e in (1e-1, 1e-2, 1e-3)]
    assert gaps[0] > gaps[1] > gaps[2]  # an O(β) approach
    # skew KL is bounded by the plain KL and shrinks with α
    assert lm_skew_fkl(s, t, alpha=0.5).item() < lm_skew_fkl(s, t, alpha=0.1).item() < fkl


def test_jsd_half_is_symmetric_and_pinsker_holds():
    s, t = rand_logits(3, 4, 10), rand_logits(3, 4, 10, seed=2)
    assert lm_jsd(s, t, beta=0.5).item() == pytest.approx(lm_jsd(t, s, beta=0.5).item(), rel=1e-6)
    assert lm_jsd(s, t, beta=0.2).item() != pytest.approx(lm_jsd(t, s, beta=0.2).item(), rel=1e-3)
    assert lm_tv(s, t).item() == pytest.approx(lm_tv(t, s).item(), rel=1e-6)
    log_p, log_q = t.reshape(-1, 10).log_softmax(-1), s.reshape(-1, 10).log_softmax(-1)
    tv, kl_tok = token_tv(log_p, log_q), token_fkl(log_p, log_q)
    assert bool((tv <= torch.sqrt(kl_tok / 2) + 1e-6).all())  # Pinsker, token by token
    assert lm_tv(s, t).item() <= math.sqrt(lm_fkl(s, t).item() / 2)  # and for the means (Jensen)


@pytest.mark.parametrize("name", NAMES)
def test_mask_excludes_tokens_and_chunking_changes_nothing(name):
    s, t = rand_logits(2, 6, 13), rand_logits(2, 6, 13, seed=3)
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [1, 0, 0, 1, 1, 0]])
    ref = div(name, s, t, mask)
    s2, t2 = s.clone(), t.clone()
    s2[mask == 0] += 5.0 * rand_logits(6, 13, seed=9)
    t2[mask == 0] -= 3.0
    assert div(name, s2, t2, mask).item() == pytest.approx(ref.item(), rel=1e-6)
    assert div(name, s[mask == 1], t[mask == 1]).item() == pytest.approx(ref.item(), rel=1e-6)  # mean over 6 tokens
    assert div(name, s, t).item() != pytest.approx(ref.item(), rel=1e-4)
    # chunked (2 tokens at a time, checkpointed) == one chunk, values and gradients
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    one = div(name, a, t, mask, chunk_size=4096)
    many = div(name, b, t, mask, chunk_size=2)
    one.backward()
    many.backward()
    assert many.item() == pytest.approx(one.item(), rel=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    assert bool((a.grad[mask == 0] == 0).all()) and a.grad[mask == 1].abs().sum() > 0
    plain = s.clone().requires_grad_()  # plain autograd through the per-token formula, no chunking or fusing
    DIVERGENCES[name](t.log_softmax(-1), plain.log_softmax(-1), **PARAMS.get(name, {}))[mask == 1].mean().backward()
    assert torch.allclose(a.grad, plain.grad, atol=1e-7)
    empty = div(name, a, t, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_are_reduced_in_fp32_and_only_the_student_gets_gradients(name):
    s, t = rand_logits(2, 5, 17).bfloat16(), rand_logits(2, 5, 17, seed=4).bfloat16()
    out = div(name, s, t, temperature=2.0)
    assert out.dtype == torch.float32
    exact = div(name, s.float(), t.float(), temperature=2.0)  # the same bf16-rounded numbers, in fp32
    assert out.item() == pytest.approx(exact.item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert div(name, s, t).dtype == torch.float32
    student = rand_logits(2, 5, 17).requires_grad_()
    teacher = rand_logits(2, 5, 17, seed=4).requires_grad_()
    div(name, student, teacher).backward()
    assert teacher.grad is None and student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_registered_like_every_core_loss(name):
    # kind token_logits: on the core registry, but not a sequence-classification kd.pred_loss choice
    assert name not in prediction_losses() and loss_kind(name) == "token_logits" and get_loss(name) is globals()[name]
    meta = get_loss(name)(torch.empty(4, 5, device="meta"), torch.empty(4, 5, device="meta"))  # no host sync
    assert meta.device.type == "meta" and meta.ndim == 0


def test_bad_arguments_are_one_line_errors():
    s = rand_logits(2, 3, 5)
    with pytest.raises(DistillerError, match="same shape"):
        lm_fkl(s, rand_logits(2, 3, 6))
    with pytest.raises(DistillerError, match="mask"):
        lm_fkl(s, s, torch.ones(2, 4))
    with pytest.raises(DistillerError, match="beta"):
        lm_jsd(s, s, beta=1.5)
    with pytest.raises(DistillerError, match="temperature"):
        lm_tv(s, s, temperature=0)


# ------------------------------------------------------------------------------------------------------ sparse


@pytest.mark.parametrize("name", NAMES)
def test_sparse_targets_with_k_equal_vocab_equal_the_dense_loss(name):
    s, t = rand_logits(2, 5, 12), rand_logits(2, 5, 12, seed=5)
    mask = torch.tensor([[1, 1, 0, 1, 1], [0, 1, 1, 1, 0]])
    for tau in (1.0, 2.0):
        full = sparse_targets(t, k=12, temperature=tau)
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        dense = div(name, a, t, mask, temperature=tau)
        sparse = div(name, b, full, mask, temperature=tau, chunk_size=3)
        dense.backward()
        sparse.backward()
        assert sparse.item() == pytest.approx(dense.item(), abs=1e-5)
        assert torch.allclose(a.grad, b.grad, atol=1e-5)
    top4 = sparse_targets(t, k=4)
    assert torch.allclose(top4.probs_mass(), torch.ones(2, 5), atol=1e-5)
    coarse = div(name, s, top4, mask).item()
    assert coarse >= -1e-6 and math.isfinite(coarse)
    with pytest.raises(DistillerError, match="temperature"):
        div(name, s, top4, mask, temperature=2.0)


def test_sparse_columns_round_trip_through_datasets_and_their_size():
    import datasets

    t = rand_logits(2, 4, 50, seed=6)
    tgt = sparse_targets(t, k=3)
    assert torch.equal(tgt.indices, t.topk(3, dim=-1).indices)
    ref = t.log_softmax(-1)
    assert torch.allclose(tgt.logprobs, ref.gather(-1, tgt.indices), atol=1e-6)
    assert torch.allclose(tgt.rest_logprob, torch.log1p(-tgt.logprobs.exp().sum(-1)), atol=1e-5)
    cols = to_columns(tgt, lengths=[4, 2])
    ds = datasets.Dataset.from_dict(cols, features=column_features(50, dtype="float32"))
    assert ds.features["teacher_topk_ids"].feature.feature.dtype == "uint16"
    back = from_columns(ds[0:2], vocab_size=50)
    assert back.indices.shape == (2, 4, 3) and torch.equal(back.indices[0], tgt.indices[0])
    assert torch.equal(back.indices[1, :2], tgt.indices[1, :2])
    assert torch.allclose(back.logprobs[1, :2], tgt.logprobs[1, :2]) and torch.allclose(back.rest_logprob[0],
                                                                                       tgt.rest_logprob[0])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])  # the padded positions are masked out
    s = rand_logits(2, 4, 50, seed=7)
    assert lm_fkl(s, back, mask).item() == pytest.approx(lm_fkl(s, tgt, mask).item(), rel=1e-6)
    size = bytes_per_token(32, 49152, "float16")
    assert size["sparse"] == 32 * (2 + 2) + 2 and size["dense_fp16"] == 98304 and size["dense_fp32"] == 196608
    assert bytes_per_token(32, 100_000, "float32")["sparse"] == 32 * (4 + 4) + 4


# ----------------------------------------------------------------------------------------------------- the SKD rule


def test_skd_accept_keeps_proposals_in_the_teacher_top_k_and_replaces_the_first_other():
    vocab = 8
    logits = torch.zeros(2, 3, vocab)
    logits[..., 3] = 40.0  # the teacher is (almost) one-hot on token 3 ...
    logits[..., 5] = 20.0  # ... and token 5 is its second choice
    proposals = torch.tensor([[3, 5, 3], [3, 3, 3]])
    g = torch.Generator().manual_seed(0)
    top1 = skd_accept(proposals, logits, top_k=1, generator=g)
    assert top1.n_accepted.tolist() == [1, 3] and top1.lengths.tolist() == [2, 3]
    assert top1.tokens.tolist() == [[3, 3, -1], [3, 3, 3]]  # 5 is not in the top-1: replaced by a teacher sample (3)
    assert top1.replaced.tolist() == [[False, True, False], [False, False, False]]
    assert top1.accepted.tolist() == [[True, False, False], [True, True, True]]
    top2 = skd_accept(proposals, logits, top_k=2, generator=g)  # 5 is in the top-2: it survives
    assert top2.tokens.tolist() == proposals.tolist() and not top2.replaced.any()
    first = skd_accept(torch.tensor([[6, 3, 3]]), logits[:1], top_k=25)  # K ≥ V: every token is in the top-K
    assert first.tokens.tolist() == [[6, 3, 3]]
    blocked = logits[:1].clone()
    blocked[..., 6] = float("-inf")  # a zero-probability token is never accepted, even with K ≥ V
    out = skd_accept(torch.tensor([[6, 3, 3]]), blocked, top_k=25)
    assert out.tokens.tolist() == [[3, -1, -1]] and out.replaced[0, 0]


# ------------------------------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def llamas():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    torch.manual_seed(0)
    student = LlamaForCausalLM(cfg).eval()
    torch.manual_seed(1)
    teacher = LlamaForCausalLM(cfg).eval()
    prompts = torch.tensor([[0, 0, 5, 9, 17, 33], [7, 8, 9, 10, 11, 12], [0, 0, 0, 0, 40, 41]])
    mask = (torch.arange(6)[None] >= torch.tensor([[2], [0], [4]])).long()
    return student, teacher, prompts, mask


def test_kv_cached_generation_equals_recomputing_the_full_forward(llamas):
    student, _, prompts, mask = llamas
    greedy = [generate(student, prompts, mask, max_new_tokens=8, use_cache=c, output_logits=True) for c in (1, 0)]
    assert torch.equal(greedy[0].sequences, greedy[1].sequences)
    assert torch.allclose(greedy[0].logits, greedy[1].logits, atol=1e-4)
    runs = [generate(student, prompts, mask, max_new_tokens=10, do_sample=True, temperature=1.3, top_p=0.9,
                     generator=torch.Generator().manual_seed(7), use_cache=c) for c in (True, False, True)]
    assert torch.equal(runs[0].sequences, runs[1].sequences) and torch.equal(runs[0].sequences, runs[2].sequences)
    other = generate(student, prompts, mask, max_new_tokens=10, do_sample=True, temperature=1.3, top_p=0.9,
                     generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.sequences, runs[0].sequences)
    # left padding does not change a row: the padded prompt decodes as it does alone
    alone = generate(student, prompts[2:, 4:], None, max_new_tokens=8)
    assert torch.equal(alone.responses[0], greedy[0].responses[2])
    # EOS: a row stops at its first EOS; later positions are padding outside the response mask
    eos = int(greedy[0].responses[0, 2])
    out = generate(student, prompts, mask, max_new_tokens=8, eos_token_id=eos, pad_token_id=0)
    row = out.responses[0].tolist()
    assert row[:3] == greedy[0].responses[0, :3].tolist() and out.response_mask[0].tolist()[:3] == [1, 1, 1]
    assert all(t == 0 for t in row[3:]) and out.response_mask[0, 3:].sum() == 0
    assert out.attention_mask.shape == out.sequences.shape


def test_skd_generate_interleaves_student_proposals_and_teacher_replacements(llamas):
    student, teacher, prompts, mask = llamas
    # K = V: every proposal is accepted, so SKD is plain student sampling (same generator stream)
    plain = generate(student, prompts, mask, max_new_tokens=7, do_sample=True, generator=torch.Generator().manual_seed(3))
    skd = skd_generate(student, teacher, prompts, mask, max_new_tokens=7, num_proposals=3, top_k=128,
                       generator=torch.Generator().manual_seed(3))
    assert torch.equal(skd.sequences, plain.sequences) and not skd.replaced.any() and skd.rounds == 3
    # K = 40 of 128: a kept student token is in the teacher's top-40 at its position, the others came from the teacher
    out = skd_generate(student, teacher, prompts, mask, max_new_tokens=8, num_proposals=3, top_k=40,
                       generator=torch.Generator().manual_seed(4))
    assert out.responses.shape == (3, 8) and out.response_mask.all()
    with torch.no_grad():
        pos = (out.attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = teacher(input_ids=out.sequences, attention_mask=out.attention_mask, position_ids=pos).logits
    top = logits[:, prompts.shape[1] - 1:-1].topk(40, dim=-1).indices  # the teacher's top-40 for each response token
    in_top = (top == out.responses.unsqueeze(-1)).any(-1)
    kept = ~out.replaced
    assert bool(in_top[kept].all()) and kept.sum() >= 3
    assert out.replaced.any() and 0 < out.replacement_rate < 1


def test_gkd_on_policy_mixing():
    g = torch.Generator().manual_seed(0)
    assert not any(use_student_samples(0.0, g) for _ in range(50))
    assert all(use_student_samples(1.0, g) for _ in range(50))
    draws = [use_student_samples(0.3, torch.Generator().manual_seed(i)) for i in range(400)]
    assert 0.22 < sum(draws) / len(draws) < 0.38
    batch, on = on_policy_batch({"x": 1}, 1.0, lambda b: {"x": 2})
    assert batch == {"x": 2} and on
    assert on_policy_batch({"x": 1}, 0.0, lambda b: {"x": 2}) == ({"x": 1}, False)
    with pytest.raises(DistillerError):
        use_student_samples(1.5)
