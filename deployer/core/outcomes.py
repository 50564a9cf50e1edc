"""What a run came to, as the run wrapper writes it in each ledger line (``outcome``).

The words are defined once, as ``RunOutcome`` in deployer/remote/messages.py, which the
wrapper writes them by and the probe checks lines read back against; here each has a name.
"""

from __future__ import annotations

from typing import Final

from deployer.remote.messages import RunOutcome

__all__ = ["CRASHED", "FAILURE", "FAILURES", "SKIPPED_LOCKED", "SUCCESS", "TIMEOUT", "RunOutcome"]

# Final[RunOutcome]: a misspelt word fails mypy.
SUCCESS: Final[RunOutcome] = "success"
FAILURE: Final[RunOutcome] = "failure"
TIMEOUT: Final[RunOutcome] = "timeout"
SKIPPED_LOCKED: Final[RunOutcome] = "skipped-locked"
CRASHED: Final[RunOutcome] = "crashed"

# Outcomes that count as a failed run (a skipped run neither fails nor succeeds).
FAILURES: Final[frozenset[RunOutcome]] = frozenset({FAILURE, TIMEOUT, CRASHED})
