"""The one Accelerate training loop every package drives.

A caller hands the engine a trainable ``nn.Module`` whose ``forward(batch)`` returns a dict with a scalar ``loss``
(plus any named scalar tensors to log, e.g. ``{"loss": ..., "kd": ..., "hidden_mse/2": ...}``) and whose
``predict(batch)`` returns predictions for evaluation. Everything a run trains — the student and its extra modules
(projections, MI critics) — lives inside that module, so it is optimised, synchronised across processes and
checkpointed together; the caller's ``export_fn`` decides what is exported (the student only).

Optional hooks: a module with ``set_progress(p)`` is told the training progress p = global step / total steps before
every batch (KD schedules); a training set with ``set_epoch(e)`` is told the epoch before it is iterated (e.g. to
regenerate augmented copies). Both are pure functions of the step/epoch, so resumed runs see the same values.
:class:`~distiller_nlp.core.engine.callbacks.Callback` objects hear about steps, evaluations and checkpoints.

A teacher is not part of the trainable module: pass it as ``frozen`` (moved to the device, kept in eval mode) and
compute its outputs in ``prepare_batch(batch)``, which the engine calls under ``torch.no_grad()`` (not
``inference_mode``: inference tensors cannot be saved for the student's backward) and autocast.

The engine does: seeding, precision ``auto|no|bf16|fp16`` (:mod:`.precision`), gradient accumulation, clipping, AdamW
with linear warm-up/decay (:mod:`.optim`), batches (:mod:`.samplers`), evaluation with ``gather_for_metrics``
(:mod:`.evaluate`: every example once, in any world size), best-model export, atomic ``save_state`` checkpoints and
``--resume`` (a run killed and resumed with the same seed ends with the same metrics), TensorBoard tracking and tqdm
progress on the main process. Batches need no ``labels`` column (examples are counted from the first tensor).

Depends on torch and accelerate only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from distiller_nlp.core.distributed import (finish_trackers, ranks_in_sync, seed_process, sync_batchnorm,
                                            sync_buffers)
from distiller_nlp.core.engine.callbacks import Callback
from distiller_nlp.core.engine.checkpoints import (CHECKPOINT_PREFIX, STATE_FILE, list_checkpoints, untie,
                                                   verify_checkpoint, write_manifest)
from distiller_nlp.core.engine.guards import StopSignals, nonfinite_components
from distiller_nlp.core.engine.lr_find import summary as lr_auto_summary
from distiller_nlp.core.engine.evaluate import batch_size_of, evaluate_loaders, predict_loader
from distiller_nlp.core.engine.optim import linear_warmup_schedule, make_optimizer
from distiller_nlp.core.engine.precision import make_accelerator, start_trackers
from distiller_nlp.core.engine.samplers import loader_kwargs, train_loader
from distiller_nlp.core.errors import DiskFullError, DistillerError, NonFiniteError, RunInterrupted
from distiller_nlp.core.rundir import write_json_atomic

__all__ = ["Engine", "EngineResult"]

logger = logging.getLogger(__name__)


@dataclass
class EngineResult:
    """What a training run produced: final metrics (of the best model when there was evaluation) and paths."""

    metrics: dict
    best_dir: Optional[str]
    history: list = field(default_factory=list)  # one entry per evaluation
    global_step: int = 0
    log_history: list = field(default_factory=list)  # mean training losses every ``logging_steps``


def compute_dtype(precision: str):
    """The dtype frozen modules are held in under ``precision``: bf16 for ``bf16``; None (keep fp32) otherwise —
    fp16 weights would overflow where fp16 autocast keeps its fp32 ops."""
    return torch.bfloat16 if precision == "bf16" else None


def compile_modules(module: nn.Module, frozen: list) -> None:
    """``--compile``: ``nn.Module.compile()`` (in place: parameter names and checkpoints unchanged) on the module's
    ``student`` (or the module itself) and on each frozen module; the loss code around them stays eager."""
    target = getattr(module, "student", None)
    (target if isinstance(target, nn.Module) else module).compile()
    for f in frozen:
        f.compile()


# ------------------------------------------------------------------------------------------------ engine

class Engine:
    """Drive ``module`` through training with Accelerate. See the module docstring for the contract.

    Args:
        args: a :class:`distiller_nlp.core.train_args.TrainArgs` (epochs, lr, precision, seed, ...).
        output_dir: run directory; checkpoints go to ``output_dir/checkpoints``, the best export to
            ``output_dir/best``, TensorBoard logs to ``output_dir/runs``.
        module: trainable module, ``forward(batch) -> {"loss": tensor, ...}``, ``predict(batch) -> logits``.
        train_dataset, eval_datasets: map-style datasets; ``collate_fn`` builds batches (dicts of tensors).
        compute_metrics: ``(predictions: np.ndarray, references: np.ndarray) -> dict`` of metrics in their own range.
        main_metric: key of ``compute_metrics``' result that selects the best model (higher is better unless
            ``greater_is_better=False``). The first eval dataset is the selection set, evaluated at every
            evaluation; the others (e.g. a labelled test split) are evaluated once, on the selected model, at the
            end (so they never influence selection and cost one pass).
        prepare_batch: called on every (device-placed) train batch under ``no_grad`` + autocast, e.g. to add
            teacher outputs; may return a new dict.
        frozen: modules moved to the device and kept in eval mode (the teacher); never trained or checkpointed.
        export_fn: ``(unwrapped_module, directory) -> None`` writes the deliverable (e.g. the student with
            ``save_pretrained``); called on the main process whenever evaluation improves (and at the end when there
            is no evaluation).
        resume: continue from the newest complete checkpoint in ``output_dir/checkpoints``.
        callbacks: :class:`~distiller_nlp.core.engine.callbacks.Callback` objects (on train begin, step end,
            evaluate, save, train end), called on every process; an exception one raises (such as
            ``optuna.TrialPruned`` from an Optuna reporting callback) ends training and propagates.
    """

    def __init__(
        self,
        args,
        output_dir: str,
        module: nn.Module,
        train_dataset,
        collate_fn: Callable,
        eval_datasets: Optional[dict] = None,
        compute_metrics: Optional[Callable] = None,
        main_metric: str = "accuracy",
        greater_is_better: bool = True,
        prepare_batch: Optional[Callable] = None,
        frozen: Optional[list] = None,
        export_fn: Optional[Callable] = None,
        resume: bool = False,
        run_name: str = "distiller_nlp",
        accelerator=None,
        callbacks: Optional[list] = None,
    ):
        self.args = args
        self.output_dir = output_dir
        self.compute_metrics = compute_metrics
        self.main_metric = args.metric_for_best or main_metric
        self.greater_is_better = greater_is_better
        self.prepare_batch = prepare_batch
        self.export_fn = export_fn
        self.resume = resume
        self.run_name = run_name
        self.callbacks: list[Callback] = list(callbacks or [])
        unused = bool(getattr(module, "has_unused_parameters", False))
        if accelerator is None:
            from distiller_nlp.core.engine.precision_probe import shapes_from_models

            shapes = shapes_from_models([module, *(frozen or [])], args.batch_size, getattr(args, "max_length", 1))
            accelerator = make_accelerator(args, output_dir, tracking=True, find_unused=unused, probe_shapes=shapes)
        elif unused and accelerator.ddp_handler is not None:
            accelerator.ddp_handler.find_unused_parameters = True
        self.accelerator = accelerator
        self.precision = accelerator.mixed_precision
        seed_process(args.seed, per_rank=True)  # dropout / MixUp / masking differ per rank; data order does not

        if len(train_dataset) == 0:
            raise DistillerError("the training set is empty")
        self.train_dataset = train_dataset
        raw_loader, self.length_sampler = train_loader(train_dataset, args, collate_fn)
        self.eval_names = list((eval_datasets or {}).keys())
        eval_loaders = [
            DataLoader(ds, batch_size=args.eval_batch_size, shuffle=False, collate_fn=collate_fn,
                       **loader_kwargs(args))
            for ds in (eval_datasets or {}).values()
        ]
        self.frozen = frozen or []
        frozen_dtype = compute_dtype(self.precision) if getattr(args, "frozen_in_compute_dtype", True) else None
        for f in self.frozen:
            f.to(accelerator.device)
            if frozen_dtype is not None:  # cast once: no per-step weight casts under autocast, half the memory
                f.to(frozen_dtype)
            f.eval()
            for p in f.parameters():
                p.requires_grad_(False)
        if getattr(args, "compile", False):
            compile_modules(module, self.frozen)

        self.lr_auto = None
        if args.lr == 0:  # --lr auto: a short range test on this run's own module and batches picks the peak LR
            self.lr_auto = self._lr_range_test(module, raw_loader, prepare_batch)
            args.lr = float(self.lr_auto["lr"])  # what the card, the meta-dataset and the optimizer see

        module = sync_batchnorm(module, accelerator)
        self.module = module
        optimizer = make_optimizer(module, args, accelerator.device)
        prepared = accelerator.prepare(module, optimizer, raw_loader, *eval_loaders)
        self.model, self.optimizer, self.train_loader = prepared[:3]
        self.eval_loaders = list(prepared[3:])

        self.steps_per_epoch = max(1, math.ceil(len(self.train_loader) / args.grad_accum))
        self.length_note = None
        self.total_steps = self._planned_steps(len(self.train_loader))
        if args.auto_length:
            floor = int(args.min_steps or 0)
            if self.total_steps < floor:  # a small training set: more epochs, so that the run gets enough steps
                self.length_note = (f"{args.planned_epochs:g} epochs = {self.total_steps} steps < --min-steps {floor}: "
                                    f"training {floor} steps ({floor / self.steps_per_epoch:.1f} epochs)")
                self.total_steps = floor
                accelerator.print(f"length: {self.length_note}")
        warmup = int(args.warmup_ratio * self.total_steps)
        scheduler = linear_warmup_schedule(self.optimizer, warmup, self.total_steps)
        # The scheduler steps once per optimizer step in every process; do not let accelerate rescale it. Its state
        # travels in trainer_state.json (JSON), not as accelerate's pickled custom state: resume reads no pickle.
        self.scheduler = scheduler

        self.state = {
            "global_step": 0,
            "epoch": 0,
            "batches_in_epoch": 0,
            "best_metric": None,
            "best_step": None,
            "best_metrics": {},
            "history": [],
            "log_history": [],
            "train_time_s": 0.0,
            "train_examples": 0,
            "nonfinite_skipped": 0,
        }
        self._signals: Optional[StopSignals] = None
        self._nonfinite_in_a_row = 0

    def _planned_steps(self, batches_per_rank: int) -> int:
        """Optimizer steps from ``--max-steps``, else from the epochs (before ``--min-steps``)."""
        args = self.args
        if args.max_steps and args.max_steps > 0:
            return int(args.max_steps)
        return max(1, math.ceil(args.planned_epochs * max(1, math.ceil(batches_per_rank / args.grad_accum))))

    def _lr_range_test(self, module, raw_loader, prepare_batch) -> dict:
        from distiller_nlp.core.engine.lr_find import PARTIAL_DIR, choose_lr, range_test

        acc, args = self.accelerator, self.args
        total = self._planned_steps(math.ceil(len(raw_loader) / acc.num_processes))
        if args.auto_length:
            total = max(total, int(args.min_steps or 0))  # sized from the run's real length
        module.to(acc.device)

        def step(batch):
            batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            if prepare_batch is not None:
                with torch.no_grad(), acc.autocast():
                    batch = prepare_batch(batch)
            with acc.autocast():
                return module(batch)["loss"].float()

        def run_test(n):
            it = iter(raw_loader)
            probe = [next(it) for _ in range(min(2, len(raw_loader)))]  # fixed batches the loss is measured on
            return range_test(module, raw_loader, step, n, lambda m: make_optimizer(m, args, acc.device),
                              max_grad_norm=args.max_grad_norm, probe=probe,
                              state_dir=os.path.join(self.output_dir, PARTIAL_DIR), write=acc.is_main_process)

        return choose_lr(self.output_dir, total, run_test, accelerator=acc, resume=self.resume,
                         fallback=float(getattr(args, "lr_fallback", 5e-5)))

    # -------------------------------------------------------------------------------------------- checkpoints

    def _save_checkpoint(self) -> None:
        acc = self.accelerator
        step = self.state["global_step"]
        root = os.path.join(self.output_dir, "checkpoints")
        final = os.path.join(root, f"{CHECKPOINT_PREFIX}{step:08d}")
        tmp = os.path.join(root, f".tmp-{CHECKPOINT_PREFIX}{step:08d}")
        if acc.is_main_process:
            os.makedirs(root, exist_ok=True)
            if os.path.exists(tmp):
                shutil.rmtree(tmp)
            os.makedirs(tmp)  # before the barrier: the other ranks' save_state finds it (their makedirs is a no-op)
        acc.wait_for_everyone()
        failure = None
        try:
            acc.save_state(tmp)
        except OSError as exc:  # e.g. ENOSPC: the previous checkpoint is untouched (this one is still a temp dir)
            failure = exc
        failure = self._first_failure(failure)
        if failure is None and acc.is_main_process:
            try:
                write_manifest(tmp)
                write_json_atomic(os.path.join(tmp, STATE_FILE),
                                  {**self.state, "scheduler": self.scheduler.state_dict()})
            except OSError as exc:
                failure = exc
        failure = self._first_failure(failure)
        if failure is not None:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            acc.wait_for_everyone()
            previous = list_checkpoints(self.output_dir)
            kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
            raise DiskFullError(f"could not write the checkpoint of step {step} in {root} "
                                f"({getattr(failure, 'strerror', None) or failure}); {kept}; free space and rerun "
                                "with --resume")
        if acc.is_main_process:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in list_checkpoints(self.output_dir)[: -max(1, self.args.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        self._event("on_save", final)

    def _first_failure(self, failure):
        """Every rank learns whether any rank failed (one collective when there are several processes)."""
        if self._agree(failure is not None)[0] and failure is None:
            return OSError("another process could not write its part of the checkpoint")
        return failure

    def _agree(self, *flags: bool) -> list[bool]:
        """The flags OR-ed over every process (no collective in a single process)."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return [bool(f) for f in flags]
        t = acc.reduce(torch.tensor([float(bool(f)) for f in flags], device=acc.device), "sum")
        return [v > 0 for v in t.tolist()]

    def _load_checkpoint(self) -> bool:
        ckpts = list_checkpoints(self.output_dir)
        if not ckpts:
            logger.warning("--resume: no checkpoint found in %s, starting from scratch", self.output_dir)
            return False
        path = None
        for candidate in reversed(ckpts):  # the newest intact one
            problem = verify_checkpoint(candidate)
            if problem is None:
                path = candidate
                break
            self.accelerator.print(f"warning: checkpoint {candidate} is damaged ({problem}); trying an older one")
        if path is None:
            raise DistillerError(f"--resume: no intact checkpoint in {os.path.join(self.output_dir, 'checkpoints')} "
                                 "(every one differs from its manifest); rerun with --overwrite")
        self.accelerator.load_state(path)
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
            saved = json.load(fh)
        scheduler_state = saved.pop("scheduler", None)
        legacy = os.path.join(path, "custom_checkpoint_0.pkl")  # checkpoints written before the JSON scheduler state
        if scheduler_state is None and os.path.isfile(legacy):
            scheduler_state = torch.load(legacy, map_location="cpu", weights_only=True)
        if scheduler_state is not None:
            self.scheduler.load_state_dict(scheduler_state)
        self.state.update(saved)
        self.accelerator.print(f"resumed from {path} (step {self.state['global_step']})")
        return True

    # -------------------------------------------------------------------------------------------- evaluation

    def predict(self, loader) -> tuple[np.ndarray, np.ndarray]:
        """Logits and labels of every example of ``loader`` exactly once (``gather_for_metrics``)."""
        return predict_loader(self.accelerator, self.model, loader)

    def evaluate(self, all_sets: bool = False) -> dict:
        """Evaluate on the selection set (keys ``eval_<metric>``), and with ``all_sets`` also on every other eval
        dataset (keys ``<name>_<metric>``)."""
        n = len(self.eval_loaders) if all_sets else 1
        return evaluate_loaders(self.accelerator, self.model, self.eval_names[:n], self.eval_loaders[:n],
                                 self.compute_metrics)

    def _best_state_path(self) -> str:
        return os.path.join(self.output_dir, "checkpoints", "best_state.safetensors")

    def _save_best_state(self) -> None:
        """Keep the selected model's weights (all trainable-module tensors) for the final held-out evaluation."""
        from safetensors.torch import save_file

        acc = self.accelerator
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {k: v.detach().cpu().contiguous() for k, v in acc.unwrap_model(self.model).state_dict().items()}
            path = self._best_state_path()
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}"
            save_file(untie(state), tmp)
            os.replace(tmp, path)
        acc.wait_for_everyone()

    def _evaluate_held_out(self) -> dict:
        """Evaluate the non-selection eval sets once, on the selected (best) weights."""
        if len(self.eval_loaders) < 2:
            return {}
        from safetensors.torch import load_file

        module = self.accelerator.unwrap_model(self.model)
        path = self._best_state_path()
        current = None
        if os.path.isfile(path) and self.state["best_step"] != self.state["global_step"]:
            current = {k: v.detach().clone() for k, v in module.state_dict().items()}
            module.load_state_dict(load_file(path), strict=False)
        out = evaluate_loaders(self.accelerator, self.model, self.eval_names[1:], self.eval_loaders[1:],
                                self.compute_metrics, first_is_eval=False)
        if current is not None:
            module.load_state_dict(current)
        return out

    def _is_better(self, value: float) -> bool:
        best = self.state["best_metric"]
        if best is None:
            return True
        return value > best if self.greater_is_better else value < best

    def _evaluate_and_select(self, pbar=None) -> dict:
        acc = self.accelerator
        metrics = self.evaluate()
        key = f"eval_{self.main_metric}"
        if key not in metrics:
            raise DistillerError(
                f"metric_for_best '{self.main_metric}' is not among the evaluation metrics "
                f"({', '.join(k[5:] for k in metrics if k.startswith('eval_'))})"
            )
        entry = {"step": self.state["global_step"], "epoch": self.state["epoch"], **metrics}
        self.state["history"].append(entry)
        if self._is_better(metrics[key]):
            self.state["best_metric"] = metrics[key]
            self.state["best_step"] = self.state["global_step"]
            self.state["best_metrics"] = metrics
            self._export(os.path.join(self.output_dir, "best"))
            if len(self.eval_loaders) > 1:
                self._save_best_state()
        acc.log({f"eval/{k[5:]}" if k.startswith("eval_") else k: v for k, v in metrics.items()},
                step=self.state["global_step"])
        if pbar is not None:
            pbar.write(
                f"step {self.state['global_step']}: "
                + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if not k.endswith("_examples"))
            )
        return metrics

    def _export(self, directory: str) -> None:
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.export_fn is not None and acc.is_main_process:
            self.export_fn(acc.unwrap_model(self.model), directory)
            write_json_atomic(os.path.join(directory, "step.json"), {"step": self.state["global_step"]})
        acc.wait_for_everyone()

    # -------------------------------------------------------------------------------------------- training

    def _event(self, name: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(self, *args)

    def train(self) -> EngineResult:
        """Run the loop to ``total_steps`` optimizer steps; returns metrics of the selected (best) model."""
        from tqdm.auto import tqdm

        acc = self.accelerator
        args = self.args
        if self.resume:
            self._load_checkpoint()
        tracking = (getattr(args, "report_to", "none") or "none") != "none"
        if tracking:
            start_trackers(acc, self.run_name, args, self.output_dir)
        pbar = tqdm(
            total=self.total_steps, initial=self.state["global_step"], desc="train",
            disable=not acc.is_local_main_process, dynamic_ncols=True,
        )
        try:
            with StopSignals() as self._signals:
                self._event("on_train_begin")
                last_logs = self._loop(pbar)
        finally:
            self._signals = None
            pbar.close()
            if tracking:
                finish_trackers(acc)  # not end_training(): it destroys the process group the run still needs
        sync_buffers(acc, self.model)  # the last forward updated each rank's buffers from its own batch
        if not self.eval_loaders:
            self._export(os.path.join(self.output_dir, "best"))
            self.state["best_step"] = self.state["global_step"]
        metrics = dict(self.state["best_metrics"])
        metrics.update(self._evaluate_held_out())
        runtime = self.state["train_time_s"]
        metrics.update(
            {
                "train_runtime_s": round(runtime, 3),
                "examples_per_s": round(self.state["train_examples"] / runtime, 3) if runtime > 0 else 0.0,
                "train_loss": last_logs.get("loss", float("nan")),
                "global_step": self.state["global_step"],
                "best_step": self.state["best_step"],
                "precision": self.precision,
                "precision_requested": getattr(args, "precision", self.precision),
                "world_size": acc.num_processes,
                "nonfinite_skipped": self.state.get("nonfinite_skipped", 0),
                **lr_auto_summary(self.lr_auto),
                "planned_steps": self.total_steps,
                "epochs_trained": round(self.state["global_step"] / self.steps_per_epoch, 3),
                **({"length_note": self.length_note} if self.length_note else {}),
                **({"early_stopped_at": self.state["early_stopped_at"]} if self.state.get("early_stopped_at")
                   else {}),
                "ranks_in_sync": ranks_in_sync(acc, self.model),
            }
        )
        if metrics["precision_requested"] == "auto" and acc.device.type == "cpu":
            from distiller_nlp.core.engine.precision_probe import last_probe

            ratio = last_probe().get("ratio")
            if ratio is not None:  # the probe's bf16 speed over fp32 on this run's shapes
                metrics["precision_probe_bf16_speedup"] = ratio
        if not metrics["ranks_in_sync"]:
            logger.warning("the ranks ended with different weights (parameter checksums differ)")
        self._event("on_train_end", metrics)
        best_dir = os.path.join(self.output_dir, "best") if self.export_fn is not None else None
        return EngineResult(metrics=metrics, best_dir=best_dir, history=self.state["history"],
                            log_history=self.state["log_history"],
                            global_step=self.state["global_step"])

    def _patience_exhausted(self) -> bool:
        """``--early-stopping N``: the last N evaluations did not improve the selection metric (read from the
        history, so a resumed run counts the same)."""
        n = int(self.args.patience)
        history, best = self.state["history"], self.state["best_step"]
        return n > 0 and len(history) > n and all(h["step"] != best for h in history[-n:])

    def _on_nonfinite(self, out: dict, where: str) -> None:
        """A NaN/Inf loss or gradient in the coming step: stop (default) or count it and go on (``skip``)."""
        step = self.state["global_step"] + 1
        parts = nonfinite_components(out) if where == "loss" else []
        what = f"{where} ({', '.join(parts)})" if parts else where
        if self.args.on_nonfinite == "skip":
            self.state["nonfinite_skipped"] = self.state.get("nonfinite_skipped", 0) + 1
            self._nonfinite_in_a_row += 1
            logger.warning("step %d: non-finite %s, batch skipped (%d in a row)", step, what,
                           self._nonfinite_in_a_row)
            if self._nonfinite_in_a_row < self.args.max_nonfinite:
                return
            raise NonFiniteError(f"{self._nonfinite_in_a_row} non-finite batches in a row up to step {step} "
                                 f"(last: {what}); stopped with --on-nonfinite skip and --max-nonfinite "
                                 f"{self.args.max_nonfinite}; {self._last_good()}")
        raise NonFiniteError(f"non-finite {what} at step {step}; the model was not promoted and {self._last_good()}; "
                             "try a lower --lr, --precision no, or --on-nonfinite skip")

    def _last_good(self) -> str:
        ckpts = list_checkpoints(self.output_dir)
        return f"the last good checkpoint is {ckpts[-1]}" if ckpts else "no checkpoint was written yet"

    def _preempted(self, saved: bool) -> None:
        """SIGTERM/SIGINT: save a complete checkpoint at this step boundary (unless one was just saved) and stop."""
        if not saved:
            self._save_checkpoint()
        name = (self._signals.received if self._signals is not None else None) or "a signal"
        step = self.state["global_step"]
        raise RunInterrupted(f"{name} at step {step}/{self.total_steps}: checkpoint saved in "
                             f"{os.path.join(self.output_dir, 'checkpoints')}; rerun the same command with --resume "
                             "to continue")

    def _loop(self, pbar) -> dict:
        """The optimizer steps; returns the last logged losses."""
        acc = self.accelerator
        args = self.args
        total = self.total_steps
        self.model.train()
        running: dict[str, torch.Tensor] = {}
        running_n = 0
        last_logs: dict = {}
        t_start = time.perf_counter()
        time_before = self.state["train_time_s"]
        examples_before = self.state["train_examples"]
        examples = 0
        log_t0, log_examples = time.perf_counter(), 0  # throughput window since the last log (no eval/save time)
        batches_per_epoch = len(self.train_loader)
        eval_every = args.eval_steps if args.eval_steps > 0 else None
        save_every = args.save_steps if args.save_steps > 0 else None

        while self.state["global_step"] < total and not self.state.get("early_stopped_at"):
            epoch = self.state["epoch"]
            self.train_loader.set_epoch(epoch)
            if hasattr(self.train_dataset, "set_epoch"):  # e.g. augmented copies regenerated every N epochs
                self.train_dataset.set_epoch(epoch)
            if self.length_sampler is not None:
                self.length_sampler.set_epoch(epoch)
            skip = self.state["batches_in_epoch"]
            loader = self.train_loader
            if skip:
                # Creating the iterator draws from the global RNG; keep the restored RNG stream intact so that a
                # resumed run sees the same dropout masks as the uninterrupted one.
                rng = torch.get_rng_state()
                loader = acc.skip_first_batches(self.train_loader, skip)
                iterator = iter(loader)
                torch.set_rng_state(rng)
            else:
                iterator = iter(loader)
            for batch in iterator:
                if hasattr(self.module, "set_progress"):  # KD schedules (temperature, loss weights)
                    self.module.set_progress(self.state["global_step"] / total)
                with acc.accumulate(self.model):
                    if self.prepare_batch is not None:
                        with torch.no_grad(), acc.autocast():
                            batch = self.prepare_batch(batch)
                    with acc.autocast():
                        out = self.model(batch)
                    loss = out["loss"]
                    # One check per batch, agreed by every rank (a rank that skipped its backward alone would
                    # leave the others waiting in DDP's all-reduce).
                    bad_loss = self._agree(not bool(torch.isfinite(loss.detach()).item()))[0]
                    if bad_loss:
                        self._on_nonfinite(out, "loss")
                    else:
                        acc.backward(loss)
                    bad_grad = False
                    if acc.sync_gradients and args.max_grad_norm and args.max_grad_norm > 0 and not bad_loss:
                        norm = acc.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                        # fp16's scaler skips overflowing steps itself; elsewhere a NaN/Inf norm is a bad step
                        if self.precision != "fp16" and norm is not None and not bool(torch.isfinite(norm).item()):
                            bad_grad = True
                            self._on_nonfinite(out, "gradient norm")
                    if bad_loss or bad_grad:
                        if acc.sync_gradients:  # drop the whole accumulation window on every rank
                            self.optimizer.zero_grad(set_to_none=True)
                            self.scheduler.step()
                    else:
                        self._nonfinite_in_a_row = 0
                        self.optimizer.step()
                        if acc.sync_gradients and not acc.optimizer_step_was_skipped:  # fp16: skipped on overflow
                            self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                if not (bad_loss or bad_grad):
                    for k, v in out.items():
                        if torch.is_tensor(v) and v.ndim == 0:
                            v = v.detach().float()
                            running[k] = running[k] + v if k in running else v
                    running_n += 1
                examples += batch_size_of(batch) * acc.num_processes
                self.state["batches_in_epoch"] += 1
                if not acc.sync_gradients:
                    continue
                self.state["global_step"] += 1
                step = self.state["global_step"]
                pbar.update(1)
                if (step % args.logging_steps == 0 or step == total) and running_n:
                    # One host sync every logging_steps, not one per step; the mean over every rank's batches.
                    keys = sorted(running)
                    means = acc.reduce(torch.stack([running[k] for k in keys]) / running_n, "mean")
                    last_logs = dict(zip(keys, means.tolist()))
                    last_logs["lr"] = self.scheduler.get_last_lr()[0]
                    self.state["log_history"].append({"step": step, **last_logs})
                    now = time.perf_counter()
                    rate = (examples - log_examples) / (now - log_t0) if now > log_t0 else 0.0
                    acc.log({**{f"train/{k}": v for k, v in last_logs.items()}, "train/examples_per_s": rate},
                            step=step)
                    log_t0, log_examples = now, examples
                    pbar.set_postfix({k: f"{v:.4g}" for k, v in last_logs.items() if k in ("loss", "lr")})
                    running, running_n = {}, 0
                    self._event("on_step_end", last_logs)
                else:
                    self._event("on_step_end", {})
                # The loader's own look-ahead knows the last batch even when len() and the batches disagree.
                end_of_epoch = (self.state["batches_in_epoch"] >= batches_per_epoch
                                or acc.gradient_state.end_of_dataloader)
                do_eval = self.eval_loaders and (
                    (eval_every and step % eval_every == 0) or (not eval_every and end_of_epoch) or step == total
                )
                self.state["train_time_s"] = time_before + time.perf_counter() - t_start
                self.state["train_examples"] = examples_before + examples
                if end_of_epoch:
                    self.state["epoch"] += 1
                    self.state["batches_in_epoch"] = 0
                t_pause = time.perf_counter()
                if do_eval:
                    self._event("on_evaluate", self._evaluate_and_select(pbar))
                    if self._patience_exhausted() and step < total:
                        self.state["early_stopped_at"] = step
                        pbar.write(f"early stopping at step {step}: {args.patience} evaluations without "
                                   f"improvement (best at step {self.state['best_step']})")
                        break
                saved = False
                if do_eval or (save_every and step % save_every == 0) or (not save_every and end_of_epoch):
                    if step < total:
                        self._save_checkpoint()
                        saved = True
                if step < total and self._agree(self._signals is not None and self._signals.received)[0]:
                    self._preempted(saved)
                log_t0 += time.perf_counter() - t_pause
                if step >= total or end_of_epoch:
                    break
            else:
                # Loader exhausted without reaching a sync point (e.g. a partial accumulation window).
                self.state["epoch"] += 1
                self.state["batches_in_epoch"] = 0

        self.state["train_time_s"] = time_before + time.perf_counter() - t_start
        self.state["train_examples"] = examples_before + examples
        return last_logs
