"""The training-argument schema every training command shares (the engine's arguments, the ``train:`` section).

Each field carries its help text, range and flag (:func:`~distiller_nlp.core.config.option`), so ``--epochs``,
``--lr``, ``--precision``, ... exist in every CLI whose config has a ``train`` section, with the same names, help and
checks. A command with other defaults subclasses :class:`TrainArgs` and redeclares the fields it changes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from distiller_nlp.core.config import check_config, option
from distiller_nlp.core.errors import DistillerError

__all__ = ["TrainArgs", "AUTO_EPOCHS", "AUTO_PATIENCE", "parse_auto", "parse_lr", "PRECISIONS", "OPTIMIZERS", "REPORT_TO", "TRACKER_PACKAGES", "parse_report_to"]

#: ``auto`` = bf16 where the hardware runs it fast (see :func:`distiller_nlp.core.engine.resolve_precision`).
PRECISIONS = ("auto", "no", "bf16", "fp16")
OPTIMIZERS = ("auto", "adamw", "adamw_foreach", "adamw_fused")
#: ``report_to`` takes a comma-separated list of accelerate's trackers (``accelerate.utils.LoggerType``), ``all``
#: (every tracker whose package is installed) or ``none``. This tuple feeds the help text only (no accelerate import
#: for ``--help``); :func:`parse_report_to` checks against the installed accelerate's own list.
REPORT_TO = ("tensorboard", "mlflow", "wandb", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio", "all",
             "none")
#: What to ``pip install`` for each tracker (accelerate's ``is_<name>_available`` decides whether it is there).
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "mlflow": "mlflow-skinny",
    "wandb": "wandb",
    "comet_ml": "comet-ml",
    "aim": "aim<4",  # accelerate's AimTracker needs aim 3.x
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
}


def _tracker_names() -> list:
    """The trackers this accelerate knows (``LoggerType`` without ``all``)."""
    from accelerate.utils import LoggerType

    return [t.value for t in LoggerType if t.value != "all"]


def _tracker_available(name: str) -> bool:
    """accelerate's own check (``accelerate.utils.is_<name>_available``), read at call time; a tracker without one
    (newer than this code) counts as available and accelerate decides."""
    import accelerate.utils

    check = getattr(accelerate.utils, f"is_{name}_available", None)
    return True if check is None else bool(check())


def parse_report_to(value, key: str = "train.report_to", source: str = "config") -> list:
    """The trackers of a ``report_to`` value, in order and without repeats: ``"tensorboard,mlflow"`` ->
    ``["tensorboard", "mlflow"]``; ``"all"`` -> every installed tracker; ``"none"`` / ``""`` -> ``[]``.

    An unknown name, ``none`` beside a tracker, or a tracker whose package is not installed is a one-line
    :class:`DistillerError` naming it (and the valid names, or the package to install)."""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    items = [s.strip().lower() for s in str(value or "").split(",")]
    items = [s for s in items if s]
    if not items or items == ["none"]:
        return []
    known = _tracker_names()
    valid = ", ".join(known + ["all", "none"])
    for item in items:
        if item == "none":
            raise DistillerError(f"{key}: 'none' in {source} cannot be combined with trackers ({value})")
        if item != "all" and item not in known:
            raise DistillerError(f"{key}: unknown tracker '{item}' in {source} (valid: {valid})")
    if "all" in items:
        return [name for name in known if _tracker_available(name)]
    out: list = []
    for item in items:
        if item in out:
            continue
        if not _tracker_available(item):
            package = TRACKER_PACKAGES.get(item, item)
            raise DistillerError(f"{key}: tracker '{item}' in {source} needs a package that is not installed: "
                                 f"pip install '{package}'")
        out.append(item)
    return out


class _BadLr(argparse.ArgumentTypeError, ValueError):
    """argparse prints its message as is; recipe loading catches it as a ValueError."""


def parse_auto(text: str) -> float:
    """``--lr`` / ``--epochs``: a number, or ``auto`` (stored as 0.0: chosen per run)."""
    if str(text).strip().lower() == "auto":
        return 0.0
    try:
        return float(text)
    except ValueError:
        raise _BadLr(f"expected a number or 'auto', got {text!r}") from None


parse_lr = parse_auto

#: ``--epochs auto``: this many epochs, lengthened to ``--min-steps`` optimizer steps for a small training set.
AUTO_EPOCHS = 3.0
#: ``--early-stopping`` -1 (auto): the patience used with ``--epochs auto``.
AUTO_PATIENCE = 3


@dataclass
class TrainArgs:
    """Optimisation and run-control settings shared by every training command (the engine's arguments)."""

    epochs: float = option(0.0, help="training epochs, or 'auto' (stored as 0, the default): 3 epochs, lengthened to "
                                     "--min-steps optimizer steps for a small training set, with early stopping "
                                     "(--early-stopping); a number trains exactly that long", min=0, flag=True,
                           parse=parse_auto)
    max_steps: int = option(-1, help="optimizer steps (overrides --epochs when > 0)", flag=True)
    min_steps: int = option(300, help="--epochs auto: at least this many optimizer steps (a small training set gets "
                                      "more epochs; 0 = no minimum)", min=0, flag=True)
    early_stopping: int = option(-1, help="stop after this many evaluations without improvement of the selection "
                                          "metric (the best model is kept either way); -1 = auto: 3 with --epochs "
                                          "auto, off with an explicit length; 0 = off", min=-1, flag=True)
    batch_size: int = option(32, help="per-process train batch size", positive=True, flag=True)
    eval_batch_size: int = option(64, help="per-process eval batch size", positive=True, flag=True)
    lr: float = option(0.0, help="peak learning rate, or 'auto' (stored as 0, the default): chosen per run by a short "
                                  "LR range test (core/engine/lr_find.py; a tenth of the run's steps, at most 100)",
                       min=0, flag=True, parse=parse_auto)
    lr_fallback: float = option(5e-5, help="--lr auto: the learning rate of a run too short for a range test (under "
                                           "200 steps)", positive=True)
    weight_decay: float = option(0.01, help="AdamW weight decay", flag=True)
    warmup_ratio: float = option(0.1, help="fraction of steps with linear warm-up", flag=True)
    grad_accum: int = option(1, help="gradient accumulation steps", positive=True, flag=True)
    max_grad_norm: float = option(1.0, help="gradient clipping norm (<= 0 disables clipping)")
    precision: str = option("auto", help="{choices} (auto = bf16 where fast)", choices=PRECISIONS, flag=True)
    seed: int = option(42, help="random seed", flag=True)
    cpu: bool = option(False, help="run on CPU even if a GPU is present", flag=True)
    max_length: int = option(128, help="max tokens per example", positive=True, flag=True)
    eval_steps: int = option(0, help="evaluate every N steps (0: every epoch)", flag=True)
    save_steps: int = option(0, help="checkpoint every N steps (0: every epoch and every evaluation)", flag=True)
    logging_steps: int = option(20, help="log every N steps", positive=True, flag=True)
    keep_checkpoints: int = option(2, help="checkpoints kept in DIR/checkpoints")
    report_to: str = option("tensorboard", help="experiment trackers, comma-separated: {choices}", choices=REPORT_TO,
                            check=False, flag=True)  # checked by parse_report_to in validate()
    metric_for_best: str = option("", help="metric that selects the best model ('' = the task's main metric)")
    find_unused_parameters: bool = option(False, help="DDP: tolerate parameters without gradients")
    group_by_length: bool = option(False, help="batch examples of similar length (less padding)", flag=True)
    optim: str = option("auto", help="{choices} (auto = fused AdamW on CPU/CUDA)", choices=OPTIMIZERS, flag=True)
    push_to_hub: str = option("", help="when the run ends, upload the exported model (weights, tokenizer, model "
                                       "card) to this Hub repository (owner/name; created private)", flag=True)
    frozen_in_compute_dtype: bool = option(True, help="hold frozen modules (the teacher) in the compute dtype once "
                                                     "(bf16 runs: half the teacher's memory, no per-step weight "
                                                     "casts; losses stay fp32)")
    compile: bool = option(False, help="torch.compile the student and the frozen teacher (opt-in: the first steps "
                                       "pay the compilation; see benchmarks/results/bench_kd_step.md)", flag=True)
    num_workers: int = option(0, help="DataLoader worker processes per process (0: load in the main thread)", min=0,
                              flag=True)
    on_nonfinite: str = option("stop", help="a NaN/Inf loss or gradient: {choices} (stop = end the run with an "
                                            "error, keep the last good checkpoint; skip = drop the batch and count "
                                            "it)", choices=("stop", "skip"), flag=True)
    max_nonfinite: int = option(10, help="--on-nonfinite skip: stop after this many non-finite batches in a row",
                                positive=True, flag=True)

    @property
    def auto_length(self) -> bool:
        """``--epochs auto`` and no ``--max-steps``: the engine lengthens a short run and stops it early."""
        return self.epochs == 0 and not (self.max_steps and self.max_steps > 0)

    @property
    def planned_epochs(self) -> float:
        """The epochs the schedule is planned on (:data:`AUTO_EPOCHS` for ``--epochs auto``)."""
        return self.epochs or AUTO_EPOCHS

    @property
    def patience(self) -> int:
        """Early-stopping patience in evaluations (0 = off), ``-1`` resolved against the length."""
        if self.early_stopping < 0:
            return AUTO_PATIENCE if self.auto_length else 0
        return self.early_stopping

    def check_metric_for_best(self, names, source: str = "config") -> None:
        """``metric_for_best`` must be one of the run's evaluation metrics ``names``: checked before the run
        directory is created, so a typo fails with nothing written."""
        if self.metric_for_best and self.metric_for_best not in tuple(names):
            raise DistillerError(f"train.metric_for_best in {source}: {self.metric_for_best!r} is not among the "
                                 f"evaluation metrics ({', '.join(names)})")

    def validate(self, source: str = "config") -> None:
        """Check every field's range and the cross-field rule (epochs or max_steps); one-line errors naming the key
        (``train.<name>``) and ``source``."""
        check_config(self, source, prefix="train.")
        parse_report_to(self.report_to, "train.report_to", source)
        if self.push_to_hub:
            from distiller_nlp.core.card import check_push_target

            check_push_target(self.push_to_hub)
