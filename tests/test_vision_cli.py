"""``vision-kd train`` end to end on real digits (short runs): a teacher trained by the same command and reloaded,
every method from the command line, the default teacher trained once and cached, landmarks on the synthetic set, a
YAML recipe, and bad input (one line, exit 2, nothing written)."""

import json
import os
import subprocess
import sys

import pytest

from vision_kd.cli import main

FAST = ["--threads", "1", "--precision", "no", "--report-to", "none"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_metrics(path):
    with open(os.path.join(path, "metrics.json")) as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("vision_cache"))


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("vt") / "teacher")
    assert main(["train", "--method", "ce", "--dataset", "digits", "--student", "mlp", "--epochs", "4",
                 "--output-dir", out, *FAST]) == 0
    return out


def test_teacher_trains_saves_safetensors_and_reloads(digits_teacher):
    from vision_kd.models import load_model

    m = read_metrics(digits_teacher)
    assert 0.85 < m["eval_accuracy"] <= 1.0 and 0 <= m["eval_ece"] <= 1
    for key in ("train_runtime_s", "examples_per_s", "test_accuracy", "seconds_per_epoch"):
        assert key in m
    files = set(os.listdir(digits_teacher))
    assert {"model.safetensors", "vision_model.json", "metrics.json", "config.yaml"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert load_model(digits_teacher).spec["arch"] == "mlp"


@pytest.mark.parametrize("method", ["kd", "dkd", "nkd", "uskd", "bdkd"])
def test_each_method_trains_from_the_cli(method, digits_teacher, tmp_path):
    out = tmp_path / method
    extra = [] if method == "uskd" else ["--teacher", digits_teacher]
    if method == "kd":
        extra.append("--augment")  # augmented images: the teacher runs live (offline strategy), not cached
    assert main(["train", "--method", method, "--dataset", "digits", "--max-steps", "25", "--output-dir", str(out),
                 *extra, *FAST]) == 0
    m = read_metrics(out)
    assert m["method"] == method and m["global_step"] == 25 and 0 <= m["eval_accuracy"] <= 1
    assert m["train_runtime_s"] > 0 and m["examples_per_s"] > 0 and "eval_ece" in m
    assert m["teacher_cached"] is (method in ("dkd", "nkd"))
    from huggingface_hub import ModelCard

    card = ModelCard.load(str(out / "README.md"))
    assert method in card.data.tags and card.data.pipeline_tag == "image-classification"
    res = {r.metric_type: r.metric_value for r in card.data.eval_results if r.dataset_split == "validation"}
    assert res["accuracy"] == pytest.approx(m["eval_accuracy"], abs=1e-6) and f"`{method}`" in card.text
    if method == "bdkd":
        assert os.path.isfile(out / "teacher" / "model.safetensors")
    from safetensors.torch import load_file

    keys = load_file(str(out / "model.safetensors")).keys()
    assert not any(k.startswith(("weak_head", "teacher", "discriminator")) for k in keys)


def test_default_teacher_is_trained_once_and_cached(cache, tmp_path, capsys):
    args = ["train", "--method", "lwkd", "--dataset", "digits", "--max-steps", "15", "--teacher-cache", cache,
            "--set", "teacher_epochs=2", *FAST]
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    assert "training the default synthetic teacher" in capsys.readouterr().err
    assert main([*args, "--output-dir", str(tmp_path / "b")]) == 0
    assert "training the default" not in capsys.readouterr().err
    m = read_metrics(tmp_path / "b")
    assert m["teachers"]["teacher"].startswith(cache) and "teacher_test_accuracy" in m


def test_landmark_kd_on_synthetic_shapes(cache, tmp_path):
    out = tmp_path / "lmk"
    assert main(["train", "--method", "landmark_kd", "--dataset", "landmarks", "--max-steps", "20",
                 "--teacher-cache", cache, "--set", "teacher_epochs=1", "--teacher-arch", "mlp_small", "--output-dir",
                 str(out), *FAST]) == 0
    m = read_metrics(out)
    assert m["task"] == "landmarks" and 0 < m["eval_nme"] and "test_nme" in m
    assert set(m["teachers"]) == {"tough", "tolerant"}


def test_recipe_yaml_and_flags_share_one_schema(tmp_path, digits_teacher, capsys):
    recipe = os.path.join(ROOT, "recipes", "vision", "nkd_digits.yaml")
    out = tmp_path / "r"
    assert main(["train", "--config", recipe, "--set", "params.gamma=2.5", "--max-steps", "5", "--output-dir",
                 str(out), "--teacher", digits_teacher, *FAST]) == 0
    m = read_metrics(out)
    assert m["method"] == "nkd" and m["method_params"]["gamma"] == 2.5 and m["method_params"]["temperature"] == 1.0
    # the recipe's nkd params do not fit another method: the error names the key and the file
    code = main(["train", "--config", recipe, "--method", "uskd", "--output-dir", str(tmp_path / "u"), *FAST])
    assert code == 2 and "unknown key 'params.temperature' in " + recipe in capsys.readouterr().err


def _bad(capsys, argv, needle, tmp_path):
    out = tmp_path / "never"
    capsys.readouterr()
    code = main([*argv, "--output-dir", str(out), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not out.exists()


def test_bad_input_one_line_exit_2(capsys, tmp_path, digits_teacher, cache):
    _bad(capsys, ["train", "--method", "fitnet", "--dataset", "digits"], "unknown method 'fitnet'", tmp_path)
    # a teacher whose class count differs from the data's (5 synthetic classes vs 10 digits)
    syn = tmp_path / "syn5"
    assert main(["train", "--method", "ce", "--dataset", "synthetic", "--set", "num_classes=5", "--max-steps", "3",
                 "--output-dir", str(syn), *FAST]) == 0
    _bad(capsys, ["train", "--method", "kd", "--dataset", "digits", "--teacher", str(syn)], "has 5 classes", tmp_path)
    # images of the wrong shape: the 8x8 digits teacher on digits resized to 16x16
    _bad(capsys, ["train", "--method", "nkd", "--dataset", "digits", "--image-size", "16", "--teacher",
                  digits_teacher], "expects images of shape (1, 8, 8)", tmp_path)
    # landmarks of the wrong count: a 14-point tough teacher on 10-point data
    tough = tmp_path / "tough"
    assert main(["train", "--method", "ce", "--dataset", "landmarks", "--max-steps", "2", "--output-dir", str(tough),
                 *FAST]) == 0
    _bad(capsys, ["train", "--method", "landmark_kd", "--dataset", "landmarks", "--set", "num_landmarks=10",
                  "--teacher", str(tough), "--teacher-cache", cache], "predicts 14 landmarks", tmp_path)
    _bad(capsys, ["train", "--method", "landmark_kd", "--dataset", "digits"], "does not apply", tmp_path)
    _bad(capsys, ["train", "--method", "nkd", "--dataset", "digits", "--set", "params.gama=3"],
         "unknown key 'params.gama'", tmp_path)
    _bad(capsys, ["train", "--method", "kd", "--dataset", "digits", "--student", "resnet9000", "--teacher",
                  digits_teacher], "unknown architecture", tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: kd\nlearning_rate: 3\n")
    _bad(capsys, ["train", "--config", str(recipe)], "unknown key 'learning_rate'", tmp_path)
    # a non-empty output directory needs --resume or --overwrite
    code = main(["train", "--method", "ce", "--dataset", "digits", "--output-dir", digits_teacher, *FAST])
    assert code == 2 and "not empty" in capsys.readouterr().err


def test_python_dash_m_lists_methods():
    r = subprocess.run([sys.executable, "-m", "vision_kd", "list"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0 and "method nkd" in r.stdout and "arch   vit_tiny" in r.stdout


def test_importing_vision_kd_is_light():
    code = "import sys, vision_kd, vision_kd.methods, vision_kd.models; print('transformers' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False"


def test_every_recipe_loads_and_its_params_resolve():
    from distiller_nlp.core.config import load_config
    from vision_kd.config import VisionConfig
    from vision_kd.data import dataset_family
    from vision_kd.methods import get_method

    folder = os.path.join(ROOT, "recipes", "vision")
    names = sorted(f for f in os.listdir(folder) if f.endswith(".yaml"))
    assert len(names) >= 8
    methods = set()
    for name in names:
        path = os.path.join(folder, name)
        cfg = load_config(VisionConfig, path)
        get_method(cfg.method).resolve_params(cfg.params, dataset_family(cfg.dataset), path)
        methods.add(cfg.method)
    assert methods >= {"ce", "kd", "dkd", "nkd", "uskd", "bdkd", "lwkd", "landmark_kd"}


@pytest.mark.slow
def test_full_length_digits_runs_learn(tmp_path):
    """The default recipe lengths: a 30-epoch cnn teacher, then a 30-epoch NKD student well above chance."""
    cache = str(tmp_path / "cache")
    out = tmp_path / "nkd"
    assert main(["train", "--config", os.path.join(ROOT, "recipes", "vision", "nkd_digits.yaml"), "--teacher-cache",
                 cache, "--output-dir", str(out), *FAST]) == 0
    m = read_metrics(out)
    assert m["test_accuracy"] > 0.9 and m["teacher_test_accuracy"] > 0.95


@pytest.mark.slow
def test_two_process_run_under_accelerate_launch(digits_teacher, tmp_path):
    """A real 2-process gloo run: each process sees half of every epoch; every eval example is counted once."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "-m",
           "vision_kd", "train", "--method", "nkd", "--dataset", "digits", "--teacher", digits_teacher, "--epochs", "1",
           "--cpu", "--output-dir", str(out), *FAST]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = read_metrics(out)
    assert m["world_size"] == 2 and m["eval_examples"] == 360 and m["global_step"] == 9 and m["epochs_done"] == 1.0
