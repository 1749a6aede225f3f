"""``--lr auto`` (issue #22 item 1): a learning-rate range test picks the peak LR inside its range, reproducibly,
finds a planted good LR, is saved and read back on resume, and an explicit --lr turns it off."""

import json
import os

import pytest
import torch
from torch import nn

from distiller_nlp.core.engine.lr_find import FALLBACK_LR, LR_MAX, LR_MIN, choose_lr, range_test, suggest
from distiller_nlp.core.train_args import TrainArgs, parse_lr

from test_engine import make_engine


def test_suggest_is_the_lr_at_the_smoothed_minimum_over_ten():
    lrs = [1e-5, 1e-4, 1e-3, 1e-2]
    # with beta 0 the smoothed loss is the loss itself: minimum at 1e-3 -> 1e-4
    assert suggest(lrs, [3.0, 2.0, 1.0, 5.0], beta=0.0)[0] == pytest.approx(1e-4)
    assert suggest(lrs, [1.0, 2.0, 3.0, 4.0], beta=0.0)[0] == pytest.approx(1e-5)  # clamped to the range


class Quadratic(nn.Module):
    """Loss = a/2 · |w − x|² with a fresh target x per batch. Plain SGD on it converges fastest at lr = 1/a and
    diverges above 2/a: a planted good learning rate."""

    def __init__(self, a):
        super().__init__()
        self.w = nn.Parameter(torch.full((16,), 3.0))
        self.a = a

    def forward(self, batch):
        return {"loss": self.a / 2 * ((self.w - batch["x"]) ** 2).sum()}


def _test(a, n=100):
    g = torch.Generator().manual_seed(0)
    batches = [{"x": 0.1 * torch.randn(16, generator=g)} for _ in range(n)]
    m = Quadratic(a)
    return range_test(m, batches, lambda b: m(b)["loss"], n, lambda mod: torch.optim.SGD(mod.parameters(), lr=0),
                      max_grad_norm=None)


def test_range_test_restores_weights_and_rngs_and_is_reproducible():
    m = Quadratic(1e3)
    before = m.w.detach().clone()
    torch.manual_seed(5)
    state = torch.get_rng_state()
    res = range_test(m, [{"x": torch.zeros(16)}] * 30, lambda b: m(b)["loss"] + 0 * torch.rand(()), 30,
                     lambda mod: torch.optim.AdamW(mod.parameters(), lr=0))
    assert torch.equal(m.w, before) and m.w.grad is None and torch.equal(torch.get_rng_state(), state)
    assert LR_MIN <= res["lr"] <= LR_MAX
    assert _test(1e4)["lr"] == _test(1e4)["lr"]


@pytest.mark.parametrize("a", [1e3, 1e4, 1e5])
def test_the_planted_good_lr_is_found(a):
    res = _test(a)
    # the loss minimum lies between the optimum 1/a and the divergence 2/a; the suggestion is a tenth of it
    assert 0.05 <= res["lr"] * a <= 0.5, res["lr"]
    assert len(res["lrs"]) < 100  # stopped early once the loss blew up past 2/a


def test_short_runs_keep_the_fallback_and_the_choice_is_saved_and_read_back(tmp_path):
    calls = []
    rec = choose_lr(str(tmp_path), 50, lambda n: calls.append(n) or {"lr": 1.0, "lrs": [], "losses": []})
    assert rec["lr"] == FALLBACK_LR and not calls and "too short" in rec["note"]
    rec = choose_lr(str(tmp_path), 400, lambda n: calls.append(n) or {"lr": 3e-4, "lrs": [1e-6] * n,
                                                                       "losses": [1.0] * n})
    assert calls == [40] and rec["lr"] == 3e-4  # 10 % of the run's steps
    saved = json.load(open(tmp_path / "lr_auto.json"))
    assert saved["lr"] == 3e-4 and saved["steps"] == 40
    again = choose_lr(str(tmp_path), 400, lambda n: pytest.fail("re-tested on resume"), resume=True)
    assert again["lr"] == 3e-4


def test_lr_auto_in_the_engine_and_explicit_lr_turns_it_off(tmp_path):
    assert parse_lr("auto") == 0.0 and parse_lr("3e-5") == 3e-5
    eng = make_engine(tmp_path / "auto", lr=0.0, max_steps=240)  # 24 test steps of 240
    assert LR_MIN <= eng.args.lr <= LR_MAX and eng.lr_auto["steps"] == 24
    res = eng.train()
    assert res.metrics["lr_auto_chosen"] == eng.args.lr and res.metrics["lr_auto_steps"] == 24
    eng2 = make_engine(tmp_path / "auto2", lr=0.0, max_steps=240)
    assert eng2.args.lr == eng.args.lr  # deterministic for a seed
    fixed = make_engine(tmp_path / "fixed", max_steps=240)
    assert fixed.lr_auto is None and fixed.args.lr == 5e-2
    assert not os.path.exists(tmp_path / "fixed" / "lr_auto.json")


def test_lr_auto_from_a_recipe_string(tmp_path):
    from distiller_nlp.core.config import from_dict

    assert from_dict(TrainArgs, {"lr": "auto"}).lr == 0.0
    from distiller_nlp.core.errors import DistillerError

    with pytest.raises(DistillerError, match=r"train\.lr.*cannot read 'fast'"):
        from_dict(TrainArgs, {"lr": "fast"}, prefix="train.")


class Noisy(nn.Module):
    """A tiny MLP with dropout: the range test consumes the torch RNG every step, so resuming it exactly needs the
    weights, the optimizer state and the RNG state of the interrupted attempt."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, batch):
        return {"loss": ((self.net(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()}


def _noisy_batches():
    g = torch.Generator().manual_seed(1)
    return [{"x": torch.randn(4, 8, generator=g), "y": torch.randn(4, generator=g)} for _ in range(7)]


class Killed(Exception):
    pass


def _attempt(state_dir, stop_after=None):
    torch.manual_seed(5)  # what a fresh process with the same seed sees
    m, batches, calls = Noisy(), _noisy_batches(), []

    def step(b):
        if stop_after is not None and len(calls) >= stop_after:
            raise Killed
        calls.append(1)
        return m(b)["loss"]

    res = range_test(m, batches, step, 35, lambda mod: torch.optim.AdamW(mod.parameters(), lr=0),
                     probe=batches[:2], state_dir=state_dir)
    return res, len(calls)


def test_an_interrupted_range_test_continues_where_it_stopped_and_draws_the_same_curve(tmp_path):
    whole, whole_calls = _attempt(None)
    state_dir = str(tmp_path / "partial")
    with pytest.raises(Killed):  # killed during step 26: progress saved before steps 10 and 20 (3 calls a step)
        _attempt(state_dir, stop_after=3 * 25 + 1)
    saved = json.load(open(os.path.join(state_dir, "state.json")))
    assert saved["step"] == 20 and len(saved["losses"]) == 20
    resumed, calls = _attempt(state_dir)
    assert resumed["resumed_at"] == 20 and calls == whole_calls - 3 * 20  # the 20 finished steps are not redone
    assert resumed["lrs"] == whole["lrs"] and resumed["losses"] == whole["losses"] and resumed["lr"] == whole["lr"]
    other, _ = _attempt(None)
    assert other["losses"] == whole["losses"]  # and the curve itself is reproducible for a seed


def test_a_fresh_run_discards_a_stale_partial_test_and_a_finished_choice_removes_it(tmp_path):
    from distiller_nlp.core.engine.lr_find import PARTIAL_DIR

    partial = tmp_path / PARTIAL_DIR
    partial.mkdir()
    (partial / "state.json").write_text("{}")
    choose_lr(str(tmp_path), 400, lambda n: {"lr": 3e-4, "lrs": [1e-6] * n, "losses": [1.0] * n})
    assert not partial.exists()


_KILL_SCRIPT = r'''
import sys, time, torch
sys.path.insert(0, {tests!r})
from test_lr_auto import Noisy, _noisy_batches
from distiller_nlp.core.engine.lr_find import choose_lr, range_test
torch.manual_seed(5)
m, batches = Noisy(), _noisy_batches()
slow = {slow}
def step(b):
    if slow:
        time.sleep(0.02)
    return m(b)["loss"]
rec = choose_lr({out!r}, 350, lambda n: range_test(m, batches, step, n, lambda mod: torch.optim.AdamW(
    mod.parameters(), lr=0), probe=batches[:2], state_dir={out!r} + "/.lr_auto_partial"), resume=True)
print("CHOSEN", rec["lr"], rec.get("resumed_at_step", 0), rec["losses"])
'''


def test_sigkill_during_the_lr_choice_then_resume_does_not_redo_finished_steps(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    here = os.path.dirname(os.path.abspath(__file__))

    def script(out, slow):
        return [sys.executable, "-c", _KILL_SCRIPT.format(tests=here, out=str(out), slow=slow)]

    ref = subprocess.run(script(tmp_path / "ref", False), capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen(script(out, True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while not (out / ".lr_auto_partial" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (out / "lr_auto.json").exists()
    again = subprocess.run(script(out, False), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    chosen = again.stdout.split("CHOSEN", 1)[1].split(None, 2)
    assert int(chosen[1]) >= 10  # continued from a saved step, not from the start
    assert chosen[0] == ref.stdout.split("CHOSEN", 1)[1].split(None, 2)[0]  # the same choice
    assert chosen[2] == ref.stdout.split("CHOSEN", 1)[1].split(None, 2)[2]  # from the same curve
    assert not (out / ".lr_auto_partial").exists()
