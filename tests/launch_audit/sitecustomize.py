"""Test-only audit hook for multi-process runs (``tests/test_distributed.py`` puts this directory on PYTHONPATH).

When ``KD_AUDIT_ROOT`` and ``KD_AUDIT_LOG`` are set, every process records each file it opens for writing, each
rename/replace target and each directory it creates under ``KD_AUDIT_ROOT`` into ``KD_AUDIT_LOG.<RANK>`` (one line
``event<TAB>relative path``), so a test can check that only rank 0 wrote run artifacts, and each once.
Writes by native code (safetensors) are seen through the rename that publishes them.
"""

import os
import sys

_ROOT = os.environ.get("KD_AUDIT_ROOT")
_LOG = os.environ.get("KD_AUDIT_LOG")

if _ROOT and _LOG:
    _root = os.path.realpath(_ROOT)
    _rank = os.environ.get("RANK", "launcher")
    _fd = os.open(f"{_LOG}.{_rank}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _busy = [False]
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _record(event, path):
        try:
            path = os.fsdecode(path)
        except TypeError:
            return
        full = os.path.realpath(os.path.abspath(path))
        if full == _root or full.startswith(_root + os.sep):
            os.write(_fd, f"{event}\t{os.path.relpath(full, _root)}\n".encode())

    def _hook(event, args):
        if _busy[0]:
            return
        _busy[0] = True
        try:
            if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
                mode, flags = args[1], args[2]
                if (mode and any(c in mode for c in "wax+")) or (mode is None and isinstance(flags, int)
                                                                 and flags & _WRITE):
                    _record("write", args[0])
            elif event == "os.rename":
                _record("rename", args[1])
            elif event == "os.mkdir":
                _record("mkdir", args[0])
        except Exception:  # an audit hook must never break the process it watches
            pass
        finally:
            _busy[0] = False

    sys.addaudithook(_hook)
