"""``--report-to``: accelerate's trackers, comma-separated, ``all`` and ``none``; checked when the config loads (unknown
name, missing package: one line); a real tiny run logs to TensorBoard and MLflow (local SQLite store in the run dir)
under stable names (``train/<loss part>``, ``train/lr``, ``train/examples_per_s``, ``eval/<metric>``) with the run's
config as parameters, and MLflow writes nothing outside the run directory."""

import os
import tempfile
from dataclasses import dataclass

import pytest
import torch
import yaml
from torch import nn

from distiller_nlp.core.config import load_config, option
from distiller_nlp.core.engine import Engine
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.core.train_args import TrainArgs, parse_report_to

# ----------------------------------------------------------------------------------------------- parsing / validation


def test_comma_separated_all_and_none():
    assert parse_report_to("tensorboard,mlflow") == ["tensorboard", "mlflow"]
    assert parse_report_to(" TensorBoard , mlflow,tensorboard ") == ["tensorboard", "mlflow"]  # case, spaces, repeats
    assert parse_report_to("none") == [] and parse_report_to("") == []
    every = parse_report_to("all")
    assert "tensorboard" in every and "mlflow" in every  # both installed here (core dependency / test extra)
    import accelerate.utils

    assert all(getattr(accelerate.utils, f"is_{name}_available")() for name in every)
    TrainArgs(report_to="tensorboard,mlflow").validate("r.yaml")
    TrainArgs(report_to="all").validate("r.yaml")
    TrainArgs(report_to="none").validate("r.yaml")


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


@dataclass
class Recipe:
    train: TrainArgs = option(default_factory=TrainArgs, help="training settings")


def test_unknown_tracker_is_a_one_line_error_naming_it_and_the_valid_names(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {report_to: 'tensorboard,mlflow', max_steps: 2}\n")
    assert load_config(Recipe, str(recipe)).train.report_to == "tensorboard,mlflow"
    recipe.write_text("train: {report_to: 'tensorboard,bogus', max_steps: 2}\n")
    with pytest.raises(DistillerError) as excinfo:
        load_config(Recipe, str(recipe))  # the check runs when the recipe loads (TrainArgs.validate)
    msg = _one_line(excinfo)
    assert "'bogus'" in msg and "train.report_to" in msg and str(recipe) in msg
    for name in ("tensorboard", "mlflow", "wandb", "all", "none"):
        assert name in msg
    with pytest.raises(DistillerError, match="cannot be combined"):
        parse_report_to("none,tensorboard")


def test_missing_tracker_package_names_the_package(monkeypatch):
    import accelerate.utils

    monkeypatch.setattr(accelerate.utils, "is_mlflow_available", lambda: False)
    with pytest.raises(DistillerError) as excinfo:
        TrainArgs(report_to="tensorboard,mlflow").validate("r.yaml")
    msg = _one_line(excinfo)
    assert "'mlflow'" in msg and "pip install 'mlflow-skinny'" in msg
    assert "mlflow" not in parse_report_to("all")  # `all` = what is installed


def test_vision_config_checks_report_to_too():
    from vision_kd.config import VisionConfig

    assert load_config(VisionConfig, overrides={"train.report_to": "tensorboard,mlflow"}).train.report_to
    with pytest.raises(DistillerError, match="'bogus'"):
        load_config(VisionConfig, overrides={"train.report_to": "bogus"})


def test_config_is_flattened_to_tracker_parameters():
    from distiller_nlp.core.engine.precision import flatten_config

    flat = flatten_config({"train": TrainArgs(lr=0.5), "kd": {"t": 2, "matches": [{"layer_T": 1}], "none": None},
                           "empty": {}, "odd key+": True})
    assert flat["train.lr"] == 0.5 and flat["train.cpu"] is False and flat["kd.t"] == 2
    assert flat["kd.matches"] == "[{'layer_T': 1}]" and flat["kd.none"] == "None" and flat["empty"] == "{}"
    assert flat["odd key_"] is True
    assert all(isinstance(v, (str, int, float, bool)) for v in flat.values())


class FakeAccelerator:
    """Records what ``start_trackers`` hands accelerate (no tracker is started, no MLflow store is created)."""

    def __init__(self, log_with):
        self.log_with, self.trackers, self.calls = log_with, [], []

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        self.calls.append((project_name, config, init_kwargs, os.environ.get("MLFLOW_TRACKING_URI")))


def test_mlflow_store_defaults_to_the_run_dir_and_respects_the_users(tmp_path, monkeypatch):
    from distiller_nlp.core.distributed import finish_trackers
    from distiller_nlp.core.engine.precision import mlflow_default_uri, start_trackers

    out = str(tmp_path / "run")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    acc = FakeAccelerator(["tensorboard", "mlflow"])
    start_trackers(acc, "distill", TrainArgs(lr=0.25), out)
    name, config, kwargs, uri = acc.calls[0]
    assert name == "distill" and config["train.lr"] == 0.25
    assert uri == mlflow_default_uri(out) == f"sqlite:///{out}/mlflow.db"
    assert kwargs == {"mlflow": {"run_name": "run", "logging_dir": f"{out}/mlartifacts"}}
    finish_trackers(acc)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # undone: the next run (or the user's script) starts clean

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    acc = FakeAccelerator(["mlflow"])
    start_trackers(acc, "distill", TrainArgs(), out)
    assert acc.calls[0][3] == "http://tracking.example:5000"
    assert acc.calls[0][2] == {"mlflow": {"run_name": "run"}}  # the server keeps its own artifact location
    finish_trackers(acc)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"


# ----------------------------------------------------------------------------------------------- a real tiny run

class TokenDataset(torch.utils.data.Dataset):
    """Random token ids; label 1 iff token 5 occurs (a rule a tiny BERT learns in a few steps)."""

    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, 40, (n, 8), generator=g)
        self.labels = torch.arange(n) % 2
        self.ids[self.labels == 1, 0] = 5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def collate(items):
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class TinyBert(nn.Module):
    """A 1-layer random BERT classifier; its forward returns two named loss parts besides ``loss``."""

    def __init__(self):
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        self.bert = BertForSequenceClassification(BertConfig(
            vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=2))

    def predict(self, batch):
        return self.bert(input_ids=batch["input_ids"]).logits

    def forward(self, batch):
        out = self.bert(input_ids=batch["input_ids"], output_hidden_states=True)
        hard_ce = nn.functional.cross_entropy(out.logits, batch["labels"])
        hidden_mse = out.hidden_states[-1].pow(2).mean() * 1e-3
        return {"loss": hard_ce + hidden_mse, "hard_ce": hard_ce, "hidden_mse": hidden_mse}


def accuracy(logits, labels):
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def test_tiny_run_logs_to_tensorboard_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: a store inside the run directory
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # MLflow's DB-init lock file goes there
    out = tmp_path / "run"
    out.mkdir()
    # What the run skeleton writes before training: its keys become parameters; `train.*` come from the engine's args.
    (out / "config.yaml").write_text(yaml.safe_dump({"task": "sst2", "kd": {"temperature": 2.0, "layers": [1, 2]},
                                                     "train": {"lr": 123.0}}))

    args = TrainArgs(epochs=2, batch_size=16, eval_batch_size=32, lr=1e-2, precision="no", cpu=True, seed=1,
                     logging_steps=2, report_to="tensorboard,mlflow", warmup_ratio=0.0)
    args.validate("test")
    res = Engine(args, str(out), TinyBert(), TokenDataset(64, 0), collate, eval_datasets={"dev": TokenDataset(32, 1)},
                 compute_metrics=accuracy, run_name="distill").train()
    assert res.global_step == 8 and len(res.history) == 2
    assert "eval_accuracy" in res.metrics and "eval/accuracy" not in res.history[0]  # files keep their names
    assert not any(k.startswith("train/") or k == "examples_per_s" for k in res.log_history[0])

    # TensorBoard: where it always wrote (DIR/<run name>/), the train/* scalars at every logging step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "distill"))
    tb.Reload()
    tags = set(tb.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/hard_ce", "train/hidden_mse", "train/examples_per_s",
            "eval/accuracy"} <= tags, tags
    assert [e.step for e in tb.Scalars("train/loss")] == [2, 4, 6, 8]
    assert [e.value for e in tb.Scalars("train/lr")] == pytest.approx([h["lr"] for h in res.log_history], rel=1e-6)
    assert all(e.value > 0 for e in tb.Scalars("train/examples_per_s"))

    # MLflow: the local SQLite store in the run directory, restored afterwards, nothing written elsewhere.
    from mlflow.tracking import MlflowClient

    from distiller_nlp.core.engine.precision import mlflow_default_uri

    uri = mlflow_default_uri(str(out))
    assert uri == f"sqlite:///{out}/mlflow.db" and (out / "mlflow.db").is_file()
    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("distill")
    assert exp is not None and exp.artifact_location.endswith(f"{out.name}/mlartifacts")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["train.report_to"] == "tensorboard,mlflow"  # args, not config.yaml
    assert params["task"] == "sst2" and params["kd.temperature"] == "2.0" and params["kd.layers"] == "[1, 2]"
    history = {k: client.get_metric_history(run.info.run_id, k)
               for k in ("train/loss", "train/lr", "train/hard_ce", "train/examples_per_s", "eval/accuracy")}
    assert [m.step for m in history["train/loss"]] == [2, 4, 6, 8]
    assert [m.value for m in history["train/loss"]] == pytest.approx([h["loss"] for h in res.log_history])
    assert [m.step for m in history["eval/accuracy"]] == [4, 8]
    assert [m.value for m in history["eval/accuracy"]] == pytest.approx([h["eval_accuracy"] for h in res.history])
    assert "eval_accuracy" not in run.data.metrics
    assert not list(cwd.iterdir())
    assert not [p for p in tmp.iterdir() if not p.name.startswith("torchinductor")]  # (torch's own cache dir)


# ----------------------------------------------------------------------------------------------- command line

@pytest.mark.parametrize("argv", [
    ["distiller_nlp", "distill", "--teacher", "no-such-teacher", "--task", "sst2"],
    ["vision_kd", "train", "--dataset", "digits"],
])
def test_cli_bogus_tracker_exits_2_with_one_line(argv, tmp_path, capsys):
    """Checked with the config, before any model, data or output directory is touched."""
    import importlib

    main = importlib.import_module(f"{argv[0]}.cli").main
    out = tmp_path / "out"
    code = main([*argv[1:], "--report-to", "bogus", "--output-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "'bogus'" in err[0], err
    assert not out.exists()
