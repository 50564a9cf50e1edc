"""One line of verify's audit and the three statuses it can have. Pure.

Its own module, below both ``checks`` (the release and crontab audit) and ``health``
(the runs audit), so that neither has to import the other to speak of a Check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# The words are part of the output (--json, JUnit, the table): they never change.
CheckStatus = Literal["pass", "warn", "fail"]
PASS: Final = "pass"  # noqa: S105 - a check's status word, not a password
WARN: Final = "warn"
FAIL: Final = "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    job: str | None = None
