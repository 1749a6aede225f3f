"""Reliability (issue #20): preemption signals checkpoint and resume exactly, non-finite losses stop (or are skipped),
checkpoints carry a manifest and a damaged one is passed over, a full disk keeps the previous checkpoint, one writer
per output directory."""

import errno
import shutil
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from distiller_nlp.core.engine import list_checkpoints
from distiller_nlp.core.engine.callbacks import Callback
from distiller_nlp.core.engine.checkpoints import MANIFEST_FILE, verify_checkpoint
from distiller_nlp.core.errors import DiskFullError, DistillerError, NonFiniteError, RunInterrupted
from distiller_nlp.core.rundir import OutputDirLock, lock_path
from distiller_nlp.core.run import TrainingRun

from test_engine import make_engine


class SignalAt(Callback):
    """Deliver a real signal to this process after optimizer step ``step``."""

    def __init__(self, step, sig=signal.SIGTERM):
        self.step, self.sig = step, sig

    def on_step_end(self, engine, logs):
        if engine.state["global_step"] == self.step:
            os.kill(os.getpid(), self.sig)


def _final_weights(out):
    return torch.load(os.path.join(out, "best", "w.pt"), weights_only=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_resume_matches_the_uninterrupted_run(tmp_path, sig):
    ref = make_engine(tmp_path / "ref").train()
    eng = make_engine(tmp_path / "run")
    eng.callbacks.append(SignalAt(7, sig))
    with pytest.raises(RunInterrupted, match=rf"{signal.Signals(sig).name} at step 7/36.*--resume") as info:
        eng.train()
    assert info.value.exit_code == 75
    ckpts = list_checkpoints(str(tmp_path / "run"))
    assert ckpts[-1].endswith("checkpoint-00000007")  # saved at the step boundary (save_steps is 5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the engine's handlers are gone again
    # no pickle that resume would read with weights_only=False: the scheduler state is JSON in trainer_state.json
    assert not [n for n in os.listdir(ckpts[-1]) if n.startswith("custom_checkpoint")]
    assert json.load(open(os.path.join(ckpts[-1], "trainer_state.json")))["scheduler"]["last_epoch"] == 7
    res = make_engine(tmp_path / "run", resume=True).train()
    assert res.global_step == ref.global_step == 36
    assert res.metrics["eval_accuracy"] == ref.metrics["eval_accuracy"]
    for k, v in _final_weights(tmp_path / "ref").items():
        torch.testing.assert_close(_final_weights(tmp_path / "run")[k], v, rtol=0, atol=0)


class NaNAt(Callback):
    """Make the toy module's loss NaN from optimizer step ``start`` on, for ``count`` batches."""

    def __init__(self, start, count=10**9):
        self.start, self.count = start, count

    def on_train_begin(self, engine):
        module = engine.module
        original = module.forward
        hook = self

        def forward(batch):
            out = original(batch)
            step = engine.state["global_step"] + 1
            if hook.start <= step < hook.start + hook.count:
                out["ce"] = out["ce"] * float("nan")
                out["loss"] = out["loss"] * float("nan")
            return out

        module.forward = forward


def test_a_nan_loss_stops_the_run_naming_step_and_component_and_keeps_the_last_checkpoint(tmp_path):
    eng = make_engine(tmp_path)
    eng.callbacks.append(NaNAt(13))
    with pytest.raises(NonFiniteError, match=r"non-finite loss \(loss, ce\) at step 13.*checkpoint-00000012") as e:
        eng.train()
    assert e.value.exit_code == 3
    for p in list_checkpoints(str(tmp_path)):
        state = json.load(open(os.path.join(p, "trainer_state.json")))
        assert state["global_step"] <= 12
    assert not os.path.exists(tmp_path / "metrics.json")


class InfGradAt(Callback):
    """Make one weight's gradient infinite in optimizer step ``step`` (the loss stays finite)."""

    def __init__(self, step):
        self.step = step

    def on_train_begin(self, engine):
        weight = engine.module.net[0].weight
        weight.register_hook(lambda g: g * float("inf") if engine.state["global_step"] + 1 == self.step else g)


def test_an_infinite_gradient_stops_the_run_and_is_skipped_on_request(tmp_path):
    eng = make_engine(tmp_path / "stop")
    eng.callbacks.append(InfGradAt(9))
    with pytest.raises(NonFiniteError, match=r"non-finite gradient norm at step 9"):
        eng.train()
    eng = make_engine(tmp_path / "skip", on_nonfinite="skip")
    eng.callbacks.append(InfGradAt(9))
    res = eng.train()
    assert res.metrics["nonfinite_skipped"] == 1 and res.global_step == 36
    assert all(torch.isfinite(v).all() for v in _final_weights(tmp_path / "skip").values())


def test_skip_mode_drops_nan_batches_and_counts_them(tmp_path):
    eng = make_engine(tmp_path, on_nonfinite="skip")
    eng.callbacks.append(NaNAt(4, count=3))
    res = eng.train()
    assert res.global_step == 36 and res.metrics["nonfinite_skipped"] == 3
    assert all(torch.isfinite(v).all() for v in _final_weights(tmp_path).values())
    assert res.metrics["eval_accuracy"] > 0.5


def test_skip_mode_stops_after_max_nonfinite_in_a_row(tmp_path):
    eng = make_engine(tmp_path / "a", on_nonfinite="skip", max_nonfinite=4)
    eng.callbacks.append(NaNAt(2))
    with pytest.raises(NonFiniteError, match=r"4 non-finite batches in a row up to step 5"):
        eng.train()


def test_checkpoints_carry_a_manifest_and_a_damaged_one_is_passed_over(tmp_path, capsys):
    with pytest.raises(KeyboardInterrupt):
        make_engine(tmp_path, fail_at=23).train()  # killed in step 23: checkpoints 15 and 20 (keep 2)
    ckpts = list_checkpoints(str(tmp_path))
    assert [os.path.basename(p) for p in ckpts] == ["checkpoint-00000015", "checkpoint-00000020"]
    manifest = json.load(open(os.path.join(ckpts[-1], MANIFEST_FILE)))
    assert manifest and all(v["size"] > 0 and len(v["sha256"]) == 64 for v in manifest.values())
    assert verify_checkpoint(ckpts[-1]) is None
    victim = next(os.path.join(ckpts[-1], rel) for rel in manifest if rel.endswith(".safetensors"))
    with open(victim, "r+b") as fh:  # truncate the newest checkpoint's weights
        fh.truncate(100)
    assert "bytes, manifest says" in verify_checkpoint(ckpts[-1])
    eng = make_engine(tmp_path, resume=True)
    res = eng.train()
    out = capsys.readouterr().out
    assert "checkpoint-00000020 is damaged" in out and "resumed from" in out and "checkpoint-00000015" in out
    assert res.global_step == 36


def test_a_full_disk_keeps_the_previous_checkpoint_and_ends_with_one_line(tmp_path, monkeypatch):
    eng = make_engine(tmp_path)
    real = eng.accelerator.save_state
    calls = {"n": 0}

    def save_state(path, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            real(path, *a, **kw)  # half the files written, then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *a, **kw)

    monkeypatch.setattr(eng.accelerator, "save_state", save_state)
    with pytest.raises(DiskFullError, match=r"step 10 .*No space left on device.*checkpoint-00000005 is intact") as e:
        eng.train()
    assert e.value.exit_code == 74 and "\n" not in str(e.value)
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["checkpoint-00000005"]  # no temp directory left behind
    assert verify_checkpoint(str(root / "checkpoint-00000005")) is None


HOLDER = """
import sys, time
from distiller_nlp.core.run import TrainingRun
run = TrainingRun(sys.argv[1])
run.start()
print("locked", flush=True)
time.sleep(60)
"""


def test_one_writer_per_output_directory(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(DistillerError, match=rf"in use by process {proc.pid} on .*choose another --output-dir"):
            TrainingRun(str(out), resume=True)
    finally:
        proc.kill()
        proc.wait()
    # the holder died without releasing: its lock file stays, the lock is free and is taken over
    assert os.path.exists(lock_path(str(out)))
    run = TrainingRun(str(out), resume=True)
    assert run.lock.held
    again = TrainingRun(str(out), resume=True)  # re-entrant in one process
    again.lock.release()
    run.lock.release()
    assert not os.path.exists(lock_path(str(out)))


def test_lock_is_not_taken_before_the_parent_exists(tmp_path):
    lock = OutputDirLock(str(tmp_path / "missing" / "run")).acquire()
    assert not lock.held and not os.path.exists(tmp_path / "missing")


# ------------------------------------------------------------------------------------------------ real commands

def _wait_for_checkpoint(proc, ckpts, min_step, timeout=120):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        done = [c for c in (os.listdir(ckpts) if ckpts.is_dir() else []) if c.startswith("checkpoint-")]
        if any(int(c.split("-")[1]) >= min_step for c in done):
            return True
        time.sleep(0.02)
    return False


def test_sigterm_to_distill_exits_75_with_one_line_and_resume_matches(tiny_teacher, sst2_dir, tmp_path):
    from test_cli import _env, distill_args, read_metrics

    common = ["--max-steps", "60", "--save-steps", "3", "--eval-steps", "20", "--lr", "3e-3", "--batch-size", "8",
              "--pred-loss", "kd", "--hard-label-weight", "0.5"]
    cmd = [sys.executable, "-m", "distiller_nlp"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(cmd + distill_args(tiny_teacher, sst2_dir, full, *common), check=True, env=_env(),
                   capture_output=True)
    proc = subprocess.Popen(cmd + distill_args(tiny_teacher, sst2_dir, cut, *common), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert _wait_for_checkpoint(proc, cut / "checkpoints", 6), "finished before the signal; raise --max-steps"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1].strip().splitlines()
    assert proc.returncode == 75, err[-5:]
    assert err[-1].startswith("error: SIGTERM at step ") and "--resume" in err[-1]
    assert not (cut / "metrics.json").exists()
    res = subprocess.run(cmd + distill_args(tiny_teacher, sst2_dir, cut, *common, "--resume"), env=_env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = read_metrics(full), read_metrics(cut)
    evals = {k: v for k, v in a.items() if k.startswith(("eval_", "test_")) and "runtime" not in k
             and "per_s" not in k}
    assert evals and evals == {k: b[k] for k in evals}
    assert b["global_step"] == 60


def test_sigterm_under_accelerate_launch_all_ranks_stop_at_one_step_and_resume(tiny_teacher, sst2_dir, tmp_path):
    from test_cli import _env, distill_args, read_metrics
    from test_distributed import launcher_cmd

    common = ["--max-steps", "40", "--save-steps", "4", "--eval-steps", "20", "--lr", "3e-3", "--batch-size", "4",
              "--cpu"]
    out = tmp_path / "ddp"
    cmd = launcher_cmd("accelerate", "distiller_nlp")
    # like a cluster scheduler: the signal goes to every process of the job (the launcher and both ranks)
    proc = subprocess.Popen(cmd + distill_args(tiny_teacher, sst2_dir, out, *common), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert _wait_for_checkpoint(proc, out / "checkpoints", 4, timeout=240), "finished before the signal"
        os.killpg(proc.pid, signal.SIGTERM)
        err = proc.communicate(timeout=180)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and "SIGTERM at step" in err, err[-3000:]
    assert err.count("Traceback") == 0 or "RunInterrupted" not in err
    steps = {int(c.split("-")[1]) for c in os.listdir(out / "checkpoints") if c.startswith("checkpoint-")}
    assert steps and all(s < 40 for s in steps)
    res = subprocess.run(launcher_cmd("accelerate", "distiller_nlp")
                         + distill_args(tiny_teacher, sst2_dir, out, *common, "--resume"),
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m = read_metrics(out)
    assert m["global_step"] == 40 and m["world_size"] == 2 and m["ranks_in_sync"]


# ------------------------------------------------------------------------------------------------ side outputs

def test_killing_cache_teacher_never_leaves_a_cache_a_run_accepts(tiny_teacher, sst2_dir, tmp_path):
    """SIGKILL ``cache-teacher`` at moments spread over its run (with and without an older cache to replace): the
    directory then holds either nothing a run accepts (one-line error) or a complete cache."""
    import time

    from test_cli import _env

    from distiller_nlp.core.errors import DistillerError
    from distiller_nlp.kd import teacher_cache as tc

    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "distiller_nlp", "cache-teacher", "--teacher", tiny_teacher, "--task", "sst2",
           "--data-dir", sst2_dir, "--student-shape", "layers=1,hidden=16,heads=2,intermediate=32", "--pred-loss",
           "kd", "--max-length", "16", "--precision", "no", "--report-to", "none", "--output-dir", str(cache)]
    t0 = time.time()
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    full = time.time() - t0
    key = json.load(open(cache / "teacher_cache.json"))["key"]
    outcomes = []
    for i, frac in enumerate((0.6, 0.9)):
        if i % 2 == 0:
            shutil.rmtree(cache, ignore_errors=True)  # a first computation killed; odd rounds replace a cache
        proc = subprocess.Popen(cmd + ["--overwrite"], env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(full * frac)
        proc.kill()
        proc.wait()
        try:
            ds = tc.load_teacher_cache(str(cache), key)
            assert len(ds) == 96  # complete: the old one or the new one, never a mixture
            outcomes.append("complete")
        except DistillerError as exc:
            assert "\n" not in str(exc)
            outcomes.append("refused")
    assert len(outcomes) == 2


def test_an_interrupted_meta_dataset_append_leaves_the_table_readable(tmp_path, monkeypatch):
    import pandas as pd

    from distiller_nlp.autodistiller import metadataset as md

    path = tmp_path / "meta.parquet"
    md.append_records(str(path), [{"a": 1, "b": "x"}])
    real = pd.DataFrame.to_parquet

    def half_then_die(self, target, *a, **kw):
        real(self.head(1), target, *a, **kw)  # something written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_die)
    with pytest.raises(KeyboardInterrupt):
        md.append_records(str(path), [{"a": 2, "b": "y"}, {"a": 3, "b": "z"}])
    monkeypatch.undo()
    assert pd.read_parquet(path)["a"].tolist() == [1]  # the old table, whole
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    md.append_records(str(path), [{"a": 2, "b": "y"}])
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]
