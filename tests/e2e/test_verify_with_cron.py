"""verify with the real cron daemon running: warnings pass, unless --strict."""

from __future__ import annotations

import pytest

from tests.conftest import Project
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.e2e


def test_warnings_pass_unless_strict(project: Project, user_crontab: str, cron_daemon: int) -> None:
    project.write("tasks/fails.py", "import sys\nprint('failing on purpose')\nsys.exit(5)\n")
    declare(project, "  fails:\n    script: tasks/fails.py\n    schedule: '0 3 * * *'\n    timeout: 1m\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    ran = project.deployer("run", "dev", "fails")
    assert ran.exit_code == 5 and ran.stdout == "failing on purpose\n"
    relaxed = project.deployer("verify", "dev")
    assert relaxed.exit_code == 0, relaxed
    assert "warn success fails last run failure (exit 5); last success never" in relaxed.stdout
    assert "pass cron-daemon  cron is running" in relaxed.stdout
    strict = project.deployer("verify", "dev", "--strict")
    assert strict.exit_code == 1
    assert "failed: success" in strict.stdout
