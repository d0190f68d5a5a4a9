"""One exception tree. Messages say what is wrong and how to fix it.

The library raises; only ``tracekit.cli.main`` prints an error and picks the
exit code.
"""


class TracekitError(Exception):
    """Base of every error Tracekit reports to a user."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(TracekitError):
    """A value given by the user (flag, environment variable, file) is invalid."""

    exit_code = 2


class RunFolderError(TracekitError):
    """A run folder cannot be found, read or written."""


class CollectorError(TracekitError):
    """The collector daemon could not be started, stopped or queried."""


class CommandNotFound(TracekitError):
    """An external program (ffmpeg, a wrapped command) is not installed."""

    exit_code = 127
