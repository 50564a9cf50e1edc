"""The real cron daemon runs a job that ``deployer apply`` installed, through the wrapper."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import BLOCK_USER, TEST_USER, Project, read_crontab

pytestmark = pytest.mark.e2e


def test_a_deployed_job_fires_and_its_ledger_says_success(project: Project, user_crontab: str, cron_daemon: int,
                                                          tmp_path: Path) -> None:
    marker = Path("/tmp") / f"deployer-e2e-{tmp_path.name}"
    marker.unlink(missing_ok=True)
    project.write("tasks/touch.py", """\
        import os, sys
        with open(os.environ["MARKER"], "w") as f:
            f.write(" ".join(sys.argv[1:]))
        print("wrote", os.environ["MARKER"])
        """)
    project.declare(f"""\
        project: demo
        defaults:
          run_as: {TEST_USER}
        jobs:
          every-minute:
            script: tasks/touch.py
            args: ["50%", "a b"]
            schedule: "* * * * *"
            timeout: 30s
            env: {{MARKER: {marker}}}
        environments:
          dev:
            inventory: inventories/dev
        """)
    result = project.deployer("apply", "dev", "--yes")
    assert result.exit_code == 0, result
    assert "every-minute" in (read_crontab(BLOCK_USER) or "")
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 0, verified

    ledger = Path("/var/lib/deployer/demo-dev/state/every-minute/ledger.jsonl")
    deadline = time.time() + 75  # the next minute boundary, plus cron's own latency
    while time.time() < deadline and not (ledger.exists() and ledger.read_text().strip()):
        time.sleep(1)
    log_path = Path("/var/lib/deployer/demo-dev/logs/every-minute.log")
    assert ledger.exists(), (f"cron did not run the job within 75 s; crontab:\n{read_crontab(BLOCK_USER)}\n"
                             f"log:\n{log_path.read_text() if log_path.exists() else '(none)'}")
    entry = json.loads(ledger.read_text().splitlines()[0])
    assert entry["outcome"] == "success", entry
    assert entry["trigger"] == "cron" and entry["user"] == TEST_USER and entry["exit_code"] == 0
    assert entry["revision"] == Path("/var/lib/deployer/demo-dev/current").resolve().name
    assert marker.read_text() == "50% a b"  # % reached the job intact, not cut by cron
    log = Path("/var/lib/deployer/demo-dev/logs/every-minute.log").read_text()
    assert f"wrote {marker}" in log
    marker.unlink(missing_ok=True)
