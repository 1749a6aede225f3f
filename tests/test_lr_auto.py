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
