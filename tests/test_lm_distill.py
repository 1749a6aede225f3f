"""``distill-lm`` (issue #21) end to end on tiny random llama models: every data mode trains and exports a plain HF
causal LM, the batches mask exactly the response tokens, and bad input is one line with exit 2 and nothing written."""

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from distiller_nlp.cli import main  # noqa: E402
from distiller_nlp.lm.distill import _from_generation, collate_lm  # noqa: E402

WORDS = [f"w{i}" for i in range(120)]


def _tokenizer(words=WORDS):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, "headline:": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                                unk_token="<unk>")


def _llama(path, layers=3, vocab=128, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                   pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True)
    model = transformers.LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    _tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    teacher = _llama(root / "teacher")
    data = root / "data"
    data.mkdir()
    rng = torch.Generator().manual_seed(0)
    for split, n in (("train", 48), ("validation", 8), ("test", 8)):
        with open(data / f"{split}.jsonl", "w") as fh:
            for _ in range(n):
                ids = torch.randint(4, 60, (6,), generator=rng).tolist()
                words = [WORDS[i] for i in ids]
                fh.write(json.dumps({"prompt": " ".join(words) + " headline:", "response": " ".join(words[:3])})
                         + "\n")
    return {"teacher": teacher, "data": str(data), "root": root}


def _argv(files, out, *extra):
    return ["distill-lm", "--teacher", files["teacher"], "--task", files["data"], "--student-layers", "0,2",
            "--output-dir", str(out), "--max-steps", "4", "--batch-size", "8", "--eval-batch-size", "8",
            "--max-new-tokens", "5", "--lr", "1e-3", "--precision", "no", "--report-to", "none", "--cpu", *extra]


def test_collate_masks_exactly_the_response_tokens():
    rows = [{"prompt_ids": [5, 6, 7], "response_ids": [8, 1]}, {"prompt_ids": [5], "response_ids": [9, 10, 1]}]
    b = collate_lm(pad_id=0, max_new_tokens=4)(rows)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 1], [5, 9, 10, 1, 0]]
    # logit t predicts token t+1: row 0 predicts 8 (from 7) and EOS; row 1 predicts 9, 10, EOS
    assert b["loss_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert b["prompt_ids"].tolist() == [[5, 6, 7], [0, 0, 5]] and b["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["labels"].tolist() == [[8, 1, -1, -1], [9, 10, 1, -1]]


def test_a_generated_batch_masks_the_generated_tokens_only():
    from distiller_nlp.lm.generate import GenerationOutput

    seq = torch.tensor([[0, 5, 6, 7, 1, 0], [5, 6, 6, 8, 9, 1]])
    attn = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    out = GenerationOutput(sequences=seq, attention_mask=attn, response_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]),
                           prompt_length=3)
    b = _from_generation(out)
    assert b["loss_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert b["position_ids"].tolist()[0][:4] == [0, 0, 1, 2]  # left padding: positions from the mask


@pytest.mark.parametrize("mode, extra", [
    ("supervised", []),
    ("seqkd", ["--divergence", "rkl"]),
    ("on_policy", ["--divergence", "jsd", "--beta", "0.5", "--lambda", "1"]),
    ("skd", ["--top-k", "5", "--hard-label-weight", "0.2"]),
])
def test_every_data_mode_trains_and_exports_a_plain_causal_lm(lm_files, tmp_path, mode, extra, monkeypatch):
    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / mode
    assert main(_argv(lm_files, out, "--data-mode", mode, *extra)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and metrics["data_mode"] == mode
    for key in ("eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_exact_match", "test_rougeL"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["student_params"] < metrics["teacher_params"]
    if mode in ("on_policy", "skd"):
        assert metrics["generated_batches"] > 0  # λ = 1 / SKD: every batch generated
    if mode == "skd":
        assert 0.0 <= metrics["skd_replacement_rate"] <= 1.0
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.num_hidden_layers == 2 and (out / "model.safetensors").is_file()
    assert "distill-lm" in (out / "README.md").read_text()


def test_different_tokenizers_a_long_prompt_and_a_large_k_are_one_line_errors(lm_files, tmp_path, capsys):
    other = tmp_path / "other"
    _llama(other, layers=1)
    _tokenizer(words=[f"v{i}" for i in range(120)]).save_pretrained(other)
    cases = [
        (["--student", str(other), "--student-layers", "every3"], "vocabular"),
        (["--max-prompt-tokens", "3"], "max-prompt-tokens"),
        (["--data-mode", "skd", "--top-k", "1000"], "larger than the vocabulary"),
    ]
    for i, (extra, needle) in enumerate(cases):
        argv = _argv(lm_files, tmp_path / f"bad{i}", *extra)
        if extra[0] == "--student":
            argv.remove("--student-layers")
            argv.remove("0,2")
        assert main(argv) == 2, extra
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert err[-1].startswith("error:") and needle in err[-1], err[-3:]
        assert not (tmp_path / f"bad{i}").exists() or not os.listdir(tmp_path / f"bad{i}")


def test_skd_under_two_processes_counts_each_dev_example_once_and_rank0_writes(lm_files, tmp_path):
    from test_distributed import Launch, check_run

    out = tmp_path / "run"
    argv = _argv(lm_files, out, "--data-mode", "skd", "--top-k", "5")[1:]
    argv[argv.index("--max-steps") + 1] = "3"
    run = Launch(tmp_path, "distiller_nlp", ["distill-lm", *argv],
                 extra_env={"DISTILLER_NLP_CACHE": str(tmp_path / "cache")})
    m = check_run(run, eval_examples=8)
    assert m["global_step"] == 3 and m["test_examples"] == 8 and m["generated_batches"] > 0
    run.check_artifacts(("metrics.json", "config.yaml", "model.safetensors", "README.md"))


def test_a_killed_run_resumes_to_the_same_metrics(lm_files, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "DISTILLER_NLP_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "distiller_nlp"]

    def argv(out):
        a = _argv(lm_files, out, "--data-mode", "on_policy", "--lambda", "0.5", "--save-steps", "2",
                  "--eval-steps", "8")
        a[a.index("--max-steps") + 1] = "24"  # long enough that the kill at step 4 lands before the end
        return a

    ref = subprocess.run(cmd + argv(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + argv(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "checkpoints").glob("checkpoint-00000004")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "metrics.json").exists()
    again = subprocess.run(cmd + argv(out) + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    assert a["global_step"] == b["global_step"] == 24
    for key in [k for k in a if k.startswith(("eval_", "test_")) and not k.endswith("_s")]:
        assert a[key] == pytest.approx(b[key], abs=1e-9), key
    from safetensors.torch import load_file

    wa, wb = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # the λ draws replayed exactly


def test_a_top_k_teacher_cache_with_k_equal_to_the_vocabulary_trains_like_the_live_teacher(lm_files, tmp_path,
                                                                                         monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("DISTILLER_NLP_CACHE", str(tmp_path / "cache"))
    live, cached = tmp_path / "live", tmp_path / "cached"
    assert main(_argv(lm_files, live, "--eval-steps", "100")) == 0
    assert main(_argv(lm_files, cached, "--teacher-topk", "128", "--eval-steps", "100")) == 0
    m = json.loads((cached / "metrics.json").read_text())
    assert m["teacher_topk"] == 128 and m["dense_fp32_bytes_per_token"] == 4 * 128
    assert m["teacher_cache_bytes_per_token"] > 0 and m["teacher_cache_tokens"] > 0
    a, b = load_file(str(live / "model.safetensors")), load_file(str(cached / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)  # k = V: the sparse loss is the dense one
    assert main(_argv(lm_files, tmp_path / "bad", "--teacher-topk", "8", "--data-mode", "on_policy")) == 2
    assert not (tmp_path / "bad").exists()


def test_capture_hooks_read_llama_hidden_states_as_output_hidden_states(lm_files):
    from distiller_nlp.core.capture import FeatureCapture, num_layers

    model = transformers.AutoModelForCausalLM.from_pretrained(lm_files["teacher"]).eval()
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    cap = FeatureCapture(model, hidden_layers=range(4), qkv_layers=range(1, 4))
    assert cap._encoder.source == "registry" and num_layers(model) == 3
    with cap, torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    for i in range(4):  # 0 = embeddings, 3 = after the final RMSNorm, like output_hidden_states
        torch.testing.assert_close(cap.hidden[i], out.hidden_states[i], atol=1e-6, rtol=0)
    assert cap.qkv[1]["q"].shape == (1, 5, 32) and cap.qkv[1]["k"].shape == (1, 5, 16)  # grouped-query k/v


@pytest.mark.parametrize("inter, extra", [("mi_alpha", ["--mapping", "skip"]), ("hidden_mse", ["--mapping", "last"]),
                                          ("cosine", ["--wide"])])
def test_hidden_state_objectives_with_a_layer_mapping(lm_files, tmp_path, inter, extra):
    out = tmp_path / inter
    argv = _argv(lm_files, out, "--inter-loss", inter, *[e for e in extra if e != "--wide"])
    if "--wide" in extra:  # a student of another width (same tokenizer): a projection per matched layer
        torch.manual_seed(1)
        cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                       pad_token_id=0, eos_token_id=1, bos_token_id=1, tie_word_embeddings=True)
        transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "narrow")
        _tokenizer().save_pretrained(tmp_path / "narrow")
        i = argv.index("--student-layers")
        argv[i: i + 2] = ["--student", str(tmp_path / "narrow")]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    hist = json.loads((out / "history.json").read_text())["train"]
    assert any(inter in h for h in hist), hist[:2]  # the objective was logged beside the divergence
    assert m["global_step"] == 4 and "intermediate" in (out / "README.md").read_text()


def test_dev_and_test_subsets_are_capped_separately(lm_files):
    from distiller_nlp.lm.distill import LMDataConfig, load_lm_data

    dd = load_lm_data(LMDataConfig(task=lm_files["data"], max_train_examples=10, max_eval_examples=3,
                                   max_test_examples=0))
    assert {k: len(v) for k, v in dd.items()} == {"train": 10, "validation": 3, "test": 8}
