"""FeatureCapture across encoder families (the ``EncoderLayout`` registry), user layouts, the duck-typing fallback and
the errors, checked against each model's own ``output_hidden_states`` and a hook-free recomputation of q/k/v."""

import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distiller_nlp.core.capture import (
    ENCODER_LAYOUTS,
    EncoderLayout,
    FeatureCapture,
    encoder_layout,
    find_encoder_layers,
    num_layers,
    register_encoder_layout,
)
from distiller_nlp.core.errors import DistillerError

transformers = pytest.importorskip("transformers")

L, H, HEADS, B, T = 2, 32, 2, 2, 9
BERTLIKE = {"hidden_size": H, "num_hidden_layers": L, "num_attention_heads": HEADS, "intermediate_size": 64,
            "vocab_size": 100, "max_position_embeddings": 40, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
# model type -> (config kwargs, q/k/v paths inside a layer spelled out by hand, pre-attention LayerNorm or None)
SELF = ("attention.self.query", "attention.self.key", "attention.self.value")
FAMILIES = {
    "bert": (BERTLIKE, SELF, None),
    "roberta": (BERTLIKE, SELF, None),
    "xlm-roberta": (BERTLIKE, SELF, None),
    "camembert": (BERTLIKE, SELF, None),
    "ernie": (BERTLIKE, SELF, None),
    "data2vec-text": (BERTLIKE, SELF, None),
    "electra": (dict(BERTLIKE, embedding_size=16), SELF, None),  # hidden 0 = embeddings_project
    "distilbert": ({"dim": H, "n_layers": L, "n_heads": HEADS, "hidden_dim": 64, "vocab_size": 100,
                    "max_position_embeddings": 40},
                   ("attention.q_lin", "attention.k_lin", "attention.v_lin"), None),
    "deberta-v2": (BERTLIKE, ("attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj"),
                   None),
    "mpnet": (BERTLIKE, ("attention.attn.q", "attention.attn.k", "attention.attn.v"), None),
    # pre-LayerNorm: hidden L is after the final LayerNorm; q/k/v read LayerNorm(h)
    "xlm-roberta-xl": (BERTLIKE, SELF, "attention.self_attn_layer_norm"),
    "megatron-bert": (BERTLIKE, SELF, "attention.ln"),
    "roberta-prelayernorm": (BERTLIKE, SELF, "attention.LayerNorm"),
}
# DeBERTa-v2 with the extra conv after layer 1 (hidden 1 = encoder.conv), relative attention, embed_proj
DEBERTA_CONV = dict(BERTLIKE, conv_kernel_size=3, relative_attention=True, pos_att_type=["p2c", "c2p"],
                    embedding_size=16)


@pytest.fixture(autouse=True, scope="module")
def _quiet_single_thread():
    """Tiny models: one thread is faster than contending for the shared CPUs; restored afterwards."""
    verbosity, threads = transformers.logging.get_verbosity(), torch.get_num_threads()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)


def _model(model_type, bare=False, **extra):
    kwargs = dict(FAMILIES[model_type.removesuffix("+conv")][0], **extra)
    if model_type == "deberta-v2+conv":
        kwargs, model_type = DEBERTA_CONV, "deberta-v2"
    config = transformers.AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(0)
    auto = transformers.AutoModel if bare else transformers.AutoModelForSequenceClassification
    return auto.from_config(config).eval()


def _inputs(vocab=100):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _hooks(model):
    """Forward hooks of ours on the model (transformers keeps hooks of its own for ``output_hidden_states``)."""
    return sum(getattr(h, "__qualname__", "").startswith("FeatureCapture.")
               for m in model.modules() for h in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()])


def _sub(module, path):
    for name in path.split("."):
        module = module[int(name)] if name.isdigit() else getattr(module, name)
    return module


# the bare encoder (AutoModel: no base_model_prefix attribute to descend into) for the families whose paths differ
BARE = ("bert", "distilbert", "electra", "deberta-v2+conv", "mpnet", "roberta-prelayernorm", "xlm-roberta-xl")
CASES = [*((f, False) for f in [*FAMILIES, "deberta-v2+conv"]), *((f, True) for f in BARE)]


@pytest.mark.parametrize("family,bare", CASES, ids=[f"{f}-{'bare' if b else 'head'}" for f, b in CASES])
def test_family_hidden_and_qkv_match_the_model(family, bare):
    model = _model(family, bare=bare)
    base = model if bare else getattr(model, model.base_model_prefix)
    qkv_paths, pre_norm = FAMILIES[family.removesuffix("+conv")][1:]
    assert _hooks(model) == 0
    cap = FeatureCapture(model, hidden_layers=range(L + 1), qkv_layers=range(1, L + 1))
    assert cap._encoder.source == "registry" and cap.num_layers == L == num_layers(model)
    with cap, torch.no_grad():
        assert _hooks(model) == (L + 1) + 3 * L  # only the requested modules are hooked
        out = model(**_inputs(), output_hidden_states=True)
    assert _hooks(model) == 0 and not cap.attached
    hs = out.hidden_states
    assert len(hs) == L + 1 and sorted(cap.hidden) == list(range(L + 1))
    for i in range(L + 1):
        assert cap.hidden[i].shape == (B, T, H)
        torch.testing.assert_close(cap.hidden[i], hs[i], atol=1e-6, rtol=0, msg=f"{family} hidden {i}")
    layers = _sub(base, "transformer.layer" if family == "distilbert" else "encoder.layer")
    for i in range(1, L + 1):
        layer = layers[i - 1]
        x = hs[i - 1]  # layer i's input (after the conv for DeBERTa's layer 2: that is hidden_states[1])
        if pre_norm is not None:
            x = _sub(layer, pre_norm)(x)
        for key, path in zip("qkv", qkv_paths):
            lin = _sub(layer, path)
            assert isinstance(lin, nn.Linear)
            assert cap.qkv[i][key].shape == (B, T, HEADS * (H // HEADS))
            torch.testing.assert_close(cap.qkv[i][key], F.linear(x, lin.weight, lin.bias), atol=1e-6, rtol=0,
                                       msg=f"{family} {key} {i}")
        assert not torch.allclose(cap.qkv[i]["q"], cap.qkv[i]["k"])


def test_special_hook_points_are_used():
    electra = _model("electra")
    assert find_encoder_layers(electra)[0] is electra.electra.embeddings_project
    assert find_encoder_layers(_model("electra", embedding_size=H))[0].__class__.__name__ == "ElectraEmbeddings"
    conv = _model("deberta-v2+conv")
    assert FeatureCapture(conv, hidden_layers=1)._encoder.outputs[0] is conv.deberta.encoder.conv
    assert FeatureCapture(_model("deberta-v2"), hidden_layers=1)._encoder.outputs[0].__class__.__name__ \
        == "DebertaV2Layer"  # no conv: the layer itself
    xl = _model("xlm-roberta-xl", bare=True)
    assert FeatureCapture(xl, hidden_layers=L)._encoder.outputs[-1] is xl.encoder.LayerNorm
    assert encoder_layout(_model("mpnet")).q == "attention.attn.q"


class _Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.mix = nn.ModuleDict({"wq": nn.Linear(d, d), "wk": nn.Linear(d, d), "wv": nn.Linear(d, d)})

    def forward(self, x):
        m = self.mix
        att = torch.softmax(m["wq"](x) @ m["wk"](x).transpose(-1, -2), dim=-1)
        return x + att @ m["wv"](x)


class _Odd(nn.Module):
    """An encoder with none of BERT's names: ``stem`` → ``trunk.blocks[i].mix.{wq,wk,wv}``."""

    def __init__(self, d=8, n=3, model_type=None):
        super().__init__()
        if model_type:
            self.config = SimpleNamespace(model_type=model_type)
        self.stem = nn.Embedding(20, d)
        self.trunk = nn.Module()
        self.trunk.blocks = nn.ModuleList(_Block(d) for _ in range(n))

    def forward(self, ids):
        states = [self.stem(ids)]
        for block in self.trunk.blocks:
            states.append(block(states[-1]))
        return states


ODD = {"embeddings": "stem", "layers": "trunk.blocks", "q": "mix.wq", "k": "mix.wk", "v": "mix.wv",
       "note": "a toy"}


def test_custom_layout_per_capture_and_registered():
    torch.manual_seed(0)
    model, ids = _Odd(), torch.tensor([[1, 2, 3, 4]])
    with pytest.raises(DistillerError, match="register_encoder_layout") as err:
        FeatureCapture(model, hidden_layers=1)
    assert "unknown" in str(err.value) and "\n" not in str(err.value)
    for layout in (ODD, EncoderLayout(**ODD)):
        with FeatureCapture(model, hidden_layers=range(4), qkv_layers=(1, 3), layout=layout) as cap:
            states = model(ids)
        assert _hooks(model) == 0
        for i in range(4):
            assert torch.equal(cap.hidden[i], states[i])
        for i in (1, 3):
            lin = model.trunk.blocks[i - 1].mix["wv"]
            torch.testing.assert_close(cap.qkv[i]["v"], F.linear(states[i - 1], lin.weight, lin.bias))
    assert num_layers(model, layout=ODD) == 3

    typed = _Odd(model_type="odd_toy")  # "_" and "-" are the same in registry keys
    with ENCODER_LAYOUTS.scope():
        register_encoder_layout("odd-toy", ODD)
        assert "odd_toy" in ENCODER_LAYOUTS and num_layers(typed) == 3
        register_encoder_layout("odd_toy", EncoderLayout(**ODD))  # the same paths again: a no-op
        with pytest.raises(DistillerError, match="already registered"):
            register_encoder_layout("odd-toy", EncoderLayout())
        with FeatureCapture(typed, hidden_layers=(0, 3), qkv_layers=2) as cap:
            states = typed(ids)
        assert torch.equal(cap.hidden[3], states[3]) and set(cap.qkv[2]) == {"q", "k", "v"}
        # a registered layout with a wrong path names the path and how to fix it
        register_encoder_layout("odd-toy", dict(ODD, q="mix.query", k="mix.key", v="mix.value"), override=True)
        with pytest.raises(DistillerError, match=r"q projection of encoder layer 1 .*'mix\.query'.*override=True"):
            FeatureCapture(typed, qkv_layers=1)
    assert "odd-toy" not in ENCODER_LAYOUTS  # the scope undid the registrations

    with pytest.raises(DistillerError, match="unknown key 'layer'"):
        FeatureCapture(model, layout={"layer": "trunk.blocks"})
    with pytest.raises(DistillerError, match="no layers .* at 'trunk.layers'"):
        FeatureCapture(model, layout=dict(ODD, layers="trunk.layers"))
    with pytest.raises(DistillerError, match="all of q, k, v or none"):
        EncoderLayout(q="a", k=None, v=None)
    hidden_only = dict(ODD, q=None, k=None, v=None)
    assert sorted(FeatureCapture(model, hidden_layers=(1,), layout=hidden_only).hidden_layers) == [1]
    with pytest.raises(DistillerError, match="names none"):
        FeatureCapture(model, qkv_layers=(1,), layout=hidden_only)


class _Wrapper(nn.Module):
    """A user's wrapper with no config of its own around a registered model under an unusual attribute."""

    def __init__(self, inner):
        super().__init__()
        self.net = nn.ModuleDict({"body": inner})

    def forward(self, **kw):
        return self.net["body"](**kw)


def test_registered_model_inside_a_custom_wrapper():
    inner = _model("mpnet")
    wrapped = _Wrapper(inner)
    with FeatureCapture(wrapped, hidden_layers=range(L + 1), qkv_layers=L) as cap, torch.no_grad():
        out = wrapped(**_inputs(), output_hidden_states=True)
    assert cap._encoder.source == "registry" and cap.model_type == "mpnet"
    for i in range(L + 1):
        torch.testing.assert_close(cap.hidden[i], out.hidden_states[i], atol=1e-6, rtol=0)
    assert cap.qkv[L]["q"].shape == (B, T, H)
    # the same through DataParallel (.module) and with a user layout given from the wrapper's root
    assert num_layers(nn.DataParallel(wrapped)) == L
    emb, layers = find_encoder_layers(wrapped, layout={"embeddings": "net.body.mpnet.embeddings",
                                                       "layers": "net.body.mpnet.encoder.layer",
                                                       "q": "attention.attn.q", "k": "attention.attn.k",
                                                       "v": "attention.attn.v"})
    assert emb is inner.mpnet.embeddings and layers == list(inner.mpnet.encoder.layer)


def test_unregistered_bert_like_type_falls_back_to_duck_typing(caplog):
    class RenamedConfig(transformers.BertConfig):
        model_type = "renamed-bert-for-capture-test"

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(RenamedConfig(**BERTLIKE)).eval()
    with caplog.at_level(logging.INFO, logger="distiller_nlp.core.capture"):
        cap = FeatureCapture(model, hidden_layers=range(L + 1), qkv_layers=(1,))
        FeatureCapture(model, hidden_layers=1)
    notes = [r for r in caplog.records if "renamed-bert-for-capture-test" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO  # logged once
    assert cap._encoder.source == "duck typing" and cap.layout.q == "attention.self.query"
    with cap, torch.no_grad():
        out = model(**_inputs(), output_hidden_states=True)
    for i in range(L + 1):
        torch.testing.assert_close(cap.hidden[i], out.hidden_states[i], atol=1e-6, rtol=0)
    q = model.bert.encoder.layer[0].attention.self.query
    torch.testing.assert_close(cap.qkv[1]["q"], F.linear(out.hidden_states[0], q.weight, q.bias), atol=1e-6, rtol=0)

    # DeBERTa v1 (unregistered; fused in_proj): hidden states by the fallback, q/k/v a one-line error naming the type
    deberta = transformers.AutoModel.from_config(transformers.AutoConfig.for_model("deberta", **BERTLIKE)).eval()
    with FeatureCapture(deberta, hidden_layers=range(L + 1)) as cap, torch.no_grad():
        out = deberta(**_inputs(), output_hidden_states=True)
    for i in range(L + 1):
        torch.testing.assert_close(cap.hidden[i], out.hidden_states[i], atol=1e-6, rtol=0)
    with pytest.raises(DistillerError, match=r"'deberta'.*register_encoder_layout"):
        FeatureCapture(deberta, qkv_layers=(1,))


def test_unsupported_models_raise_one_line_errors():
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50,
                                                                n_positions=16))
    with pytest.raises(DistillerError) as err:
        FeatureCapture(gpt2, hidden_layers=1)
    msg = str(err.value)
    assert "'gpt2'" in msg and "register_encoder_layout('gpt2'" in msg and "layout=" in msg and "\n" not in msg
    with pytest.raises(DistillerError, match="cannot find encoder layers in Linear .*register_encoder_layout"):
        num_layers(nn.Linear(3, 3))
    with pytest.raises(DistillerError, match="expected a torch.nn.Module"):
        find_encoder_layers("bert")
    assert _hooks(gpt2) == 0


def test_distill_module_with_an_mpnet_teacher(teacher_type="mpnet"):
    from distiller_nlp.config import KDConfig, MatchConfig
    from distiller_nlp.core.losses import get_loss
    from distiller_nlp.kd.matches import resolve_matches
    from distiller_nlp.kd.module import DistillModule
    from distiller_nlp.kd.teachers import TeacherRunner

    teacher = _model(teacher_type)
    torch.manual_seed(1)
    student = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=HEADS, intermediate_size=32,
        max_position_embeddings=40, num_labels=2))
    kd = KDConfig(pred_loss="kd", intermediate=[
        MatchConfig(layer_T=0, layer_S=0, feature="hidden", loss="hidden_mse"),
        MatchConfig(layer_T=L, layer_S=1, feature="hidden", loss="hidden_mse"),
        MatchConfig(layer_T=L, layer_S=1, feature="attention_scores", loss="attention_score", params={"kind": "kl"}),
    ])
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    batch = dict(_inputs(), labels=torch.tensor([0, 1]))
    with torch.no_grad():
        batch = TeacherRunner(teacher, module)(batch)
    assert batch["teacher_hidden"][L].shape == (B, T, H) and batch["teacher_qkv"][L]["k"].shape == (B, T, H)
    out = module(batch)
    assert {"kd", "hidden_mse/S0-T0", "hidden_mse/S1-T2", "attention_score/S1-T2"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values()) and out["attention_score/S1-T2"] > 0
    out["loss"].backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert module.projections["m1"].weight.grad.abs().sum() > 0
    assert _hooks(teacher) == 0 and _hooks(student) == 0

    # a MiniLMv2 relation loss on the captured q/k/v of both models (the loss core, outside the match spec)
    with FeatureCapture(student, qkv_layers=1) as cap_s:
        student(**_inputs())
    relation = get_loss("relation")(cap_s.qkv[1], batch["teacher_qkv"][L], _inputs()["attention_mask"],
                                    num_relation_heads=HEADS)
    relation.backward()
    assert torch.isfinite(relation) and student.bert.encoder.layer[0].attention.self.value.weight.grad is not None


def test_recipe_encoder_layouts_register_paths(tiny_teacher, sst2_dir, tmp_path, capsys):
    """``kd.encoder_layouts`` in a recipe registers module paths for a model type; a bad key is one line, exit 2."""
    from distiller_nlp.cli import main
    from distiller_nlp.core.capture import ENCODER_LAYOUTS, EncoderLayout

    before = ENCODER_LAYOUTS.get("bert")
    recipe = tmp_path / "r.yaml"
    common = ["--task", "sst2", "--data-dir", sst2_dir, "--student-shape", "layers=1,hidden=16,heads=2,intermediate=32",
              "--max-steps", "2", "--max-length", "16", "--precision", "no", "--report-to", "none", "--mapping", "skip"]
    try:
        recipe.write_text(f"teacher: {tiny_teacher}\nkd:\n  encoder_layouts:\n    bert: {{layers: encoder.layer, "
                          "q: attention.self.query, k: attention.self.key, v: attention.self.value, note: mine}\n")
        assert main(["distill", "--config", str(recipe), *common, "--output-dir", str(tmp_path / "ok")]) == 0
        assert ENCODER_LAYOUTS.get("bert").note == "mine"
        capsys.readouterr()
        recipe.write_text(f"teacher: {tiny_teacher}\nkd:\n  encoder_layouts:\n    bert: {{layerz: encoder.layer}}\n")
        assert main(["distill", "--config", str(recipe), *common, "--output-dir", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown key 'layerz'" in err[0] and not (tmp_path / "bad").exists()
    finally:
        ENCODER_LAYOUTS.register("bert", before if isinstance(before, EncoderLayout) else EncoderLayout(),
                                 override=True)
