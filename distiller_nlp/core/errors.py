"""User-facing errors.

Every mistake a user can make with input (a malformed recipe, an unknown key, a missing column, a label outside the
label set, an empty split, a teacher without a matching classifier, ...) raises :class:`DistillerError` with a
one-line message that names the culprit. The command-line entry points print ``error: <message>`` and exit with
code 2; Python callers catch the exception.
"""


class DistillerError(ValueError):
    """A one-line, user-facing error about bad input. The CLI prints it and exits with status 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RunInterrupted(DistillerError):
    """SIGTERM/SIGINT stopped a training run at a step boundary after a complete checkpoint was saved; the message
    says how to resume. Exit status 75 (``EX_TEMPFAIL``: try again)."""

    exit_code = 75


class NonFiniteError(DistillerError):
    """A loss or gradient became NaN/Inf: the run stopped without promoting the model; the last good checkpoint is
    kept. Exit status 3."""

    exit_code = 3


class DiskFullError(DistillerError):
    """A checkpoint could not be written (e.g. no space left); the previous checkpoint is intact. Exit status 74
    (``EX_IOERR``)."""

    exit_code = 74
