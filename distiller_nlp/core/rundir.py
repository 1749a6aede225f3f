"""Run-directory plumbing every command that writes results shares.

Conventions: a non-empty ``--output-dir`` is an error unless ``--resume`` (continue from its last checkpoint) or
``--overwrite``; all inputs are validated before anything is written; files appear atomically (temp name, then
rename); only the main process writes; each run writes ``DIR/metrics.json`` with flat keys (``eval_<metric>`` in the
metric's own range, ``train_runtime_s``, ``examples_per_s``). A run is *finished* when its ``metrics.json`` exists
(and, for callers that ask, matches what they expect) — :func:`finished_run` is the one test for it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Callable, Optional

import numpy as np

from distiller_nlp.core.errors import DistillerError

__all__ = ["METRICS_FILE", "is_main_process", "world_size", "check_output_dir", "create_output_dir",
           "write_json_atomic", "write_text_atomic", "read_json", "promote_best", "finished_run", "OutputDirLock",
           "lock_path"]

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def is_main_process() -> bool:
    """True in a single process and on rank 0 of ``accelerate launch`` / ``torchrun`` (read before any
    ``Accelerator`` exists, from the launcher's environment)."""
    return os.environ.get("RANK", "0") in ("0", "") and os.environ.get("LOCAL_RANK", "0") in ("0", "")


def world_size() -> int:
    """Processes of this run as the launcher set them (``WORLD_SIZE``; 1 when not launched)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def check_output_dir(output_dir: str, resume: bool = False, overwrite: bool = False) -> None:
    """Validate ``--output-dir`` without touching it (called before any work starts).

    Only the main process judges whether the directory is empty: under ``accelerate launch`` the other ranks could
    otherwise see files the main process already wrote and fail a run that is fine. When the main process refuses,
    the launcher stops the others."""
    if not output_dir:
        raise DistillerError("--output-dir is required")
    if resume and overwrite:
        raise DistillerError("--resume and --overwrite exclude each other")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DistillerError(f"--output-dir {output_dir} exists and is not a directory")
    non_empty = os.path.isdir(output_dir) and bool(os.listdir(output_dir))
    if non_empty and is_main_process() and not (resume or overwrite):
        raise DistillerError(
            f"output directory {output_dir} is not empty: pass --resume to continue it or --overwrite to replace it"
        )


def create_output_dir(output_dir: str, overwrite: bool = False, is_main: bool | None = None) -> None:
    """Create (or with ``overwrite``, empty) the output directory. Call only after all inputs were validated.
    Only the main process (``is_main``, by default read from the launcher's environment) touches the disk."""
    if is_main is None:
        is_main = is_main_process()
    if is_main:
        if overwrite and os.path.isdir(output_dir):
            shutil.rmtree(output_dir)
        os.makedirs(output_dir, exist_ok=True)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def write_json_atomic(path: str, data: dict) -> None:
    """Write ``data`` as indented, key-sorted JSON to ``path`` atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=_json_default)
        fh.write("\n")
    os.replace(tmp, path)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file + rename)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_json(path: str) -> Optional[dict]:
    """The JSON object in ``path``, or None when the file is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def promote_best(output_dir: str) -> None:
    """Move the exported best model from ``DIR/best`` to ``DIR`` itself (so ``from_pretrained(DIR)`` loads it)."""
    best = os.path.join(output_dir, "best")
    if not os.path.isdir(best):
        return
    for name in os.listdir(best):
        os.replace(os.path.join(best, name), os.path.join(output_dir, name))
    os.rmdir(best)


def finished_run(run_dir: str, accept: Optional[Callable[[dict], bool]] = None,
                     requires: tuple = ()) -> Optional[dict]:
    """The metrics of a finished run in ``run_dir``, or None.

    Finished means: ``run_dir/metrics.json`` is readable, every file in ``requires`` exists in ``run_dir``, and
    ``accept(metrics)`` (when given) is true — e.g. the run reached the requested number of steps."""
    metrics = read_json(os.path.join(run_dir, METRICS_FILE))
    if metrics is None or any(not os.path.exists(os.path.join(run_dir, f)) for f in requires):
        return None
    if accept is not None and not accept(metrics):
        return None
    return metrics


# ------------------------------------------------------------------------------------------------ one writer

_HELD: dict = {}  # lock path -> [file object, holders] of the locks this process holds (re-entrant per process)


def lock_path(output_dir: str) -> str:
    """The advisory lock file of a run directory: ``.<name>.lock`` beside it (inside, it would make an empty
    directory non-empty and be deleted by ``--overwrite``)."""
    full = os.path.abspath(output_dir)
    return os.path.join(os.path.dirname(full), f".{os.path.basename(full)}.lock")


class OutputDirLock:
    """One writer per output directory: an advisory ``flock`` on :func:`lock_path`, held while a run writes.

    A second process that asks for the same directory fails at once with a one-line error naming the holder (pid,
    host, command). The operating system drops the lock when its process dies, so a stale lock file left by a killed
    run is simply taken over. Re-entrant within one process (a run resumed in the same Python session, nested
    stages). Only the main process of a launched run locks; :meth:`release` (or garbage collection) unlocks."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.path = lock_path(output_dir)
        self.held = False

    def acquire(self) -> "OutputDirLock":
        if self.held:
            return self
        entry = _HELD.get(self.path)
        if entry is not None:
            entry[1] += 1
            self.held = True
            return self
        import fcntl
        import socket
        import sys
        import time

        if not os.path.isdir(os.path.dirname(self.path)):
            return self  # nothing can write there yet; start() locks once the parent exists
        for _ in range(5):  # the file may be removed by its releasing holder between open() and flock()
            fh = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                break
            try:
                same = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except OSError:
                same = False
            if same:
                break
            fh.close()
        else:
            raise DistillerError(f"could not lock output directory {self.output_dir} ({self.path} keeps changing)")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held already when the loop found it ours
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            try:
                info = json.loads(holder)
                holder = (f"process {info.get('pid')} on {info.get('host')} (started {info.get('started')}: "
                          f"{info.get('command')})")
            except ValueError:
                pass
            raise DistillerError(f"output directory {self.output_dir} is in use by {holder}; wait for it to end or "
                                 "choose another --output-dir")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                             "command": " ".join(os.path.basename(a) if i == 0 else a
                                                 for i, a in enumerate(sys.argv))[:200]}))
        fh.flush()
        _HELD[self.path] = [fh, 1]
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = _HELD.get(self.path)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _HELD[self.path]
        fh = entry[0]
        try:
            os.remove(self.path)  # before unlocking: a waiting process then creates a fresh file
        except OSError:
            pass
        fh.close()  # closing the descriptor drops the flock

    def __del__(self):
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
