"""User-facing errors: what is wrong and how to fix it, in one line."""

from __future__ import annotations


class RasterLearnError(Exception):
    """An error the user can fix: bad input, bad parameters, missing files.

    Args:
        message: What is wrong, naming the offending file, parameter or value.
        hint: What to do about it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self) -> tuple[type[RasterLearnError], tuple[str, str | None]]:
        # pickled with its hint (sent back from a worker process)
        return (type(self), (self.message, self.hint))


class InputError(RasterLearnError):
    """An input dataset is missing, unreadable or does not fit the task."""


class ParameterError(RasterLearnError):
    """A parameter value is invalid or inconsistent with the inputs."""


class OutputError(RasterLearnError):
    """An output cannot be written where asked."""
