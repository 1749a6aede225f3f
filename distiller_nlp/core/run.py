"""The one run skeleton every training command follows (distill, finetune-teacher, train-mlm, vision train,
train-superlm)::

    run = TrainingRun(cfg.output_dir, resume=resume, overwrite=overwrite)   # 1. check DIR, write nothing
    ...load and validate everything the run needs...                       # 2. still nothing written
    run.start(cfg)                                                          # 3. create DIR, DIR/config.yaml
    result = Engine(..., output_dir=run.output_dir, resume=run.resume).train()
    metrics = run.finish(engine, result, extra={...})                       # 4. promote DIR/best, history.json,
                                                                            #    metrics.json; barrier

Only the main process writes; every process returns the same metrics. A bad input therefore fails in step 1 or 2 with
nothing on disk, and an interrupted run resumes from its last checkpoint (``--resume``). ``finished_run`` (from
:mod:`.rundir`) is the one test of "this run directory already holds a finished run" (stages, the demo, SuperLMs).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional

from distiller_nlp.core.config import dump_yaml
from distiller_nlp.core.rundir import (METRICS_FILE, OutputDirLock, check_output_dir, create_output_dir,
                                       finished_run, is_main_process, promote_best, write_json_atomic)

__all__ = ["TrainingRun", "finished_run"]

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"


class TrainingRun:
    """The output directory of one training run and its conventions (see the module docstring).

    Args:
        output_dir: the run directory (``--output-dir``).
        resume: continue from its last checkpoint (``--resume``).
        overwrite: replace a non-empty directory (``--overwrite``).
    """

    def __init__(self, output_dir: str, resume: bool = False, overwrite: bool = False):
        check_output_dir(output_dir, resume=resume, overwrite=overwrite)
        self.output_dir = output_dir
        self.resume = bool(resume)
        self.overwrite = bool(overwrite)
        self.started = False
        # One writer per directory: a second run on it fails here, before any model loads (main process only).
        self.lock = OutputDirLock(output_dir)
        if is_main_process():
            self.lock.acquire()

    def path(self, *parts: str) -> str:
        """A path inside the run directory."""
        return os.path.join(self.output_dir, *parts)

    def start(self, config: Any = None, config_file: str = CONFIG_FILE) -> None:
        """Create (or, with ``overwrite``, empty) the directory and write the resolved config as YAML (main process
        only). Call once every input was validated."""
        if is_main_process():  # before --overwrite empties anything (a no-op when __init__ locked it)
            os.makedirs(os.path.dirname(os.path.abspath(self.output_dir)), exist_ok=True)
            self.lock.acquire()
        create_output_dir(self.output_dir, overwrite=self.overwrite)
        if config is not None and is_main_process():
            dump_yaml(config, self.path(config_file))
        self._config = (config, config_file)
        self.started = True

    def finish(self, engine, result, extra: Optional[dict] = None, history: bool = True,
               on_finish: Iterable[Callable[[dict], None]] = ()) -> dict:
        """Write the results of a finished engine run and return its metrics.

        On the main process: move ``DIR/best`` into ``DIR`` (so ``from_pretrained(DIR)`` loads the selected model),
        write ``history.json`` (training losses and evaluations; skipped with ``history=False``) and
        ``metrics.json`` (the engine's metrics updated with ``extra``), then call each ``on_finish(metrics)`` (e.g.
        the model card) and, with ``train.push_to_hub``, upload the directory to the Hub.
        Every process waits for the main one before returning."""
        metrics = dict(result.metrics)
        metrics.update(extra or {})
        if engine.accelerator.is_main_process:
            promote_best(self.output_dir)
            if history:
                write_json_atomic(self.path(HISTORY_FILE), {"train": result.log_history, "eval": result.history})
            write_json_atomic(self.path(METRICS_FILE), metrics)
            config, config_file = getattr(self, "_config", (None, CONFIG_FILE))
            if config is not None and getattr(engine, "lr_auto", None):  # the chosen LR replaces 'auto' (0)
                dump_yaml(config, self.path(config_file))
            for hook in on_finish:
                hook(metrics)
            repo = getattr(engine.args, "push_to_hub", "")
            if repo:  # after the hooks: the model card is written by then
                from distiller_nlp.core.card import push_to_hub

                metrics["pushed_to"] = push_to_hub(self.output_dir, repo)
        engine.accelerator.wait_for_everyone()
        self.lock.release()
        return metrics

