"""``--precision auto`` by measurement (the CPU probe and its cache), frozen teachers held in the compute dtype, fp32
losses under bf16, and the ``--compile`` opt-in."""

import json
import os

import pytest
import torch
from torch import nn

from distiller_nlp.core.engine import precision_probe as pp
from distiller_nlp.core.train_args import TrainArgs

FAST_FLAGS = {"cpu": "Test CPU", "flags": {f: f in ("avx512_bf16", "avx512f", "avx2") for f in pp.BF16_FLAGS},
              "torch": "t", "threads": 2}
SLOW_FLAGS = {"cpu": "Test CPU", "flags": {f: f == "avx2" for f in pp.BF16_FLAGS}, "torch": "t", "threads": 2}
SHAPES = pp.ProbeShapes(tokens=64, linears=((8, 16),), attention=None)


@pytest.fixture
def probe_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pp, "_MEMO", {})
    calls = []

    def fake(ratio):
        def measure(shapes):
            calls.append(shapes)
            return {"fp32_ms": 10.0 * ratio, "bf16_ms": 10.0, "ratio": ratio}
        return measure

    return calls, fake


@pytest.mark.parametrize("ratio,expected", [(2.4, "bf16"), (1.05, "bf16"), (1.04, "no"), (1.0, "no"), (0.6, "no")])
def test_auto_picks_the_faster_precision_with_a_margin(probe_env, monkeypatch, ratio, expected):
    """bf16 only when the probe measured it >= 5 % faster; equal or slower keeps fp32 (never the slower one)."""
    calls, fake = probe_env
    monkeypatch.setattr(pp, "cpu_facts", lambda: FAST_FLAGS)
    assert pp.decide(SHAPES, measure_fn=fake(ratio)) == expected
    assert len(calls) == 1 and pp.last_probe()["ratio"] == ratio and pp.last_probe()["source"] == "measured"


def test_no_bf16_instructions_means_fp32_without_probing(probe_env, monkeypatch):
    calls, fake = probe_env
    monkeypatch.setattr(pp, "cpu_facts", lambda: SLOW_FLAGS)
    assert pp.decide(SHAPES, measure_fn=fake(5.0)) == "no"
    assert calls == [] and "no bf16 instructions" in pp.last_probe()["source"]


def test_the_verdict_is_cached_per_machine_and_shape_class(probe_env, monkeypatch):
    calls, fake = probe_env
    monkeypatch.setattr(pp, "cpu_facts", lambda: FAST_FLAGS)
    assert pp.decide(SHAPES, measure_fn=fake(2.0)) == "bf16"
    path = pp.cache_path()
    data = json.load(open(path))
    (entry,) = data.values()
    assert entry["verdict"] == "bf16" and entry["ratio"] == 2.0 and entry["shapes"]["tokens"] == 64
    monkeypatch.setattr(pp, "_MEMO", {})  # a new process: read from the file, no second probe
    assert pp.decide(SHAPES, measure_fn=fake(0.5)) == "bf16" and len(calls) == 1
    assert pp.last_probe()["source"] == "cache"
    # same class (tokens round up to a power of two): 50 tokens share the 64-token verdict
    monkeypatch.setattr(pp, "_MEMO", {})
    assert pp.decide(pp.ProbeShapes(50, ((8, 16),)), measure_fn=fake(0.5)) == "bf16" and len(calls) == 1
    # another shape class, or another torch / thread count, is probed again
    monkeypatch.setattr(pp, "_MEMO", {})
    assert pp.decide(pp.ProbeShapes(64, ((32, 64),)), measure_fn=fake(0.5)) == "no" and len(calls) == 2
    monkeypatch.setattr(pp, "cpu_facts", lambda: dict(FAST_FLAGS, threads=8))
    assert pp.decide(SHAPES, measure_fn=fake(0.5)) == "no" and len(calls) == 3


def test_a_corrupt_cache_is_ignored_and_replaced(probe_env, monkeypatch):
    calls, fake = probe_env
    monkeypatch.setattr(pp, "cpu_facts", lambda: FAST_FLAGS)
    os.makedirs(os.path.dirname(pp.cache_path()))
    with open(pp.cache_path(), "w") as fh:
        fh.write('{"truncated": ')
    assert pp.decide(SHAPES, measure_fn=fake(2.0)) == "bf16" and len(calls) == 1
    assert len(json.load(open(pp.cache_path()))) == 1
    assert not [f for f in os.listdir(os.path.dirname(pp.cache_path())) if f.endswith(".tmp")]


def test_other_ranks_take_rank_zeros_verdict(probe_env, monkeypatch):
    """Under several processes only rank 0 probes; every rank returns what the broadcast carries."""
    calls, fake = probe_env
    monkeypatch.setattr(pp, "cpu_facts", lambda: FAST_FLAGS)
    sent = {}

    def broadcast(entry):
        if entry is not None:
            sent["entry"] = entry
        return sent["entry"]

    assert pp.decide(SHAPES, broadcast=broadcast, is_main=True, measure_fn=fake(2.0)) == "bf16"
    assert pp.decide(SHAPES, broadcast=broadcast, is_main=False, measure_fn=fake(0.1)) == "bf16"
    assert len(calls) == 1


def test_measure_times_both_paths_on_real_kernels():
    """The real probe: positive times for fp32 and bf16, ratio = fp32 / bf16 (whatever this CPU's verdict)."""
    r = pp.measure(pp.ProbeShapes(32, ((16, 32), (32, 16)), attention=(2, 2, 8, 8)), rounds=1)
    assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0
    assert r["ratio"] == pytest.approx(r["fp32_ms"] / r["bf16_ms"], rel=0.01, abs=6e-4)  # ratio: 3 decimals


def test_shapes_come_from_the_run_models():
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=4, intermediate_size=64))
    s = pp.shapes_from_models([bert], batch_size=8, seq_len=16)
    assert s.tokens == 128 and s.attention == (8, 4, 16, 8)
    assert s.linears[:2] == ((32, 64), (64, 32))  # the largest first, at most four
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    s = pp.shapes_from_models([mlp], batch_size=8, seq_len=16)
    assert s.tokens == 8 and s.attention is None and s.linears == ((8, 16), (16, 3))
    assert pp.shapes_from_models([nn.ReLU()], 8, 16) is None
    c = pp.shapes_from_configs([bert.config], 4, 10)
    assert c.tokens == 40 and c.attention == (4, 4, 10, 8) and set(c.linears) == {(32, 64), (64, 32), (32, 32)}


def test_distill_probes_its_own_configs():
    from distiller_nlp.config import DistillConfig
    from distiller_nlp.kd.distillation import probe_shapes_for

    cfg = DistillConfig(teacher="minilm", student_shape="layers=2,hidden=128,heads=4,intermediate=512")
    cfg.train.batch_size, cfg.train.max_length = 16, 32
    s = probe_shapes_for(cfg)
    assert s.tokens == 512 and (384, 1536) in s.linears and (128, 512) in s.linears and s.attention == (16, 12, 32, 32)
    cfg.train.precision = "no"
    assert probe_shapes_for(cfg) is None


# ------------------------------------------------------------------------------------------------ frozen dtype

class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(8, 3)

    def predict(self, batch):
        return self.net(batch["x"])

    def forward(self, batch):
        return {"loss": nn.functional.cross_entropy(self.predict(batch).float(), batch["labels"])}


def _engine(tmp_path, **kw):
    from distiller_nlp.core.engine import Engine

    data = [{"x": torch.randn(8), "labels": torch.tensor(i % 3)} for i in range(16)]

    def collate(items):
        return {"x": torch.stack([i["x"] for i in items]), "labels": torch.stack([i["labels"] for i in items])}

    teacher = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    args = TrainArgs(max_steps=2, batch_size=8, cpu=True, report_to="none", **kw)
    return Engine(args, str(tmp_path), Toy(), data, collate, frozen=[teacher]), teacher


def test_a_frozen_teacher_is_cast_once_to_bf16(tmp_path):
    eng, teacher = _engine(tmp_path / "a", precision="bf16")
    assert {p.dtype for p in teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in eng.module.parameters()} == {torch.float32}  # the trained module stays fp32
    _, teacher = _engine(tmp_path / "b", precision="bf16", frozen_in_compute_dtype=False)
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    _, teacher = _engine(tmp_path / "c", precision="no")
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}


def test_bf16_teacher_and_fp32_losses_match_the_autocast_teacher():
    """A BERT teacher held in bf16 gives logits close to the fp32 teacher under bf16 autocast, and the KD module's
    losses come out in fp32 from bf16 inputs."""
    import copy

    from transformers import BertConfig, BertForSequenceClassification

    from distiller_nlp.config import KDConfig, MatchConfig
    from distiller_nlp.kd.matches import resolve_matches
    from distiller_nlp.kd.module import DistillModule
    from distiller_nlp.kd.teachers import TeacherRunner

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     num_labels=3)
    teacher = BertForSequenceClassification(cfg).eval()
    student = BertForSequenceClassification(BertConfig(**{**cfg.to_dict(), "hidden_size": 16,
                                                          "num_attention_heads": 2, "intermediate_size": 32}))
    kd = KDConfig(pred_loss="kd", temperature=2.0, intermediate=[MatchConfig(layer_T=2, layer_S=1,
                                                                             loss="hidden_mse")])
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    batch = {"input_ids": torch.randint(5, 60, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 0])}
    bf16_teacher = copy.deepcopy(teacher).to(torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = TeacherRunner(teacher, module)(batch)
        cast = TeacherRunner(bf16_teacher, module)(batch)
    assert cast["teacher_logits"].dtype == torch.bfloat16
    assert torch.allclose(cast["teacher_logits"].float(), ref["teacher_logits"].float(), atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(cast)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert torch.isfinite(out["loss"])


def test_compile_is_in_place_and_keeps_parameter_names():
    from distiller_nlp.core.engine.engine import compile_modules

    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.student = nn.Linear(4, 2)

    holder, teacher = Holder(), nn.Linear(4, 2)
    names = list(holder.state_dict())
    compile_modules(holder, [teacher])
    assert holder.student._compiled_call_impl is not None and teacher._compiled_call_impl is not None
    assert list(holder.state_dict()) == names
