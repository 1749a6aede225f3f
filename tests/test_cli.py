"""The command line end to end: finetune-teacher -> distill -> evaluate -> predict, bad input (exit 2, one line,
nothing written), a SIGKILLed run resumed to the same metrics, and a real 2-process run under ``accelerate launch``.

Tiny random backbone + the packaged WordPiece tokenizer + small SST-2-format data written by the tests
(see conftest.py). Every run uses ``--precision no`` so the suite behaves the same on any CPU.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from transformers import AutoModelForSequenceClassification

from conftest import write_sst2_dir
from distiller_nlp.cli import main

STUDENT = "layers=1,hidden=16,heads=2,intermediate=32"  # head size 8 = the tiny teacher's
FAST = ["--precision", "no", "--report-to", "none", "--max-length", "16", "--batch-size", "16"]


def read_metrics(path):
    with open(os.path.join(path, "metrics.json")) as fh:
        return json.load(fh)


def distill_args(teacher, data_dir, out, *extra):
    return ["distill", "--teacher", teacher, "--task", "sst2", "--data-dir", data_dir, "--student-shape", STUDENT,
            "--output-dir", str(out), *FAST, *extra]


# -------------------------------------------------------------------------------------------------- end to end

def test_finetune_distill_evaluate_predict(tiny_teacher, sst2_dir, tmp_path, capsys):
    t = read_metrics(tiny_teacher)
    assert 0.0 <= t["eval_accuracy"] <= 1.0 and t["eval_examples"] == 37
    assert t["train_runtime_s"] > 0 and t["examples_per_s"] > 0
    assert t["eval_accuracy"] > 0.7, "the tiny teacher should learn the word-sentiment rule"

    out = tmp_path / "student"
    code = main(distill_args(tiny_teacher, sst2_dir, out, "--epochs", "3", "--lr", "3e-3", "--pred-loss", "kd",
                             "--temperature", "2", "--hard-label-weight", "0.5", "--mapping", "skip",
                             "--inter-loss", "hidden_mse"))
    assert code == 0
    m = read_metrics(out)
    for key in ("eval_accuracy", "train_runtime_s", "examples_per_s", "flops_ratio", "student_encoder_flops"):
        assert key in m
    assert 0.0 <= m["eval_accuracy"] <= 1.0 and m["eval_examples"] == 37
    assert m["student_layers"] == 1 and m["student_hidden"] == 16 and m["world_size"] == 1
    assert m["flops_ratio"] < 0.25

    # A plain Hugging Face checkpoint: safetensors, no projection weights, loads without our code.
    files = set(os.listdir(out))
    assert "model.safetensors" in files and "pytorch_model.bin" not in files and "config.json" in files
    from safetensors.torch import load_file

    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any("projection" in k or "critic" in k for k in keys)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 2 and model.config.num_hidden_layers == 1

    # evaluate reproduces the selected model's dev metric; predict writes one row per dev example.
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out), "--task", "sst2", "--data-dir", sst2_dir, "--precision", "no",
                 "--max-length", "16", "--output-dir", str(ev)]) == 0
    assert read_metrics(ev)["eval_accuracy"] == pytest.approx(m["eval_accuracy"], abs=1e-9)
    pred = tmp_path / "pred.tsv"
    assert main(["predict", "--model", str(out), "--task", "sst2", "--data-dir", sst2_dir, "--split",
                 "validation", "--max-length", "16", "--output", str(pred)]) == 0
    lines = pred.read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["index", "prediction"] and len(lines) == 1 + 37


def test_recipe_run_with_mi_alpha_and_attention_scores(tiny_teacher, sst2_dir, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
teacher: {tiny_teacher}
student_shape: {STUDENT}
data: {{task: sst2, data_dir: {sst2_dir}}}
kd:
  pred_loss: kd
  temperature: 2.0
  hard_label_weight: 1.0
  intermediate:
    - {{layer_T: 2, layer_S: 1, feature: attention_scores, loss: attention_score, weight: 0.1,
        params: {{num_heads: 2}}}}
  mapping: {{strategy: last, loss: mi_alpha, weight: 0.5, params: {{alpha: 0.5}}}}
train: {{max_steps: 4, batch_size: 8, precision: "no", report_to: none, max_length: 16}}
""")
    out = tmp_path / "run"
    assert main(["run", str(recipe), "--output-dir", str(out)]) == 0
    assert not (out / "teacher").exists()  # the teacher already has a classifier for the task: used as given
    m = read_metrics(out / "student")
    assert m["global_step"] == 4 and read_metrics(out)["student"] == str(out / "student")
    keys = AutoModelForSequenceClassification.from_pretrained(out / "student").state_dict().keys()
    assert not any("critic" in k for k in keys)


# -------------------------------------------------------------------------------------------------- bad input

def _bad_sst2(tmp_path, train=None, dev=None):
    d = tmp_path / "bad"
    write_sst2_dir(d, n_train=16, n_dev=8)
    if train is not None:
        (d / "train.tsv").write_text(train)
    if dev is not None:
        (d / "dev.tsv").write_text(dev)
    return str(d)


BAD_CASES = {
    "malformed yaml": (lambda tp, t, b, d: ["--config", _write(tp, "kd: [unclosed\n")], "malformed YAML"),
    "unknown key": (lambda tp, t, b, d: ["--config", _write(tp, "kd:\n  temprature: 2\n")], "kd.temprature"),
    "missing config": (lambda tp, t, b, d: ["--config", str(tp / "nope.yaml")], "nope.yaml"),
    "missing column": (lambda tp, t, b, d: ["--text-column", "review"], "'review'"),
    "label out of range": (lambda tp, t, b, d: ["--data-dir", _bad_sst2(tp, train="sentence\tlabel\ngood\t1\nbad\t5\n")],
                           "label"),
    "empty split": (lambda tp, t, b, d: ["--data-dir", _bad_sst2(tp, dev="sentence\tlabel\n")], "empty"),
    "teacher without classifier": (lambda tp, t, b, d: ["--teacher", b], "finetune-teacher"),
    "student wider than teacher": (lambda tp, t, b, d: ["--student-shape", "layers=3,hidden=16,heads=2",
                                                         "--student-init", "teacher"], "wider than the teacher"),
    "bad student shape": (lambda tp, t, b, d: ["--student-shape", "layers=2,hidden=30,heads=4"], "divisible"),
    "unknown task": (lambda tp, t, b, d: ["--task", "sst3"], "sst3"),
    "unknown loss": (lambda tp, t, b, d: ["--mapping", "skip", "--inter-loss", "hidden_msee"], "hidden_msee"),
    "out-of-range layer": (lambda tp, t, b, d: ["--set", "kd.intermediate=[{layer_T: 9, layer_S: 1}]"], "9"),
}


def _write(tmp_path, text):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_one_line_exit_2_nothing_written(case, tiny_teacher, tiny_backbone, sst2_dir, tmp_path, capsys):
    make, needle = BAD_CASES[case]
    out = tmp_path / "out"
    args = ["distill", "--teacher", tiny_teacher, "--task", "sst2", "--data-dir", sst2_dir, "--student-shape",
            STUDENT, "--output-dir", str(out), *FAST, "--max-steps", "2"]
    code = main(args + make(tmp_path, tiny_teacher, tiny_backbone, sst2_dir))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err)
    assert needle in errors[0], errors[0]
    assert not out.exists(), "nothing may be written on bad input"


def test_non_empty_output_dir_needs_resume_or_overwrite(tiny_teacher, sst2_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = main(distill_args(tiny_teacher, sst2_dir, out, "--max-steps", "2"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--resume" in err[0] and "--overwrite" in err[0]
    assert os.listdir(out) == ["keep.txt"]
    assert main(distill_args(tiny_teacher, sst2_dir, out, "--max-steps", "2", "--overwrite")) == 0
    assert "keep.txt" not in os.listdir(out) and "metrics.json" in os.listdir(out)


def test_finetune_bad_model_and_python_api_error(tmp_path, sst2_dir, capsys):
    code = main(["finetune-teacher", "--model", str(tmp_path / "no-model"), "--task", "sst2", "--data-dir", sst2_dir,
                 "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "no-model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------------------------------------- subprocesses

def _env():
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    tests_dir = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(tests_dir), env.get("PYTHONPATH", "")])
    return env


def test_sigkill_then_resume_gives_the_same_metrics(tiny_teacher, sst2_dir, tmp_path):
    """A distill run killed with SIGKILL after a checkpoint and restarted with --resume ends as an uninterrupted one."""
    common = ["--max-steps", "60", "--save-steps", "3", "--eval-steps", "20", "--lr", "3e-3", "--batch-size", "8",
              "--group-by-length",
              "--pred-loss", "kd", "--hard-label-weight", "0.5", "--mapping", "skip", "--inter-loss", "mi_alpha"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    cmd = [sys.executable, "-m", "distiller_nlp"]
    args_full = distill_args(tiny_teacher, sst2_dir, full, *common)
    subprocess.run(cmd + args_full, check=True, env=_env(), capture_output=True)

    proc = subprocess.Popen(cmd + distill_args(tiny_teacher, sst2_dir, cut, *common), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = cut / "checkpoints"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        done = [c for c in (os.listdir(ckpts) if ckpts.is_dir() else []) if c.startswith("checkpoint-")]
        if any(int(c.split("-")[1]) >= 9 for c in done):
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.02)
    proc.wait()
    assert killed, "the run finished before it could be killed; raise --max-steps"
    assert not (cut / "metrics.json").exists()
    res = subprocess.run(cmd + distill_args(tiny_teacher, sst2_dir, cut, *common, "--resume"), env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout + res.stderr
    a, b = read_metrics(full), read_metrics(cut)
    evals = {k: v for k, v in a.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
             and "per_s" not in k}
    assert evals and evals == {k: b[k] for k in evals}
    assert a["global_step"] == b["global_step"] == 60 and a["best_step"] == b["best_step"]


@pytest.mark.slow  # the default suite's 2-process runs are tests/test_distributed.py
@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")
def test_accelerate_launch_two_processes(tiny_teacher, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2 ... --cpu``: world size 2 (gloo), each dev example once."""
    data = write_sst2_dir(tmp_path / "data", n_train=40, n_dev=37, seed=5)  # 37: odd, so the sampler pads
    out = tmp_path / "ddp"
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", "--main_process_port", "29533", "-m", "distiller_nlp",
           *distill_args(tiny_teacher, data, out, "--max-steps", "3", "--cpu", "--eval-batch-size", "8",
                        "--group-by-length")]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_metrics(out)
    assert m["world_size"] == 2
    assert m["eval_examples"] == 37
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_hidden_layers == 1
    # The distributed evaluation equals a single-process evaluation of the same saved student.
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(out), "--task", "sst2", "--data-dir", data, "--precision", "no",
                 "--max-length", "16", "--output-dir", str(ev)]) == 0
    assert read_metrics(ev)["eval_accuracy"] == pytest.approx(m["eval_accuracy"], abs=1e-9)


def test_hidden_matches_reject_losses_of_other_inputs(tiny_teacher, sst2_dir, tmp_path, capsys):
    for loss in ("bdkd", "relation", "kd"):
        code = main(distill_args(tiny_teacher, sst2_dir, tmp_path / loss, "--mapping", "skip", "--inter-loss", loss))
        assert code == 2 and "does not apply to hidden states" in capsys.readouterr().err
