"""Foreign crontab bytes on a real SSH host (issue 12, class 4): the corpus of CRLF, control
bytes, undecodable bytes and disguised markers goes through apply, rollback and destroy
over SSH, as root there, and comes back byte for byte from the host's spool. It crosses
the probe's JSON answer and the applier's JSON bundle as surrogate escapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import JOBS
from tests.cron.test_crontab_bytes import AFTER, CONTROL, HEADER, WINDOWS
from tests.fleet.conftest import FleetProject, make_project

pytestmark = pytest.mark.fleet


@pytest.fixture
def host(fleet_factory: Any, tmp_path: Path) -> FleetProject:
    th = fleet_factory(["h1"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1")})
    return p


def spool(p: FleetProject) -> bytes:
    """root's crontab on the host, as cron reads it: the spool file after crontab's header."""
    data: bytes = p.th.exec_on("h1", ["cat", "/var/spool/cron/crontabs/root"], text=False, check=True).stdout
    head = data.split(b"\n", 3)
    assert head[0] + b"\n" == HEADER, data[:200]
    return head[3]


def test_foreign_bytes_survive_apply_rollback_destroy_over_ssh(host: FleetProject) -> None:
    p = host
    before = WINDOWS + CONTROL
    p.th.exec_on("h1", ["crontab", "-"], input=before, text=False, check=True)
    p.declare(JOBS)
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    first = spool(p)
    assert first.startswith(before)
    block = first[len(before):]
    assert block.startswith(b"# BEGIN deployer demo/dev rev=") and block.endswith(b"# END deployer demo/dev\n")

    p.th.exec_on("h1", ["crontab", "-"], input=first + AFTER, text=False, check=True)
    p.declare(JOBS.replace("*/5 * * * *", "*/7 * * * *"))
    changed = p.deployer("apply", "dev", "--yes")
    assert changed.exit_code == 0, changed
    now = spool(p)
    assert now.startswith(before) and now.endswith(AFTER) and b"*/7 * * * *" in now

    back = p.deployer("rollback", "dev", "--yes")
    assert back.exit_code == 0, back
    assert spool(p) == before + block + AFTER
    gone = p.deployer("destroy", "dev", "--yes")
    assert gone.exit_code == 0, gone
    assert spool(p) == before + AFTER
