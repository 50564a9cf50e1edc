"""The words both fronts say, so the CLI and the Ansible results cannot drift apart.

Tests and people match these lines word for word: change one only on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from deployer.core.check import Check, CheckStatus
from deployer.core.notify import RECOVERED
from deployer.core.plan import Change
from deployer.engine.notify import NotifySent
from deployer.engine.outcome import CHANGED, FAILED, OK, UNREACHABLE, TargetStatus
from deployer.engine.session import TargetState
from deployer.errors import InvalidInput

# A host's heading, after its name: what its status means for a plan.
STATUS_LABEL: Final[Mapping[TargetStatus, str]] = {OK: "no changes", CHANGED: "changes", FAILED: "failed",
                                                   UNREACHABLE: "unreachable"}
NOTHING_TO_CHANGE: Final = "nothing to change"  # apply, on a host already in sync
NOTHING_TO_DO: Final = "nothing to do"  # rollback, destroy, with nothing there to undo
IN_SYNC: Final = "in sync"  # verify, on a host whose checks pass
ERROR_PREFIX: Final = "error: "  # before each problem of invalid input


def counted(n: int, word: str) -> str:
    """``1 host``, ``2 hosts``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def host_heading(state: TargetState) -> str:
    """``── web1 (ssh) ``: the line that opens a host's part of a plan or an audit (its status label follows)."""
    return f"── {state.name} ({state.target.connection}) "


def change_line(change: Change) -> str:
    """``release  /var/lib/deployer/shop-dev/releases/7bc2b54b8d1c: new release, 5 files``."""
    return f"{change.kind:8} {change.path}: {change.summary}"


@dataclass(frozen=True)
class CheckLine:
    """``pass crontab      the crontab of root holds the declared block (1 job)``: the
    status (which the CLI colours), then the subject and the detail."""

    check: Check

    @property
    def status(self) -> CheckStatus:
        return self.check.status

    @property
    def head(self) -> str:
        return f"{self.check.status:4} "

    def rest(self, detail: str | None = None) -> str:
        """Subject and detail; ``detail``: the check's, already cleaned for the screen (else as it is)."""
        subject = f"{self.check.name} {self.check.job}" if self.check.job else self.check.name
        return f"{subject:12} {self.check.detail if detail is None else detail}"

    def __str__(self) -> str:
        return self.head + self.rest()


class SummaryRow(NamedTuple):
    """A host's row in a command's closing summary."""

    host: str
    status: TargetStatus
    result: str
    detail: str


def summary_row(state: TargetState, verb: str) -> SummaryRow:
    """What a host came to after ``verb`` (apply, verify, rollback, destroy)."""
    if state.status == CHANGED and verb != "verify":
        detail = f"{len(state.applied)} steps"
        if verb == "apply":
            detail += f", revision {state.release.revision if state.release else '?'}"
        return SummaryRow(state.name, state.status, "changed", detail)
    if state.status == OK:
        return SummaryRow(state.name, state.status, "ok", IN_SYNC if verb == "verify" else NOTHING_TO_CHANGE)
    return SummaryRow(state.name, state.status, state.status, state.error or "")


def invalid_footer(count: int) -> str:
    """The line after the problems of invalid input."""
    return f"{counted(count, 'problem')} found; nothing was changed on any target."


def invalid_message(exc: InvalidInput) -> str:
    """Invalid input as the CLI prints it on stderr: one ``error:`` line per problem, then the count."""
    return "\n".join([*(f"{ERROR_PREFIX}{problem}" for problem in exc.problems), invalid_footer(len(exc.problems))])


def notify_delivery_line(item: NotifySent) -> str:
    """``notify: db1 cron-stopped -> oncall: sent`` (or not sent, why, and that it is tried again)."""
    what = f"{item['incident']} {item['job']}" if item["job"] else item["incident"]
    over = " recovered" if item["event"] == RECOVERED else ""
    head = f"notify: {item['host']} {what}{over} -> {item['channel']}: "
    return head + ("sent" if item["ok"] else f"not sent ({item['error']}); tried again next run")
