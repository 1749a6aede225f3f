"""Issue #17, "faithful to the papers", vision side: BD-KD's teacher term, DKD's warm-up default, and soft/mixed
labels in NKD and USKD, each pinned against numbers computed here with plain numpy (never with the code under test).
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import nkd_loss, uskd_terms, zipf_soft_labels
from vision_kd.data import CLASSIFICATION
from vision_kd.methods import MethodContext, get_method

# ---------------------------------------------------------------------------------------------- numpy references


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_entropy(p):
    return -(p * np.log(p)).sum(-1)


def np_kl(p, q):
    """Per-row KL(p ‖ q)."""
    return (p * (np.log(p) - np.log(q))).sum(-1)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------------------------- BD-KD


class FixedLogits(nn.Module):
    """A stand-in network whose output logits are a trainable parameter (the input is ignored)."""

    def __init__(self, z):
        super().__init__()
        self.z = nn.Parameter(torch.tensor(z, dtype=torch.float32))

    def forward(self, x):
        return {"logits": self.z}


S_2x3 = [[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]]
T_2x3 = [[1.0, 1.0, 0.0], [3.0, -1.0, 0.0]]


def bdkd_module(params):
    cls = get_method("bdkd")
    ctx = MethodContext(data=SimpleNamespace(task=CLASSIFICATION, num_outputs=3), batches_per_epoch=1)
    return cls(FixedLogits(S_2x3), cls.resolve_params(params), ctx, online_teacher=FixedLogits(T_2x3))


def bdkd_batch():
    return {"pixel_values": torch.zeros(2, 1, 1, 1), "labels": torch.tensor([0, 0])}


def np_bdkd_teacher_term(tau, rule, sharpness=1.0):
    """τ²·mean_n[(1 − λ')·KL(p_s‖p_t) + λ'·KL(p_t‖p_s)], λ' = g(H(p_t) − H(p_s)): the teacher learns from the
    student with the roles of the student's balanced term swapped."""
    ps, pt = np_softmax(np.array(S_2x3) / tau), np_softmax(np.array(T_2x3) / tau)
    gap = np_entropy(pt) - np_entropy(ps)
    lam = {"sigmoid": np_sigmoid(sharpness * gap), "hard": (gap > 0).astype(float),
           "forward": np.zeros(2), "reverse": np.ones(2)}[rule]
    return tau**2 * np.mean((1 - lam) * np_kl(ps, pt) + lam * np_kl(pt, ps))


def test_bdkd_teacher_term_matches_the_hand_computed_value_on_2x3_logits():
    tau = 2.0
    # the worked example by hand, sample by sample, for the sigmoid rule (sharpness 1)
    ps, pt = np_softmax(np.array(S_2x3) / tau), np_softmax(np.array(T_2x3) / tau)
    lam = np_sigmoid(np_entropy(pt) - np_entropy(ps))
    assert lam[0] > 0.5 > lam[1]  # sample 0: the teacher is the flatter one; sample 1: the student is
    expected = tau**2 * ((1 - lam[0]) * np_kl(ps[0], pt[0]) + lam[0] * np_kl(pt[0], ps[0])
                         + (1 - lam[1]) * np_kl(ps[1], pt[1]) + lam[1] * np_kl(pt[1], ps[1])) / 2
    assert expected == pytest.approx(np_bdkd_teacher_term(tau, "sigmoid"))

    out = bdkd_module({"temperature": tau}).loss_terms(bdkd_batch())
    assert float(out["teacher_reg"].detach()) == pytest.approx(expected, rel=1e-5)
    # under the sigmoid rule λ' = 1 − λ: per sample the teacher's term has the student's value
    assert float(out["bdkd"].detach()) == pytest.approx(expected, rel=1e-5)
    for rule in ("hard", "forward", "reverse"):
        out = bdkd_module({"temperature": tau, "rule": rule}).loss_terms(bdkd_batch())
        assert float(out["teacher_reg"].detach()) == pytest.approx(np_bdkd_teacher_term(tau, rule), rel=1e-5), rule
    # teacher_rule=reverse: the earlier reading, the plain τ²·KL(p_t‖p_s) regulariser
    out = bdkd_module({"temperature": tau, "teacher_rule": "reverse"}).loss_terms(bdkd_batch())
    assert float(out["teacher_reg"].detach()) == pytest.approx(tau**2 * np_kl(pt, ps).mean(), rel=1e-5)
    # the student's term is unchanged (its sigmoid value equals the symmetric teacher term's, see above)
    assert float(out["bdkd"].detach()) == pytest.approx(np_bdkd_teacher_term(tau, "sigmoid"), rel=1e-5)
    with pytest.raises(DistillerError, match="teacher_rule"):
        bdkd_module({"teacher_rule": "both"})


@pytest.mark.parametrize("rule", ["sigmoid", "hard"])
def test_bdkd_each_kd_term_trains_only_its_own_network(rule):
    module = bdkd_module({"temperature": 2.0, "rule": rule})
    s, t = module.student.z, module.teacher.z
    out = module.loss_terms(bdkd_batch())
    g_s, g_t = torch.autograd.grad(out["teacher_reg"], [s, t], allow_unused=True, retain_graph=True)
    assert g_s is None and g_t is not None and float(g_t.abs().sum()) > 0
    g_s, g_t = torch.autograd.grad(out["bdkd"], [s, t], allow_unused=True, retain_graph=True)
    assert g_t is None and g_s is not None and float(g_s.abs().sum()) > 0
    g_s, g_t = torch.autograd.grad(out["loss"], [s, t])  # the summed loss trains both
    assert float(g_s.abs().sum()) > 0 and float(g_t.abs().sum()) > 0


# ---------------------------------------------------------------------------------------------- DKD warm-up


def test_dkd_warmup_default_is_mdistillers_20_epochs_and_short_recipes_set_their_own():
    import os

    dkd = get_method("dkd")
    assert dkd.resolve_params({}).warmup_epochs == 20.0
    assert dkd.resolve_params({}, "imagenet").warmup_epochs == 1.0
    module = dkd(nn.Linear(1, 1), dkd.resolve_params({}),
                 MethodContext(data=SimpleNamespace(task=CLASSIFICATION, num_outputs=10), batches_per_epoch=10))
    w = [float(module.warmup.step(True)) for _ in range(10)]  # one epoch of 10 batches
    assert w[-1] == pytest.approx(1 / 20)
    recipe = os.path.join(os.path.dirname(__file__), "..", "vision_kd", "recipes", "dkd_digits.yaml")
    with open(recipe) as fh:
        cfg = yaml.safe_load(fh)
    assert cfg["train"]["epochs"] == 30 and cfg["params"]["warmup_epochs"] == 5  # explicit, behaviour kept


# ---------------------------------------------------------------------------------------------- soft labels

S_2x4 = np.array([[1.0, 2.0, -1.0, 0.5], [0.3, -0.2, 1.5, 0.0]])
W_2x4 = np.array([[0.2, 1.0, 0.0, -0.5], [1.0, 0.1, 0.4, -1.0]])
# MixUp/CutMix labels: sample 0 is 0.6·class 1 + 0.4·class 3, sample 1 is 0.6·class 0 + 0.4·class 2
Y_MIX = np.array([[0.0, 0.6, 0.0, 0.4], [0.6, 0.0, 0.4, 0.0]])
TOP2 = np.array([[1, 3], [0, 2]])
NON_TARGET = np.array([[0, 2], [1, 3]])


def tensor(a):
    return torch.tensor(a, dtype=torch.float32)


def np_uskd_soft(s, w, y, top2, non, eps=0.1):
    """The official USKD with a mixed label (cls_KD mmcls/models/dis_losses/uskd.py), written out with numpy."""
    n, c = s.shape
    rows = np.arange(n)[:, None]
    v = y[rows, top2]
    ps, log_ps = np_softmax(s), np_log_softmax(s)
    sq = ps[rows, top2] ** 2
    p_t = np.where(v == 0, 0.0, sq + v - sq.mean(0, keepdims=True))  # the batch mean per column
    l_t = -(p_t * log_ps[rows, top2]).sum(1).mean()
    pw = np_softmax(w)
    score = (pw / (1 - pw[rows, top2].sum(1, keepdims=True))
             + log_ps / (1 - log_ps[rows, top2].sum(1, keepdims=True)))
    rank = np.empty_like(score)
    for i in range(n):  # rank 1 = highest score
        rank[i, np.argsort(-score[i])] = np.arange(1, c + 1)
    zipf = (1.0 / rank)[rows, non]
    zipf = zipf / zipf.sum(1, keepdims=True)
    l_non = -(zipf * np_log_softmax(s[rows, non])).sum(1).mean()
    l_weak = -(((1 - eps) * y + eps / c) * np_log_softmax(w)).sum(1).mean()
    return l_t, l_non, l_weak, zipf


def test_uskd_keeps_the_top2_of_a_mixed_label_like_the_official_code():
    l_t, l_non, l_weak, zipf = np_uskd_soft(S_2x4, W_2x4, Y_MIX, TOP2, NON_TARGET)
    got = uskd_terms(tensor(S_2x4), tensor(W_2x4), tensor(Y_MIX), label_smoothing=0.1)
    for name, g, e in zip(("L_t", "L_non", "L_weak"), got, (l_t, l_non, l_weak)):
        assert float(g) == pytest.approx(e, rel=1e-5), name
    z = zipf_soft_labels(tensor(S_2x4), tensor(W_2x4), tensor(Y_MIX))
    assert z.shape == (2, 2)  # both label classes are targets: C − 2 non-targets
    np.testing.assert_allclose(z.numpy(), zipf, rtol=1e-5)
    # the argmax reading (one target per sample) gives a different L_t: the second class is not dropped
    hard = uskd_terms(tensor(S_2x4), tensor(W_2x4), torch.tensor([1, 0]))
    assert abs(float(hard[0]) - l_t) > 1e-3


def test_uskd_soft_target_weights_by_hand_for_the_first_sample():
    """p_k = s_k² + v_k − mean_batch(s_k²), per column: written out for sample 0 (targets 1 and 3)."""
    ps = np_softmax(S_2x4)
    col1 = np.array([ps[0, 1], ps[1, 0]]) ** 2  # the top-1 column of the batch: classes 1 and 0
    col2 = np.array([ps[0, 3], ps[1, 2]]) ** 2  # the top-2 column: classes 3 and 2
    p0 = (col1[0] + 0.6 - col1.mean(), col2[0] + 0.4 - col2.mean())
    p1 = (col1[1] + 0.6 - col1.mean(), col2[1] + 0.4 - col2.mean())
    log_ps = np_log_softmax(S_2x4)
    l_t = -((p0[0] * log_ps[0, 1] + p0[1] * log_ps[0, 3]) + (p1[0] * log_ps[1, 0] + p1[1] * log_ps[1, 2])) / 2
    got, _, _ = uskd_terms(tensor(S_2x4), tensor(W_2x4), tensor(Y_MIX))
    assert float(got) == pytest.approx(l_t, rel=1e-5)


def test_uskd_one_hot_float_label_zeroes_the_second_target():
    """An unmixed label given as a float vector: its second 'target' has value 0, so its weight is 0 (official line
    50); L_t and L_weak then equal the hard-label ones, while that class also leaves the non-target set."""
    s, w = tensor(S_2x4[:1]), tensor(W_2x4[:1])
    one_hot = tensor([[0.0, 1.0, 0.0, 0.0]])
    soft = uskd_terms(s, w, one_hot)
    hard = uskd_terms(s, w, torch.tensor([1]))
    assert float(soft[0]) == pytest.approx(float(hard[0]), rel=1e-6)
    assert float(soft[2]) == pytest.approx(float(hard[2]), rel=1e-6)
    # the zeros tie; the lowest class (0) becomes the second target, leaving classes 2 and 3 as non-targets
    _, l_non, _, zipf = np_uskd_soft(S_2x4[:1], W_2x4[:1], np.array([[0.0, 1.0, 0.0, 0.0]]),
                                     np.array([[1, 0]]), np.array([[2, 3]]))
    assert float(soft[1]) == pytest.approx(l_non, rel=1e-5)
    np.testing.assert_allclose(zipf_soft_labels(s, w, one_hot).numpy(), zipf, rtol=1e-5)


def np_nkd(s, t, y, tau, gamma):
    n = len(y)
    rows = np.arange(n)
    target = -np_softmax(t)[rows, y] * np_log_softmax(s)[rows, y]
    keep = np.array([[j for j in range(s.shape[1]) if j != y[i]] for i in range(n)])
    s_non, t_non = s[rows[:, None], keep] / tau, t[rows[:, None], keep] / tau
    non = -(np_softmax(t_non) * np_log_softmax(s_non)).sum(1)
    return float(np.mean(target + gamma * tau**2 * non))


def test_nkd_reduces_a_mixed_label_to_its_argmax_like_the_official_code():
    t = np.array([[0.5, 2.5, 0.0, 1.0], [2.0, 0.0, 1.0, -0.5]])
    expected = np_nkd(S_2x4, t, np.array([1, 0]), tau=2.0, gamma=1.5)  # argmax of the 0.6/0.4 labels
    got = nkd_loss(tensor(S_2x4), tensor(t), tensor(Y_MIX), temperature=2.0, gamma=1.5)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(got) != pytest.approx(np_nkd(S_2x4, t, np.array([3, 2]), tau=2.0, gamma=1.5), rel=1e-3)
