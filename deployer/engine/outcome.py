"""What a command came to: each target's status, and the one exit code that says it.

The only place that maps outcomes to exit codes (the README's table, deployer.errors):
a target's status gives its code, and a command over several targets exits with the
worst of them, unreachable first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Literal

from deployer.errors import EXIT_CHANGES, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, TargetError, Unreachable

# The words are part of the output (--json, the Ansible results): they never change.
TargetStatus = Literal["ok", "changed", "failed", "unreachable"]
OK: Final = "ok"
CHANGED: Final = "changed"
FAILED: Final = "failed"
UNREACHABLE: Final = "unreachable"

EXIT_CODES: Final[Mapping[TargetStatus, int]] = {OK: EXIT_OK, CHANGED: EXIT_OK, FAILED: EXIT_FAILED,
                                                UNREACHABLE: EXIT_UNREACHABLE}


def status_of(exc: TargetError) -> TargetStatus:
    """The status a target's error leaves it in."""
    return UNREACHABLE if isinstance(exc, Unreachable) else FAILED


def exit_code_of(statuses: Iterable[TargetStatus], changes_pending: bool = False) -> int:
    """The exit code of a command over targets in these statuses: 4 when one could not be
    reached, else 1 when one failed, else 0; with ``changes_pending`` (plan
    --detailed-exitcode), 3 instead of 0 when a target has changes to apply."""
    seen = set(statuses)
    codes = {EXIT_CODES[s] for s in seen}
    if EXIT_UNREACHABLE in codes:
        return EXIT_UNREACHABLE
    if codes - {EXIT_OK}:
        return EXIT_FAILED
    return EXIT_CHANGES if changes_pending and CHANGED in seen else EXIT_OK
