"""Exit codes and the errors that lead to them (engine/outcome.py maps one to the other).

The exit codes are part of the interface (documented in the README) and never change
meaning:

- 0  everything succeeded (for ``plan --detailed-exitcode``: nothing to do)
- 1  a target failed (apply or verify failed, a check failed, a refused change)
- 2  invalid input (declaration, inventory, command line); nothing was touched
- 3  changes pending (``plan --detailed-exitcode`` only)
- 4  a target could not be reached (or its transport is not available)
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_CHANGES = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    message: str
    file: str | None = None
    key_path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
        if self.key_path:
            where = f"{where}: {self.key_path}" if where else self.key_path
        return printable(f"{where}: {self.message}" if where else self.message)


def printable(text: str) -> str:
    """One line whatever the input held: a newline or a control character in an id or a
    command is shown escaped (``\\n``), so the message cannot be mistaken for two."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


@dataclass
class InvalidInput(Exception):
    """The declaration or the inventory is wrong: exit 2, nothing touched."""

    problems: list[Problem] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class TargetError(Exception):
    """Something went wrong on (or on the way to) one target: it failed (exit 1)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Unreachable(TargetError):
    """The target could not be reached at all: it is unreachable (exit 4)."""


class ChangedUnderUs(TargetError):
    """The target changed between observation and apply (compare-and-swap refused)."""
