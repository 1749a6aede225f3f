"""``--lr auto``: the peak learning rate chosen per run by a short learning-rate range test.

The test follows Smith, "Cyclical Learning Rates for Training Neural Networks" (WACV 2017, §3.3), in the form
fastai's ``lr_find`` made popular. Starting from the run's own initial weights, it trains for ``n`` steps on the
run's own batches, with the learning rate growing geometrically from ``LR_MIN`` to ``LR_MAX``. After every step it
measures the loss on the same two fixed training batches (eval mode), not on the step's own batch: with only tens
of steps, batch-to-batch differences would otherwise swamp the curve (measured: on the demo's student, the
per-batch loss put the minimum at the first step and chose 1e-6). It smooths that loss (an exponential moving
average, debiased) and stops early once it exceeds 4 × its minimum or goes non-finite. The chosen peak LR is the LR at the minimum smoothed loss divided by 10 (fastai's
``lr_min`` suggestion), clamped to the tested range. The weights, the optimizer and every RNG stream are then put
back, so the run proper starts exactly as it would have without the test.

Budget: ``n`` = 10 % of the run's optimizer steps, capped at :data:`MAX_STEPS`. A run shorter than
``MIN_STEPS / 0.1`` steps has no room for a meaningful curve; it keeps :data:`FALLBACK_LR` and says so. The choice is
saved to ``DIR/lr_auto.json`` (main process), and ``--resume`` reads it back instead of testing again; a run killed
during the test itself continues it from ``DIR/.lr_auto_partial`` (saved every :data:`SAVE_EVERY` steps). It is
deterministic for a fixed seed; under several processes rank 0's choice is broadcast.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from typing import Callable, Optional

import numpy as np
import torch

__all__ = ["LR_MIN", "LR_MAX", "MIN_STEPS", "MAX_STEPS", "FALLBACK_LR", "LR_FILE", "PARTIAL_DIR", "range_test", "choose_lr",
           "suggest"]

logger = logging.getLogger(__name__)

LR_MIN, LR_MAX = 1e-6, 1e-2
MIN_STEPS, MAX_STEPS = 20, 100
FALLBACK_LR = 5e-5
LR_FILE = "lr_auto.json"
PARTIAL_DIR = ".lr_auto_partial"
SAVE_EVERY = 10


def suggest(lrs: list, losses: list, beta: float = 0.9) -> tuple[float, list]:
    """The suggestion from a range test's raw losses: (LR at the minimum smoothed loss / 10, smoothed losses)."""
    avg, smooth = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        smooth.append(avg / (1 - beta ** (i + 1)))
    best = int(np.argmin(smooth))
    return float(min(max(lrs[best] / 10, lrs[0]), lrs[-1])), smooth


def _partial_key(n: int, lr_min: float, lr_max: float) -> dict:
    return {"n": int(n), "lr_min": float(lr_min), "lr_max": float(lr_max)}


def _save_partial(state_dir: str, module, opt, i: int, lrs: list, losses: list, key: dict) -> None:
    """Everything the test needs to continue after step ``i``: the trained tensors (trainable parameters and buffers,
    safetensors), the optimizer state (``torch.save``, read back with ``weights_only=True``), the curve so far and the
    RNG states. Written to a temporary directory renamed over the previous one, so a kill leaves one whole copy."""
    from safetensors.torch import save_file

    tmp = f"{state_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tensors = {f"p.{k}": v.detach().contiguous().cpu() for k, v in module.named_parameters() if v.requires_grad}
    tensors.update({f"b.{k}": v.detach().contiguous().cpu() for k, v in module.named_buffers()})
    tensors["rng.torch"] = torch.get_rng_state()
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    save_file(tensors, os.path.join(tmp, "tensors.safetensors"))
    torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
    py_state = random.getstate()
    meta = {"key": key, "step": i, "lrs": lrs, "losses": losses, "numpy_pos": [int(x) for x in np_state[2:4]] +
            [float(np_state[4])], "python_rng": [py_state[0], list(py_state[1]), py_state[2]]}
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh)
    old = f"{state_dir}.old-{os.getpid()}"
    if os.path.isdir(state_dir):
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def _load_partial(state_dir: str, module, opt, key: dict) -> Optional[dict]:
    """Put back a state written by :func:`_save_partial` for the same test (``key``); None if there is none."""
    from safetensors.torch import load_file

    meta_path = os.path.join(state_dir, "state.json")
    if not os.path.isfile(meta_path):
        return None
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("key") != key:
        logger.info("lr_auto: the saved partial range test is for %s, not %s: testing again", meta.get("key"), key)
        return None
    tensors = load_file(os.path.join(state_dir, "tensors.safetensors"))
    params, buffers = dict(module.named_parameters()), dict(module.named_buffers())
    with torch.no_grad():
        for name, value in tensors.items():
            kind, _, rest = name.partition(".")
            target = params.get(rest) if kind == "p" else buffers.get(rest) if kind == "b" else None
            if target is not None:
                target.copy_(value.to(target.device, target.dtype))
    opt.load_state_dict(torch.load(os.path.join(state_dir, "optimizer.pt"), weights_only=True))
    torch.set_rng_state(tensors["rng.torch"])
    pos, has_gauss, cached = meta["numpy_pos"]
    np.random.set_state(("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss),
                         float(cached)))
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    return meta


def range_test(module, batches, step_fn: Callable, n: int, make_opt: Callable, lr_min: float = LR_MIN,
               lr_max: float = LR_MAX, max_grad_norm: Optional[float] = 1.0, probe: Optional[list] = None,
               state_dir: Optional[str] = None, save_every: int = SAVE_EVERY, write: bool = True) -> dict:
    """Run the test on ``module`` over the first ``n`` of ``batches``. ``step_fn(batch) -> loss tensor`` runs the
    forward pass (teacher outputs, autocast); ``make_opt(module)`` builds the optimizer; gradients are clipped as the
    run clips them (``max_grad_norm``; None or <= 0: not clipped). Restores weights and RNGs.

    With ``state_dir``, the test saves its progress every ``save_every`` steps (``write``: this process writes) and,
    when a progress record of the same test is there, continues from it instead of starting again: a run killed
    during the LR choice does not redo the finished steps, and the curve is the one an uninterrupted test draws. The
    record is removed once the test ends."""
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate(),
           torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    was_training = module.training
    module.train()
    opt = make_opt(module)
    lrs, losses = [], []
    key = _partial_key(n, lr_min, lr_max)
    start = 0
    try:
        it = iter(batches)  # created before any RNG is restored: the same order as the first attempt's

        def next_batch():
            nonlocal it
            try:
                return next(it)
            except StopIteration:
                it = iter(batches)
                return next(it)

        if state_dir:
            meta = _load_partial(state_dir, module, opt, key)
            if meta is not None:
                start, lrs, losses = int(meta["step"]), list(meta["lrs"]), list(meta["losses"])
                for _ in range(start):
                    next_batch()
                logger.info("lr_auto: continuing the range test at step %d of %d (%s)", start, n, state_dir)
        for i in range(start, n):
            if state_dir and write and i > start and i % save_every == 0:
                _save_partial(state_dir, module, opt, i, lrs, losses, key)
            batch = next_batch()
            lr = lr_min * (lr_max / lr_min) ** (i / max(1, n - 1))
            for g in opt.param_groups:
                g["lr"] = lr
            loss = step_fn(batch)
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            loss.backward()
            if max_grad_norm and max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if probe:  # the loss after the update on the same fixed batches every step (eval mode: no dropout)
                module.eval()
                with torch.no_grad():
                    value = float(sum(float(step_fn(b).detach()) for b in probe) / len(probe))
                module.train()
                if not math.isfinite(value):
                    break
            lrs.append(lr)
            losses.append(value)
            _, smooth = suggest(lrs, losses)
            if len(smooth) > 3 and smooth[-1] > 4 * min(smooth):
                break
    finally:
        module.load_state_dict(state)
        for p in module.parameters():
            p.grad = None
        module.train(was_training)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])
    if len(losses) < 3:
        return {"lr": FALLBACK_LR, "lrs": lrs, "losses": losses, "note": "the loss diverged at once"}
    chosen, smooth = suggest(lrs, losses)
    return {"lr": chosen, "lrs": lrs, "losses": losses, "smoothed": smooth, "resumed_at": start}


def choose_lr(output_dir: str, total_steps: int, run_test: Callable[[int], dict], accelerator=None,
              resume: bool = False, fallback: float = FALLBACK_LR) -> dict:
    """The ``lr_auto`` record of this run: read back on resume, else from :func:`range_test` (``run_test(n)``) or
    the fallback for a run too short to test; saved to ``DIR/lr_auto.json`` by the main process and logged."""
    path = os.path.join(output_dir, LR_FILE)
    if resume and os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
        logger.info("lr_auto: %.3g (saved choice, %s)", record["lr"], path)
        return record
    partial = os.path.join(output_dir, PARTIAL_DIR)
    is_main = accelerator is None or accelerator.is_main_process
    if not resume and is_main and os.path.isdir(partial):
        shutil.rmtree(partial, ignore_errors=True)  # a fresh run never continues a stale test
    t0 = time.perf_counter()
    n = min(MAX_STEPS, int(0.1 * total_steps))
    if n < MIN_STEPS:
        record = {"lr": fallback, "steps": 0,
                  "note": f"run of {total_steps} steps too short for a range test (needs "
                          f"{int(MIN_STEPS / 0.1)}); fallback {fallback:g}"}
    else:
        res = run_test(n)
        if res.get("note") and len(res.get("lrs", ())) < 3:
            res = {**res, "lr": fallback}
        record = {"lr": res["lr"], "steps": len(res["lrs"]), "range": [LR_MIN, LR_MAX],
                  "lrs": [round(x, 10) for x in res["lrs"]], "losses": [round(x, 6) for x in res["losses"]]}
        if res.get("note"):
            record["note"] = res["note"]
        if res.get("resumed_at"):
            record["resumed_at_step"] = res["resumed_at"]
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        record = broadcast_object_list([record], from_process=0)[0]
    if is_main:
        from distiller_nlp.core.rundir import write_json_atomic

        os.makedirs(output_dir, exist_ok=True)
        write_json_atomic(path, record)
        shutil.rmtree(partial, ignore_errors=True)
    msg = (f"lr_auto: chosen {record['lr']:.3g} from a range test of {record['steps']} steps over "
           f"[{LR_MIN:g}, {LR_MAX:g}] in {record['seconds']:.0f} s" if record["steps"] else f"lr_auto: {record['note']}")
    if record.get("note") and record["steps"]:
        msg += f" ({record['note']})"
    logger.info(msg)
    if accelerator is not None:
        accelerator.print(msg)
    return record


def summary(record: Optional[dict]) -> dict:
    """Flat ``metrics.json`` keys of an ``lr_auto`` record."""
    if not record:
        return {}
    return {"lr_auto_chosen": record["lr"], "lr_auto_steps": record.get("steps", 0),
            "lr_auto_s": record.get("seconds", 0.0)}
