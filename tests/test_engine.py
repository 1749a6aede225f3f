"""The shared Accelerate engine: training reduces loss, evaluation sees each example once, resume is exact."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from distiller_nlp.core.train_args import TrainArgs
from distiller_nlp.core.engine import Engine, list_checkpoints, linear_warmup_schedule, resolve_precision
from distiller_nlp.core.errors import DistillerError


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n=96, seed=0):
        w = torch.randn(8, 3, generator=torch.Generator().manual_seed(123))  # one labelling rule for all splits
        self.x = torch.randn(n, 8, generator=torch.Generator().manual_seed(seed))
        self.y = (self.x @ w).argmax(-1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


def collate(items):
    return {"x": torch.stack([it["x"] for it in items]), "labels": torch.stack([it["labels"] for it in items])}


class ToyModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
        self.extra = nn.Linear(3, 3)  # an "extra trainable module" (like a projection)

    def predict(self, batch):
        return self.net(batch["x"])

    def forward(self, batch):
        logits = self.predict(batch)
        ce = nn.functional.cross_entropy(logits, batch["labels"])
        aux = self.extra(logits).pow(2).mean() * 1e-3
        return {"loss": ce + aux, "ce": ce}


def accuracy(logits, labels):
    return {"accuracy": float((logits.argmax(-1) == labels).mean())}


def export(module, directory):
    os.makedirs(directory, exist_ok=True)
    torch.save({k: v.clone() for k, v in module.state_dict().items()}, os.path.join(directory, "w.pt"))


def make_engine(out, resume=False, fail_at=None, **kw):
    torch.manual_seed(0)
    args = TrainArgs(**{**dict(epochs=3, batch_size=8, eval_batch_size=7, lr=5e-2, precision="no", cpu=True, seed=3,
                               logging_steps=2, report_to="none", save_steps=5), **kw})
    module = ToyModule()
    calls = {"n": 0}

    def prepare(batch):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated kill")
        return batch

    return Engine(args, str(out), module, ToyDataset(), collate, eval_datasets={"dev": ToyDataset(37, seed=1)},
                  compute_metrics=accuracy, prepare_batch=prepare, export_fn=export, resume=resume)


def test_training_improves_and_exports(tmp_path):
    eng = make_engine(tmp_path)
    res = eng.train()
    assert res.global_step == 36  # 96/8 = 12 steps/epoch x 3
    assert res.metrics["eval_examples"] == 37  # every dev example exactly once
    assert res.metrics["eval_accuracy"] > 0.6
    assert os.path.isfile(os.path.join(tmp_path, "best", "w.pt"))
    assert len(res.history) == 3  # one evaluation per epoch
    assert len(list_checkpoints(tmp_path)) <= 2


def test_resume_after_interrupt_gives_identical_result(tmp_path):
    full = make_engine(tmp_path / "full").train()
    # Interrupted mid-epoch (after the step-15 checkpoint, during step 18), then resumed.
    with pytest.raises(KeyboardInterrupt):
        make_engine(tmp_path / "cut", fail_at=18).train()
    ckpts = list_checkpoints(tmp_path / "cut")
    assert ckpts and ckpts[-1].endswith("00000015")
    resumed = make_engine(tmp_path / "cut", resume=True).train()
    assert resumed.global_step == full.global_step
    for k, v in full.metrics.items():
        if k.startswith("eval_"):
            assert resumed.metrics[k] == pytest.approx(v, abs=1e-9), k
    a = torch.load(tmp_path / "full" / "best" / "w.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "best" / "w.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_checkpoint_state_is_complete(tmp_path):
    make_engine(tmp_path, max_steps=10).train()
    ckpt = list_checkpoints(tmp_path)[-1]
    state = json.load(open(os.path.join(ckpt, "trainer_state.json")))
    assert state["global_step"] == 5
    assert not [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith(".tmp")]


def test_warmup_schedule_values():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_schedule(opt, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.75, 0.5, 0.25])


def test_precision_resolution():
    assert resolve_precision("no") == "no"
    assert resolve_precision("auto", cpu=True) in ("no", "bf16")
    if not torch.cuda.is_available():
        with pytest.raises(DistillerError, match="fp16"):
            resolve_precision("fp16")


def test_empty_training_set_is_an_error(tmp_path):
    args = TrainArgs(report_to="none", precision="no", cpu=True)
    empty = ToyDataset(0)
    with pytest.raises(DistillerError, match="empty"):
        Engine(args, str(tmp_path), ToyModule(), empty, collate)


def test_held_out_set_is_evaluated_once_on_the_selected_model(tmp_path):
    """The second eval set never drives selection: it is evaluated once, at the end, with the best weights. Using the
    dev set itself as the held-out set must reproduce the best dev metric exactly."""
    torch.manual_seed(0)
    args = TrainArgs(epochs=4, batch_size=8, eval_batch_size=7, lr=5e-1, precision="no", cpu=True, seed=3,
                     logging_steps=2, report_to="none")
    dev = ToyDataset(37, seed=1)
    calls = []

    def metrics(logits, labels):
        calls.append(len(labels))
        return accuracy(logits, labels)

    eng = Engine(args, str(tmp_path), ToyModule(), ToyDataset(), collate,
                 eval_datasets={"dev": dev, "test": dev}, compute_metrics=metrics, export_fn=export)
    res = eng.train()
    assert len(calls) == 4 + 1  # 4 epoch-end dev evaluations + 1 held-out evaluation
    assert all("test_accuracy" not in h for h in res.history)
    best = max(h["eval_accuracy"] for h in res.history)
    assert res.metrics["eval_accuracy"] == best
    assert res.metrics["best_step"] < res.metrics["global_step"]  # so the best weights had to be reloaded
    assert res.metrics["test_accuracy"] == pytest.approx(best, abs=1e-12)
    assert res.metrics["test_examples"] == 37


def test_length_grouped_batches_cover_every_example_once_and_cut_padding():
    from distiller_nlp.core.engine import LengthGroupedBatchSampler

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 65, size=1003)
    s = LengthGroupedBatchSampler(lengths, batch_size=32, seed=7, mega=8)
    batches = list(s)
    assert len(batches) == len(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1003))
    assert max(len(b) for b in batches) == 32
    padded = np.mean([lengths[b].max() for b in batches])
    random_padded = np.mean([lengths[b].max() for b in np.array_split(rng.permutation(1003), len(batches))])
    assert padded < 0.8 * random_padded
    assert [b for b in s] == batches  # deterministic for (seed, epoch)
    s.set_epoch(1)
    assert list(s) != batches


def test_only_the_main_rank_judges_and_creates_the_output_dir(tmp_path, monkeypatch):
    """Under ``accelerate launch`` rank 1 may start after rank 0 wrote config.yaml: it must not call that an error,
    and it must not write itself (the race that failed a two-process CI run)."""
    from distiller_nlp.core.rundir import check_output_dir, create_output_dir

    full = tmp_path / "full"
    full.mkdir()
    (full / "config.yaml").write_text("x: 1\n")
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    check_output_dir(str(full))  # rank 1: no verdict
    create_output_dir(str(fresh))
    assert not fresh.exists()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(DistillerError, match="not empty"):
        check_output_dir(str(full))
    create_output_dir(str(fresh))
    assert fresh.is_dir()


def test_min_steps_lengthens_a_short_run_and_early_stopping_keeps_the_best(tmp_path):
    # --epochs auto: 3 epochs of 12 steps = 36 < 50 -> 50 steps; an explicit length is kept as given
    eng = make_engine(tmp_path / "long", epochs=0, min_steps=50, lr=5e-2, early_stopping=0)
    assert eng.total_steps == 50 and "training 50 steps (4.2 epochs)" in eng.length_note
    res = eng.train()
    assert res.global_step == 50 and "length_note" in res.metrics and res.metrics["planned_steps"] == 50
    assert make_engine(tmp_path / "given", epochs=1, min_steps=50).total_steps == 12  # explicit --epochs 1
    assert make_engine(tmp_path / "cap", epochs=0, min_steps=50, max_steps=5).total_steps == 5  # max_steps wins
    from distiller_nlp.core.train_args import TrainArgs

    assert TrainArgs().patience == 3 and TrainArgs(epochs=2).patience == 0 and TrainArgs(epochs=2,
                                                                                        early_stopping=4).patience == 4
    assert TrainArgs(max_steps=10).patience == 0 and TrainArgs(early_stopping=0).patience == 0

    # lr 0: the model never changes, so after the first evaluation nothing improves
    eng = make_engine(tmp_path / "es", lr=1e-12, eval_steps=3, early_stopping=2)
    res = eng.train()
    assert res.metrics["early_stopped_at"] == 9 and res.global_step == 9  # evaluations at 3 (best), 6, 9
    assert res.metrics["best_step"] == 3
