"""Paper defaults of the NLP pipeline (issue #17, item 5): NKD/DKD train with the supervised CE, DKD at τ = 4 with
mdistiller's warm-up, MI-α at α = 0.9, a projection only when the widths differ, Distiller's HPO grid."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from distiller_nlp.config import DistillConfig, KDConfig, MappingConfig, MatchConfig, resolve_kd_defaults
from distiller_nlp.core.config import from_dict, load_config
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.losses import get_loss
from distiller_nlp.kd.matches import resolve_matches
from distiller_nlp.kd.module import DistillModule
from distiller_nlp.kd.recipe import expand_stages


def _tiny(layers, hidden, heads, seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers,
                                                    num_attention_heads=heads, intermediate_size=2 * hidden,
                                                    num_labels=2))


@pytest.mark.parametrize("loss, expected", [
    ("dkd", {"temperature": 4.0, "hard_label_weight": 1.0, "kd_warmup": 1 / 12}),  # mdistiller CIFAR DKD
    ("nkd", {"temperature": 1.0, "hard_label_weight": 1.0, "kd_warmup": 0.0}),  # NKD paper: CE + NKD, τ 1
    ("kd", {"temperature": 1.0, "hard_label_weight": 0.0, "kd_warmup": 0.0}),  # the fallbacks
    ("none", {"temperature": 1.0, "hard_label_weight": 0.0, "kd_warmup": 0.0}),
])
def test_unset_kd_fields_take_the_prediction_losses_paper_values(loss, expected):
    kd = KDConfig(pred_loss=loss)
    assert (kd.temperature, kd.hard_label_weight, kd.kd_warmup) == (None, None, None)  # unset stays visible
    got = resolve_kd_defaults(kd)
    assert {k: getattr(got, k) for k in expected} == pytest.approx(expected)
    assert kd.temperature is None  # the input is not modified
    assert resolve_kd_defaults(got) is got  # idempotent


def test_values_a_recipe_sets_are_kept():
    kd = resolve_kd_defaults(KDConfig(pred_loss="dkd", temperature=1.0, hard_label_weight=0.0, kd_warmup=0.0))
    assert (kd.temperature, kd.hard_label_weight, kd.kd_warmup) == (1.0, 0.0, 0.0)  # the old behaviour, by recipe
    flags = load_config(DistillConfig, overrides={"kd.pred_loss": "dkd", "kd.temperature": 2.0})
    kd = resolve_kd_defaults(flags.kd)
    assert (kd.temperature, kd.hard_label_weight) == (2.0, 1.0)
    with pytest.raises(DistillerError, match="kd.kd_warmup"):
        load_config(DistillConfig, overrides={"kd.kd_warmup": 1.5})


def test_a_stage_that_switches_to_dkd_gets_dkds_defaults_not_the_first_stages():
    cfg = from_dict(DistillConfig, {"teacher": "t", "kd": {"pred_loss": "kd"},
                                    "stages": [{"name": "a"}, {"name": "b", "kd": {"pred_loss": "dkd"}}]})
    (_, a), (_, b) = expand_stages(cfg)
    assert resolve_kd_defaults(a.kd).temperature == 1.0 and resolve_kd_defaults(a.kd).hard_label_weight == 0.0
    assert resolve_kd_defaults(b.kd).temperature == 4.0 and resolve_kd_defaults(b.kd).hard_label_weight == 1.0


def test_dkd_warm_up_ramps_the_kd_weight_linearly_over_a_twelfth_of_training():
    teacher, student = _tiny(2, 16, 2), _tiny(1, 16, 2, seed=1)
    kd = KDConfig(pred_loss="dkd", kd_weight=2.0)
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    assert module.kd.temperature == 4.0 and module.kd.hard_label_weight == 1.0
    # hand-computed: 2.0 * min(p / (1/12), 1)
    for progress, weight in ((0.0, 0.0), (1 / 48, 0.5), (1 / 24, 1.0), (1 / 12, 2.0), (0.5, 2.0), (1.0, 2.0)):
        module.set_progress(progress)
        assert module.current("kd_weight") == pytest.approx(weight)
        assert module.current("hard_label_weight") == 1.0  # the CE is never warmed up
    assert module.needs_teacher_logits  # a zero weight at step 0 still needs the teacher's logits
    # the warm-up multiplies a schedule of kd_weight: linear 2 -> 0, at p = 1/24 = 2 * (1 - 1/24) * 0.5
    kd = from_dict(KDConfig, {"pred_loss": "dkd", "kd_weight": 2.0,
                              "schedules": {"kd_weight": {"kind": "linear", "final": 0.0}}})
    module = DistillModule(student, kd, [], teacher.config)
    module.set_progress(1 / 24)
    assert module.current("kd_weight") == pytest.approx(2.0 * (1 - 1 / 24) * 0.5)


def test_mi_alpha_defaults_to_distillers_0_9():
    assert get_loss("mi_alpha")(8, 8).alpha == 0.9


def test_a_projection_is_added_only_when_the_widths_differ():
    teacher = _tiny(2, 16, 2)
    for hidden, expected in ((16, 0), (8, 3)):  # equal widths: none (Distiller); narrower student: one per match
        student = _tiny(2, hidden, 2, seed=1)
        kd = KDConfig(pred_loss="kd", mapping=MappingConfig(strategy="skip", loss="cosine"))
        module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
        assert len(module.projections) == expected, hidden
    # the old behaviour on request
    student = _tiny(2, 16, 2, seed=1)
    kd = KDConfig(pred_loss="kd", intermediate=[MatchConfig(layer_T=2, layer_S=1, loss="pkd", proj="linear")])
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    assert len(module.projections) == 1


def test_the_packaged_hpo_space_is_distillers_grid():
    from distiller_nlp.autodistiller.pipeline_space import load_space

    space = load_space()
    assert space.params["inter_loss"].choices == ["none", "hidden_mse", "hidden_ce", "cosine", "pkd", "mi_alpha"]
    assert space.params["mi_alpha"].choices == [0.0, 0.1, 0.5, 0.7, 0.9, 1.0]
