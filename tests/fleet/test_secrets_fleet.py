"""Secrets on a real host: declared secret values reach the job's environment and nothing else.

Not in the crontab, not in any process's argv while the job runs (every /proc/*/cmdline of
the host, read during a run), not in the job's log or ledger, not in plan/apply/verify/render
output (text or --json), and in no file the host wrote except the 0600 env file owned by the
run-as user. The job proves it received them by logging their sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import wait_for
from tests.fleet.conftest import FleetProject, make_project

pytestmark = pytest.mark.fleet

HOME = "/var/lib/deployer/demo-dev"

SLOW = """\
import hashlib, os, sys, time
for name in ("API_TOKEN", "DB_PASSWORD"):
    print(name, "sha256", hashlib.sha256(os.environ[name].encode()).hexdigest(), flush=True)
open(sys.argv[1], "w").close()          # started: the test reads /proc now
while not os.path.exists(sys.argv[2]):  # until the test lets it end
    time.sleep(0.05)
print("done", flush=True)
"""

DECLARATION = """\
project: demo
defaults:
  timeout: 2m
jobs:
  slow:
    script: tasks/slow.py
    args: [/tmp/slow-started, /tmp/slow-go]
    schedule: "*/5 * * * *"
    run_as: alice
    env:
      API_TOKEN: {secret: {env: DEPLOYER_TEST_API_TOKEN}}
      DB_PASSWORD: {secret: {file: secrets/dev.env, key: DB_PASSWORD}}
      PLAIN: not-a-secret
environments:
  dev:
    inventory: inventories/dev
"""

SCAN = r"""
import json, os, sys
needles = [n.encode() for n in json.loads(sys.stdin.read())]  # not argv: we are a process too
found = {"argv": [], "files": [], "environ": []}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmdline = f.read()
        with open("/proc/%s/environ" % pid, "rb") as f:
            environ = f.read()
    except OSError:
        continue
    if any(n in cmdline for n in needles):
        found["argv"].append(cmdline.decode("utf-8", "replace"))
    if any(n in environ for n in needles):
        found["environ"].append(cmdline.decode("utf-8", "replace"))
for top in sys.argv[1:]:
    for folder, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if any(n in data for n in needles):
                st = os.lstat(path)
                found["files"].append([path, "%04o" % (st.st_mode & 0o7777), st.st_uid])
print(json.dumps(found))
"""


def scan(p: FleetProject, values: list[str], *folders: str) -> dict[str, Any]:
    """Where on the host the values are: argv and environ of every process, every file under ``folders``."""
    proc = p.th.exec_on("h1", ["python3", "-c", SCAN, *folders], input=json.dumps(values))
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def assert_redacted(values: list[str], *outputs: str) -> None:
    for value in values:
        for output in outputs:
            assert value not in output, f"a secret value is shown:\n{output}"


def test_secret_values_stay_in_the_env_file(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(["h1"], users=["alice"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1")})
    p.write("tasks/slow.py", SLOW)
    p.write("deployer.yml", DECLARATION)
    # Values with shell metacharacters: a quoting slip anywhere would show them in argv or the crontab.
    token = "tok-" + secrets.token_hex(8) + " $(id);'\"`"
    password = "pw-" + secrets.token_hex(8) + "%&|<>"
    p.write("secrets/dev.env", f"DB_PASSWORD={password}\n")
    p.extra_env["DEPLOYER_TEST_API_TOKEN"] = token
    values = [token, password]

    outputs = []
    for args in (["plan", "dev"], ["plan", "dev", "--json"], ["render", "dev"]):
        result = p.deployer(*args)
        assert result.exit_code == 0, result
        outputs += [result.stdout, result.stderr]
    applied, report = p.deployer_json("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    outputs += [applied.stdout, applied.stderr]
    rev = report["hosts"]["h1"]["revision"]

    # A run through the wrapper, as `deployer run` does it; /proc is read while the job waits.
    argv = th.ctl_argv([sys.executable, "-m", "deployer", "--no-color", "run", "dev", "slow"])
    run = subprocess.Popen(argv, cwd=p.root, env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: th.exec_on("h1", ["test", "-e", "/tmp/slow-started"]).returncode == 0 or run.poll() is not None,
                 "the job to start")
        assert run.poll() is None, run.communicate()
        during = scan(p, [*values, "/tmp/slow-go"])
    finally:
        th.exec_on("h1", ["touch", "/tmp/slow-go"])
        out, err = run.communicate(timeout=120)
    assert run.returncode == 0, (out, err)
    outputs += [out, err]
    # The scan sees what it looks for: the job's own argv holds /tmp/slow-go, and its
    # environment (and only that of the job and its wrapper's child) holds the secrets.
    assert [c for c in during["argv"] if "slow.py" in c], during
    assert [c for c in during["argv"] if any(v in c for v in values)] == [], f"a secret in argv: {during['argv']}"
    assert during["environ"] and all("slow.py" in c for c in during["environ"]), during["environ"]

    log = th.exec_on("h1", ["cat", f"{HOME}/logs/slow.log"]).stdout
    for name, value in (("API_TOKEN", token), ("DB_PASSWORD", password)):
        assert f"{name} sha256 {hashlib.sha256(value.encode()).hexdigest()}" in log, log  # it got them
    assert "done" in out

    for args in (["verify", "dev"], ["verify", "dev", "--json"], ["status", "dev"], ["logs", "dev", "slow"]):
        result = p.deployer(*args)
        outputs += [result.stdout, result.stderr]

    # Rotate one secret: the plan says the env file changes, never with what.
    rotated = "pw-" + secrets.token_hex(8)
    p.write("secrets/dev.env", f"DB_PASSWORD={rotated}\n")
    for args in (["plan", "dev"], ["plan", "dev", "--json"]):
        result = p.deployer(*args)
        assert result.exit_code == 0, result
        assert "env/slow.env" in result.stdout, result
        outputs += [result.stdout, result.stderr]
    applied = p.deployer("apply", "dev", "--yes", "--json")
    assert applied.exit_code == 0, applied
    outputs += [applied.stdout, applied.stderr]
    values.append(rotated)
    assert_redacted(values, *outputs)

    for user in ("root", "alice"):
        assert_redacted(values, p.crontab("h1", user))
    # Every file the host wrote to its disk (the overlay's upper layer holds nothing else),
    # plus its tmpfs /run: the values are in the env files of the releases, nowhere else.
    on_disk = scan(p, values, "/var", "/etc", "/root", "/home", "/tmp", "/run")["files"]
    expected = {f"{HOME}/releases/{r}/env/slow.env" for r in (rev, json.loads(applied.stdout)["hosts"]["h1"]["revision"])}
    assert {path for path, _, _ in on_disk} == expected, on_disk
    for path, mode, uid in on_disk:
        assert (mode, uid) == ("0600", 0), (path, mode, uid)  # root's: the root-started wrapper reads it
    upper = th.host("h1").upper
    for folder, _, files in os.walk(upper):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            if any(v.encode() in data for v in values):
                assert "/" + str(path.relative_to(upper)) in expected, f"a secret value in {path}"
