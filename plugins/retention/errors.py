"""One exception hierarchy for the engine.

Every error is either *terminal* (retrying cannot help: a bad policy, a missing
table, refused credentials, a path escaping its root) or *transient* (a timeout,
throttling, a dropped connection). The Airflow edge maps terminal errors to
``AirflowFailException`` (no retry) and lets transient ones use the task's retries.
"""

from __future__ import annotations


class RetentionError(Exception):
    """Base of every error raised by the retention engine."""

    terminal: bool = True


class TerminalError(RetentionError):
    """Retrying cannot help; a human must look."""

    terminal = True


class TransientError(RetentionError):
    """May succeed when retried (timeouts, throttling, dropped connections)."""

    terminal = False


class PolicyError(TerminalError):
    """A policy file is malformed; the message names the file and the field."""

    def __init__(self, file: str, field: str, message: str) -> None:
        self.file = file
        self.field = field
        self.message = message
        super().__init__(f"{file}: {field}: {message}")


class UnsafeTargetError(TerminalError):
    """A key or path would resolve outside its bucket or archive root, or is empty."""


class UnknownLocationError(TerminalError):
    """A table, column or bucket named by a policy does not exist."""


class EraseFailedError(TerminalError):
    """A store reported that some items were not erased."""


class VerificationError(TerminalError):
    """Looking again found items that should be gone."""


class ClockError(TerminalError):
    """A cutoff or due date cannot be computed: a naive clock, or a date beyond years 1 to 9999."""
