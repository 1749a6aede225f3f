"""Tests for the shared loss core: every formula pinned against an independent reference computation (float64 numpy,
explicit per-sample loops) and against the identities the papers rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distiller_nlp.core.losses import (MIAlphaLoss, attention_score_loss, cosine_loss, dkd_loss, dkd_terms, get_loss,
                                       hard_ce_loss, hidden_ce_loss, hidden_mse_loss, infonce_lower_bound, is_stateful,
                                       kd_loss, list_losses, log_loo_mean, logits_mse_loss, mi_alpha_lower_bound,
                                       nkd_loss, nwj_lower_bound, pkd_loss, qkv_relation_loss, register_loss,
                                       relation_loss, soft_ce_loss, tuba_lower_bound, unregister_loss)
from distiller_nlp.core.errors import DistillerError

TOL = 1e-5


def close(value, reference, tol=TOL):
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    reference = float(reference.detach()) if isinstance(reference, torch.Tensor) else float(reference)
    assert math.isfinite(value), value
    assert abs(value - reference) <= tol * max(1.0, abs(reference)), (value, reference)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=gen(seed)) * scale


def np64(x):
    return x.detach().double().numpy()


def np_log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    m = z.max()
    return z - (m + np.log(np.exp(z - m).sum()))


def np_softmax(z):
    return np.exp(np_log_softmax(z))


def np_logsumexp(z):
    z = np.asarray(z, dtype=np.float64).ravel()
    m = z.max()
    return m + np.log(np.exp(z - m).sum())


# ------------------------------------------------------------------------------------------------------ registry

CANONICAL = ["kd", "soft_ce", "logits_mse", "hard_ce", "nkd", "dkd", "hidden_mse", "hidden_ce", "cosine", "pkd",
             "attention_score", "relation", "mi_alpha"]


def test_registry_has_every_canonical_name():
    names = list_losses()
    for name in CANONICAL:
        assert name in names
    assert get_loss("kd") is kd_loss
    assert get_loss("relation") is qkv_relation_loss
    assert get_loss("mi_alpha") is MIAlphaLoss
    assert is_stateful("mi_alpha") and not is_stateful("kd")
    assert names == sorted(names)


def test_registry_unknown_name_lists_known():
    with pytest.raises(DistillerError) as err:
        get_loss("no_such_loss")
    assert "no_such_loss" in str(err.value) and "nkd" in str(err.value)
    with pytest.raises(DistillerError):
        is_stateful("no_such_loss")


def test_registry_user_registration_and_duplicates():
    @register_loss("test_user_l1")
    def l1(a, b):
        """L1."""
        return (a - b).abs().mean()

    try:
        assert get_loss("test_user_l1") is l1
        assert not is_stateful("test_user_l1")
        with pytest.raises(DistillerError, match="already registered"):
            register_loss("test_user_l1")(lambda a, b: a)
        with pytest.raises(DistillerError, match="already registered"):
            register_loss("kd")(lambda a, b: a)  # built-ins are protected too
        assert get_loss("kd") is kd_loss

        def l1_v2(a, b):
            return (a - b).abs().sum()

        register_loss("test_user_l1", override=True)(l1_v2)
        assert get_loss("test_user_l1") is l1_v2

        @register_loss("test_user_module")
        class Scale(torch.nn.Module):
            def forward(self, a, b):
                return (a - b).pow(2).mean()

        assert is_stateful("test_user_module") and get_loss("test_user_module") is Scale
        with pytest.raises(DistillerError):
            register_loss("test_bad_class")(int)
        with pytest.raises(DistillerError):
            register_loss("")
    finally:
        for name in ("test_user_l1", "test_user_module"):
            if name in list_losses():
                unregister_loss(name)
    assert "test_user_l1" not in list_losses()


# -------------------------------------------------------------------------------------------------------- logits


def ref_kl_rows(s, t, temp):
    """per-sample KL(softmax(t/T) || softmax(s/T)) by explicit loops, float64."""
    s, t = np64(s).reshape(-1, s.shape[-1]), np64(t).reshape(-1, t.shape[-1])
    out = []
    for sn, tn in zip(s, t):
        lp_s, lp_t = np_log_softmax(sn / temp), np_log_softmax(tn / temp)
        out.append(float((np.exp(lp_t) * (lp_t - lp_s)).sum()))
    return np.array(out)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_kd_matches_per_sample_kl(temp):
    s, t = rand(6, 5, seed=1, scale=3), rand(6, 5, seed=2, scale=3)
    ref = ref_kl_rows(s, t, temp)
    close(kd_loss(s, t, temp), temp**2 * ref.mean())
    per = kd_loss(s, t, temp, reduction="none")
    assert per.shape == (6,)
    np.testing.assert_allclose(per.numpy(), temp**2 * ref, rtol=1e-5, atol=1e-6)
    # token-level logits: every leading position is a sample
    s3, t3 = rand(2, 3, 5, seed=3), rand(2, 3, 5, seed=4)
    close(kd_loss(s3, t3, temp), temp**2 * ref_kl_rows(s3, t3, temp).mean())
    close(kd_loss(s, s.clone(), temp), 0.0)


def test_kd_validation():
    with pytest.raises(DistillerError):
        kd_loss(rand(2, 3), rand(2, 4))
    with pytest.raises(DistillerError):
        kd_loss(rand(2, 3), rand(2, 3), temperature=0)
    with pytest.raises(DistillerError):
        kd_loss(rand(2, 3), rand(2, 3), reduction="mean")


@pytest.mark.parametrize("temp", [1.0, 3.0])
def test_soft_ce_and_logits_mse(temp):
    s, t = rand(5, 7, seed=5, scale=2), rand(5, 7, seed=6, scale=2)
    ref = np.mean([-(np_softmax(tn / temp) * np_log_softmax(sn / temp)).sum() for sn, tn in zip(np64(s), np64(t))])
    close(soft_ce_loss(s, t, temp), ref)
    # soft CE = KL + teacher entropy (no T^2)
    ent = np.mean([-(np_softmax(tn / temp) * np_log_softmax(tn / temp)).sum() for tn in np64(t)])
    close(soft_ce_loss(s, t, temp), ref_kl_rows(s, t, temp).mean() + ent)
    close(logits_mse_loss(s, t, temp), np.mean((np64(s) / temp - np64(t) / temp) ** 2))


def test_hard_ce_classification_regression_soft():
    s = rand(6, 4, seed=7)
    y = torch.tensor([0, 3, 1, 2, 2, 0])
    ref = np.mean([-np_log_softmax(sn)[yn] for sn, yn in zip(np64(s), y.tolist())])
    close(hard_ce_loss(s, y), ref)
    y_ign = y.clone()
    y_ign[1] = -100
    keep = [i for i in range(6) if i != 1]
    close(hard_ce_loss(s, y_ign), np.mean([-np_log_softmax(np64(s)[i])[y[i]] for i in keep]))
    # regression: last dim 1 -> MSE on squeezed logits
    r = rand(6, 1, seed=8)
    target = rand(6, seed=9)
    close(hard_ce_loss(r, target), np.mean((np64(r)[:, 0] - np64(target)) ** 2))
    # soft labels of the logits' shape
    soft = torch.softmax(rand(6, 4, seed=10), -1)
    ref_soft = np.mean([-(pn * np_log_softmax(sn)).sum() for sn, pn in zip(np64(s), np64(soft))])
    close(hard_ce_loss(s, soft), ref_soft)
    with pytest.raises(DistillerError):
        hard_ce_loss(s, target)  # float (N,) labels with 4 outputs


def test_nkd_hand_computed_three_classes():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[3.0, 1.0, 0.0]])
    y = torch.tensor([0])
    e = math.e
    t_t = e**3 / (e**3 + e + 1)
    s_t = e / (e + e**2 + e**3)
    nt = [e / (e + 1), 1 / (e + 1)]  # softmax of teacher non-target logits [1, 0]
    ns = [e**2 / (e**2 + e**3), e**3 / (e**2 + e**3)]  # softmax of student non-target logits [2, 3]
    gamma = 1.5
    hand = -t_t * math.log(s_t) - gamma * (nt[0] * math.log(ns[0]) + nt[1] * math.log(ns[1]))
    close(nkd_loss(s, t, y, temperature=1.0, gamma=gamma), hand)
    assert abs(hand - 3.5980056) < 1e-6  # the number itself, worked out by hand once
    # at tau = 2 the non-target part uses logits/2 and is scaled by tau^2
    nt2, ns2 = np_softmax(np.array([1.0, 0.0]) / 2), np_softmax(np.array([2.0, 3.0]) / 2)
    hand2 = -t_t * math.log(s_t) - gamma * 4 * float((nt2 * np.log(ns2)).sum())
    close(nkd_loss(s, t, y, temperature=2.0, gamma=gamma), hand2)


def ref_nkd(s, t, y, temp, gamma):
    out = []
    for sn, tn, yn in zip(np64(s), np64(t), y.tolist()):
        t_t = np_softmax(tn)[yn]
        log_s_t = np_log_softmax(sn)[yn]
        keep = [i for i in range(len(sn)) if i != yn]
        n_t = np_softmax(tn[keep] / temp)
        log_n_s = np_log_softmax(sn[keep] / temp)
        out.append(-t_t * log_s_t - gamma * temp**2 * (n_t * log_n_s).sum())
    return np.array(out)


@pytest.mark.parametrize("temp,gamma", [(1.0, 1.5), (3.0, 3.5)])
def test_nkd_matches_reference(temp, gamma):
    s, t = rand(8, 6, seed=11, scale=2), rand(8, 6, seed=12, scale=2)
    y = torch.randint(0, 6, (8,), generator=gen(13))
    close(nkd_loss(s, t, y, temp, gamma), ref_nkd(s, t, y, temp, gamma).mean())
    # soft / mixed labels are reduced to their argmax
    soft = torch.nn.functional.one_hot(y, 6).float() * 0.7 + 0.05
    close(nkd_loss(s, t, soft, temp, gamma), ref_nkd(s, t, y, temp, gamma).mean())


def test_nkd_starting_identity_soft_ce():
    """-Σ T_i log S_i = -T_t log S_t - (1-T_t) log(1-S_t) - (1-T_t) Σ_{i≠t} N(T)_i log N(S)_i (per sample, τ=1)."""
    s, t = rand(6, 5, seed=14, scale=2), rand(6, 5, seed=15, scale=2)
    y = torch.randint(0, 5, (6,), generator=gen(16))
    for n in range(6):
        sn, tn, yn = s[n : n + 1], t[n : n + 1], y[n : n + 1]
        p_t = torch.softmax(tn.double(), -1)[0]
        p_s = torch.softmax(sn.double(), -1)[0]
        t_t, s_t = float(p_t[yn]), float(p_s[yn])
        soft_ce = float(soft_ce_loss(sn, tn))
        # NKD with γ replaced by (1 - T_t) plus the binary term it drops reproduces the soft CE
        nkd_as_ce = float(nkd_loss(sn, tn, yn, temperature=1.0, gamma=1 - t_t)) - (1 - t_t) * math.log(1 - s_t)
        close(nkd_as_ce, soft_ce)
        # and the identity itself with explicit pieces
        keep = [i for i in range(5) if i != int(yn)]
        n_t = (p_t[keep] / p_t[keep].sum()).numpy()
        n_s = (p_s[keep] / p_s[keep].sum()).numpy()
        rhs = -t_t * math.log(s_t) - (1 - t_t) * math.log(1 - s_t) - (1 - t_t) * float((n_t * np.log(n_s)).sum())
        close(rhs, soft_ce)


def test_nkd_target_really_removed_from_non_target_softmax():
    """Regression for cls_KD #16: the non-target term must not depend on the student's target logit."""
    s, t = rand(4, 5, seed=17), rand(4, 5, seed=18)
    y = torch.tensor([0, 1, 2, 4])
    s2 = s.clone()
    s2[torch.arange(4), y] += torch.tensor([2.0, -3.0, 5.0, 1.0])
    g = 2.0
    diff_full = float(nkd_loss(s2, t, y, gamma=g) - nkd_loss(s, t, y, gamma=g))
    diff_target_only = float(nkd_loss(s2, t, y, gamma=0.0) - nkd_loss(s, t, y, gamma=0.0))
    close(diff_full, diff_target_only)
    assert abs(diff_target_only) > 1e-3


def test_nkd_gradients_teacher_target_detached():
    s = rand(5, 4, seed=19).requires_grad_()
    t = rand(5, 4, seed=20).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 0])
    nkd_loss(s, t, y, gamma=0.0).backward()  # only -T_t log S_t: T_t is detached
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None or float(t.grad.abs().sum()) == 0.0
    s.grad = t.grad = None
    nkd_loss(s, t, y, gamma=1.5).backward()  # the non-target term is not detached
    assert float(t.grad.abs().sum()) > 0
    # teacher target column gets no gradient from the non-target softmax
    assert float(t.grad[torch.arange(5), y].abs().sum()) == 0.0


def test_target_label_validation():
    with pytest.raises(DistillerError):
        nkd_loss(rand(2, 3), rand(2, 3), torch.tensor([0, 3]))
    with pytest.raises(DistillerError):
        dkd_loss(rand(2, 3), rand(2, 3), torch.tensor([0]))
    with pytest.raises(DistillerError):
        nkd_loss(rand(2, 1), rand(2, 1), torch.tensor([0, 0]))


def ref_dkd(s, t, y, alpha, beta, temp):
    """mdistiller-style reference: binary probabilities by masked sums, non-target softmax by -1000 on the target."""
    tck, nck = [], []
    for sn, tn, yn in zip(np64(s), np64(t), y.tolist()):
        ps, pt = np_softmax(sn / temp), np_softmax(tn / temp)
        bs = np.array([ps[yn], 1 - ps[yn]])
        bt = np.array([pt[yn], 1 - pt[yn]])
        tck.append((bt * (np.log(bt) - np.log(bs))).sum())
        onehot = np.eye(len(sn))[yn]
        lns = np_log_softmax(sn / temp - 1000.0 * onehot)
        nt = np_softmax(tn / temp - 1000.0 * onehot)
        nck.append((nt * (np.log(np.maximum(nt, 1e-300)) - lns))[onehot == 0].sum())
    tck, nck = np.array(tck), np.array(nck)
    return alpha * temp**2 * tck.mean() + beta * temp**2 * nck.mean(), tck, nck


@pytest.mark.parametrize("alpha,beta,temp", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_reference(alpha, beta, temp):
    s, t = rand(7, 6, seed=21, scale=3), rand(7, 6, seed=22, scale=3)
    y = torch.randint(0, 6, (7,), generator=gen(23))
    ref, tck, nck = ref_dkd(s, t, y, alpha, beta, temp)
    close(dkd_loss(s, t, y, alpha, beta, temp), ref)
    tckd, nckd = dkd_terms(s, t, y, temp)
    np.testing.assert_allclose(tckd.numpy(), tck, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(nckd.numpy(), nck, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temp", [1.0, 4.0])
def test_dkd_decomposition_identity(temp):
    """DKD paper Eq. (the decomposition): KL(p^T‖p^S) = TCKD + (1 − p_t^T)·NCKD per sample."""
    s, t = rand(9, 5, seed=24, scale=2), rand(9, 5, seed=25, scale=2)
    y = torch.randint(0, 5, (9,), generator=gen(26))
    tckd, nckd = dkd_terms(s, t, y, temp)
    kl = ref_kl_rows(s, t, temp)
    p_t_teacher = np.array([np_softmax(tn / temp)[yn] for tn, yn in zip(np64(t), y.tolist())])
    np.testing.assert_allclose(tckd.numpy() + (1 - p_t_teacher) * nckd.numpy(), kl, rtol=1e-5, atol=1e-6)
    # the per-sample identity, weighted: kd_loss(reduction="none") / T^2 equals the same pieces
    np.testing.assert_allclose(kd_loss(s, t, temp, reduction="none").numpy() / temp**2, kl, rtol=1e-5, atol=1e-6)


def test_dkd_saturated_teacher_is_finite():
    s = rand(4, 5, seed=27)
    t = torch.zeros(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    t[torch.arange(4), y] = 200.0  # p_t^T == 1 in fp32
    s.requires_grad_()
    loss = dkd_loss(s, t, y, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


# ------------------------------------------------------------------------------------------------------ features


def test_hidden_losses_match_reference_with_mask():
    h_s, h_t = rand(3, 5, 8, seed=30), rand(3, 5, 8, seed=31)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    toks = [(b, i) for b in range(3) for i in range(5) if mask[b, i]]
    hs, ht = np64(h_s), np64(h_t)
    ref_mse = np.mean([np.mean((hs[b, i] - ht[b, i]) ** 2) for b, i in toks])
    ref_ce = np.mean([-(np_softmax(ht[b, i] / 2) * np_log_softmax(hs[b, i] / 2)).sum() for b, i in toks])
    ref_cos = np.mean([1 - hs[b, i] @ ht[b, i] / np.linalg.norm(hs[b, i]) / np.linalg.norm(ht[b, i]) for b, i in toks])
    close(hidden_mse_loss(h_s, h_t, mask), ref_mse)
    close(hidden_ce_loss(h_s, h_t, mask, temperature=2.0), ref_ce)
    close(cosine_loss(h_s, h_t, mask), ref_cos)
    # no mask = plain means; pooled (B, D) inputs work too
    close(hidden_mse_loss(h_s, h_t), np.mean((hs - ht) ** 2))
    close(cosine_loss(h_s[:, 0], h_t[:, 0]),
          np.mean([1 - hs[b, 0] @ ht[b, 0] / np.linalg.norm(hs[b, 0]) / np.linalg.norm(ht[b, 0]) for b in range(3)]))
    # padded positions never matter, even as NaN
    h_s2, h_t2 = h_s.clone(), h_t.clone()
    h_s2[mask == 0] = float("nan")
    h_t2[mask == 0] = 1e6
    for fn in (hidden_mse_loss, hidden_ce_loss, cosine_loss):
        close(fn(h_s2, h_t2, mask), fn(h_s, h_t, mask))
    with pytest.raises(DistillerError):
        hidden_mse_loss(h_s, rand(3, 5, 6))
    with pytest.raises(DistillerError):
        hidden_mse_loss(h_s, h_t, mask[:, :4])


def test_hidden_mse_gradient_only_on_kept_tokens():
    h_s = rand(2, 4, 3, seed=32).requires_grad_()
    h_t = rand(2, 4, 3, seed=33)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    hidden_mse_loss(h_s, h_t, mask).backward()
    assert float(h_s.grad[mask == 0].abs().sum()) == 0.0
    assert bool((h_s.grad[mask == 1].abs().sum(-1) > 0).all())


def test_pkd_reference():
    h_s, h_t = rand(4, 6, 8, seed=34), rand(4, 6, 8, seed=35)
    hs, ht = np64(h_s)[:, 0], np64(h_t)[:, 0]
    ref = np.mean([np.sum((a / np.linalg.norm(a) - b / np.linalg.norm(b)) ** 2) for a, b in zip(hs, ht)])
    close(pkd_loss(h_s, h_t), ref)
    close(pkd_loss(h_s[:, 0], h_t[:, 0]), ref)
    close(pkd_loss(h_s, 3.0 * h_s), 0.0)  # scale invariant


def ref_scores(q, k, heads):
    """(B, H, L, L) float64 scores by explicit head slicing."""
    q, k = np64(q), np64(k)
    b, n, w = q.shape
    d = w // heads
    out = np.zeros((b, heads, n, n))
    for bi in range(b):
        for h in range(heads):
            qh, kh = q[bi, :, h * d : (h + 1) * d], k[bi, :, h * d : (h + 1) * d]
            out[bi, h] = qh @ kh.T / math.sqrt(d)
    return out


def ref_divergence(ss, st, lengths, kind):
    """Reference over explicit valid blocks: valid tokens are the first `length` positions of each sample."""
    total, count = 0.0, 0
    for b, n in enumerate(lengths):
        for h in range(ss.shape[1]):
            if kind == "mse":
                total += ((ss[b, h, :n, :n] - st[b, h, :n, :n]) ** 2).sum()
                count += n * n
            else:
                for i in range(n):
                    lp_s, lp_t = np_log_softmax(ss[b, h, i, :n]), np_log_softmax(st[b, h, i, :n])
                    total += (np.exp(lp_t) * (lp_t - lp_s)).sum()
                    count += 1
    return total / count


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_attention_score_reference_and_different_head_counts(kind):
    # teacher: 4 heads of width 32 (128 wide); student: 2 heads of width 16 (32 wide); both re-split into 2 heads
    B, N = 3, 6
    q_t, k_t = rand(B, N, 128, seed=40), rand(B, N, 128, seed=41)
    q_s, k_s = rand(B, N, 32, seed=42), rand(B, N, 32, seed=43)
    lengths = [6, 4, 2]
    mask = torch.tensor([[1] * n + [0] * (N - n) for n in lengths])
    value = attention_score_loss(q_s, k_s, q_t, k_t, mask, num_heads=2, kind=kind)
    ref = ref_divergence(ref_scores(q_s, k_s, 2), ref_scores(q_t, k_t, 2), lengths, kind)
    close(value, ref)
    # equal q/k for teacher and student -> 0
    close(attention_score_loss(q_t, k_t, q_t.clone(), k_t.clone(), mask, num_heads=4, kind=kind), 0.0)
    # no mask = all valid
    close(attention_score_loss(q_s, k_s, q_t, k_t, None, 2, kind),
          ref_divergence(ref_scores(q_s, k_s, 2), ref_scores(q_t, k_t, 2), [N] * B, kind))
    # padded positions never matter
    q_s2, k_t2 = q_s.clone(), k_t.clone()
    q_s2[mask == 0] = 50.0
    k_t2[mask == 0] = -80.0
    close(attention_score_loss(q_s2, k_s, q_t, k_t2, mask, 2, kind), value)


def test_attention_score_gradients_and_errors():
    B, N = 2, 5
    q_s, k_s = rand(B, N, 16, seed=44).requires_grad_(), rand(B, N, 16, seed=45).requires_grad_()
    q_t, k_t = rand(B, N, 24, seed=46), rand(B, N, 24, seed=47)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    attention_score_loss(q_s, k_s, q_t, k_t, mask, num_heads=4, kind="kl").backward()
    assert float(q_s.grad[mask == 0].abs().sum()) == 0.0 and float(k_s.grad[mask == 0].abs().sum()) == 0.0
    assert float(q_s.grad[mask == 1].abs().sum()) > 0
    with pytest.raises(DistillerError, match="divisible"):
        attention_score_loss(q_s, k_s, q_t, k_t, mask, num_heads=5)
    with pytest.raises(DistillerError):
        attention_score_loss(q_s, k_s, q_t, k_t, mask, num_heads=4, kind="cosine")


# ----------------------------------------------------------------------------------------------------- relations


def ref_relation(x_s, x_t, lengths, heads, kind):
    ws = (x_s.shape[-1] // heads) * heads
    wt = (x_t.shape[-1] // heads) * heads
    xs, xt = x_s[..., :ws], x_t[..., :wt]
    return ref_divergence(ref_scores(xs, xs, heads), ref_scores(xt, xt, heads), lengths, kind)


@pytest.mark.parametrize("kind", ["kl", "mse"])
def test_relation_reference_with_truncation(kind):
    B, N, heads = 2, 5, 3
    lengths = [5, 3]
    mask = torch.tensor([[1] * n + [0] * (N - n) for n in lengths])
    # student width 20 -> truncated to 18 = 3 x 6; teacher 48 = 3 x 16
    s = {key: rand(B, N, 20, seed=50 + i) for i, key in enumerate("qkv")}
    t = {key: rand(B, N, 48, seed=60 + i) for i, key in enumerate("qkv")}
    refs = [ref_relation(s[key], t[key], lengths, heads, kind) for key in "qkv"]
    for key, ref in zip("qkv", refs):
        close(relation_loss(s[key], t[key], mask, num_relation_heads=heads, kind=kind), ref)
    close(qkv_relation_loss(s, t, mask, num_relation_heads=heads, kind=kind), sum(refs))
    close(get_loss("relation")(s, t, mask, heads, kind), sum(refs))
    # a model distilled from itself has zero loss; padding never matters
    close(qkv_relation_loss(t, {k: v.clone() for k, v in t.items()}, mask, num_relation_heads=4, kind=kind), 0.0)
    s2 = {k: v.clone() for k, v in s.items()}
    s2["v"][mask == 0] = 1e3
    close(qkv_relation_loss(s2, t, mask, heads, kind), sum(refs))


def test_relation_errors():
    x = rand(2, 4, 8)
    with pytest.raises(DistillerError):
        relation_loss(x, x, None, num_relation_heads=12)  # width 8 < 12 heads
    with pytest.raises(DistillerError, match="key"):
        qkv_relation_loss({"q": x, "k": x}, {"q": x, "k": x, "v": x}, None, 2)
    with pytest.raises(DistillerError):
        relation_loss(x, rand(2, 5, 8), None, 2)


# ---------------------------------------------------------------------------------------------- mutual information


def np_loo(S):
    B = S.shape[0]
    N = np.zeros_like(S)
    for i in range(B):
        for j in range(B):
            N[i, j] = np_logsumexp([S[i, k] for k in range(B) if k != j]) - math.log(B - 1)
    return N


def np_mi_alpha(S, b, alpha):
    """Poole et al. I_alpha by explicit loops (float64)."""
    B = S.shape[0]
    N = np_loo(S)
    phi = np.zeros_like(S)
    for i in range(B):
        for j in range(B):
            phi[i, j] = math.log(alpha * math.exp(N[i, j]) + (1 - alpha) * math.exp(b[i]))
    joint = np.mean([S[i, i] - phi[i, j] for i in range(B) for j in range(B) if i != j])
    marg = np.mean([math.exp(S[i, j] - phi[i, i]) for i in range(B) for j in range(B) if i != j])
    return 1 + joint - marg


def np_tuba(S, b):
    B = S.shape[0]
    joint = np.mean([S[i, i] - b[i] for i in range(B)])
    marg = np.mean([math.exp(S[i, j] - b[i]) for i in range(B) for j in range(B) if i != j])
    return 1 + joint - marg


def test_log_loo_mean_matches_brute_force_even_when_dominant():
    S = rand(6, 6, seed=70, scale=2)
    np.testing.assert_allclose(log_loo_mean(S).numpy(), np_loo(np64(S)), rtol=1e-5, atol=1e-5)
    # a dominant entry per row: naive log(sum - max) would give log(0)
    S2 = (S + 60.0 * torch.eye(6)).requires_grad_()
    N2 = log_loo_mean(S2)
    np.testing.assert_allclose(N2.detach().numpy(), np_loo(np64(S2)), rtol=1e-5, atol=1e-5)
    N2.sum().backward()
    assert torch.isfinite(S2.grad).all()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.9, 1.0])
def test_mi_alpha_matches_reference(alpha):
    S = rand(5, 5, seed=71, scale=1.5) + 2.0 * torch.eye(5)
    b = rand(5, seed=72)
    close(mi_alpha_lower_bound(S, b, alpha), np_mi_alpha(np64(S), np64(b), alpha))


def test_tuba_nwj_infonce_reference():
    S = rand(6, 6, seed=73, scale=1.5) + torch.eye(6)
    b = rand(6, seed=74)
    Sn, bn = np64(S), np64(b)
    close(tuba_lower_bound(S, b), np_tuba(Sn, bn))
    close(tuba_lower_bound(S, b[:, None]), np_tuba(Sn, bn))
    close(nwj_lower_bound(S), np_tuba(Sn, np.ones(6)))
    close(nwj_lower_bound(S), tuba_lower_bound(S, torch.ones(6)), 1e-6)
    close(nwj_lower_bound(S), tuba_lower_bound(S, 1.0), 1e-6)
    ref_nce = np.mean([Sn[i, i] - np_logsumexp(Sn[i]) for i in range(6)]) + math.log(6)
    close(infonce_lower_bound(S), ref_nce)


def test_mi_identities():
    B = 8
    S = rand(B, B, seed=75) + 10.0 * torch.eye(B)  # strongly diagonal: critic separates positives well
    b = rand(B, seed=76)
    # alpha = 0 is exactly TUBA with the same baseline
    assert abs(float(mi_alpha_lower_bound(S, b, 0.0)) - float(tuba_lower_bound(S, b))) <= 1e-6
    S_rand = rand(B, B, seed=77, scale=2)
    assert abs(float(mi_alpha_lower_bound(S_rand, b, 0.0)) - float(tuba_lower_bound(S_rand, b))) <= 1e-6
    # alpha = 1 (leave-one-out InfoNCE) cannot exceed log B; alpha = 0 can
    log_b = math.log(B)
    assert float(mi_alpha_lower_bound(S, b, 1.0)) <= log_b + 1e-5
    assert float(mi_alpha_lower_bound(S, torch.zeros(B), 0.0)) > log_b + 1.0
    assert float(infonce_lower_bound(S)) <= log_b + 1e-6
    assert float(infonce_lower_bound(S)) > log_b - 0.01  # and gets close to the cap
    for seed in range(5):
        Sr = rand(B, B, seed=80 + seed, scale=3) + 3 * torch.eye(B)
        assert float(infonce_lower_bound(Sr)) <= log_b + 1e-6
        assert float(mi_alpha_lower_bound(Sr, b, 1.0)) <= log_b + 1e-5


def test_mi_bounds_gradients_finite_and_validation():
    for alpha in (0.0, 0.5, 1.0):
        S = (rand(4, 4, seed=90) + 40 * torch.eye(4)).requires_grad_()
        b = rand(4, seed=91).requires_grad_()
        mi_alpha_lower_bound(S, b, alpha).backward()
        assert torch.isfinite(S.grad).all()
        if alpha == 1.0:
            assert b.grad is None or float(b.grad.abs().sum()) == 0.0  # pure InfoNCE ignores the learned baseline
        else:
            assert torch.isfinite(b.grad).all() and float(b.grad.abs().sum()) > 0
    with pytest.raises(DistillerError):
        mi_alpha_lower_bound(rand(3, 3), rand(3), 1.5)
    with pytest.raises(DistillerError):
        mi_alpha_lower_bound(rand(3, 3), rand(4), 0.5)
    with pytest.raises(DistillerError, match="batch size"):
        tuba_lower_bound(rand(1, 1), rand(1))
    with pytest.raises(DistillerError):
        infonce_lower_bound(rand(2, 3))
    close(infonce_lower_bound(rand(1, 1)), 0.0)
    # bf16 scores are reduced in fp32
    out = mi_alpha_lower_bound(rand(4, 4).bfloat16(), rand(4).bfloat16(), 0.5)
    assert out.dtype == torch.float32


def test_mi_alpha_module_matches_functional():
    torch.manual_seed(0)
    B, N, ds, dt = 6, 5, 12, 20
    crit = MIAlphaLoss(ds, dt, alpha=0.7, pool="mean", hidden=16, out_dim=8)
    h_s, h_t = rand(B, N, ds, seed=100), rand(B, N, dt, seed=101)
    mask = torch.ones(B, N, dtype=torch.long)
    mask[1, 3:] = 0
    mask[4, 1:] = 0
    loss = crit(h_s, h_t, mask)
    # independent pooling + critic
    m = mask[..., None].float()
    s_pool, t_pool = (h_s * m).sum(1) / m.sum(1), (h_t * m).sum(1) / m.sum(1)
    scores = crit.student_tower(s_pool) @ crit.teacher_tower(t_pool).T
    base = crit.baseline(t_pool)[:, 0]
    close(loss, -np_mi_alpha(np64(scores), np64(base), 0.7))
    assert loss.dtype == torch.float32 and loss.dim() == 0
    close(crit.last_bound, -loss.detach())
    # padded tokens do not matter; pre-pooled inputs give the same value
    h_s2 = h_s.clone()
    h_s2[mask == 0] = 1e4
    close(crit(h_s2, h_t, mask), loss)
    close(crit(s_pool, t_pool), loss)
    # cls pooling uses the first token
    crit_cls = MIAlphaLoss(ds, dt, alpha=0.0, pool="cls", bound="tuba", hidden=16, out_dim=8)
    sc = crit_cls.student_tower(h_s[:, 0]) @ crit_cls.teacher_tower(h_t[:, 0]).T
    close(crit_cls(h_s, h_t), -np_tuba(np64(sc), np64(crit_cls.baseline(h_t[:, 0])[:, 0])))


def test_mi_alpha_module_bounds_options_and_errors():
    h_s, h_t = rand(4, 3, 8, seed=102), rand(4, 3, 10, seed=103)
    for bound in ("infonce", "nwj"):
        crit = MIAlphaLoss(8, 10, bound=bound, hidden=8, out_dim=4)
        assert crit.baseline is None  # no unused parameters
        sc = crit.student_tower(h_s[:, 0]) @ crit.teacher_tower(h_t[:, 0]).T
        fn = infonce_lower_bound if bound == "infonce" else nwj_lower_bound
        close(crit(h_s, h_t), -fn(sc).detach())
        crit(h_s, h_t).backward()
        assert all(p.grad is not None for p in crit.parameters())
    for kwargs in ({"alpha": -0.1}, {"pool": "max"}, {"bound": "dv"}, {"hidden": 0}):
        with pytest.raises(DistillerError):
            MIAlphaLoss(8, 10, **kwargs)
    with pytest.raises(DistillerError):
        MIAlphaLoss(8, 10)(rand(4, 3, 9), h_t)  # wrong student width
    with pytest.raises(DistillerError):
        MIAlphaLoss(8, 10)(h_s, rand(5, 3, 10))  # batch mismatch
    assert get_loss("mi_alpha") is MIAlphaLoss and is_stateful("mi_alpha")


def test_mi_alpha_module_bf16_and_autocast():
    crit = MIAlphaLoss(8, 10, alpha=0.5, hidden=16, out_dim=8)
    h_s = rand(6, 4, 8, seed=104).bfloat16().requires_grad_()
    h_t = rand(6, 4, 10, seed=105).bfloat16()
    loss = crit(h_s, h_t)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert h_s.grad is not None and torch.isfinite(h_s.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ac = crit(h_s.detach().float(), h_t.float())
    assert loss_ac.dtype == torch.float32 and torch.isfinite(loss_ac)
    close(loss_ac, crit(h_s.detach().float(), h_t.float()))  # critic really ran in fp32


def test_mi_alpha_module_batch_of_one_is_zero_with_graph():
    crit = MIAlphaLoss(8, 10, hidden=8, out_dim=4)
    h_s = rand(1, 3, 8, seed=106).requires_grad_()
    loss = crit(h_s, rand(1, 3, 10, seed=107))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert float(h_s.grad.abs().sum()) == 0.0
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0.0 for p in crit.parameters())


def test_mi_alpha_module_learns_dependence():
    """Training the critic on dependent pairs raises the bound well above 0 (and InfoNCE stays under log B)."""
    torch.manual_seed(0)
    B, d = 32, 6
    crit = MIAlphaLoss(d, d, bound="infonce", hidden=32, out_dim=16)
    opt = torch.optim.Adam(crit.parameters(), lr=1e-2)
    g = gen(108)
    for _ in range(60):
        x = torch.randn(B, d, generator=g)
        y = x + 0.1 * torch.randn(B, d, generator=g)
        loss = crit(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 1.5 < float(crit.last_bound) <= math.log(B) + 1e-6


def test_registry_records_what_each_loss_compares():
    from distiller_nlp.core.losses import loss_kind, register_loss, unregister_loss
    from distiller_nlp.core.errors import DistillerError

    assert loss_kind("kd") == "logits" and loss_kind("hidden_mse") == "hidden" and loss_kind("mi_alpha") == "hidden"
    assert loss_kind("attention_score") == "qkv" and loss_kind("relation") == "qkv"
    assert loss_kind("landmark_kd") == "landmarks"

    @register_loss("user_hidden_test")
    def user(h_s, h_t, mask=None):
        return (h_s - h_t).abs().mean()

    try:
        assert loss_kind("user_hidden_test") == "any"  # user losses are trusted by default
    finally:
        unregister_loss("user_hidden_test")
    with pytest.raises(DistillerError, match="kind"):
        register_loss("bad_kind_test", kind="pixels")
