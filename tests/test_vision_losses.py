"""Loss identities and hand-made cases for the vision methods' losses (all in distiller_nlp.core.losses)."""

import math

import pytest
import torch
import torch.nn.functional as F

from distiller_nlp.core.losses import (assist_weights, assistive_loss, balanced_kl_loss, dkd_terms,
                                       entropy_gap_weights, get_loss, kd_loss, landmark_kd_loss, landmark_main_loss,
                                       nkd_loss, uskd_loss, uskd_terms, zipf_soft_labels)
from distiller_nlp.core.errors import DistillerError


def logits(n=6, c=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale


def test_new_losses_are_registered():
    assert get_loss("bdkd") is balanced_kl_loss
    assert get_loss("uskd") is uskd_loss
    assert get_loss("aloss") is assistive_loss
    assert get_loss("landmark_kd") is landmark_kd_loss


def test_dkd_identity_per_sample_kl_equals_tckd_plus_weighted_nckd():
    s, t, y = logits(seed=1), logits(seed=2), torch.tensor([0, 1, 2, 3, 4, 0])
    tau = 4.0
    tckd, nckd = dkd_terms(s, t, y, tau)
    kl = kd_loss(s, t, tau, reduction="none") / tau**2
    p_t = F.softmax(t / tau, -1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(kl, tckd + (1 - p_t) * nckd, rtol=1e-5, atol=1e-6)


def test_nkd_decomposition_of_soft_cross_entropy():
    """CE(T,S) = −T_t log S_t − (1−T_t) log(1−S_t) − (1−T_t)·Σ_{i≠t} N(T)_i log N(S)_i; NKD with γ = 1−T_t (τ=1)
    plus the binary term reproduces the soft cross-entropy."""
    s, t, y = logits(seed=3), logits(seed=4), torch.tensor([4, 3, 2, 1, 0, 2])
    for n in range(len(y)):
        sn, tn, yn = s[n:n + 1], t[n:n + 1], y[n:n + 1]
        p_s, p_t = F.softmax(sn, -1)[0], F.softmax(tn, -1)[0]
        ce = -(p_t * p_s.log()).sum()
        T_t, S_t = p_t[yn], p_s[yn]
        binary = -(1 - T_t) * torch.log(1 - S_t)
        nkd = nkd_loss(sn, tn, yn, temperature=1.0, gamma=float(1 - T_t))
        torch.testing.assert_close(nkd + binary.squeeze(), ce, rtol=1e-5, atol=1e-6)


def test_zipf_soft_labels_sum_to_one_and_follow_one_over_rank():
    c = 6
    y = torch.tensor([2, 0])
    # The student's order is 2 > 0 > 1 > 5 > 4 > 3 for sample 0 and 0 > 1 > ... for sample 1; weak head flat.
    s = torch.tensor([[3.0, 1.0, 9.0, -4.0, -2.0, 0.0], [9.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    w = torch.zeros(2, c)
    for mode in ("official", "prob"):
        z = zipf_soft_labels(s, w, y, rank_on=mode)
        assert z.shape == (2, c - 1) and not z.requires_grad
        torch.testing.assert_close(z.sum(-1), torch.ones(2))
        # sample 0, non-target columns (0, 1, 3, 4, 5) have ranks (2, 3, 6, 5, 4)
        ranks = torch.tensor([2.0, 3.0, 6.0, 5.0, 4.0])
        torch.testing.assert_close(z[0], (1 / ranks) / (1 / ranks).sum())
        ranks1 = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0])
        torch.testing.assert_close(z[1], (1 / ranks1) / (1 / ranks1).sum())


def test_zipf_official_ranking_mixes_logprobs_and_probs():
    """The official score adds the weak head's probabilities to the student's log-probabilities: when the student's
    log-probabilities are close, the weak head decides; with 'prob' the student's probabilities are on the same
    [0, 1] scale as the weak head's."""
    y = torch.tensor([0])
    s = torch.tensor([[5.0, 0.0, 0.05, -30.0]])  # student: class 2 barely above class 1
    w = torch.tensor([[5.0, 3.0, 0.0, 0.0]])  # weak head: class 1 clearly above class 2
    official = zipf_soft_labels(s, w, y, rank_on="official")
    assert official[0, 0] > official[0, 1]  # class 1 ranked before class 2 (weak head breaks the near-tie)
    with pytest.raises(DistillerError):
        zipf_soft_labels(s, w, y, rank_on="nope")


def test_uskd_terms_detach_the_soft_target_and_work_on_cpu():
    s = logits(seed=5).requires_grad_(True)
    w = logits(seed=6).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    l_t, l_non, l_weak = uskd_terms(s, w, y)
    # L_t's gradient is −p_t·∂log S_t with p_t treated as a constant
    (g,) = torch.autograd.grad(l_t, s, retain_graph=True)
    p = F.softmax(s.detach(), -1)
    s_t = p.gather(1, y[:, None]).squeeze(1)
    p_t = s_t**2 + 1 - (s_t**2).mean()
    onehot = F.one_hot(y, 5).float()
    torch.testing.assert_close(g, -(p_t[:, None] * (onehot - p)) / len(y), rtol=1e-5, atol=1e-6)
    assert l_weak.requires_grad and l_non.requires_grad
    total = uskd_loss(s, w, y, alpha=0.1, beta=0.1, mu=0.1)
    torch.testing.assert_close(total, 0.1 * (l_t + l_non + l_weak))


def test_bdkd_weights_lie_in_unit_interval_and_rules_reduce_to_kl():
    s, t = logits(seed=7, scale=3), logits(seed=8, scale=0.5)
    for rule in ("sigmoid", "hard", "forward", "reverse"):
        w = entropy_gap_weights(s, t, 2.0, rule)
        assert w.shape == (6,) and bool(((w >= 0) & (w <= 1)).all())
    gap = (-(F.softmax(s / 2, -1) * F.log_softmax(s / 2, -1)).sum(-1)
           + (F.softmax(t / 2, -1) * F.log_softmax(t / 2, -1)).sum(-1))
    torch.testing.assert_close(entropy_gap_weights(s, t, 2.0, "hard"), (gap > 0).float())
    torch.testing.assert_close(balanced_kl_loss(s, t, 2.0, "forward"), kd_loss(s, t, 2.0))
    torch.testing.assert_close(balanced_kl_loss(s, t, 2.0, "reverse"), kd_loss(t, s, 2.0))
    with pytest.raises(DistillerError):
        entropy_gap_weights(s, t, 1.0, "softmax")


def test_aloss_signs_on_hand_made_points():
    """Ground truth 0, teacher at distance 1. Beyond the teacher: attraction (+1.9); between 15 % and the teacher:
    repulsion (−0.45); nearer than 15 %: nothing. In both active regions gradient descent moves the student towards
    the ground truth, on either side (the teacher is mirrored to the student's side)."""
    gt = torch.zeros(5)
    teacher = torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0])
    student = torch.tensor([2.0, 0.5, 0.1, -2.0, 0.6], requires_grad=True)
    m, reflected = assist_weights(student, gt, teacher, 1.9, -0.45)
    torch.testing.assert_close(m, torch.tensor([1.9, -0.45, 0.0, 1.9, -0.45]))
    torch.testing.assert_close(reflected, torch.tensor([1.0, 1.0, 1.0, -1.0, 1.0]))
    loss = assistive_loss(student, gt, teacher, 1.9, -0.45)
    assert math.isclose(float(loss.detach()), (1.9 * 1.0 - 0.45 * 0.5 + 0 + 1.9 * 1.0 - 0.45 * 0.4) / 5, rel_tol=1e-6)
    (g,) = torch.autograd.grad(loss, student)
    step = -g  # gradient-descent direction
    assert step[0] < 0 and step[1] < 0 and step[2] == 0 and step[3] > 0 and step[4] < 0


def test_landmark_main_loss_is_piecewise_and_continuous():
    gt, tol = torch.zeros(3), torch.tensor([0.5, 0.5, 0.5])
    inside = landmark_main_loss(torch.tensor([0.2, -0.2, 0.5]), gt, tol)
    torch.testing.assert_close(inside, torch.tensor((0.6 + 0.6 + 1.5) / 3))
    outside = landmark_main_loss(torch.tensor([1.0, 1.0, 1.0]), gt, tol)
    torch.testing.assert_close(outside, torch.tensor(1.0 + 1.5 - 0.25))
    eps = 1e-4
    a = landmark_main_loss(torch.tensor([0.5 - eps]), torch.zeros(1), torch.tensor([0.5]))
    b = landmark_main_loss(torch.tensor([0.5 + eps]), torch.zeros(1), torch.tensor([0.5]))
    assert abs(float(a - b)) < 1e-3
    total = landmark_kd_loss(torch.tensor([1.0]), torch.zeros(1), torch.tensor([0.8]), torch.tensor([0.5]))
    expected = 2 * (1 + 1.5 - 0.25) + 1.9 * 0.2 + 1.8 * 0.5
    assert math.isclose(float(total), expected, rel_tol=1e-6)
    with pytest.raises(DistillerError):
        landmark_main_loss(torch.zeros(2), torch.zeros(3), torch.zeros(3))
