"""Layer-mapping formulas (Distiller's cal_layer_mapping, 1-based attention layers) and teacher-layer init."""

import pytest

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.kd.mapping import feature_layer_range, layer_mapping
from distiller_nlp.models import teacher_init_layers


def test_skip_hidden_bert_base_to_tinybert4():
    assert layer_mapping("skip", 12, 4) == [(0, 0), (3, 1), (6, 2), (9, 3), (12, 4)]


def test_skip_hidden_6_to_3_and_non_divisible():
    assert layer_mapping("skip", 6, 3) == [(0, 0), (2, 1), (4, 2), (6, 3)]
    # 12 -> 5: ⌊i·2.4⌋ = 0, 2, 4, 7, 9, 12
    assert layer_mapping("skip", 12, 5) == [(0, 0), (2, 1), (4, 2), (7, 3), (9, 4), (12, 5)]
    # exact floor: the last student layer always meets the last teacher layer (float int(11 * 15/11) gives 14)
    assert layer_mapping("skip", 15, 11)[-1] == (15, 11)
    assert layer_mapping("skip", 4, 4) == [(i, i) for i in range(5)]


def test_skip_attention():
    # Distiller 0-based: (2,0),(5,1),(8,2),(11,3) -> 1-based layers: (3,1),(6,2),(9,3),(12,4)
    assert layer_mapping("skip", 12, 4, feature="attention_scores") == [(3, 1), (6, 2), (9, 3), (12, 4)]
    assert layer_mapping("skip", 6, 3, feature="attention") == [(2, 1), (4, 2), (6, 3)]
    # non-divisible: 0-based ⌊(i+1)·2.4 − 1⌋ = 1, 3, 6, 8, 11 -> +1
    assert layer_mapping("skip", 12, 5, feature="attention_probs") == [(2, 1), (4, 2), (7, 3), (9, 4), (12, 5)]


def test_last_hidden_and_attention():
    # student embeddings (0) meet teacher layer L_T − L_S = 8, as in Distiller
    assert layer_mapping("last", 12, 4) == [(8, 0), (9, 1), (10, 2), (11, 3), (12, 4)]
    assert layer_mapping("last", 6, 3) == [(3, 0), (4, 1), (5, 2), (6, 3)]
    # Distiller 0-based attention (8,0),(9,1),(10,2),(11,3) -> 1-based (9,1),(10,2),(11,3),(12,4)
    assert layer_mapping("last", 12, 4, feature="attention_scores") == [(9, 1), (10, 2), (11, 3), (12, 4)]
    assert layer_mapping("LAST", 3, 3) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_explicit_pairs_validated():
    assert layer_mapping("explicit", 12, 4, pairs=[(4, 1), [8, 2]]) == [(4, 1), (8, 2)]
    assert layer_mapping("explicit", 12, 4, pairs=[{"layer_T": 12, "layer_S": 4}]) == [(12, 4)]
    assert layer_mapping("explicit", 2, 6, pairs=[(2, 6), (0, 0)]) == [(2, 6), (0, 0)]  # any depth ratio
    with pytest.raises(DistillerError, match=r"teacher layer 13 out of range .*valid 0\.\.12"):
        layer_mapping("explicit", 12, 4, pairs=[(13, 1)])
    with pytest.raises(DistillerError, match=r"student layer -1 out of range .*valid 0\.\.4"):
        layer_mapping("explicit", 12, 4, pairs=[(3, -1)])
    with pytest.raises(DistillerError, match=r"student layer 0 out of range for feature 'attention_scores' .*1\.\.4"):
        layer_mapping("explicit", 12, 4, feature="attention_scores", pairs=[(3, 0)])
    with pytest.raises(DistillerError, match="duplicate"):
        layer_mapping("explicit", 12, 4, pairs=[(3, 1), (3, 1)])
    with pytest.raises(DistillerError, match="needs pairs"):
        layer_mapping("explicit", 12, 4)
    with pytest.raises(DistillerError, match="empty"):
        layer_mapping("explicit", 12, 4, pairs=[])
    with pytest.raises(DistillerError, match="not a"):
        layer_mapping("explicit", 12, 4, pairs=[(1, 2, 3)])
    with pytest.raises(DistillerError, match="not an integer"):
        layer_mapping("explicit", 12, 4, pairs=[("3", 1)])
    with pytest.raises(DistillerError, match="layer_S"):
        layer_mapping("explicit", 12, 4, pairs=[{"layer_T": 3}])


def test_errors():
    with pytest.raises(DistillerError, match="'emd'"):
        layer_mapping("emd", 12, 4)
    with pytest.raises(DistillerError, match="'logits'"):
        layer_mapping("skip", 12, 4, feature="logits")
    with pytest.raises(DistillerError, match="only used by strategy 'explicit'"):
        layer_mapping("skip", 12, 4, pairs=[(3, 1)])
    with pytest.raises(DistillerError, match=r"student_layers \(6\) <= teacher_layers \(4\)"):
        layer_mapping("last", 4, 6)
    with pytest.raises(DistillerError, match="teacher_layers"):
        layer_mapping("skip", 0, 4)
    with pytest.raises(DistillerError, match="student_layers"):
        layer_mapping("skip", 12, True)


def test_feature_layer_range():
    assert feature_layer_range("hidden", 6) == (0, 6)
    assert feature_layer_range("attention_scores", 6) == (1, 6)


def test_teacher_init_layers():
    assert teacher_init_layers(6, 3) == [2, 4, 6]
    assert teacher_init_layers(12, 4) == [3, 6, 9, 12]
    assert teacher_init_layers(12, 5) == [2, 4, 7, 9, 12]
    assert teacher_init_layers(6, 6) == [1, 2, 3, 4, 5, 6]
    assert teacher_init_layers(6, 1) == [6]
    # consistent with the skip mapping of the encoder layers
    for t, s in [(12, 4), (12, 5), (6, 3), (24, 7)]:
        assert teacher_init_layers(t, s) == [tl for tl, sl in layer_mapping("skip", t, s) if sl > 0]
    with pytest.raises(DistillerError, match="must not exceed"):
        teacher_init_layers(3, 4)
    with pytest.raises(DistillerError, match="student_layers"):
        teacher_init_layers(6, 0)


# ------------------------------------------------------------------------------------------------ EMD


def test_emd_flow_is_a_transport_plan_with_the_known_optimum():
    import numpy as np

    from distiller_nlp.kd.mapping import emd_flow

    # two student layers (1/2 each) to three teacher layers (1/3 each), cost |2i - j| on positions 0..2
    ws, wt = np.array([0.5, 0.5]), np.full(3, 1 / 3)
    cost = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    f = emd_flow(ws, wt, cost)
    np.testing.assert_allclose(f.sum(1), ws, atol=1e-9)
    np.testing.assert_allclose(f.sum(0), wt, atol=1e-9)
    # optimum by hand: each student layer sends 1/3 to its zero-cost teacher layer and 1/6 to the middle one
    np.testing.assert_allclose(f, [[1 / 3, 1 / 6, 0], [0, 1 / 6, 1 / 3]], atol=1e-9)
    assert float((f * cost).sum()) == pytest.approx(1 / 3)
    with pytest.raises(DistillerError, match="non-finite"):
        emd_flow(ws, wt, cost * np.nan)


def test_emd_weight_update_is_a_distribution_favouring_cheap_layers():
    import numpy as np

    from distiller_nlp.kd.mapping import emd_flow, emd_update_weights

    ws, wt = np.full(2, 0.5), np.full(4, 0.25)
    cost = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]])
    f = emd_flow(ws, wt, cost)
    new_s, new_t = emd_update_weights(ws, wt, f, cost, temperature=1.0)
    assert new_s.sum() == pytest.approx(1.0) and new_t.sum() == pytest.approx(1.0)
    assert (new_s >= 0).all() and (new_t >= 0).all()
    assert new_s[0] > new_s[1]  # student layer 0 transfers at a tenth of the cost


def test_distill_module_with_emd_mapping():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from distiller_nlp.config import KDConfig, MappingConfig
    from distiller_nlp.kd.module import DistillModule
    from distiller_nlp.kd.teachers import TeacherRunner
    from distiller_nlp.kd.matches import resolve_matches

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3,
                                                       num_attention_heads=4, intermediate_size=64, num_labels=2))
    student = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                       num_attention_heads=2, intermediate_size=32, num_labels=2))
    teacher.eval()
    kd = KDConfig(pred_loss="kd", mapping=MappingConfig(strategy="emd", loss="hidden_mse",
                                                        params={"emd_temperature": 0.5}))
    matches = resolve_matches(kd, teacher.config, student.config)
    assert sum(m.emd for m in matches) == 2 * 3 and [(m.layer_T, m.layer_S) for m in matches if not m.emd] == [(0, 0)]
    module = DistillModule(student, kd, matches, teacher.config)
    assert module.teacher_hidden_layers == [0, 1, 2, 3] and len(module.projections) == 3
    batch = {"input_ids": torch.randint(0, 50, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    with torch.no_grad():
        batch = TeacherRunner(teacher, module)(batch)
    out = module(batch)
    assert torch.isfinite(out["loss"]) and out["emd"] > 0
    out["loss"].backward()
    assert student.bert.encoder.layer[1].output.dense.weight.grad.abs().sum() > 0
    w_s, w_t = module.emd_weights_s, module.emd_weights_t
    assert float(w_s.sum()) == pytest.approx(1.0) and float(w_t.sum()) == pytest.approx(1.0)
    assert not torch.allclose(w_t, torch.full((3,), 1 / 3, dtype=torch.float64))  # updated after a training step
    assert "emd_weights_s" in module.state_dict()  # checkpointed with the run
    module.eval()
    before = w_t.clone()
    module(batch)
    assert torch.equal(before, module.emd_weights_t)  # evaluation never changes the weights
