"""The pipeline search space and ``distiller-nlp hpo``: validation, pruning, resume, two workers on one study, bad
input. Everything on the tiny fine-tuned teacher and the synthetic SST-2 directory of conftest."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from distiller_nlp.cli import main
from distiller_nlp.config import DistillConfig
from distiller_nlp.core.errors import DistillerError
from distiller_nlp.autodistiller.pipeline_space import (apply_params, default_pipeline, is_active, load_space,
                                                        pipeline_key, pipeline_params, space_from_dict)

GOOD, BAD = 3e-3, 1e-9  # a learning rate that learns the synthetic task in one epoch, and one that cannot


def _space(tmp_path, params) -> str:
    import yaml

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "test", "params": params}))
    return str(path)


def _hpo_args(teacher, data_dir, out, space, trials, *extra):
    return ["hpo", "--teacher", teacher, "--task", "sst2", "--data-dir", data_dir, "--student-shape",
            "layers=1,hidden=16,heads=2,intermediate=32", "--epochs", "3", "--batch-size", "16", "--max-length", "16",
            "--precision", "no", "--report-to", "none", "--space", space, "--trials", str(trials),
            "--output-dir", str(out), *extra]


# ------------------------------------------------------------------------------------------------ space

def test_default_space_loads_and_round_trips():
    sp = load_space()
    assert {"augment", "pred_loss", "inter_loss", "mi_alpha", "mapping", "lr"} <= set(sp.params)
    base = DistillConfig()
    for p in sp.candidates(40, seed=1, include=[default_pipeline(base)]):
        cfg = apply_params(base, p)
        assert pipeline_params(cfg) == p  # the record of a run describes exactly the pipeline that was run
    cands = sp.candidates(40, seed=1, include=[default_pipeline(base)])
    assert len({pipeline_key(c) for c in cands}) == 40
    assert cands[0] == default_pipeline(base)
    assert cands == sp.candidates(40, seed=1, include=[default_pipeline(base)])  # seeded


def test_exponent_without_a_dot_is_a_number():
    # YAML 1.1 (PyYAML) reads 1e-4 as a string
    import yaml

    sp = space_from_dict(yaml.safe_load("params:\n  lr: {choices: [1e-4, 3e-4]}\n  temperature: {value: 2}\n"))
    assert sp.params["lr"].choices == [1e-4, 3e-4] and sp.params["temperature"].value == 2.0


def test_conditional_parameters_only_where_they_matter():
    sp = load_space()
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = sp.sample(rng)
        assert ("aug_p" in p) == (p["augment"] != "none")
        assert ("mi_alpha" in p) == (p["inter_loss"] == "mi_alpha")
        assert ("mapping" in p) == (p["inter_loss"] != "none")
    assert not is_active("mapping", {"inter_loss": "none"})


def test_apply_params_sets_the_recipe_keys():
    p = {"augment": "random+contextual", "aug_p": 0.1, "mixup": True, "pred_loss": "soft_ce", "temperature": 4.0,
         "inter_loss": "mi_alpha", "mi_alpha": 0.9, "mapping": "emd", "inter_weight": 0.1, "lr": 1e-3}
    cfg = apply_params(DistillConfig(), p)
    assert cfg.augment.stages == ["random", "contextual"] and cfg.augment.aug_p == 0.1
    assert cfg.kd.mixup and cfg.kd.pred_loss == "soft_ce" and cfg.kd.temperature == 4.0
    assert cfg.kd.mapping.loss == "mi_alpha" and cfg.kd.mapping.params == {"alpha": 0.9}
    assert cfg.kd.mapping.strategy == "emd" and cfg.kd.mapping.weight == 0.1 and cfg.train.lr == 1e-3
    assert apply_params(cfg, {"inter_loss": "none", "augment": "none"}).kd.mapping is None
    assert DistillConfig().kd.mapping is None  # the input is not modified


@pytest.mark.parametrize("params, culprit", [
    ({"augment": {"choices": ["none", "shuffle"]}}, "shuffle"),
    ({"inter_loss": {"choices": ["mi_alpha", "mse_typo"]}}, "mse_typo"),
    ({"pred_loss": {"choices": ["kl"]}}, "kl"),
    ({"mapping": {"choices": ["skip", "diagonal"]}}, "diagonal"),
    ({"dropout": {"choices": [0.1]}}, "dropout"),
    ({"aug_p": {"choices": [0.0, 0.3]}}, "aug_p"),
    ({"lr": {"low": 1e-3, "high": 1e-4}}, "low"),
    ({"lr": {"choices": [1e-4], "value": 1e-4}}, "exactly one"),
    ({"temperature": {"choices": []}}, "non-empty"),
    ({"mixup": {"choices": ["yes"]}}, "true or false"),
])
def test_bad_spaces_name_the_culprit(params, culprit):
    with pytest.raises(DistillerError, match=culprit):
        space_from_dict({"name": "x", "params": params}, "space.yaml")


def test_bad_space_file_exit_2(tmp_path, capsys):
    bad = _space(tmp_path, {"augment": {"choices": ["none", "shuffle"]}})
    code = main(["hpo", "--teacher", "minilm", "--task", "sst2", "--trials", "1", "--space", bad,
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "shuffle" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ hpo

def test_hpo_prunes_and_exports_the_best_recipe(tiny_teacher, sst2_dir, tmp_path, capsys):
    import optuna

    from distiller_nlp.autodistiller.hpo import run_hpo
    from distiller_nlp.core.config import load_config

    space = _space(tmp_path, {"lr": {"choices": [BAD, GOOD]}, "pred_loss": {"choices": ["kd", "soft_ce"]}})
    out = tmp_path / "hpo"
    cfg = load_config(DistillConfig, None, {
        "teacher": tiny_teacher, "data.task": "sst2", "data.data_dir": sst2_dir, "output_dir": str(out),
        "student_shape": "layers=1,hidden=16,heads=2,intermediate=32", "train.epochs": 3, "train.batch_size": 4,
        "train.max_length": 16, "train.precision": "no", "train.report_to": "none", "train.warmup_ratio": 0.0})
    # the good pipeline first; the two bad ones then lose at the first rung of successive halving
    enqueue = [{"lr": GOOD, "pred_loss": "kd"}, {"lr": BAD, "pred_loss": "kd"}, {"lr": BAD, "pred_loss": "soft_ce"}]
    summary = run_hpo(cfg, 3, space=space, enqueue=enqueue)
    assert summary["trials"]["complete"] == 1 and summary["trials"]["pruned"] == 2
    study = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{out}/hpo.db")
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert all(len(t.intermediate_values) == 1 for t in pruned), [t.intermediate_values for t in study.trials]
    assert len(study.best_trial.intermediate_values) == 3  # one report per epoch
    assert summary["best_pipeline"] == {"lr": GOOD, "pred_loss": "kd"}
    assert os.path.isfile(out / "optimization_history.png") and os.path.isfile(out / "trials.csv")
    # the exported recipe runs as is
    from distiller_nlp.core.config import load_config as lc

    best = lc(DistillConfig, str(out / "best_recipe.yaml"))
    assert best.train.lr == GOOD and best.kd.pred_loss == "kd" and best.teacher == tiny_teacher


def test_hpo_resume_continues_the_study_and_fails_interrupted_trials(tiny_teacher, sst2_dir, tmp_path, capsys):
    import optuna

    space = _space(tmp_path, {"lr": {"choices": [GOOD]}, "temperature": {"choices": [1.0, 2.0, 4.0]}})
    out = tmp_path / "hpo"
    assert main(_hpo_args(tiny_teacher, sst2_dir, out, space, 1, "--pruner", "none", "--study", "s")) == 0
    storage = f"sqlite:///{out}/hpo.db"
    study = optuna.load_study(study_name="s", storage=storage)
    # a trial this worker was running when it was killed
    ghost = study.ask()
    study._storage.set_trial_user_attr(ghost._trial_id, "worker", f"{os.uname().nodename}:{os.path.abspath(out)}")
    # rerunning without --resume is refused (the directory holds a study)
    assert main(_hpo_args(tiny_teacher, sst2_dir, out, space, 3, "--study", "s")) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(_hpo_args(tiny_teacher, sst2_dir, out, space, 3, "--pruner", "none", "--study", "s",
                          "--resume")) == 0
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.trials]
    assert states[1] == optuna.trial.TrialState.FAIL  # the ghost
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and len(states) == 3
    # at the target: a rerun does nothing more
    assert main(_hpo_args(tiny_teacher, sst2_dir, out, space, 3, "--study", "s", "--resume")) == 0
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3


def test_failed_trial_is_recorded_and_the_study_goes_on(tiny_teacher, sst2_dir, tmp_path, capsys):
    import optuna

    # MixUp with pred_loss none cannot run (nothing labels the mixed examples): that trial fails, the other runs
    space = _space(tmp_path, {"pred_loss": {"choices": ["none", "kd"]}, "mixup": {"value": True},
                              "hard_label_weight": {"value": 1.0}, "lr": {"value": GOOD}})
    out = tmp_path / "hpo"
    code = main(_hpo_args(tiny_teacher, sst2_dir, out, space, 2, "--pruner", "none", "--study", "f"))
    assert code == 0
    study = optuna.load_study(study_name="f", storage=f"sqlite:///{out}/hpo.db")
    states = {t.params["pred_loss"]: t for t in study.trials}
    if len(states) == 2:  # the sampler drew both values
        assert states["none"].state == optuna.trial.TrialState.FAIL
        assert "mixup" in states["none"].user_attrs["error"]
        assert states["kd"].state == optuna.trial.TrialState.COMPLETE
    assert len(study.trials) == 2


def _worker(teacher, data_dir, out, space, storage, trials):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "distiller_nlp"] + _hpo_args(teacher, data_dir, out, space, trials, "--storage",
                                                                  storage, "--study", "shared", "--pruner", "none")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_two_workers(teacher, data_dir, tmp_path, storage, trials=4):
    """Two worker processes on one study, each with its own output directory; returns the study."""
    import optuna

    space = _space(tmp_path, {"lr": {"choices": [GOOD, 1e-3]}, "temperature": {"choices": [1.0, 2.0, 4.0]}})
    procs = [_worker(teacher, data_dir, tmp_path / f"w{i}", space, storage, trials) for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert trials <= len(finished) <= trials + 1  # a worker may finish the trial it started as the target is met
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2  # both workers contributed
    for i in range(2):
        assert os.path.isfile(tmp_path / f"w{i}" / "summary.json")
    return study


def test_two_workers_share_one_sqlite_study(tiny_teacher, sst2_dir, tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    run_two_workers(tiny_teacher, sst2_dir, tmp_path, storage)


def test_study_of_another_dataset_and_unreachable_storage_exit_2(tiny_teacher, sst2_dir, tmp_path, capsys):
    import optuna

    storage = f"sqlite:///{tmp_path}/other.db"
    study = optuna.create_study(study_name="taken", storage=storage)
    study.set_user_attr("dataset", "mnli")
    space = _space(tmp_path, {"lr": {"choices": [GOOD]}})
    out = tmp_path / "hpo"
    code = main(_hpo_args(tiny_teacher, sst2_dir, out, space, 1, "--storage", storage, "--study", "taken"))
    err = capsys.readouterr().err
    assert code == 2 and "taken" in err and "mnli" in err and not out.exists()
    code = main(_hpo_args(tiny_teacher, sst2_dir, out, space, 1, "--storage",
                          "postgresql+psycopg://kd:secret@127.0.0.1:9/nowhere"))
    err = capsys.readouterr().err
    assert code == 2 and "cannot be reached" in err and "secret" not in err and not out.exists()


def test_hpo_needs_a_fine_tuned_teacher(tiny_backbone, sst2_dir, tmp_path, capsys):
    space = _space(tmp_path, {"lr": {"choices": [GOOD]}})
    code = main(_hpo_args(tiny_backbone, sst2_dir, tmp_path / "o", space, 1))
    err = capsys.readouterr().err
    assert code == 2 and "no classifier" in err and not (tmp_path / "o").exists()


def test_hpo_summary_json(tiny_teacher, sst2_dir, tmp_path, capsys):
    space = _space(tmp_path, {"lr": {"choices": [GOOD]}})
    out = tmp_path / "h"
    table = tmp_path / "meta"
    assert main(_hpo_args(tiny_teacher, sst2_dir, out, space, 1, "--enqueue-recipe", "--meta-dataset",
                          str(table))) == 0
    from distiller_nlp.autodistiller.metadataset import load_meta_dataset

    records = load_meta_dataset(str(table))  # a directory of shards: one per finished trial
    assert len(records) == 1 and records["source"].iloc[0] == "hpo" and records["p_lr"].iloc[0] == GOOD
    s = json.loads((out / "summary.json").read_text())
    assert s["trials"]["complete"] == 1 and s["best_value"] > 0.5
    printed = capsys.readouterr().out
    assert "best trial 0" in printed and "outside the space" not in printed  # --lr auto: nothing to enqueue for lr


# ------------------------------------------------------------------------------------------------ PostgreSQL

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away local PostgreSQL cluster (Debian's ``postgresql``: pg_createcluster + pg_ctlcluster, which run
    the server as the postgres user), trust auth on loopback; skipped with the reason where none can be started."""
    import shutil
    import tempfile

    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_createcluster") is None:
        pytest.skip("no PostgreSQL server tools (Debian package 'postgresql' is not installed)")
    if os.geteuid() != 0:
        pytest.skip("starting a PostgreSQL cluster through pg_ctlcluster needs root")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install 'distiller-toolkit[postgres]')")
    versions = sorted(os.listdir("/usr/lib/postgresql")) if os.path.isdir("/usr/lib/postgresql") else []
    if not versions:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql")
    version, name, port = versions[-1], f"kdtest{os.getpid()}", _free_port()
    parent = tempfile.mkdtemp(prefix="kd-pg-")
    os.chmod(parent, 0o755)
    data = os.path.join(parent, "data")

    def run(*cmd):
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)

    made = run("pg_createcluster", version, name, "-p", str(port), "-d", data, "--", "--auth-local=trust",
               "--auth-host=trust")
    if made.returncode != 0:
        shutil.rmtree(parent, ignore_errors=True)
        pytest.skip(f"pg_createcluster failed: {made.stderr.strip()[:200]}")
    try:
        started = run("pg_ctlcluster", version, name, "start")
        if started.returncode != 0:
            pytest.skip(f"pg_ctlcluster start failed: {started.stderr.strip()[:200]}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run("pg_ctlcluster", version, name, "stop", "-m", "immediate")
        run("pg_dropcluster", version, name)
        shutil.rmtree(parent, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(postgres_url, tiny_teacher, sst2_dir, tmp_path):
    study = run_two_workers(tiny_teacher, sst2_dir, tmp_path, postgres_url)
    assert study.user_attrs["dataset"].startswith("sst2@")
