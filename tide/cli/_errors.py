"""The CLI's two failures: the server (or the network) said no, or the command
line was wrong.  ``main`` turns them into exit codes 1 and 2."""

from __future__ import annotations

__all__ = ["CliError", "UsageError"]


class CliError(Exception):
    """Something the operator must act on: ``message`` says what, ``hint`` what next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.status = status  # the HTTP status, 0 when no answer came back


class UsageError(CliError):
    """The command line itself is wrong; nothing was sent."""

    exit_code = 2
