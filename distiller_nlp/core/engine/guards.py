"""Run guards of the engine: preemption signals and non-finite losses.

* :class:`StopSignals` turns SIGTERM and SIGINT into a flag the training loop reads at every step boundary (the
  engine then saves a complete checkpoint and raises :class:`~distiller_nlp.core.errors.RunInterrupted`); a second
  SIGINT interrupts at once, as Ctrl-C twice does elsewhere. Handlers are installed only in the main thread and the
  previous ones are restored on exit.
* :func:`nonfinite_components` names the scalar outputs of a step (``loss``, ``kd``, ``hidden_mse/2``, ...) that are
  NaN or infinite, for the one-line error of the non-finite guard.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

import torch

__all__ = ["StopSignals", "nonfinite_components", "NONFINITE_MODES"]

NONFINITE_MODES = ("stop", "skip")


class StopSignals:
    """Context manager: record SIGTERM/SIGINT instead of dying (see the module docstring). ``received`` is the name
    of the first signal received (``"SIGTERM"``), or None."""

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self):
        self.received: Optional[str] = None
        self._previous: dict = {}

    def _handle(self, signum, frame):  # noqa: ARG002 - the signal API
        name = signal.Signals(signum).name
        if self.received is not None and name == "SIGINT":
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait for the checkpoint
        self.received = self.received or name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def nonfinite_components(out: dict) -> list[str]:
    """The names of the scalar tensors in a step's outputs that are NaN or infinite (``loss`` first)."""
    bad = []
    for k, v in out.items():
        if torch.is_tensor(v) and v.ndim == 0 and not bool(torch.isfinite(v.detach()).item()):
            bad.append(k)
    return sorted(bad, key=lambda k: (k != "loss", k))
