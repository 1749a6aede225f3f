"""FeatureCapture: hidden states and q/k/v projections by forward hooks, checked against the models' own outputs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest
import torch
from torch import nn

from distiller_nlp.core.capture import FeatureCapture, find_encoder_layers, num_layers, unwrap_model
from distiller_nlp.core.errors import DistillerError

transformers = pytest.importorskip("transformers")

L = 3
COMMON = dict(vocab_size=100, max_position_embeddings=40)
BERTLIKE = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, num_hidden_layers=L, **COMMON)


def _model(family):
    t = transformers
    torch.manual_seed(0)
    if family == "bert":
        cfg = t.BertConfig(**BERTLIKE)
        model = t.BertForSequenceClassification(cfg)
    elif family == "roberta":
        cfg = t.RobertaConfig(**BERTLIKE)
        model = t.RobertaForSequenceClassification(cfg)
    elif family == "distilbert":
        cfg = t.DistilBertConfig(dim=32, n_heads=4, hidden_dim=37, n_layers=L, **COMMON)
        model = t.DistilBertForSequenceClassification(cfg)
    elif family == "electra":  # embedding size 16 ≠ hidden 32: layer 0 is the embeddings projection
        cfg = t.ElectraConfig(embedding_size=16, **BERTLIKE)
        model = t.ElectraForSequenceClassification(cfg)
    else:
        raise AssertionError(family)
    assert model.config._attn_implementation == "sdpa"
    return model.eval()


def _explicit_qkv(model, family, i):
    """The q/k/v Linear modules of encoder layer i (1-based), spelled out per family."""
    if family == "distilbert":
        att = model.distilbert.transformer.layer[i - 1].attention
        return att.q_lin, att.k_lin, att.v_lin
    base = getattr(model, family)
    att = base.encoder.layer[i - 1].attention.self
    return att.query, att.key, att.value


def _inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 100, (2, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return dict(input_ids=ids, attention_mask=mask)


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_hidden_states_equal_output_hidden_states(family):
    model = _model(family)
    with FeatureCapture(model, hidden_layers=range(L + 1)) as cap:
        out = model(**_inputs(), output_hidden_states=True)
    assert len(out.hidden_states) == L + 1
    assert sorted(cap.hidden) == list(range(L + 1))
    for i in range(L + 1):
        assert cap.hidden[i].shape == (2, 9, 32)
        torch.testing.assert_close(cap.hidden[i], out.hidden_states[i], atol=1e-6, rtol=0)
    # a plain forward (no output_hidden_states) gives the same captures
    with cap:
        model(**_inputs())
    torch.testing.assert_close(cap.hidden[L], out.hidden_states[L], atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_qkv_equal_explicit_recomputation(family):
    model = _model(family)
    with FeatureCapture(model, qkv_layers=(1, 3)) as cap:
        out = model(**_inputs(), output_hidden_states=True)
    assert sorted(cap.qkv) == [1, 3]
    with torch.no_grad():
        for i in (1, 3):
            q, k, v = _explicit_qkv(model, family, i)
            h = out.hidden_states[i - 1]  # layer i's input
            assert set(cap.qkv[i]) == {"q", "k", "v"}
            torch.testing.assert_close(cap.qkv[i]["q"], q(h), atol=1e-6, rtol=0)
            torch.testing.assert_close(cap.qkv[i]["k"], k(h), atol=1e-6, rtol=0)
            torch.testing.assert_close(cap.qkv[i]["v"], v(h), atol=1e-6, rtol=0)
            assert cap.qkv[i]["q"].shape == (2, 9, 32)
            assert not torch.allclose(cap.qkv[i]["q"], cap.qkv[i]["k"])


def test_gradients_flow_unless_detached():
    model = _model("bert")
    with FeatureCapture(model, hidden_layers=(2,), qkv_layers=(1,)) as cap:
        model(**_inputs())
    assert cap.hidden[2].requires_grad and cap.qkv[1]["k"].requires_grad
    (cap.hidden[2].pow(2).sum() + cap.qkv[1]["k"].sum()).backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.bert.encoder.layer[0].attention.self.key.weight.grad.abs().sum() > 0
    assert model.bert.encoder.layer[2].attention.self.query.weight.grad is None  # beyond layer 2: untouched

    with FeatureCapture(model, hidden_layers=(2,), qkv_layers=(1,), detach=True) as cap:
        model(**_inputs())
    assert not cap.hidden[2].requires_grad and not cap.qkv[1]["v"].requires_grad


def test_hooks_removed_after_block_and_after_error():
    model = _model("bert")
    assert _hook_count(model) == 0
    cap = FeatureCapture(model, hidden_layers=(0, 3), qkv_layers=(3,))
    with cap:
        assert _hook_count(model) == 2 + 3  # only the requested modules are hooked
        assert cap.attached
        model(**_inputs())
    assert _hook_count(model) == 0 and not cap.attached
    kept = cap.hidden[3]
    model(**_inputs())  # after exit, forwards no longer touch the capture
    assert cap.hidden[3] is kept

    with pytest.raises(RuntimeError, match="boom"):
        with FeatureCapture(model, hidden_layers=(1,), qkv_layers=(2,)):
            model(**_inputs())
            raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_only_requested_layers_stored_and_clear():
    model = _model("distilbert")
    with FeatureCapture(model, hidden_layers=(0, 3), qkv_layers=(3,)) as cap:
        model(**_inputs())
    assert sorted(cap.hidden) == [0, 3]
    assert sorted(cap.qkv) == [3]
    old = cap.hidden
    cap.clear()
    assert cap.hidden == {} and cap.qkv == {}
    assert sorted(old) == [0, 3]  # dicts handed out earlier are not emptied
    with cap:  # re-entering starts empty and records again
        assert cap.hidden == {}
        model(**_inputs())
    assert sorted(cap.hidden) == [0, 3]


def test_attach_remove_for_long_lived_capture():
    model = _model("roberta")
    cap = FeatureCapture(model, hidden_layers=1).attach()
    model(**_inputs())
    first = cap.hidden[1]
    cap.clear()
    model(**_inputs())
    assert cap.hidden[1] is not first  # a new step, a new tensor
    cap.remove()
    assert _hook_count(model) == 0


def test_out_of_range_and_bad_indices():
    model = _model("bert")
    with pytest.raises(DistillerError, match=r"index 4 .*3 encoder layers"):
        FeatureCapture(model, hidden_layers=(0, 4))
    with pytest.raises(DistillerError, match=r"q/k/v layer index 0 .*3 encoder layers"):
        FeatureCapture(model, qkv_layers=(0,))
    with pytest.raises(DistillerError, match="-1"):
        FeatureCapture(model, hidden_layers=(-1,))
    with pytest.raises(DistillerError, match="not an integer"):
        FeatureCapture(model, hidden_layers=("2",))
    assert _hook_count(model) == 0


def test_find_encoder_layers_and_wrapped_model():
    model = _model("distilbert")
    emb, layers = find_encoder_layers(model)
    assert emb is model.distilbert.embeddings
    assert layers == list(model.distilbert.transformer.layer)
    assert num_layers(model) == L

    wrapped = nn.DataParallel(model)  # no GPUs: forwards straight to .module (like DDP's .module)
    assert unwrap_model(wrapped) is model
    assert num_layers(wrapped) == L
    with FeatureCapture(wrapped, hidden_layers=(2,)) as cap:
        out = wrapped(**_inputs(), output_hidden_states=True)
    torch.testing.assert_close(cap.hidden[2], out.hidden_states[2], atol=1e-6, rtol=0)

    with pytest.raises(DistillerError, match="cannot find encoder layers"):
        find_encoder_layers(nn.Linear(3, 3))


class _TupleLayer(nn.Module):
    """A duck-typed encoder layer that returns a tuple, like older transformers layers."""

    def __init__(self, d):
        super().__init__()
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(d, d)
        self.attention.self.key = nn.Linear(d, d)
        self.attention.self.value = nn.Linear(d, d)

    def forward(self, x):
        a = self.attention.self
        return (x + a.query(x) * a.key(x) + a.value(x), "extra")


class _Toy(nn.Module):
    def __init__(self, d=4, n=2):
        super().__init__()
        self.embeddings = nn.Embedding(10, d)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_TupleLayer(d) for _ in range(n))

    def forward(self, ids):
        h = self.embeddings(ids)
        states = [h]
        for layer in self.encoder.layer:
            h = layer(h)[0]
            states.append(h)
        return states


def test_tuple_layer_outputs_take_first_element():
    model = _Toy()
    ids = torch.tensor([[1, 2, 3]])
    with FeatureCapture(model, hidden_layers=(0, 1, 2), qkv_layers=(2,)) as cap:
        states = model(ids)
    for i in range(3):
        assert torch.equal(cap.hidden[i], states[i])
    assert torch.equal(cap.qkv[2]["v"], model.encoder.layer[1].attention.self.value(states[1]))
