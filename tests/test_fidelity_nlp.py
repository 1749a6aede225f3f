"""Paper fidelity of the NLP pipeline (issue #17, items 1, 2, 4, 6): BERT-EMD's layer-weight update, one MI-α critic
per EMD layer pair, attention-score matches across head counts, NKD/DKD with MixUp."""

import io

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from distiller_nlp.config import KDConfig, MappingConfig, MatchConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import get_loss
from distiller_nlp.kd.mapping import emd_flow, emd_update_weights
from distiller_nlp.kd.matches import resolve_matches
from distiller_nlp.kd.mixup import mixup_inputs
from distiller_nlp.kd.module import DistillModule
from distiller_nlp.kd.teachers import TeacherRunner

# ------------------------------------------------------------------------------------ 1. EMD layer weights

# 4 student x 12 teacher layers: student i's cheap block is teacher layers 3i..3i+2, every other pair costs 3.
BLOCKS = np.array([[1.0, 1.1, 1.2], [1.4, 1.5, 1.3], [2.0, 1.9, 2.1], [1.8, 1.7, 1.9]])
COST = np.array([
    [1.0, 1.1, 1.2, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
    [3.0, 3.0, 3.0, 1.4, 1.5, 1.3, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0],
    [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 1.9, 2.1, 3.0, 3.0, 3.0],
    [3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 1.8, 1.7, 1.9],
])
# The optimal plan between uniform weights (1/4, 1/12) sends 1/12 along each cheap pair (dual certificate: v_j = the
# cheap cost of column j, u_i = 0, feasible since every other pair costs 3 > 2.1).
BLOCK_PLAN = np.kron(np.eye(4), np.full((1, 3), 1 / 12))
# BERT-EMD's rule (T = 1) on this plan, computed by hand below and pinned
PINNED_S = [0.677097, 0.198451, 0.051446, 0.073006]


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _by_hand(scale: float, temperature: float = 1.0):
    """BERT-EMD's update from the block plan, written out: c̄ = transported cost / weight, w̄ = Σc̄ / c̄,
    w = softmax(w̄ / T)."""
    cost = COST * scale
    ws, wt = np.full(4, 1 / 4), np.full(12, 1 / 12)
    c_s = (BLOCK_PLAN * cost).sum(1) / ws  # = the mean of each student layer's block: 1.1, 1.4, 2.0, 1.8 (× scale)
    c_t = (BLOCK_PLAN * cost).sum(0) / wt  # = each teacher layer's cheap cost
    np.testing.assert_allclose(c_s, BLOCKS.mean(1) * scale)
    np.testing.assert_allclose(c_t, BLOCKS.reshape(-1) * scale)
    return _softmax(c_s.sum() / c_s / temperature), _softmax(c_t.sum() / c_t / temperature)


def test_bert_emd_weight_update_matches_the_hand_computation_and_ignores_the_loss_scale():
    ws, wt = np.full(4, 1 / 4), np.full(12, 1 / 12)
    results = {}
    for scale in (1.0, 10.0):
        flow = emd_flow(ws, wt, COST * scale)
        np.testing.assert_allclose(flow, BLOCK_PLAN, atol=1e-9)
        hand_s, hand_t = _by_hand(scale)
        new_s, new_t = emd_update_weights(ws, wt, flow, COST * scale, temperature=1.0)
        np.testing.assert_allclose(new_s, hand_s, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(new_t, hand_t, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(new_s, PINNED_S, atol=1e-6)
        results[scale] = (new_s, new_t)
    np.testing.assert_allclose(results[1.0][0], results[10.0][0], rtol=1e-9)  # ×1 == ×10
    np.testing.assert_allclose(results[1.0][1], results[10.0][1], rtol=1e-9)
    # the temperature softens the same scores
    hand_s, _ = _by_hand(10.0, temperature=2.0)
    np.testing.assert_allclose(emd_update_weights(ws, wt, BLOCK_PLAN, COST * 10, temperature=2.0)[0], hand_s,
                               rtol=1e-6)
    # BERT-EMD's released code (no softmax): w ∝ Σc̄ / c̄
    c_s = BLOCKS.mean(1)
    np.testing.assert_allclose(emd_update_weights(ws, wt, BLOCK_PLAN, COST * 10, rule="bert_emd_linear")[0],
                               (1 / c_s) / (1 / c_s).sum(), rtol=1e-9)
    # Distiller: uniform, whatever the costs
    new_s, new_t = emd_update_weights(ws, wt, BLOCK_PLAN, COST, rule="uniform")
    assert np.allclose(new_s, 1 / 4) and np.allclose(new_t, 1 / 12)
    with pytest.raises(DistillerError, match="non-negative"):
        emd_update_weights(ws, wt, BLOCK_PLAN, COST - 2.0)
    with pytest.raises(DistillerError, match="bert_emd, bert_emd_linear, uniform"):
        emd_update_weights(ws, wt, BLOCK_PLAN, COST, rule="softmax")


def _tiny(layers: int, hidden: int, heads: int, seed: int = 0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=2 * hidden, num_labels=2, max_position_embeddings=16,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))


def _batch(n: int = 4, length: int = 7, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 50, (n, length), generator=g),
            "attention_mask": torch.ones(n, length, dtype=torch.long), "labels": torch.tensor([0, 1] * (n // 2))}


def test_emd_uniform_weights_never_change_and_bad_options_are_refused():
    teacher, student = _tiny(3, 32, 4).eval(), _tiny(2, 16, 2, seed=1)
    kd = KDConfig(pred_loss="kd", mapping=MappingConfig(strategy="emd", loss="hidden_mse",
                                                        params={"emd_weights": "uniform"}))
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    module.train()
    runner = TeacherRunner(teacher, module)
    for step in range(3):
        with torch.no_grad():
            batch = runner(_batch(seed=step))
        module(batch)["loss"].backward()
    assert torch.equal(module.emd_weights_s, torch.full((2,), 1 / 2, dtype=torch.float64))
    assert torch.equal(module.emd_weights_t, torch.full((3,), 1 / 3, dtype=torch.float64))
    for params, match in (({"emd_weights": "softmax"}, "must be one of bert_emd, bert_emd_linear, uniform"),
                          ({"emd_temperature": 0}, "positive")):
        bad = KDConfig(mapping=MappingConfig(strategy="emd", loss="hidden_mse", params=params))
        with pytest.raises(DistillerError, match=match):
            resolve_matches(bad, teacher.config, student.config)
    mi = KDConfig(mapping=MappingConfig(strategy="emd", loss="mi_alpha", params={"emd_weights": "bert_emd"}))
    with pytest.raises(DistillerError, match="negative pair costs"):
        resolve_matches(mi, teacher.config, student.config)


# ------------------------------------------------------------------------------ 2. MI-α critics with EMD


def _mi_module(strategy: str, seed: int):
    teacher, student = _tiny(3, 32, 4), _tiny(2, 16, 2, seed=seed)
    kd = KDConfig(pred_loss="kd", mapping=MappingConfig(strategy=strategy, loss="mi_alpha", params={"alpha": 0.5}))
    torch.manual_seed(seed)
    return teacher.eval(), DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config),
                                         teacher.config)


def test_emd_with_mi_alpha_has_one_critic_per_layer_pair_and_they_resume():
    teacher, module = _mi_module("emd", seed=1)
    pairs = {f"mapping_S{s}_T{t}" for s in (1, 2) for t in (1, 2, 3)}
    assert set(module.critics) == pairs | {"mapping_S0_T0"}  # 2 x 3 pairs + the embeddings
    assert module.emd_rule == "uniform"  # MI costs are −MI bounds: Distiller's fixed weights by default
    keys = module.state_dict().keys()
    for name in pairs | {"mapping_S0_T0"}:
        assert any(k.startswith(f"critics.{name}.baseline.") for k in keys)
        assert any(k.startswith(f"critics.{name}.student_tower.") for k in keys)
    module.train()
    with torch.no_grad():
        batch = TeacherRunner(teacher, module)(_batch())
    out = module(batch)
    assert torch.isfinite(out["loss"]) and "emd" in out
    out["loss"].backward()

    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    buf.seek(0)
    _, fresh = _mi_module("emd", seed=2)
    critic_keys = [k for k in keys if k.startswith("critics.")]
    assert not all(torch.equal(fresh.state_dict()[k], module.state_dict()[k]) for k in critic_keys)
    fresh.load_state_dict(torch.load(buf))
    for k in critic_keys:
        assert torch.equal(fresh.state_dict()[k], module.state_dict()[k]), k
    fresh.eval()
    module.eval()
    torch.testing.assert_close(fresh(batch)["loss"], module(batch)["loss"])

    _, skip = _mi_module("skip", seed=1)
    assert list(skip.critics) == ["mapping"]  # skip/last: one critic shared by every layer (Distiller)


# ------------------------------------------------------------------ 4. attention scores across head counts


def test_attention_score_with_fewer_student_heads_needs_explicit_relation_heads():
    teacher, student = _tiny(2, 32, 4).eval(), _tiny(1, 16, 2, seed=1)
    plain = MatchConfig(layer_T=2, layer_S=1, feature="attention_scores", loss="attention_score")
    with pytest.raises(DistillerError) as e:
        resolve_matches(KDConfig(intermediate=[plain]), teacher.config, student.config)
    msg = str(e.value)
    assert "kd.intermediate[0]" in msg and "teacher has 4 heads" in msg and "student 2" in msg
    assert "num_heads" in msg
    with pytest.raises(DistillerError, match="kd.mapping.*teacher has 4 heads"):
        resolve_matches(KDConfig(mapping=MappingConfig(strategy="skip", feature="attention_scores",
                                                       loss="attention_score")), teacher.config, student.config)
    with pytest.raises(DistillerError, match="num_heads"):
        resolve_matches(KDConfig(intermediate=[MatchConfig(layer_T=2, layer_S=1, feature="attention_scores",
                                                           loss="attention_score", params={"num_heads": 0})]),
                        teacher.config, student.config)
    same = _tiny(1, 16, 4, seed=1)  # equal head counts need nothing
    assert resolve_matches(KDConfig(intermediate=[plain]), teacher.config, same.config)

    explicit = MatchConfig(layer_T=2, layer_S=1, feature="attention_scores", loss="attention_score",
                           params={"num_heads": 2, "kind": "kl"})
    kd = KDConfig(pred_loss="kd", intermediate=[explicit])
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    with torch.no_grad():
        batch = TeacherRunner(teacher, module)(_batch())
    out = module(batch)
    from distiller_nlp.core.capture import FeatureCapture

    with FeatureCapture(student, qkv_layers=[1]) as cap:
        student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    qt = batch["teacher_qkv"][2]
    expected = get_loss("attention_score")(cap.qkv[1]["q"], cap.qkv[1]["k"], qt["q"], qt["k"],
                                           batch["attention_mask"], num_heads=2, kind="kl")
    torch.testing.assert_close(out["attention_score/S1-T2"], expected)
    out["loss"].backward()


# ----------------------------------------------------------------------------------- 6. NKD / DKD with MixUp


@pytest.mark.parametrize("name", ["nkd", "dkd"])
def test_label_taking_prediction_losses_with_mixup(name):
    teacher, student = _tiny(2, 32, 4).eval(), _tiny(1, 16, 2, seed=1)
    kd = KDConfig(pred_loss=name, temperature=2.0, mixup=True, hard_label_weight=0.5)
    module = DistillModule(student, kd, [], teacher.config)
    module.train()
    torch.manual_seed(3)
    with torch.no_grad():
        batch = TeacherRunner(teacher, module)(_batch(n=6))
    assert batch["teacher_logits"].shape == (12, 2) and batch["labels"].shape == (6,)
    out = module(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and student.classifier.weight.grad.abs().sum() > 0

    # ½·[ℓ(orig, y) + λ·ℓ(mixed, y) + (1−λ)·ℓ(mixed, y_π)], the teacher's logits on the mixed inputs for mixed rows
    with torch.no_grad():
        logits = student(**mixup_inputs(student, batch)).logits
    t, y, lam, perm, fn = batch["teacher_logits"], batch["labels"], batch["mix_lambda"], batch["mix_perm"], \
        get_loss(name)
    expected = 0.5 * (fn(logits[:6], t[:6], y, temperature=2.0)
                      + lam * fn(logits[6:], t[6:], y, temperature=2.0)
                      + (1 - lam) * fn(logits[6:], t[6:], y[perm], temperature=2.0))
    torch.testing.assert_close(out[name].detach(), expected)
