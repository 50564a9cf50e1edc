"""The real cron daemon and the day rule croniter got wrong: with day-of-month written with
a leading '*' (``*/1``), cron ANDs it with day-of-week, so ``* * */1 * <another weekday>``
does not fire today -- and verify, whose maths now follows cron's, does not call it late.
A job firing every minute beside it proves the daemon read the crontab meanwhile."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import BLOCK_USER, Project, read_crontab
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.e2e

STATE = Path("/var/lib/deployer/demo-dev/state")


def test_a_leading_star_day_of_month_is_anded_by_the_real_daemon(project: Project, user_crontab: str,
                                                                  cron_daemon: int) -> None:
    # cron matches in this machine's local time; three days on, so no midnight can make it today
    other_day = (datetime.now().astimezone().isoweekday() % 7 + 3) % 7
    declare(project, f"""\
  control:
    command: /bin/true
    schedule: "* * * * *"
  not-today:
    command: /bin/true
    schedule: "* * */1 * {other_day}"
""")
    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    control = STATE / "control" / "ledger.jsonl"
    deadline = time.time() + 75  # the next minute boundary, plus cron's own latency
    while time.time() < deadline and not (control.exists() and control.read_text().strip()):
        time.sleep(1)
    assert control.exists() and control.read_text().strip(), \
        f"cron did not run the control job within 75 s; crontab:\n{read_crontab(BLOCK_USER)}"
    fired_at = json.loads(control.read_text().splitlines()[0])["start"]
    time.sleep(3)  # the daemon starts the jobs of one minute together: let the other one show if it were due
    ledger = STATE / "not-today" / "ledger.jsonl"
    assert not (ledger.exists() and ledger.read_text().strip()), \
        f"cron ran '* * */1 * {other_day}' at {fired_at}: {ledger.read_text()}"

    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    assert "pass freshness not-today not due since the deploy" in verified.stdout, verified.stdout
