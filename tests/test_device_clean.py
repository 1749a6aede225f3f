"""Device-clean hot paths: every registered loss (and the NLP distillation module's forward) runs on ``meta``
tensors — a CPU-created tensor mixed in, or a host sync (``.item()``, ``float(t)``, ``.cpu()``, ``bool(t)``),
raises there — and under bf16 autocast each loss returns fp32 close to its fp32 value."""

import pytest
import torch

import distiller_nlp.lm  # noqa: F401  (registers the causal-LM token divergences, kind token_logits)
from distiller_nlp.core.losses import LOSSES, get_loss, is_stateful

B, C, S, H, HT = 4, 5, 6, 8, 12  # batch, classes, tokens, student / teacher hidden sizes


def loss_inputs(name: str, device, dtype=torch.float32, seed: int = 0):
    """``(args, kwargs)`` for one call of loss ``name`` on ``device`` (deterministic values off meta)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        x = torch.randn(*shape, generator=g, dtype=torch.float32)
        return x.to(device=device, dtype=dtype)

    labels = torch.tensor([0, 1, 2, 4]).to(device)
    mask = torch.ones(B, S, dtype=torch.long).to(device)
    kind = LOSSES.meta(name)["kind"]
    if kind == "logits":
        second = {"teacher_logits": rnd(B, C), "weak_logits": rnd(B, C), "labels": labels}
        takes = LOSSES.meta(name)["takes"]
        args = [rnd(B, C)] + [second[t] for t in takes]
        return args, {}
    if kind == "token_logits":  # next-token distributions (B, S, vocabulary); a response mask selects tokens with
        return [rnd(B, S, C), rnd(B, S, C)], {}  # nonzero (one sync), so the sync-free path is the unmasked one
    if kind == "hidden":
        return [rnd(B, S, H), rnd(B, S, H), mask], {}
    if kind == "qkv":
        if name == "attention_score":
            return [rnd(B, S, H), rnd(B, S, H), rnd(B, S, HT), rnd(B, S, HT), mask], {"num_heads": 2}
        s = {k: rnd(B, S, H) for k in "qkv"}
        t = {k: rnd(B, S, HT) for k in "qkv"}
        return [s, t, mask], {"num_relation_heads": 2}
    if kind == "landmarks":
        pts = [rnd(B, 7, 2) for _ in range(4)]
        if name == "landmark_kd":
            return pts, {}
        return pts[:3], {}
    raise AssertionError(f"no inputs for loss kind {kind!r} ({name}): extend loss_inputs")


def call(name: str, device, dtype=torch.float32, seed: int = 0):
    args, kwargs = loss_inputs(name, device, dtype, seed)
    fn = get_loss(name)
    if is_stateful(name):  # mi_alpha: a critic module, built on the device
        torch.manual_seed(0)
        module = fn(H, H).to(device)
        return module(*args)
    return fn(*args, **kwargs)


LOSS_NAMES = sorted(LOSSES.names())


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_runs_on_meta_tensors(name):
    out = call(name, torch.device("meta"))
    assert out.device.type == "meta" and out.ndim == 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_is_fp32_under_bf16_autocast(name):
    """Same inputs (rounded to bf16 once), the loss in fp32 vs the loss under bf16 autocast: fp32 out, values within
    3 % (relative, or 3e-2 absolute for losses near 0): bf16 has an 8-bit mantissa."""
    ref = call(name, torch.device("cpu"), dtype=torch.bfloat16)  # bf16 inputs ...
    args, kwargs = loss_inputs(name, torch.device("cpu"), dtype=torch.bfloat16)
    args32 = [{k: v.float() for k, v in a.items()} if isinstance(a, dict)
              else (a.float() if torch.is_tensor(a) and a.is_floating_point() else a) for a in args]
    fn = get_loss(name)
    if is_stateful(name):
        torch.manual_seed(0)
        module = fn(H, H)
        exact = module(*args32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = module(*args)
    else:
        exact = fn(*args32, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = fn(*args, **kwargs)
    del ref
    assert auto.dtype == torch.float32, f"{name} returned {auto.dtype} under autocast"
    assert float(auto) == pytest.approx(float(exact), rel=3e-2, abs=3e-2)


def test_distill_module_forward_runs_on_meta(monkeypatch):
    """The whole NLP training step's loss (student forward, KD + hidden matches + attention scores) on meta.

    transformers' own mask helper syncs once per forward (``padding_mask.all()``, to drop an all-ones mask): that
    upstream check is patched out here; everything of ours runs as is."""
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "_ignore_bidirectional_mask_sdpa", lambda *a, **k: False)
    from transformers import BertConfig, BertForSequenceClassification

    from distiller_nlp.config import KDConfig
    from distiller_nlp.core.config import from_dict
    from distiller_nlp.kd.matches import resolve_matches
    from distiller_nlp.kd.module import DistillModule

    cfg = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
               max_position_embeddings=16, num_labels=3)
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(BertConfig(**cfg))
    student = BertForSequenceClassification(BertConfig(**{**cfg, "num_hidden_layers": 1}))
    kd = from_dict(KDConfig, {
        "pred_loss": "kd", "hard_label_weight": 0.5,
        "intermediate": [{"layer_T": 2, "layer_S": 1, "feature": "hidden", "loss": "hidden_mse"},
                         {"layer_T": 2, "layer_S": 1, "feature": "attention_scores", "loss": "attention_score",
                          "weight": 0.1}]})
    module = DistillModule(student, kd, resolve_matches(kd, teacher.config, student.config), teacher.config)
    module.train()
    meta = torch.device("meta")
    module.to(meta)
    batch = {"input_ids": torch.zeros(B, S, dtype=torch.long, device=meta),
             "attention_mask": torch.ones(B, S, dtype=torch.long, device=meta),
             "labels": torch.zeros(B, dtype=torch.long, device=meta),
             "teacher_logits": torch.zeros(B, 3, device=meta),
             "teacher_hidden": {2: torch.zeros(B, S, 16, device=meta)},
             "teacher_qkv": {2: {k: torch.zeros(B, S, 16, device=meta) for k in "qkv"}}}
    out = module(batch)
    assert out["loss"].device.type == "meta"


def test_mlm_masking_runs_on_the_batch_device_and_equals_the_hf_collator():
    """train-mlm's masking: on CPU the same masks as ``DataCollatorForLanguageModeling.torch_mask_tokens`` (same
    draws), and on meta tensors it runs (no host round trip)."""
    from transformers import DataCollatorForLanguageModeling

    from distiller_nlp.augment.mlm import _make_masker
    from distiller_nlp.models import load_tokenizer

    tok = load_tokenizer("minilm")
    ids = torch.tensor(tok(["the movie was really good", "bad food and a boring day today"], padding=True)["input_ids"])
    prepare = _make_masker(tok, 0.3)
    torch.manual_seed(3)
    ours = prepare({"input_ids": ids})
    hf = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.3)
    special = torch.isin(ids, torch.tensor(sorted(set(tok.all_special_ids))))
    torch.manual_seed(3)
    ref_ids, ref_labels = hf.torch_mask_tokens(ids.clone(), special_tokens_mask=special)
    assert torch.equal(ours["input_ids"], ref_ids) and torch.equal(ours["mlm_labels"], ref_labels)
    meta = prepare({"input_ids": torch.zeros(2, 5, dtype=torch.long, device="meta")})
    assert meta["input_ids"].device.type == "meta" and meta["mlm_labels"].device.type == "meta"
