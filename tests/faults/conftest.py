"""Faults tier helpers: cut an apply for real at a chosen stage, then read what the target holds.

The hosts are the fleet tier's (tests/harness: sshd + cron in network namespaces) and the
``deployer`` CLI runs in a subprocess inside the harness's ctl namespace, as in tests/fleet.
Faults are real: the controller process is SIGKILLed, the host's network link is taken down
(``TestHosts.link_down``), the applier process is SIGKILLed on the target, the link is slowed
with a real qdisc (``tc tbf``) so that a transfer lasts long enough to be cut in its middle.

The one piece of test-only machinery in the product: the applier pauses at a named stage
when the controller runs with ``DEPLOYER_TEST_PAUSE_AT=<stage>`` (see ``_stage`` in
deployer/remote/applier.py); it writes its pid to ``/tmp/deployer-pause.demo-dev.<stage>`` on
the target and goes on when the test removes that file.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import FleetProject, make_project
from tests.harness import TestHosts
from tests.harness.fixtures import fleet_factory  # noqa: F401  (a fixture, used by the tests)

HOME = "/var/lib/deployer/demo-dev"  # deploy home of project demo, env dev, as root
PAUSE_ENV = "DEPLOYER_TEST_PAUSE_AT"

# Lines of the root crontab that are not ours: every fault must leave them byte for byte.
FOREIGN = "# hand-made, not deployer's\nMAILTO=\"\"\n17 4 * * * /bin/echo mine  >/dev/null 2>&1\n"

TASK = """\
import sys
print("hello", sys.argv[1:])
"""


def declaration(version: str, *, files: list[str] | None = None, extra_jobs: str = "") -> str:
    """deployer.yml of the project; ``version`` changes the job's args, hence the revision."""
    head = f"files: {json.dumps(files)}\n" if files else ""
    return (f"project: demo\n{head}defaults:\n  timeout: 1m\njobs:\n"
            f"  hello:\n    script: tasks/hello.py\n    args: [{version}]\n    schedule: \"*/5 * * * *\"\n"
            f"{extra_jobs}environments:\n  dev:\n    inventory: inventories/dev\n")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60, every: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` otherwise (a hang, not a timing claim)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)


# ----------------------------------------------------------------------------- the target


STATE_SCRIPT = r"""
import hashlib, json, os, subprocess, sys
home = sys.argv[1]
out = {"home_exists": os.path.isdir(home)}
cp = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
out["crontab"] = cp.stdout if cp.returncode == 0 else None
rel = os.path.join(home, "releases")
out["entries"] = sorted(os.listdir(rel)) if os.path.isdir(rel) else []
try:
    out["current"] = os.readlink(os.path.join(home, "current"))
except OSError:
    out["current"] = None
out["releases"] = {}
for name in out["entries"]:
    d = os.path.join(rel, name)
    info = {"files": {}}
    for dp, dn, fn in os.walk(d):
        for f in fn:
            path = os.path.join(dp, f)
            with open(path, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            info["files"][os.path.relpath(path, d)] = {"sha256": digest, "mode": "%04o" % (os.lstat(path).st_mode & 0o7777)}
    try:
        with open(os.path.join(d, "manifest.json")) as fh:
            info["manifest"] = json.load(fh)
    except (OSError, ValueError) as exc:
        info["manifest"] = None
    out["releases"][name] = info
print(json.dumps(out))
"""


def target_state(th: TestHosts, host: str = "h1") -> dict[str, Any]:
    """What the target holds, read inside the host itself (nsenter, no SSH, no deployer code)."""
    return state_through(on_host(th, host))


def whole_revision(state: dict[str, Any], link_may_lag: bool = False) -> str:
    """The revision the target runs, after checking that everything agrees on it.

    Old or new, never a mix: the foreign lines are intact, the crontab has one block of ours
    whose ``rev=`` names a release folder that is complete (every file of its manifest is
    there with its checksum and mode, nothing else), every job line runs that release's
    wrapper, and ``current`` points at that same release.

    ``link_may_lag``: the applier was killed after its switch (the crontab install) and
    before it moved ``current``. No second write can be atomic with the first, so deployer
    takes the live revision from the block, never from the link (core/facts.live_revision);
    the caller then proves that deployer's view follows the block.
    """
    crontab = state["crontab"]
    assert crontab is not None, "no crontab at all"
    assert crontab.startswith(FOREIGN), f"the foreign lines changed:\n{crontab}"
    block = crontab[len(FOREIGN):]
    lines = block.splitlines()
    assert lines and lines[0].startswith("# BEGIN deployer demo/dev rev="), f"no block of ours after the foreign lines:\n{crontab}"
    assert lines[-1] == "# END deployer demo/dev" and block.endswith("\n"), crontab
    assert sum(line.startswith("# BEGIN deployer") for line in lines) == 1, crontab
    match = re.match(r"# BEGIN deployer demo/dev rev=([0-9a-f]+) ", lines[0])
    assert match, lines[0]
    rev = match.group(1)
    jobs = [line for line in lines[1:-1] if not line.startswith("#")]
    assert jobs, crontab
    for line in jobs:
        assert f"{HOME}/releases/{rev}/run " in line, f"a job line does not run release {rev}: {line}"
    release = state["releases"].get(rev)
    assert release is not None, f"the crontab runs release {rev}, which is not on the target ({state['entries']})"
    manifest = release["manifest"]
    assert manifest is not None and manifest["revision"] == rev, f"release {rev} has no (or another) manifest"
    on_disk = {p: f for p, f in release["files"].items() if p != "manifest.json"}
    assert sorted(on_disk) == sorted(manifest["files"]), f"release {rev}: files {sorted(on_disk)} vs manifest {sorted(manifest['files'])}"
    for path, expected in manifest["files"].items():
        assert on_disk[path]["sha256"] == expected["sha256"], f"release {rev}: {path} does not match its checksum"
        assert on_disk[path]["mode"] == expected["mode"], f"release {rev}: {path} mode {on_disk[path]['mode']}"
    if not link_may_lag:
        assert state["current"] == f"releases/{rev}", f"the crontab runs {rev} but current -> {state['current']}"
    return rev


def deploy_v1(p: FleetProject) -> str:
    p.write("deployer.yml", declaration("v1"))
    first = p.deployer("apply", "dev", "--yes")
    assert first.exit_code == 0, first
    return whole_revision(target_state(p.th))


def declare_v2(p: FleetProject, *, big: bool = False) -> str:
    """Declare the next version; returns its revision as plan computes it (nothing applied)."""
    p.write("deployer.yml", declaration("v2", files=[big_file(p)] if big else None))
    planned, report = p.deployer_json("plan", "dev")
    assert planned.exit_code == 0, planned
    return str(report["hosts"]["h1"]["revision"])


def converges(p: FleetProject, new: str) -> None:
    """The next apply reaches the new revision, cleans what the fault left, and sticks."""
    converges_through(p, new, lambda: target_state(p.th))


# ----------------------------------------------------------------------------- processes


@dataclass
class Controller:
    """A ``deployer`` CLI running inside ctl, which the test may kill at any moment."""

    proc: subprocess.Popen[str]

    def kill(self) -> None:
        # `ip netns exec` execs the command: this pid is the deployer (python) process itself.
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def start_deployer(p: FleetProject, *args: str, env: dict[str, str] | None = None,
                   stdin: int | None = subprocess.DEVNULL) -> Controller:
    argv = p.th.ctl_argv([sys.executable, "-m", "deployer", "--no-color", *args])
    proc = subprocess.Popen(argv, cwd=p.root, env={**p.env(), **(env or {})}, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return Controller(proc)


def pause_marker(stage: str) -> str:
    return f"/tmp/deployer-pause.demo-dev.{stage}"


def paused_pid(th: TestHosts, stage: str, host: str = "h1") -> int | None:
    """The applier's pid once it waits at ``stage`` (its marker file exists), else None."""
    return paused_pid_through(on_host(th, host), stage)


def release_pause(th: TestHosts, stage: str, host: str = "h1") -> None:
    release_pause_through(on_host(th, host), stage)


def pid_alive(th: TestHosts, pid: int, host: str = "h1") -> bool:
    return pid_alive_through(on_host(th, host), pid)


APPLIERS_SCRIPT = r"""
import json, os
found = []
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")[:-1]
        with open("/proc/%s/io" % pid) as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
    except OSError:
        continue
    if argv and os.path.basename(argv[0]).startswith(b"python3") and argv[1:] == [b"-I", b"-"]:
        try:
            fds = [os.readlink("/proc/%s/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%s/fd" % pid)]
        except OSError:
            fds = []
        found.append({"pid": int(pid), "rchar": int(io["rchar"]),
                      "deploy_lock_open": any(f.endswith("/.deploy.lock") for f in fds)})
print(json.dumps(found))
"""


def stdin_pythons(th: TestHosts, host: str = "h1") -> list[dict[str, int]]:
    """``python3 -`` processes on the target (probe or applier), with how much they have read and
    whether they have the deploy lock file open (only an applier does: it holds or waits for it)."""
    return stdin_pythons_through(on_host(th, host))


def slow_link(th: TestHosts, host: str = "h1", rate: str = "2mbit") -> None:
    """A real slow link towards the host (token bucket on its bridge-side veth, in ctl)."""
    h = th.host(host)
    subprocess.run(["ip", "netns", "exec", th.ctl_netns, "tc", "qdisc", "replace", "dev", h.veth, "root",
                    "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"], check=True, capture_output=True)


def fast_link(th: TestHosts, host: str = "h1") -> None:
    h = th.host(host)
    subprocess.run(["ip", "netns", "exec", th.ctl_netns, "tc", "qdisc", "del", "dev", h.veth, "root"],
                   check=False, capture_output=True)


# ----------------------------------------------------------------------------- the project


@pytest.fixture
def one_host(fleet_factory: Callable[..., TestHosts], tmp_path: Path) -> Iterator[FleetProject]:  # noqa: F811 - pytest's fixture, by name
    """One host h1 with foreign lines in root's crontab, and a project targeting it as root."""
    th = fleet_factory(["h1"])
    p = make_project(th, tmp_path)
    p.write("tasks/hello.py", TASK)
    # ansible_timeout bounds how long the controller waits on a dead link for a new channel.
    p.inventory({"h1": p.host_vars("h1", ansible_timeout=3)})
    th.exec_on("h1", ["crontab", "-"], input=FOREIGN, check=True)
    yield p


def big_file(p: FleetProject, megabytes: int = 2) -> str:
    """A module shipped with the release, big enough that its transfer takes a while."""
    body = os.urandom(megabytes * 1024 * 1024 // 2).hex()
    p.write("tasks/blob.py", f'BLOB = "{body}"\n')
    return "tasks/blob.py"


def at_the_prompt(start: Callable[[int], Controller]) -> tuple[Controller, int]:
    """``start(tty)`` an ``apply`` without --yes whose stdin is a terminal, and wait until it
    shows its confirmation prompt: it has probed, the bundle is not sent. A real pause point,
    no test hook. Returns the controller and the terminal's master end (close it when done)."""
    master, slave = pty.openpty()
    controller = start(slave)
    os.close(slave)
    seen = b""

    def prompt() -> bool:
        nonlocal seen
        # click writes the prompt to stdout, which is our pipe; read what is there so far.
        assert controller.proc.stdout is not None
        fd = controller.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return True
            seen += chunk
        return b"Apply these changes" in seen

    wait_for(prompt, "the confirmation prompt")
    assert controller.proc.poll() is None, seen
    return controller, master


# ----------------------------------------------------------------------------- any transport
# The readings above, through any way into the target that runs no deployer code:
# ``run(argv)`` returns the CompletedProcess[str] of argv run on the target as root (nsenter
# for a fleet host, ``incus exec`` for a container: tests/incus/test_faults_incus.py).

Run = Callable[[list[str]], subprocess.CompletedProcess[str]]


def on_host(th: TestHosts, host: str) -> Run:
    return lambda argv: th.exec_on(host, argv)


def state_through(run: Run) -> dict[str, Any]:
    proc = run(["python3", "-c", STATE_SCRIPT, HOME])
    assert proc.returncode == 0, proc.stderr
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


def paused_pid_through(run: Run, stage: str) -> int | None:
    proc = run(["cat", pause_marker(stage)])
    return int(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else None


def release_pause_through(run: Run, stage: str) -> None:
    proc = run(["rm", "-f", pause_marker(stage)])
    assert proc.returncode == 0, proc.stderr


def pid_alive_through(run: Run, pid: int) -> bool:
    return run(["kill", "-0", str(pid)]).returncode == 0


def stdin_pythons_through(run: Run) -> list[dict[str, int]]:
    proc = run(["python3", "-c", APPLIERS_SCRIPT])
    assert proc.returncode == 0, proc.stderr
    appliers: list[dict[str, int]] = json.loads(proc.stdout)
    return appliers


def converges_through(p: Any, new: str, state: Callable[[], dict[str, Any]], host: str = "h1") -> None:
    """``converges`` for any project with ``deployer``/``deployer_json`` (fleet, incus) whose
    target ``host`` is read by ``state()``."""
    again = p.deployer("apply", "dev", "--yes")
    assert again.exit_code == 0, again
    after = state()
    assert whole_revision(after) == new
    assert not [e for e in after["entries"] if e.startswith(".")], f"leftovers of the cut apply: {after['entries']}"
    idle, report = p.deployer_json("apply", "dev", "--yes")
    assert idle.exit_code == 0, idle
    assert report["hosts"][host]["status"] == "ok" and report["hosts"][host]["applied"] == [], report
    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
