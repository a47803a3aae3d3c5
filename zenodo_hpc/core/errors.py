"""Errors meant for the person at the terminal.

Anything raised as a :class:`UserError` is printed by the CLI as one line, without a traceback,
and makes the command exit non-zero. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the input, the environment or the configuration, explained in one line."""


class ConfigError(UserError):
    """A configuration file is missing, unreadable or holds a bad key or value."""


class ExtractError(UserError):
    """An archive cannot be extracted safely: corrupt, not an archive, unsafe or too large.

    ``reason`` is the short machine-readable failure reason recorded for a record
    (``bad_archive``, ``unsafe_archive``, ``too_large``).
    """

    def __init__(self, message: str, reason: str = "bad_archive") -> None:
        super().__init__(message)
        self.reason = reason
