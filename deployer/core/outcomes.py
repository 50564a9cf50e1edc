"""What a run came to, as the run wrapper writes it in each ledger line (``outcome``).

The controller reads these words from the target's records; they are the wrapper's own
(deployer/remote/wrapper.py, OUTCOME_*), kept word for word.
"""

from __future__ import annotations

from typing import Final, Literal

RunOutcome = Literal["success", "failure", "timeout", "skipped-locked", "crashed"]
SUCCESS: Final = "success"
FAILURE: Final = "failure"
TIMEOUT: Final = "timeout"
SKIPPED_LOCKED: Final = "skipped-locked"
CRASHED: Final = "crashed"

# Outcomes that count as a failed run (a skipped run neither fails nor succeeds).
FAILURES: Final[frozenset[RunOutcome]] = frozenset({FAILURE, TIMEOUT, CRASHED})
