"""Tests of distiller_nlp.models: resolution, teacher/backbone loading, student shapes, teacher-slice init, saving."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import json  # noqa: E402
import time  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from distiller_nlp.core.errors import DistillerError  # noqa: E402
from distiller_nlp.models import (StudentShape, build_student, describe_model, load_backbone_for_finetune,
                                  load_teacher_for_task, load_tokenizer, packaged_minilm_path, parse_student_shape,
                                  resolve_model_path, save_student)

TASK3 = SimpleNamespace(name="toy", num_labels=3, label_names=["a", "b", "c"], is_regression=False)
TASK2 = SimpleNamespace(name="toy2", num_labels=2, label_names=["neg", "pos"], is_regression=False)
REG = SimpleNamespace(name="sts", num_labels=1, label_names=None, is_regression=True)

# Teacher: L=4, H=32, A=4 (head size 8), I=64.
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, type_vocab_size=2)


def _scramble(model, seed=1):
    """Give every parameter (LayerNorms, biases included) distinct random values, so slices are recognisable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _tiny_teacher(num_labels=3, **over):
    config = BertConfig(**{**TINY, **over}, num_labels=num_labels,
                        id2label={i: n for i, n in enumerate("abc"[:num_labels])},
                        label2id={n: i for i, n in enumerate("abc"[:num_labels])})
    torch.manual_seed(0)
    return _scramble(BertForSequenceClassification(config)).eval()


@pytest.fixture(scope="module")
def teacher():
    return _tiny_teacher()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, teacher):
    path = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def minilm():
    return load_backbone_for_finetune("minilm", TASK3)


def _ids(vocab=99, seq=12, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    return ids, mask


def _layer(model, i):
    return model.bert.encoder.layer[i]


# --- teacher-slice initialisation ----------------------------------------------------------------------------------


def test_teacher_init_copies_leading_slices(teacher):
    # L 4→2 maps student layers (1, 2) to teacher layers ⌊i·4/2⌋ = (2, 4), i.e. 0-based (1, 3).
    shape = "layers=2,hidden=16,heads=2,intermediate=24"  # head size 16/2 = 8 = teacher's
    s = build_student(teacher, shape=shape, init="teacher", task=TASK3, seed=0)
    assert isinstance(s, BertForSequenceClassification)
    assert (s.config.num_hidden_layers, s.config.hidden_size, s.config.num_attention_heads,
            s.config.intermediate_size) == (2, 16, 2, 24)
    assert s.config.vocab_size == 99 and s.config.max_position_embeddings == 40
    tb, sb = teacher.bert, s.bert
    eq = torch.equal
    assert eq(sb.embeddings.word_embeddings.weight, tb.embeddings.word_embeddings.weight[:, :16])
    assert eq(sb.embeddings.position_embeddings.weight, tb.embeddings.position_embeddings.weight[:, :16])
    assert eq(sb.embeddings.token_type_embeddings.weight, tb.embeddings.token_type_embeddings.weight[:, :16])
    assert eq(sb.embeddings.LayerNorm.weight, tb.embeddings.LayerNorm.weight[:16])
    assert eq(sb.embeddings.LayerNorm.bias, tb.embeddings.LayerNorm.bias[:16])
    for i, j in ((0, 1), (1, 3)):
        sl, tl = _layer(s, i), _layer(teacher, j)
        for part in ("query", "key", "value"):
            assert eq(getattr(sl.attention.self, part).weight, getattr(tl.attention.self, part).weight[:16, :16])
            assert eq(getattr(sl.attention.self, part).bias, getattr(tl.attention.self, part).bias[:16])
        assert eq(sl.attention.output.dense.weight, tl.attention.output.dense.weight[:16, :16])
        assert eq(sl.attention.output.LayerNorm.weight, tl.attention.output.LayerNorm.weight[:16])
        assert eq(sl.intermediate.dense.weight, tl.intermediate.dense.weight[:24, :16])
        assert eq(sl.intermediate.dense.bias, tl.intermediate.dense.bias[:24])
        assert eq(sl.output.dense.weight, tl.output.dense.weight[:16, :24])
        assert eq(sl.output.dense.bias, tl.output.dense.bias[:16])
        assert eq(sl.output.LayerNorm.bias, tl.output.LayerNorm.bias[:16])
    # not the first-k layers
    assert not eq(_layer(s, 0).attention.self.query.weight, _layer(teacher, 0).attention.self.query.weight[:16, :16])
    assert eq(sb.pooler.dense.weight, tb.pooler.dense.weight[:16, :16])
    assert eq(s.classifier.weight, teacher.classifier.weight[:, :16])
    assert eq(s.classifier.bias, teacher.classifier.bias)
    # independent storage: changing the teacher later leaves the student alone
    before = sb.embeddings.word_embeddings.weight.clone()
    other = _tiny_teacher()
    s2 = build_student(other, shape=shape, init="teacher", task=TASK3)
    with torch.no_grad():
        other.bert.embeddings.word_embeddings.weight.add_(1.0)
    assert eq(s2.bert.embeddings.word_embeddings.weight, before)
    assert s.config.name_or_path == ""


def test_same_shape_teacher_init_reproduces_teacher_logits(teacher):
    s = build_student(teacher, shape="layers=4,hidden=32,heads=4,intermediate=64", init="teacher").eval()
    ids, mask = _ids()
    with torch.no_grad():
        assert torch.equal(s(input_ids=ids, attention_mask=mask).logits,
                           teacher(input_ids=ids, attention_mask=mask).logits)
    # without the head copy the classifier is fresh, so the logits differ
    s2 = build_student(teacher, shape="layers=4,hidden=32,heads=4,intermediate=64", init="teacher",
                       copy_head=False).eval()
    with torch.no_grad():
        assert not torch.allclose(s2(input_ids=ids).logits, teacher(input_ids=ids).logits)


def test_classifier_fresh_when_label_count_differs(teacher):
    s = build_student(teacher, shape="layers=2,hidden=16,heads=2,intermediate=32", task=TASK2, seed=3)
    assert s.config.num_labels == 2 and s.config.id2label == {0: "neg", 1: "pos"}
    assert s.config.problem_type == "single_label_classification"
    assert s.classifier.weight.shape == (2, 16)
    # the encoder is still teacher-initialised (auto → teacher)
    assert torch.equal(s.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight[:, :16])
    r = build_student(teacher, shape="layers=2,hidden=16,heads=2,intermediate=32", task=REG)
    assert r.config.num_labels == 1 and r.config.problem_type == "regression"


def test_wider_student_errors_and_auto_falls_back(teacher):
    with pytest.raises(DistillerError, match=r"wider than the teacher \(hidden 64 > 32\).*random"):
        build_student(teacher, shape="layers=2,hidden=64,heads=8,intermediate=64", init="teacher")
    with pytest.raises(DistillerError, match=r"layers 5 > 4"):
        build_student(teacher, shape="layers=5,hidden=32,heads=4,intermediate=64", init="teacher")
    with pytest.raises(DistillerError, match=r"intermediate 128 > 64"):
        build_student(teacher, shape="layers=2,hidden=32,heads=4,intermediate=128", init="teacher")
    a = build_student(teacher, shape="layers=5,hidden=32,heads=4,intermediate=64", init="auto", seed=7)
    b = build_student(teacher, shape="layers=5,hidden=32,heads=4,intermediate=64", init="random", seed=7)
    c = build_student(teacher, shape="layers=5,hidden=32,heads=4,intermediate=64", init="random", seed=8)
    wa, wb, wc = (m.bert.embeddings.word_embeddings.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)  # auto = random with the same seed
    assert not torch.equal(wa, teacher.bert.embeddings.word_embeddings.weight)


def test_head_size_mismatch(teacher):
    shape = "layers=2,hidden=16,heads=4,intermediate=32"  # head size 4, teacher's is 8
    with pytest.raises(DistillerError, match="head size 4"):
        build_student(teacher, shape=shape, init="teacher")
    s = build_student(teacher, shape=shape, init="auto")
    assert not torch.equal(s.bert.embeddings.word_embeddings.weight,
                           teacher.bert.embeddings.word_embeddings.weight[:, :16])


def test_build_student_argument_errors(teacher, teacher_dir):
    with pytest.raises(DistillerError, match="exactly one"):
        build_student(teacher)
    with pytest.raises(DistillerError, match="exactly one"):
        build_student(teacher, shape="layers=1,hidden=8,heads=1", student=teacher_dir)
    with pytest.raises(DistillerError, match="unknown student init 'copy'"):
        build_student(teacher, shape="layers=1,hidden=8,heads=1", init="copy")
    with pytest.raises(DistillerError, match="heads × head_dim"):
        build_student(teacher, shape="layers=1,hidden=16,heads=3,head_dim=8")


def test_other_bert_layouts_roberta_distilbert():
    torch.manual_seed(0)
    rob = _scramble(RobertaForSequenceClassification(RobertaConfig(
        vocab_size=60, hidden_size=24, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=34, num_labels=2)))
    s = build_student(rob, shape="layers=1,hidden=12,heads=2,intermediate=20", init="teacher")
    assert type(s).__name__ == "RobertaForSequenceClassification"
    assert s.config.max_position_embeddings == 34 and s.config.pad_token_id == rob.config.pad_token_id
    # 3→1: student layer 1 ← teacher layer ⌊1·3/1⌋ = 3 (0-based 2)
    assert torch.equal(s.roberta.encoder.layer[0].attention.self.key.weight,
                       rob.roberta.encoder.layer[2].attention.self.key.weight[:12, :12])
    assert torch.equal(s.classifier.dense.weight, rob.classifier.dense.weight[:12, :12])
    assert torch.equal(s.classifier.out_proj.weight, rob.classifier.out_proj.weight[:, :12])

    dis = _scramble(DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=60, dim=24, n_layers=2, n_heads=4, hidden_dim=40, max_position_embeddings=34, num_labels=2)))
    d = build_student(dis, shape="layers=1,hidden=12,heads=2,intermediate=20", init="teacher")
    assert (d.config.n_layers, d.config.dim, d.config.n_heads, d.config.hidden_dim) == (1, 12, 2, 20)
    assert torch.equal(d.distilbert.transformer.layer[0].ffn.lin1.weight,
                       dis.distilbert.transformer.layer[1].ffn.lin1.weight[:20, :12])
    info = describe_model(d)
    assert (info["layers"], info["hidden"], info["heads"], info["intermediate"]) == (1, 12, 2, 20)


def test_unsupported_teacher_type_named():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    gpt = GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    with pytest.raises(DistillerError, match="model type 'gpt2'"):
        build_student(gpt, shape="layers=1,hidden=8,heads=1")


def test_build_student_from_checkpoint(tmp_path, teacher):
    raw = BertModel(BertConfig(**{**TINY, "num_hidden_layers": 2}))
    raw.save_pretrained(tmp_path / "raw")
    s = build_student(teacher, student=str(tmp_path / "raw"), task=TASK2, seed=1)
    assert isinstance(s, BertForSequenceClassification) and s.config.num_labels == 2
    assert torch.equal(s.bert.encoder.layer[1].output.dense.weight, raw.encoder.layer[1].output.dense.weight)
    # without a task the label fields come from the teacher
    s3 = build_student(teacher, student=str(tmp_path / "raw"))
    assert s3.config.num_labels == 3 and s3.config.id2label == teacher.config.id2label


# --- shapes ----------------------------------------------------------------------------------------------------------


def test_parse_student_shape():
    s = parse_student_shape("layers=3,hidden=256,heads=8,intermediate=1024")
    assert s == StudentShape(3, 256, 8, 1024) and s.head_dim == 32
    assert str(s) == "layers=3,hidden=256,heads=8,intermediate=1024"
    assert parse_student_shape(str(s)) == s
    assert parse_student_shape(" L=3, H=256, A=8, ffn=1024 ") == s
    assert parse_student_shape({"layers": 3, "hidden": 256, "heads": 8}).intermediate == 1024  # 4 × hidden
    assert str(parse_student_shape("layers=1,hidden=10,heads=3,head_dim=4")) == (
        "layers=1,hidden=10,heads=3,intermediate=40,head_dim=4")


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("layers=3,hidden=256,heads=8,depth=2", "unknown key 'depth'"),
        ("layers=three,hidden=256,heads=8", "layers='three' is not an integer"),
        ("layers=3,hidden=256.5,heads=8", "hidden='256.5' is not an integer"),
        ("layers=0,hidden=256,heads=8", "layers=0 must be positive"),
        ("layers=3,hidden=-256,heads=8", "hidden=-256 must be positive"),
        ("layers=3,hidden=250,heads=8", "hidden=250 is not divisible by heads=8"),
        ("hidden=256,heads=8", "missing key 'layers'"),
        ("layers=3,L=4,hidden=256,heads=8", "'layers' given twice"),
        ("layers=3,hidden", "'hidden' is not key=value"),
    ],
)
def test_parse_student_shape_errors(spec, pattern):
    with pytest.raises(DistillerError, match=pattern):
        parse_student_shape(spec)


# --- resolution and loading ------------------------------------------------------------------------------------------


def test_resolve_model_path(tmp_path, teacher_dir, monkeypatch):
    packaged = packaged_minilm_path()
    assert os.path.isfile(os.path.join(packaged, "config.json")) and packaged.endswith("model")
    for alias in ("minilm", "MiniLM", "packaged", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_path(alias) == packaged
    assert resolve_model_path(teacher_dir) == teacher_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillerError, match="empty has no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    for missing in ("./no/such/dir", str(tmp_path / "nope"), "a/b/c"):
        with pytest.raises(DistillerError, match="no such model directory"):
            resolve_model_path(missing)
    t0 = time.monotonic()
    with pytest.raises(DistillerError, match=r"model 'nobody-xyz/no-such-model-123' not found locally \(offline\)"):
        resolve_model_path("nobody-xyz/no-such-model-123")
    assert time.monotonic() - t0 < 5
    # online, a Hub id is handed to from_pretrained unchanged (no network call here)
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert resolve_model_path("bert-base-uncased") == "bert-base-uncased"


def test_load_teacher_for_task(teacher, teacher_dir):
    t = load_teacher_for_task(teacher_dir, TASK3)
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    ids, mask = _ids()
    with torch.no_grad():
        assert torch.allclose(t(input_ids=ids, attention_mask=mask).logits,
                              teacher(input_ids=ids, attention_mask=mask).logits, atol=1e-6)
    with pytest.raises(DistillerError, match=r"it has 3 outputs, the task has 2 labels.*finetune-teacher"):
        load_teacher_for_task(teacher_dir, TASK2)
    with pytest.raises(DistillerError, match=r"regression.*finetune-teacher"):
        load_teacher_for_task(teacher_dir, REG)
    permuted = SimpleNamespace(name="perm", num_labels=3, label_names=["c", "b", "a"], is_regression=False)
    with pytest.raises(DistillerError, match="orders its labels"):
        load_teacher_for_task(teacher_dir, permuted)
    assert load_teacher_for_task(teacher_dir, TASK3, dtype="bf16").dtype == torch.bfloat16


def test_load_teacher_without_classifier_raises(tmp_path):
    BertModel(BertConfig(**TINY)).save_pretrained(tmp_path / "raw")
    with pytest.raises(DistillerError, match=r"has no classifier trained for task 'toy'.*classifier.*finetune-teacher"):
        load_teacher_for_task(str(tmp_path / "raw"), TASK3)
    with pytest.raises(DistillerError, match="finetune-teacher"):
        load_teacher_for_task("minilm", TASK3)  # the packaged MiniLM is a bare BertModel


def test_load_backbone_for_finetune(teacher_dir, minilm, caplog):
    assert minilm.config.num_labels == 3 and minilm.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert minilm.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert minilm.config.problem_type == "single_label_classification"
    # a checkpoint with a 3-label head gets a fresh 2-label head (mismatch), logged once at info level
    with caplog.at_level("INFO", logger="distiller_nlp.models"):
        m = load_backbone_for_finetune(teacher_dir, TASK2)
    assert m.classifier.weight.shape == (2, 32)
    assert any("size mismatch" in r.getMessage() and "classifier.weight" in r.getMessage() for r in caplog.records)
    r = load_backbone_for_finetune(teacher_dir, REG)
    assert r.config.num_labels == 1 and r.config.problem_type == "regression"


# --- describe / save -------------------------------------------------------------------------------------------------


def test_describe_packaged_minilm_and_demo_ratio(minilm):
    d = describe_model(minilm)
    assert (d["layers"], d["hidden"], d["heads"], d["intermediate"], d["head_dim"]) == (6, 384, 12, 1536, 32)
    assert d["params"] == 22_713_216 + 384 * 3 + 3  # BertModel 22.71M + the 3-label classifier
    assert d["encoder_flops"] == 2_868_903_936 and d["seq_len"] == 128
    assert d["encoder_params"] == 6 * (4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384 + 4 * 384)
    assert describe_model(minilm.config)["params"] == d["params"]  # meta-device count from the config
    demo = build_student(minilm, shape="layers=3,hidden=256,heads=8,intermediate=1024", task=TASK3)
    # head size 256/8 = 32 = MiniLM's, so auto → teacher init (layers 2, 4, 6)
    assert torch.equal(demo.bert.encoder.layer[2].intermediate.dense.weight,
                       minilm.bert.encoder.layer[5].intermediate.dense.weight[:1024, :256])
    ds = describe_model(demo)
    assert ds["encoder_flops"] == 654_311_424  # 2·3·(3·128·256² + 2·128²·256 + 128·256² + 2·128·256·1024)
    assert ds["encoder_flops"] / d["encoder_flops"] == pytest.approx(0.228, abs=0.001)


def test_save_student_round_trip(tmp_path, teacher):
    tok = load_tokenizer("minilm")
    s = build_student(teacher, shape="layers=2,hidden=16,heads=2,intermediate=24", task=TASK3).eval()
    out = tmp_path / "student"
    assert save_student(s, tok, out) == str(out)
    assert sorted(os.listdir(tmp_path)) == ["student"]  # no temp dir left behind
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= files
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not a private temp file
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bert" and "auto_map" not in cfg
    assert cfg.get("_name_or_path", "") in ("", str(out))  # never the teacher's
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(loaded) is BertForSequenceClassification
    assert loaded.config.id2label == {0: "a", 1: "b", 2: "c"}
    ids, mask = _ids()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, attention_mask=mask).logits,
                           s(input_ids=ids, attention_mask=mask).logits)
    # saving into an existing directory replaces our files and keeps others
    (out / "notes.txt").write_text("keep")
    save_student(s, None, out)
    assert (out / "notes.txt").read_text() == "keep" and "tokenizer_config.json" in os.listdir(out)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DistillerError, match="not a directory"):
        save_student(s, None, tmp_path / "afile")
