"""Issue 12, class 6 over real SSH: bad bytes in what is read on a host (the job user's log, the
records root keeps) never stop deployer there, nor makes it call the host unreachable (tests/cron/test_hostile_records.py has every
case on this machine; here, the ones that cross SSH)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import flat, make_project

pytestmark = pytest.mark.fleet

HOME = "/var/lib/deployer/demo-dev"
STATE = f"{HOME}/state/hello"


def test_bad_records_and_a_fifo_written_by_the_job_user_over_ssh(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1, users=["alice"])
    p = make_project(th, tmp_path)
    p.declare(jobs="  hello:\n    script: tasks/hello.py\n    schedule: '0 3 * * *'\n", defaults="  timeout: 1m\n  run_as: alice\n")
    p.inventory({"h1": p.host_vars("h1")})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    ran = p.deployer("run", "dev", "hello")
    assert ran.exit_code == 0 and "hello from h1" in ran.stdout, ran

    # alice, the job's user, cannot write her records (root keeps them); bad ones still come from
    # a full disk, a hand edit or a release from before: lines that are not runs, a marker with a
    # bad pid, written as root. Then alice puts a FIFO in place of her own log (nothing ever writes
    # to it: a plain open() would wait forever)
    planted = b'1\n[]\n{"pid": "x"}\n\xff\n'
    refused = th.exec_on("h1", ["sh", "-c", f"cat >> {STATE}/ledger.jsonl"], user="alice", input=planted, text=False)
    assert refused.returncode != 0, "alice could write the ledger root keeps"
    th.exec_on("h1", ["sh", "-c", f"cat >> {STATE}/ledger.jsonl"], input=planted, text=False, check=True)
    th.exec_on("h1", ["sh", "-c", f"echo '{{\"run_id\": \"r\", \"start\": \"s\", \"pid\": \"x\"}}' > {STATE}/running/x.json"],
               check=True)
    log = f"{HOME}/logs/hello.log"
    th.exec_on("h1", ["sh", "-c", f"rm {log} && mkfifo {log}"], user="alice", check=True)

    started = time.monotonic()
    verify = p.deployer("verify", "dev", timeout=120)
    assert "Traceback" not in verify.stdout + verify.stderr and verify.exit_code != 4, verify
    said = flat(verify.stdout)
    assert (f"warn records hello {STATE}/ledger.jsonl: 4 of its last 5 lines are not run records, skipped "
            "(the first: '1', not a JSON object)") in said, verify.stdout
    assert f"warn records hello {STATE}/running/x.json: not a running marker (field pid is a string" in said
    status = p.deployer("status", "dev", "--json")
    assert status.exit_code == 0, status
    assert json.loads(status.stdout)["jobs"][0]["last_run"]["outcome"] == "success"
    logs = p.deployer("logs", "dev", "hello")
    assert logs.exit_code == 0 and f"h1: warning: {log}: is a FIFO, not a regular file: not read" in logs.stderr, logs
    plan = p.deployer("plan", "dev")
    assert plan.exit_code == 0 and "Traceback" not in plan.stderr, plan
    assert time.monotonic() - started < 60  # nothing waited on the FIFO


def test_a_module_planted_in_the_login_home_never_runs_as_root_over_ssh(fleet_factory: Any, tmp_path: Path) -> None:
    # deployer connects as alice and becomes root with sudo: the probe and the applier start in
    # alice's home, where alice put a base64.py (the first module they import)
    th = fleet_factory(1, users=["alice"], sudo_users=["alice"])
    p = make_project(th, tmp_path)
    p.declare(jobs="  hello:\n    script: tasks/hello.py\n    schedule: '0 3 * * *'\n")
    p.inventory({"h1": p.host_vars("h1", user="alice", ansible_become=True)})
    planted = "import os\nopen('/tmp/planted-ran', 'a').write('uid %d\\n' % os.getuid())\nfrom binascii import *\n"
    th.exec_on("h1", ["sh", "-c", "cat > /home/alice/base64.py"], user="alice", input=planted, check=True)
    # the attack is real: python3 - started there, as root, runs it
    th.exec_on("h1", ["sh", "-c", "cd /home/alice && echo 'import base64' | python3 -"], check=True)
    assert th.exec_on("h1", ["cat", "/tmp/planted-ran"]).stdout == "uid 0\n"
    th.exec_on("h1", ["rm", "/tmp/planted-ran"], check=True)

    for command in (("plan", "dev"), ("apply", "dev", "--yes"), ("verify", "dev")):
        result = p.deployer(*command)
        assert "Traceback" not in result.stderr and result.exit_code in (0, 1), result
        assert th.exec_on("h1", ["test", "-e", "/tmp/planted-ran"]).returncode == 1, f"{command}: alice's base64.py ran as root"
    assert th.exec_on("h1", ["crontab", "-l"]).stdout.count("# BEGIN deployer demo/dev") == 1
