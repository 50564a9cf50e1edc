"""`deployer run` over real SSH streams the job's output while it runs (see tests/cron/test_audit.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cron.test_audit import STEPPED, stream_check
from tests.fleet.conftest import make_project

pytestmark = pytest.mark.fleet


def test_run_streams_over_ssh(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1)
    p = make_project(th, tmp_path)
    p.write("tasks/stepped.py", STEPPED)
    p.declare(jobs="  stepped:\n    script: tasks/stepped.py\n    args: [/tmp/go]\n    schedule: '@daily'\n")
    p.inventory({"h1": p.host_vars("h1")})
    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied

    argv = p.th.ctl_argv([sys.executable, "-m", "deployer", "--no-color", "run", "dev", "stepped"])
    stream_check(argv, p.root, p.env(), lambda: th.exec_on("h1", ["touch", "/tmp/go"]))
