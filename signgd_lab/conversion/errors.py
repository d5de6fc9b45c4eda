"""Errors raised by conversion and simulation."""
from __future__ import annotations


class ConversionError(ValueError):
    """A model cannot be converted (or a converted network cannot run) as asked.

    ``problems`` holds one line per offending node or input when there are several, so tools can
    show them all at once.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)
