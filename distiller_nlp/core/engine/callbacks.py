"""Engine callbacks, the way ``transformers.TrainerCallback`` works: override the events you need.

Every callback runs on every process (so one that raises, such as an Optuna pruning callback raising
``optuna.TrialPruned``, ends training on all ranks alike); write files only on ``engine.accelerator.is_main_process``.
``engine.state`` holds ``global_step``, ``epoch``, ``best_metric``, ``best_step``, ``history`` and ``log_history``.
"""

from __future__ import annotations

__all__ = ["Callback"]


class Callback:
    """Base class of engine callbacks; every event is a no-op here."""

    def on_train_begin(self, engine) -> None:
        """Before the first step (after ``--resume`` restored the state)."""

    def on_step_end(self, engine, logs: dict) -> None:
        """After every optimizer step; ``logs`` holds the mean losses at logging steps, else ``{}``."""

    def on_evaluate(self, engine, metrics: dict) -> None:
        """After every evaluation on the selection set (``eval_<metric>`` keys)."""

    def on_save(self, engine, checkpoint_dir: str) -> None:
        """After a checkpoint was written completely to ``checkpoint_dir``."""

    def on_train_end(self, engine, metrics: dict) -> None:
        """After training, with the final metrics (of the selected model)."""
