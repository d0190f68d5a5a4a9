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


class RedisUnavailable(TracekitError):
    """Redis cannot be reached, refused the password, or lost the run's state."""


class ProtocolError(TracekitError):
    """A Redis record of the task queue that this version cannot read (another Tracekit version wrote it)."""


class ExperimentError(UsageError):
    """The experiment file (or an override) is not a valid experiment."""


class InventoryError(UsageError):
    """The inventory cannot describe an experiment."""


class RunError(UsageError):
    """The run folder cannot be created or resumed as asked (exit 2)."""


class SetupError(TracekitError):
    """The checkout itself is inconsistent (a playbook, a role): a bug to report, not a user's input."""
