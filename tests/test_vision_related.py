"""Issue #19 foundation: the Fashion-MNIST reader (tiny IDX fixture always; the Debian package's real data when
installed) and the related KD methods ``rrd``, ``ckd``, ``nasty_teacher``, ``rolewise_da``, ``rdd`` — each loss
pinned by values computed here with numpy/math or by an identity of its paper, and each method trained a few steps
(from the CLI where ``train.py`` supports it; ``rdd`` by its own module on a tiny FCN pair)."""

import gzip
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses.relational_kd import (comparative_groups, comparative_kd_terms, nasty_teacher_terms,
                                                     ohem_hard_mask, pixel_kd_loss, rdd_difficulty_weights,
                                                     rdd_task_loss, relational_kd_loss)

FAST = ["--threads", "1", "--precision", "no", "--report-to", "none"]
REAL_DIR = "/usr/share/datasets/fashion-mnist"


# ------------------------------------------------------------------------------------------------ numpy helpers

def np_log_softmax(z, axis=-1):
    z = np.asarray(z, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=axis, keepdims=True))


def np_softmax(z, axis=-1):
    return np.exp(np_log_softmax(z, axis))


def t64(a):
    return torch.tensor(np.asarray(a), dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ IDX fixture

def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fixture(root, per_class_train=4, per_class_test=2, seed=0, bad=None):
    """Four gzip-ed IDX files of a tiny Fashion-MNIST look-alike (10 classes) in ``root``; ``bad`` corrupts one."""
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for split, per in (("train", per_class_train), ("t10k", per_class_test)):
        labels = np.repeat(np.arange(10), per)
        rng.shuffle(labels)
        images = rng.integers(0, 256, size=(len(labels), 28, 28))
        img_magic, lab_magic = 0x803, 0x801
        img = idx_bytes(images, img_magic)
        lab = idx_bytes(labels, lab_magic)
        if bad == "magic" and split == "train":
            lab = idx_bytes(labels, 0x803)  # the images' magic on the labels file
        if bad == "truncated" and split == "train":
            img = img[:-5]
        with gzip.open(os.path.join(root, f"{split}-images-idx3-ubyte.gz"), "wb") as fh:
            fh.write(img)
        with gzip.open(os.path.join(root, f"{split}-labels-idx1-ubyte.gz"), "wb") as fh:
            fh.write(lab)
    return str(root)


def test_fashion_reader_on_tiny_fixture(tmp_path):
    from vision_kd.data import load_vision_data
    from vision_kd.data.fashion_mnist import load_fashion_mnist_data, read_fashion_mnist

    root = write_fixture(tmp_path / "fm")
    x, y = read_fashion_mnist("train", root)
    assert x.shape == (40, 28, 28) and x.dtype == np.uint8 and np.bincount(y).tolist() == [4] * 10
    d = load_fashion_mnist_data(data_dir=root, validation_size=10)
    assert d.train.images.shape == (30, 1, 28, 28) and d.train.images.dtype == torch.float32
    assert np.bincount(d.validation.labels.numpy()).tolist() == [1] * 10  # stratified: 1 per class
    assert np.bincount(d.train.labels.numpy()).tolist() == [3] * 10
    assert len(d.test) == 20 and np.bincount(d.test.labels.numpy()).tolist() == [2] * 10
    assert abs(float(d.train.images.mean())) < 1e-4 and abs(float(d.train.images.std()) - 1) < 1e-2  # normalised
    # the same split for the same seed, another for another seed; the pixels are the fixture's, scaled
    again = load_fashion_mnist_data(data_dir=root, validation_size=10)
    assert torch.equal(again.validation.images, d.validation.images)
    other = load_fashion_mnist_data(data_dir=root, validation_size=10, split_seed=1)
    assert not torch.equal(other.validation.labels, d.validation.labels) or \
        not torch.equal(other.validation.images, d.validation.images)
    # subsets: max_train (train only) and max_eval (validation and test, stratified)
    small = load_fashion_mnist_data(data_dir=root, validation_size=10, max_train=7, max_eval=10)
    assert len(small.train) == 7 and len(small.validation) == 10 and len(small.test) == 10
    assert np.bincount(small.test.labels.numpy()).tolist() == [1] * 10
    # through the registry, as --dataset fashion-mnist --data-dir DIR
    reg = load_vision_data("fashion-mnist", data_dir=root, max_train=5)
    assert reg.name == "fashion-mnist" and len(reg.train) == 5 and reg.num_outputs == 10 and reg.image_size == 28


@pytest.mark.parametrize("bad,message", [("magic", "magic number"), ("truncated", "payload")])
def test_fashion_reader_rejects_bad_idx(tmp_path, bad, message):
    from vision_kd.data.fashion_mnist import read_fashion_mnist

    root = write_fixture(tmp_path / "bad", bad=bad)
    with pytest.raises(DistillerError, match=message):
        read_fashion_mnist("train", root)


def test_fashion_missing_package_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    from vision_kd.data.fashion_mnist import DIR_ENV, load_fashion_mnist_data

    with pytest.raises(DistillerError) as err:
        load_fashion_mnist_data(data_dir=str(tmp_path / "nowhere"))
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install -y dataset-fashion-mnist" in msg and "nowhere" in msg
    # the environment variable is the second place looked at
    root = write_fixture(tmp_path / "env")
    monkeypatch.setenv(DIR_ENV, root)
    assert len(load_fashion_mnist_data(validation_size=10).test) == 20


def _real_data_or_skip():
    if os.path.isfile(os.path.join(REAL_DIR, "train-images-idx3-ubyte.gz")):
        return
    if os.environ.get("VISION_KD_REQUIRE_FASHION_MNIST"):
        pytest.fail(f"VISION_KD_REQUIRE_FASHION_MNIST is set but {REAL_DIR} is missing "
                    "(apt-get install -y dataset-fashion-mnist)")
    pytest.skip("Debian package dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")


def test_fashion_real_data_counts_and_published_mean():
    _real_data_or_skip()
    from vision_kd.data.fashion_mnist import load_fashion_mnist_data, read_fashion_mnist

    x, y = read_fashion_mnist("train")
    tx, ty = read_fashion_mnist("test")
    assert x.shape == (60000, 28, 28) and tx.shape == (10000, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(ty).tolist() == [1000] * 10
    assert round(float(x.mean(dtype=np.float64)), 2) == 72.94  # the published mean of the raw training pixels
    d = load_fashion_mnist_data(max_train=100, max_eval=200)
    assert len(d.train) == 100 and len(d.validation) == 200 and len(d.test) == 200


# ------------------------------------------------------------------------------------------------ RRD

def _unit(a):
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_rrd_loss_hand_computed_and_bank_permutation_invariant():
    rng = np.random.default_rng(0)
    s, t, q = _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(3, 4))), _unit(rng.normal(size=(6, 4)))
    ts, tt = 0.1, 0.02
    want = -(np_softmax(t @ q.T / tt) * np_log_softmax(s @ q.T / ts)).sum(1).mean()
    got = relational_kd_loss(t64(s), t64(t), t64(q), ts, tt)
    assert float(got) == pytest.approx(want, rel=1e-4)
    perm = rng.permutation(6)
    assert float(relational_kd_loss(t64(s), t64(t), t64(q[perm]), ts, tt)) == pytest.approx(float(got), rel=1e-5)
    # τ_t → 0: one-hot target on the teacher's nearest bank entry — InfoNCE with that entry as the positive
    k = np.argmax(t @ q.T, axis=1)
    infonce = -np_log_softmax(s @ q.T / ts)[np.arange(3), k].mean()
    assert float(relational_kd_loss(t64(s), t64(t), t64(q), ts, 1e-6)) == pytest.approx(infonce, rel=1e-4)
    # the teacher side carries no gradient
    st, tt_ = t64(s).requires_grad_(), t64(t).requires_grad_()
    relational_kd_loss(st, tt_, t64(q)).backward()
    assert st.grad is not None and tt_.grad is None


def test_rrd_queue_enqueues_before_similarities_and_wraps():
    from vision_kd.methods import MethodContext, get_method
    from vision_kd.models import build_model

    data = _tiny_classification_data()
    ctx = MethodContext(data=data, batches_per_epoch=1)
    torch.manual_seed(0)
    student, teacher = build_model("mlp_small", 1, 8, 3), build_model("mlp", 1, 8, 3)
    cls = get_method("rrd")
    m = cls(student, cls.resolve_params({"bank_size": 8, "feat_dim": 4}), ctx, teacher=teacher)
    x = torch.randn(5, 1, 8, 8)
    m.train()
    assert not m.teacher.training  # the frozen teacher stays in eval mode
    out = m({"pixel_values": x, "labels": torch.tensor([0, 1, 2, 0, 1])})
    f_t = torch.nn.functional.normalize(m.embed_t(teacher(x)["feature"]), dim=1)
    torch.testing.assert_close(m.queue[:5], f_t.detach())
    assert int(m.queue_ptr) == 5 and torch.isfinite(out["loss"])
    m({"pixel_values": x, "labels": torch.tensor([0, 1, 2, 0, 1])})  # 5 more: rows 5, 6, 7, 0, 1
    assert int(m.queue_ptr) == 2
    torch.testing.assert_close(m.queue[[5, 6, 7, 0, 1]], f_t.detach())
    out["loss"].backward()
    assert m.embed_t.weight.grad is None and student.head.weight.grad is not None  # as the reference: embed_t frozen
    assert all(p.grad is None for p in teacher.parameters())


# ------------------------------------------------------------------------------------------------ CKD

def test_ckd_groups_are_distinct_and_split_as_the_reference():
    perm = torch.tensor([3, 0, 4, 1, 2])
    pos, neg = comparative_groups(perm, 2)
    assert pos.shape == (5, 1) and neg.shape == (5, 1) and bool((pos != neg).all())
    pos, neg = comparative_groups(perm, 3)
    assert pos.shape == (5, 2) and neg.shape == (5, 1)  # neg = 3 // 2 = 1, pos = 2
    rows = torch.cat([pos, neg], 1)
    assert all(len(set(r.tolist())) == 3 for r in rows)
    with pytest.raises(DistillerError, match="at least"):
        comparative_groups(torch.tensor([0, 1]), 3)


def test_ckd_terms_hand_computed_swap_invariant_and_zero_for_identical_models():
    rng = np.random.default_rng(1)
    zs, zt = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    y = np.array([0, 2, 1, 2])
    pos, neg = np.array([[0, 1], [2, 3]]), np.array([[3], [0]])
    onehot = np.eye(3)[y]

    def d(z):
        return z[pos].mean(1) - z[neg].mean(1)

    want_cls = ((d(zs) - d(onehot)) ** 2).mean()
    want_rel = ((d(zs) - d(zt)) ** 2).mean()
    cls, rel = comparative_kd_terms(t64(zs), t64(zt), torch.tensor(y), torch.tensor(pos), torch.tensor(neg))
    assert float(cls) == pytest.approx(want_cls, rel=1e-5) and float(rel) == pytest.approx(want_rel, rel=1e-5)
    # swapping positive and negative groups flips every difference: unchanged (1 vs 1 groups)
    p1, n1 = torch.tensor([[0], [2]]), torch.tensor([[1], [3]])
    a = comparative_kd_terms(t64(zs), t64(zt), torch.tensor(y), p1, n1)
    b = comparative_kd_terms(t64(zs), t64(zt), torch.tensor(y), n1, p1)
    assert float(a[0]) == pytest.approx(float(b[0])) and float(a[1]) == pytest.approx(float(b[1]))
    # identical teacher and student: no relational signal
    assert float(comparative_kd_terms(t64(zs), t64(zs), torch.tensor(y), p1, n1)[1]) == 0.0
    # ckd_add / ckd_mixup with λ = 0.3
    lam = 0.3
    mixed = lambda z: lam * z[pos].mean(1) + (1 - lam) * z[neg].mean(1)  # noqa: E731
    got = comparative_kd_terms(t64(zs), t64(zt), torch.tensor(y), torch.tensor(pos), torch.tensor(neg), "ckd_mixup",
                               lam)[1]
    assert float(got) == pytest.approx(((mixed(zs) - mixed(zt)) ** 2).mean(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ Nasty teacher

def test_nasty_loss_hand_computed_and_omega_zero_is_ce():
    rng = np.random.default_rng(2)
    z, za = rng.normal(size=(3, 4)) * 2, rng.normal(size=(3, 4)) * 2
    y = np.array([1, 3, 0])
    tau, omega = 4.0, 0.04
    ce = -np_log_softmax(z)[np.arange(3), y].mean()
    p_n, lp_n, lp_a = np_softmax(z / tau), np_log_softmax(z / tau), np_log_softmax(za / tau)
    kl = (p_n * (lp_n - lp_a)).sum(1).mean() * tau ** 2  # KL(nasty ‖ adversary), as train_nasty.py
    loss, got_ce, adv = nasty_teacher_terms(t64(z), t64(za), torch.tensor(y), tau, omega)
    assert float(got_ce) == pytest.approx(ce, rel=1e-5) and float(adv) == pytest.approx(kl, rel=1e-4)
    assert float(loss) == pytest.approx(ce - omega * kl, rel=1e-4)
    assert float(nasty_teacher_terms(t64(z), t64(za), torch.tensor(y), tau, 0.0)[0]) == pytest.approx(ce, rel=1e-5)
    # the adversarial term pushes away: its gradient is opposite to that of the same KL minimised
    zt = t64(z).requires_grad_()
    (-nasty_teacher_terms(zt, t64(za), torch.tensor(y), tau, 1.0)[2]).backward()
    g_max = zt.grad.clone()
    zt.grad = None
    nasty_teacher_terms(zt, t64(za), torch.tensor(y), tau, 1.0)[2].backward()
    torch.testing.assert_close(g_max, -zt.grad)


def test_nasty_paper_settings_by_class_count():
    from vision_kd.methods.nasty_teacher import paper_setting

    assert paper_setting(10) == (4.0, 0.04) and paper_setting(100) == (20.0, 0.005)
    assert paper_setting(200) == (20.0, 0.01)


# ------------------------------------------------------------------------------------------------ RDD

def test_pixel_kd_and_difficulty_weights_hand_computed():
    rng = np.random.default_rng(3)
    s, t, a = (rng.normal(size=(2, 3, 2, 2)) for _ in range(3))
    tau = 2.0
    ps_ = np_log_softmax(s / tau, axis=1)
    pt = np_softmax(t / tau, axis=1)
    want = (pt * (np.log(pt) - ps_)).sum(1).mean() * tau ** 2  # batchmean over the 2·2·2 pixels
    assert float(pixel_kd_loss(t64(s), t64(t), tau)) == pytest.approx(want, rel=1e-5)
    lm, la = np_log_softmax(t, axis=1), np_log_softmax(a, axis=1)
    w = np.exp(-(np.exp(la) * (la - lm)).sum(1))
    torch.testing.assert_close(rdd_difficulty_weights(t64(t), t64(a)), t64(w))
    torch.testing.assert_close(rdd_difficulty_weights(t64(t), t64(t)), torch.ones(2, 2, 2))


def test_ohem_mask_hand_computed():
    # one image, 2 classes, 4 pixels; true-class probabilities 0.5, 0.9, 0.6, 0.8 (label 0 everywhere)
    p = np.array([0.5, 0.9, 0.6, 0.8])
    logits = t64(np.stack([np.log(p), np.log(1 - p)]).reshape(1, 2, 2, 2))
    labels = torch.zeros(1, 2, 2, dtype=torch.long)
    assert ohem_hard_mask(logits, labels, 0.7, 0).flatten().tolist() == [True, False, True, False]
    # min_kept = 3 raises the threshold to the 3rd smallest probability (0.8)
    assert ohem_hard_mask(logits, labels, 0.7, 3).flatten().tolist() == [True, False, True, True]
    # ignored pixels are never hard; fewer valid pixels than min_kept: every valid pixel is hard
    labels[0, 0, 0] = -1
    assert ohem_hard_mask(logits, labels, 0.7, 0).flatten().tolist() == [False, False, True, False]
    assert ohem_hard_mask(logits, labels, 0.7, 10).flatten().tolist() == [False, True, True, True]


def test_rdd_task_loss_identities():
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    y = rng.integers(0, 3, size=(2, 4, 4))
    ce = -np.take_along_axis(np_log_softmax(s, axis=1), y[:, None], 1)[:, 0]  # (2, 4, 4)
    S, T, Y = t64(s), t64(t), torch.tensor(y)
    # TFE with an auxiliary head equal to the main one: weights 1 -> the plain mean CE
    assert float(rdd_task_loss(S, T, Y, warmup=True, teacher_aux_logits=T)) == pytest.approx(ce.mean(), rel=1e-5)
    # TFE with another auxiliary head: mean over all pixels of CE · exp(−KL(aux ‖ main))
    a = rng.normal(size=(2, 3, 4, 4))
    lm, la = np_log_softmax(t, axis=1), np_log_softmax(a, axis=1)
    w = np.exp(-(np.exp(la) * (la - lm)).sum(1))
    got = rdd_task_loss(S, T, Y, warmup=True, teacher_aux_logits=t64(a))
    assert float(got) == pytest.approx((ce * w).mean(), rel=1e-5)
    # TSE: equal teacher/student difficulty -> XOR selects no pixel, the task term is 0; OR = AND = OHEM CE
    assert float(rdd_task_loss(S, S, Y, warmup=False, min_kept=0)) == 0.0
    p_true = np.take_along_axis(np_softmax(s, axis=1), y[:, None], 1)[:, 0]
    hard = p_true <= 0.7
    want = ce[hard].mean()
    for rule in ("or", "and", "ohem"):
        assert float(rdd_task_loss(S, S, Y, warmup=False, rule=rule, min_kept=0)) == pytest.approx(want, rel=1e-5)
    # XOR on different models: CE averaged over the pixels hard for exactly one of them
    hard_t = np.take_along_axis(np_softmax(t, axis=1), y[:, None], 1)[:, 0] <= 0.7
    sel = hard ^ hard_t
    assert float(rdd_task_loss(S, T, Y, warmup=False, min_kept=0)) == pytest.approx(ce[sel].mean(), rel=1e-5)
    # logits at a lower resolution are upsampled to the labels first
    small = rdd_task_loss(S[..., :2, :2], T[..., :2, :2], Y, warmup=True)
    assert torch.isfinite(small)


class TinyFCN(nn.Module):
    """A 2-layer FCN with a main and an auxiliary head at half resolution."""

    def __init__(self, classes=3, width=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1),
                                  nn.ReLU())
        self.head, self.aux = nn.Conv2d(width, classes, 1), nn.Conv2d(width, classes, 1)

    def forward(self, x):
        h = self.body(x)
        return {"logits": self.head(h), "aux_logits": self.aux(h)}


def test_rdd_module_trains_through_both_stages():
    from vision_kd.methods import MethodContext, get_method

    cls = get_method("rdd")
    assert cls.tasks == ("segmentation",)
    ctx = MethodContext(data=_tiny_classification_data(), batches_per_epoch=1)
    student, teacher = TinyFCN(seed=0), TinyFCN(width=12, seed=1)
    m = cls(student, cls.resolve_params({"warmup_steps": 2, "min_kept": 10}), ctx, teacher=teacher)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 0] > 1).long()
    y[0, 0, 0] = -1  # an ignored pixel
    m.train()
    stages = []
    for _ in range(4):
        out = m({"pixel_values": x, "labels": y})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        stages.append(float(out["rdd_stage"]))
        assert torch.isfinite(out["loss"].detach()) and float(out["pixel_kd"].detach()) >= 0
    assert stages == [0.0, 0.0, 1.0, 1.0] and int(m.step_count) == 4
    assert all(p.grad is None for p in teacher.parameters()) and not teacher.training
    assert m.predict({"pixel_values": x}).shape == (2, 3, 4, 4)


# ------------------------------------------------------------------------------------------------ role-wise DA

def test_rolewise_policy_parsing_and_application():
    from vision_kd.methods.rolewise_da import apply_op, apply_policy, parse_policy

    assert parse_policy("rotate:0.5:3, cutout:1:10") == [("rotate", 0.5, 3), ("cutout", 1.0, 10)]
    for bad in ("spin:0.5:3", "rotate:2:3", "rotate:0.5:11", "rotate:0.5"):
        with pytest.raises(DistillerError):
            parse_policy(bad)
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(apply_policy(x, []), x)
    torch.manual_seed(0)
    out = apply_policy(x, parse_policy("translate_x:1:5,rotate:1:5,cutout:1:5,contrast:1:5"))
    assert out.shape == x.shape and not torch.equal(out, x)
    img = torch.tensor([[[0.0, 1.0], [0.25, 0.5]]])
    torch.testing.assert_close(apply_op(img, "invert", 0), torch.tensor([[[1.0, 0.0], [0.75, 0.5]]]))
    torch.testing.assert_close(apply_op(img, "brightness", 5), img * 1.0)  # factor 0.1 + 1.8·0.5 = 1
    # level 0 of a geometric op is the identity (up to grid-sample rounding)
    torch.testing.assert_close(apply_op(x[0], "rotate", 0), x[0], atol=1e-5, rtol=0)
    # count distribution: 20 % of the images get no operation even with an always-on policy
    torch.manual_seed(1)
    many = torch.rand(400, 1, 4, 4)
    changed = (apply_policy(many, parse_policy("invert:1:0")) != many).flatten(1).any(1).float().mean()
    assert 0.7 < float(changed) < 0.9


# ------------------------------------------------------------------------------------------------ CLI

def _tiny_classification_data():
    from vision_kd.data import classification_data

    g = torch.Generator().manual_seed(0)
    return classification_data("tiny", torch.rand(30, 1, 8, 8, generator=g), np.arange(30) % 3, 3, 0, False, 0)


def read_metrics(path):
    with open(os.path.join(path, "metrics.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    from vision_kd.cli import main

    out = str(tmp_path_factory.mktemp("rel") / "teacher")
    assert main(["train", "--method", "ce", "--dataset", "digits", "--student", "cnn", "--max-steps", "40",
                 "--output-dir", out, *FAST]) == 0
    return out


@pytest.mark.parametrize("method,extra", [
    ("rrd", ["--set", "params.bank_size=256", "--set", "params.kd_weight=1.0"]),
    ("ckd", ["--set", "params.pos_and_neg=3"]),
    ("nasty_teacher", ["--student", "cnn"]),
    ("rolewise_da", []),
    ("rolewise_da", ["--set", "params.stage=teacher"]),
])
def test_related_methods_train_from_the_cli(method, extra, digits_teacher, tmp_path):
    from vision_kd.cli import main

    out = tmp_path / method
    assert main(["train", "--method", method, "--dataset", "digits", "--teacher", digits_teacher, "--max-steps", "4",
                 "--batch-size", "32", "--output-dir", str(out), *extra, *FAST]) == 0
    m = read_metrics(out)
    assert m["method"] == method and m["global_step"] == 4 and 0 <= m["eval_accuracy"] <= 1
    if method == "nasty_teacher":
        assert m["method_params"] == {"temperature": 4.0, "weight": 0.04}  # the CIFAR-10 setting for 10 classes
        assert m["teacher_cached"] is True
        # the nasty network is a teacher: a KD student reads it as --teacher
        kd = tmp_path / "kd_from_nasty"
        assert main(["train", "--method", "kd", "--dataset", "digits", "--teacher", str(out), "--max-steps", "2",
                     "--output-dir", str(kd), *FAST]) == 0
    if method == "ckd":
        assert m["teacher_cached"] is True  # reduced teacher inference: the teacher ran once per image
    if method == "rrd" or (method == "rolewise_da" and "params.stage=teacher" not in extra):
        assert m["teachers"] == {"teacher": digits_teacher} and "teacher_eval_accuracy" in m


def test_fashion_mnist_trains_from_the_cli_on_a_slice(tmp_path):
    _real_data_or_skip()
    from vision_kd.cli import main

    out = tmp_path / "fm"
    assert main(["train", "--method", "ce", "--dataset", "fashion-mnist", "--max-train-examples", "256",
                 "--max-steps", "3", "--output-dir", str(out), *FAST]) == 0
    m = read_metrics(out)
    assert m["train_examples"] == 256 and m["student_arch"] == "mlp_small" and 0 <= m["test_accuracy"] <= 1


def test_rolewise_default_teacher_is_its_own_teacher_stage(tmp_path):
    """Without --teacher, the teacher is trained once by ``rolewise_da`` itself (stage teacher) and cached."""
    from vision_kd.cli import main

    cache, out = str(tmp_path / "cache"), tmp_path / "rw"
    assert main(["train", "--method", "rolewise_da", "--dataset", "digits", "--teacher-cache", cache,
                 "--set", "teacher_epochs=1", "--teacher-arch", "mlp_small", "--max-steps", "2", "--output-dir",
                 str(out), *FAST]) == 0
    teacher = read_metrics(out)["teachers"]["teacher"]
    tm = read_metrics(teacher)
    assert tm["method"] == "rolewise_da" and tm["method_params"]["stage"] == "teacher"


def test_rdd_from_the_cli_says_it_needs_segmentation_data(tmp_path, capsys):
    from vision_kd.cli import main

    code = main(["train", "--method", "rdd", "--dataset", "digits", "--output-dir", str(tmp_path / "r"), *FAST])
    assert code != 0
    assert "does not apply to classification data" in capsys.readouterr().err
