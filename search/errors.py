"""Errors a user can fix: each one is a single line naming the file (or flag), key and value."""

from __future__ import annotations


class UserError(Exception):
    """Bad input. The CLI prints ``str(error)`` as one line and exits with code 2."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)

    def within(self, source: str) -> UserError:
        """The same error, attributed to ``source`` (a file or a command-line flag)."""
        return UserError(str(self), source=source)


class Interrupted(Exception):
    """SIGINT or SIGTERM stopped a worker; its trial in flight is recorded as failed.
    The CLI prints it as one line and exits with code 130."""
