"""verify's audit over real SSH: the failures the local tier causes (tests/cron/test_audit.py),
caused here on a namespaced host with its own cron daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import flat, make_project

pytestmark = pytest.mark.fleet

HOME = "/var/lib/deployer/demo-dev"


def test_verify_catches_cron_stopped_script_edited_and_secret_leaked(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1)
    p = make_project(th, tmp_path)
    p.declare(jobs="  hello:\n    script: tasks/hello.py\n    schedule: '*/5 * * * *'\n"
                   "    env: {TOKEN: {secret: {env: DEMO_TOKEN}}}\n")
    p.extra_env["DEMO_TOKEN"] = "leak-me-not-42"
    p.inventory({"h1": p.host_vars("h1")})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    clean = p.deployer("verify", "dev")
    assert clean.exit_code == 0, clean

    # A script edited by hand on the host.
    th.exec_on("h1", ["sh", "-c", f"echo \"print('hot fix')\" >> {HOME}/current/scripts/hello.py"], check=True)
    edited = p.deployer("verify", "dev")
    assert edited.exit_code == 1 and "fail release restore scripts/hello.py (modified on the target" in flat(edited.stdout), edited
    assert p.deployer("apply", "dev", "--yes").exit_code == 0

    # The secret's value pasted into the crontab by hand (outside our block).
    th.exec_on("h1", ["sh", "-c", "(crontab -l; echo '0 1 * * * TOKEN=leak-me-not-42 /bin/true') | crontab -"], check=True)
    leaked = p.deployer("verify", "dev")
    assert leaked.exit_code == 1 and "fail secrets the crontab of root contains the value of a declared secret" in flat(leaked.stdout)
    assert "leak-me-not-42" not in leaked.stdout + leaked.stderr  # said, never shown
    th.exec_on("h1", ["sh", "-c", "crontab -l | grep -v leak-me-not | crontab -"], check=True)

    # The host's cron daemon stops.
    th.exec_on("h1", ["pkill", "-x", "cron"], check=True)
    stopped = p.deployer("verify", "dev")
    assert stopped.exit_code == 1, stopped
    assert "fail cron-daemon no cron daemon is running: no job will run (start cron)" in flat(stopped.stdout), stopped
