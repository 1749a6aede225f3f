"""SuperLM slicing, extract equivalence, FLOPs analytic = measured, relation objective, sandwich sampling."""

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel

import autodistil  # noqa: F401  (registers autodistil_bert)
from autodistil.objective import TeacherFeatures, subnet_relation_loss
from autodistil.subspaces import Arch, SubSpace
from autodistil.superlm import SuperLM, load_superlm, save_superlm
from autodistil.train import SuperLMTrainer, sample_subnets
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.flops import count_flops_with_torch

CFG = dict(vocab_size=120, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
           max_position_embeddings=40)
SPACE = SubSpace("tiny-test", (1, 2, 3), (2, 3, 4), (32, 48, 64), (1.0, 2.0), 16)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: the ops here are tiny, and several threads would mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return BertModel(BertConfig(**CFG)).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 120, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 10:] = 0
    return ids, mask


def test_full_subnet_equals_teacher(teacher, inputs):
    slm = SuperLM.from_teacher(teacher).eval()
    ids, mask = inputs
    with torch.no_grad():
        diff = (slm(ids, mask) - teacher(input_ids=ids, attention_mask=mask).last_hidden_state).abs().max()
    assert diff < 1e-5


@pytest.mark.parametrize("arch", [Arch(2, 48, 3, 2.0, 16), Arch(3, 48, 2, 1.0, 16), Arch(1, 32, 4, 2.0, 16),
                                  Arch(4, 64, 4, 2.0, 16)])
@pytest.mark.parametrize("selection", ["uniform", "first"])
def test_extract_equals_active_subnet(teacher, inputs, tmp_path, arch, selection):
    slm = SuperLM.from_teacher(teacher, selection).eval()
    slm.set_active(arch)
    ids, mask = inputs
    student = slm.extract()
    assert type(student).__name__ == ("BertModel" if arch.is_plain_bert else "AutoDistilBertModel")
    assert student.config.num_hidden_layers == arch.layers
    with torch.no_grad():
        ref = slm(ids, mask)
        out = student(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ref - out).abs().max() < 1e-5
    student.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert (loaded(input_ids=ids, attention_mask=mask).last_hidden_state - ref).abs().max() < 1e-5


def test_layer_selection_uses_the_mapped_layers(teacher):
    slm = SuperLM.from_teacher(teacher, "uniform").set_active(Arch(2, 64, 4, 2.0, 16))
    assert slm.active_layers == [0, 2]
    state = slm.active_state_dict()
    assert torch.equal(state["encoder.layer.1.attention.self.query.weight"],
                       teacher.encoder.layer[2].attention.self.query.weight)
    slm_first = SuperLM.from_teacher(teacher, "first").set_active(Arch(2, 48, 2, 2.0, 16))
    assert slm_first.active_layers == [0, 1]
    w = slm_first.active_state_dict()["encoder.layer.1.attention.self.key.weight"]
    assert torch.equal(w, teacher.encoder.layer[1].attention.self.key.weight[:32, :48])


def test_check_fits(teacher):
    slm = SuperLM.from_teacher(teacher)
    with pytest.raises(DistillerError, match="heads 5 > 4"):
        slm.set_active(Arch(2, 64, 5, 1.0, 16))
    with pytest.raises(DistillerError, match="head_dim 8"):
        slm.set_active(Arch(2, 64, 2, 1.0, 8))
    with pytest.raises(DistillerError, match="FFN width"):
        slm.set_active(Arch(2, 64, 2, 3.0, 16))


def measure_flops(model: torch.nn.Module, seq_len: int) -> int:
    """Measured encoder FLOPs of ``model`` (a BERT-like model, or a SuperLM with its active subnet) over one
    ``seq_len``-token sequence: :func:`count_flops_with_torch` of one eval-mode forward (CPU SDPA counted), less the
    pooler's dense layer (2·H²) that a ``BertModel``'s forward also runs."""
    ids = torch.ones((1, seq_len), dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        flops = count_flops_with_torch(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    finally:
        model.train(was_training)
    if isinstance(model, BertModel) and model.pooler is not None:
        flops -= 2 * model.config.hidden_size ** 2
    return flops


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_flops_analytic_equals_measured(impl):
    cfg = BertConfig(**CFG)
    cfg._attn_implementation = impl
    torch.manual_seed(0)
    slm = SuperLM.from_teacher(BertModel(cfg))
    for arch in (Arch(2, 48, 2, 1.0, 16), Arch(3, 64, 4, 2.0, 16)):
        slm.set_active(arch)
        student = slm.extract()
        student.config._attn_implementation = impl
        expected = arch.flops(32)
        for measured in (measure_flops(student, 32), measure_flops(slm, 32)):
            assert abs(measured - expected) <= 0.005 * expected


def test_relation_loss_zero_for_teacher_and_positive_for_subnet(teacher, inputs):
    ids, mask = inputs
    batch = {"input_ids": ids, "attention_mask": mask}
    feats = TeacherFeatures(teacher)
    assert feats.layer == 4
    with torch.no_grad():
        tq = feats(batch)
    slm = SuperLM.from_teacher(teacher).eval().requires_grad_(False)
    for kind in ("kl", "mse"):
        slm.set_active(slm.max_arch())
        assert float(subnet_relation_loss(slm, batch, tq, 4, kind)) < 1e-6
        slm.set_active(Arch(1, 32, 2, 1.0, 16))
        assert float(subnet_relation_loss(slm, batch, tq, 4, kind)) > 1e-4


def test_sandwich_picks_largest_and_smallest(teacher):
    archs = sorted(SPACE, key=lambda a: (a.params(), a.flops(), a))
    for step in range(5):
        chosen = sample_subnets(archs, "sandwich", 2, seed=3, step=step)
        assert chosen[0] == Arch(3, 64, 4, 2.0, 16) and chosen[1] == Arch(1, 32, 2, 1.0, 16)
        assert len(set(chosen)) == 4
        assert chosen == sample_subnets(archs, "sandwich", 2, seed=3, step=step)  # a function of (seed, step)
    assert sample_subnets(archs, "uniform", 2, 3, 0)[0] in SPACE
    module = SuperLMTrainer(SuperLM.from_teacher(teacher), SPACE, relation_heads=4)
    assert module.archs[-1] == SPACE.largest() and module.archs[0] == SPACE.smallest()
    assert "step" in module.state_dict()


def test_trainer_forward_and_backward(teacher, inputs):
    ids, mask = inputs
    module = SuperLMTrainer(SuperLM.from_teacher(teacher), SPACE, relation_heads=4).train()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.zeros(3, dtype=torch.long)}
    with torch.no_grad():
        batch["teacher_qkv"] = TeacherFeatures(teacher)(batch)
    out = module(batch)
    out["loss"].backward()
    assert int(module.step) == 1 and set(out) == {"loss", "rel_largest", "rel_smallest"}
    assert module.superlm.encoder.layer[0].attention.self.query.weight.grad is not None


def test_save_and_load_superlm(teacher, tmp_path, inputs):
    slm = SuperLM.from_teacher(teacher, "first")
    save_superlm(slm, str(tmp_path), SPACE, extra={"teacher": "x"})
    loaded, space, meta = load_superlm(str(tmp_path))
    assert space == SPACE and meta["teacher"] == "x" and loaded.layer_selection == "first"
    ids, mask = inputs
    arch = Arch(2, 48, 3, 2.0, 16)
    with torch.no_grad():
        assert torch.equal(slm.eval().set_active(arch)(ids, mask), loaded.eval().set_active(arch)(ids, mask))
    # the saved weights are a plain BertModel checkpoint (the largest subnet)
    assert isinstance(AutoModel.from_pretrained(str(tmp_path)), BertModel)
