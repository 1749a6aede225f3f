"""Closed-form encoder FLOPs / parameters, pinned by hand values and by FlopCounterMode on tiny random BERTs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from types import SimpleNamespace

import pytest
import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from distiller_nlp.core.flops import (count_encoder_params, count_flops_with_torch, encoder_flops,
                                      encoder_flops_from_config, register_sdpa_flop_formula)
from distiller_nlp.core.errors import DistillerError

transformers = pytest.importorskip("transformers")

CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

# (layers, hidden, heads, intermediate)
SHAPES = [(2, 32, 4, 48), (3, 24, 2, 40), (1, 16, 1, 16)]


def _bert(shape, impl, pooler=True, seed=0):
    layers, hidden, heads, inter = shape
    cfg = transformers.BertConfig(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=inter,
        vocab_size=101,
        max_position_embeddings=40,
        attn_implementation=impl,
    )
    torch.manual_seed(seed)
    model = transformers.BertModel(cfg, add_pooling_layer=pooler).eval()
    assert model.config._attn_implementation == impl
    return model


def _inputs(batch=3, seq=13, pad=True):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 101, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    if pad:
        mask[1, seq // 2 :] = 0  # padding does not change the matmul shapes, hence not the FLOPs
    return ids, mask


# ---------------------------------------------------------------------------------------------------------- hand values


def test_hand_values_minilm_and_demo_student():
    # per layer MACs, n=128, H=384, A·d=384, I=1536:
    # 3·128·384² + 2·128²·384 + 128·384² + 2·128·384·1536 = 56,623,104 + 12,582,912 + 18,874,368 + 150,994,944
    minilm_layer_macs = 56_623_104 + 12_582_912 + 18_874_368 + 150_994_944
    assert encoder_flops(6, 384, 12, 1536) == 2 * 6 * minilm_layer_macs == 2_868_903_936
    # demo student: 3·128·256² + 2·128²·256 + 128·256² + 2·128·256·1024
    student_layer_macs = 25_165_824 + 8_388_608 + 8_388_608 + 67_108_864
    assert encoder_flops(3, 256, 8, 1024) == 2 * 3 * student_layer_macs == 654_311_424
    ratio = encoder_flops(3, 256, 8, 1024) / encoder_flops(6, 384, 12, 1536)
    assert ratio == pytest.approx(0.22807, abs=1e-5)
    # BERT-base: 11.17 G multiply-adds (AutoDistil's formula, which adds the pooler, says 11.25 G)
    assert encoder_flops(12, 768, 12, 3072) // 2 == 11_173_625_856


def test_seq_len_scaling_is_linear_plus_quadratic():
    # f(n) = a·n + b·n² per layer; second difference isolates b = 2 (matmuls) · 2 (FLOPs/MAC) · A·d
    f = [encoder_flops(1, 64, 4, 256, seq_len=n) for n in (10, 20, 30)]
    assert f[2] - 2 * f[1] + f[0] == 2 * 2 * 64 * (30**2 - 2 * 20**2 + 10**2)
    assert encoder_flops(4, 64, 4, 256, seq_len=10) == 4 * encoder_flops(1, 64, 4, 256, seq_len=10)


def test_head_dim_decoupled_from_hidden():
    # hidden 100, 3 heads of 40 (attention width 120 ≠ hidden), I = 200, n = 8, 2 layers; by hand:
    # QKV 3·8·100·120 = 288,000; QKᵀ 8²·120 = 7,680; PV 7,680; out 8·120·100 = 96,000; FFN 2·8·100·200 = 320,000
    layer_macs = 288_000 + 7_680 + 7_680 + 96_000 + 320_000
    assert encoder_flops(2, 100, 3, 200, seq_len=8, head_dim=40) == 2 * 2 * layer_macs == 2_877_440
    # explicit head_dim equal to the default changes nothing
    assert encoder_flops(2, 96, 3, 200, seq_len=8, head_dim=32) == encoder_flops(2, 96, 3, 200, seq_len=8)


def test_errors():
    with pytest.raises(DistillerError, match="not divisible"):
        encoder_flops(2, 100, 3, 200)
    with pytest.raises(DistillerError, match="layers"):
        encoder_flops(0, 64, 4, 256)
    with pytest.raises(DistillerError, match="seq_len"):
        encoder_flops(2, 64, 4, 256, seq_len=-1)
    with pytest.raises(DistillerError, match="head_dim"):
        encoder_flops(2, 64, 4, 256, head_dim=0)
    with pytest.raises(DistillerError, match="num_attention_heads"):
        encoder_flops_from_config(SimpleNamespace(num_hidden_layers=2, hidden_size=64, intermediate_size=9))
    with pytest.raises(DistillerError, match="vocab_size"):
        count_encoder_params(2, 64, 4, 256, vocab_size=-5)


def test_from_config_bert_distilbert_names_and_head_dim():
    bert = transformers.BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    assert encoder_flops_from_config(bert) == 2_868_903_936
    distil = transformers.DistilBertConfig(n_layers=3, dim=256, n_heads=8, hidden_dim=1024)
    assert encoder_flops_from_config(distil) == 654_311_424
    plain = SimpleNamespace(n_layers=3, dim=256, n_heads=8, hidden_dim=1024)
    assert encoder_flops_from_config(plain, seq_len=64) == encoder_flops(3, 256, 8, 1024, seq_len=64)
    odd = {
        "num_hidden_layers": 2, "hidden_size": 100, "num_attention_heads": 3, "intermediate_size": 200, "head_dim": 40
    }
    assert encoder_flops_from_config(odd, seq_len=8) == 2_877_440


# ------------------------------------------------------------------------------------------------------ parameters


def test_params_minilm_hand_value_and_real_model():
    assert count_encoder_params(6, 384, 12, 1536) == 22_713_216  # all-MiniLM-L6-v2: "22.7M"
    cfg = transformers.BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    with torch.device("meta"):
        model = transformers.BertModel(cfg)
    assert sum(p.numel() for p in model.parameters()) == 22_713_216


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pooler", [True, False])
def test_params_match_bert_model(shape, pooler):
    model = _bert(shape, "eager", pooler=pooler)
    expected = sum(p.numel() for p in model.parameters())
    got = count_encoder_params(*shape, vocab_size=101, max_position=40, include_pooler=pooler)
    assert got == expected
    encoder_only = sum(p.numel() for p in model.encoder.parameters())
    assert count_encoder_params(*shape, include_embeddings=False, include_pooler=False) == encoder_only


def test_params_with_head_dim():
    # width W = 120: per layer 3(100·120+120) + 120·100+100 + 200 + 100·200+200 + 200·100+100 + 200 = 89,160
    got = count_encoder_params(2, 100, 3, 200, head_dim=40, include_embeddings=False, include_pooler=False)
    assert got == 2 * 89_160


# ------------------------------------------------------------------------------------------------- FlopCounterMode


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("shape", SHAPES)
def test_closed_form_equals_flop_counter(shape, impl):
    batch, seq = 3, 13
    ids, mask = _inputs(batch, seq)
    hidden = shape[1]
    # BertModel = encoder + pooler (one H×H dense on the [CLS] vector of each sequence)
    model = _bert(shape, impl)
    measured = count_flops_with_torch(model, ids, mask)
    assert measured == batch * (encoder_flops(*shape, seq_len=seq) + 2 * hidden * hidden)
    # without the pooler the whole count is the encoder
    model = _bert(shape, impl, pooler=False)
    assert count_flops_with_torch(model, ids, mask) == batch * encoder_flops(*shape, seq_len=seq)
    # the encoder alone, fed hidden states
    hs = torch.randn(batch, seq, hidden)
    assert count_flops_with_torch(model.encoder, hidden_states=hs) == batch * encoder_flops(*shape, seq_len=seq)


def test_sdpa_on_cpu_uses_the_registered_formula():
    shape, batch, seq = (2, 32, 4, 48), 2, 11
    ids, mask = _inputs(batch, seq, pad=False)
    model = _bert(shape, "sdpa")
    register_sdpa_flop_formula()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(input_ids=ids, attention_mask=mask)
    counts = counter.get_flop_counts()["Global"]
    attention = 2 * 2 * batch * seq * seq * 32  # per layer: QKᵀ + PV, A·d = 32; two layers -> times layers below
    assert counts[CPU_SDPA] == shape[0] * attention
    # without the formula FlopCounterMode misses exactly the attention matmuls
    saved = flop_counter.flop_registry.pop(CPU_SDPA)
    try:
        blind = FlopCounterMode(display=False)
        with torch.no_grad(), blind:
            model(input_ids=ids, attention_mask=mask)
    finally:
        flop_counter.flop_registry[CPU_SDPA] = saved
    assert counter.get_total_flops() - blind.get_total_flops() == shape[0] * attention


def test_register_is_idempotent():
    register_sdpa_flop_formula()
    before = dict(flop_counter.flop_registry)
    assert register_sdpa_flop_formula() is False
    assert register_sdpa_flop_formula() is False
    assert flop_counter.flop_registry == before


def test_training_mode_math_path_counts_the_same():
    # with attention dropout active, CPU SDPA takes the math path (bmm), still the same matmul FLOPs
    shape, batch, seq = (2, 32, 4, 48), 2, 9
    ids, mask = _inputs(batch, seq)
    model = _bert(shape, "sdpa", pooler=False).train()
    assert count_flops_with_torch(model, ids, mask) == batch * encoder_flops(*shape, seq_len=seq)


def test_backward_formula_counts_the_recomputed_scores():
    # forward+backward: eager = 2 (fwd) + 4 (bwd) attention bmms per layer; fused SDPA backward = 5 (recomputes QKᵀ),
    # everything else identical, so the totals differ by exactly one QKᵀ matmul per layer.
    shape, batch, seq = (2, 32, 4, 48), 2, 10
    ids, mask = _inputs(batch, seq)
    register_sdpa_flop_formula()
    totals = {}
    for impl in ("eager", "sdpa"):
        model = _bert(shape, impl, pooler=False)
        counter = FlopCounterMode(display=False)
        with counter:
            model(input_ids=ids, attention_mask=mask).last_hidden_state.sum().backward()
        totals[impl] = counter.get_total_flops()
    assert totals["sdpa"] - totals["eager"] == shape[0] * 2 * batch * seq * seq * 32
