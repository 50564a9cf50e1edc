"""The probe never reads metadata through a path the job's user controls (issue 12, class 2).

Root deploys to this machine; the job's log and lock folders sit in the job's user's home,
so that user (the attacker, acting through ``runuser``) can swap them for links to a root-only
folder, or put FIFOs where root looks. ``plan``, ``status`` and ``verify`` describe those paths
(type, owner, mode), ask who holds the lock, measure free space and read legacy lock files:
each of those must say what the user planted (a link, a FIFO) and nothing of what is behind
it (the mode, owner, holders or pid of root's files), and never wait on a FIFO.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_USER, CliResult, Project

pytestmark = pytest.mark.cron

VICTIM = Path("/var/lib/deployer-victim-probe")  # root's, 0700
USER_HOME = Path(f"/home/{TEST_USER}")
PLANTED = ("logs", "locks", "legacy", "logs.real", "locks.real")
ODD_MODE = 0o1604  # a mode nothing of deployer's has: seen in any output, it leaked
PID_IN_VICTIM = "31337"


def as_user(script: str) -> None:
    subprocess.run(["runuser", "-u", TEST_USER, "--", "sh", "-ec", script], check=True, timeout=60, cwd="/")


def clean_home() -> None:
    for name in PLANTED:
        path = USER_HOME / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def victim(user_crontab: str) -> Iterator[Path]:
    """Root's folder, with a log, a lock and a legacy lock of the job's names, odd modes and a
    pid in the lock: none of it may reach any output."""
    clean_home()
    shutil.rmtree(VICTIM, ignore_errors=True)
    VICTIM.mkdir(mode=0o700)
    for name in ("hello.log", "hello.lock", "q.lock"):
        (VICTIM / name).write_text(PID_IN_VICTIM + "\n")
        os.chmod(VICTIM / name, ODD_MODE)
    yield VICTIM
    shutil.rmtree(VICTIM, ignore_errors=True)
    clean_home()


def declare(project: Project) -> None:
    project.write("inventories/dev/hosts.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    project.declare(
        f"project: demo\ndefaults:\n  run_as: {TEST_USER}\n  timeout: 1m\n"
        f"  logs: {{dir: {USER_HOME}/logs, mode: '0750', owner: {TEST_USER}}}\n"
        f"  locks: {{dir: {USER_HOME}/locks, mode: '0755'}}\n"
        "jobs:\n  hello:\n    script: tasks/hello.py\n    schedule: '0 3 * * *'\n"
        f"    legacy_locks: [{USER_HOME}/legacy/q.lock]\n"
        "environments:\n  dev:\n    inventory: inventories/dev\n")


def looks(project: Project) -> dict[str, CliResult]:
    """Everything an operator runs that probes the host, each bounded in time."""
    out = {}
    for args in (("plan", "dev"), ("plan", "dev", "--json"), ("status", "dev"), ("status", "dev", "--json"),
                 ("verify", "dev"), ("verify", "dev", "--json")):
        started = time.monotonic()
        result = project.deployer(*args, timeout=60)
        assert time.monotonic() - started < 60
        assert "Traceback" not in result.stderr, result
        assert result.exit_code in (0, 1), result  # never "unreachable" (4) for a reachable host
        out[" ".join(args)] = result
    return out


def leaked(result: CliResult) -> list[str]:
    text = result.stdout + result.stderr
    signs = [f"{ODD_MODE:04o}", f'"mode": {ODD_MODE}', PID_IN_VICTIM, str(VICTIM)]
    return [s for s in signs if s in text]


def test_links_planted_on_the_way_never_make_the_probe_describe_roots_files(project: Project, victim: Path) -> None:
    declare(project)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    # Root holds a lock on its own hello.lock: who holds it is not the job user's business.
    holder = subprocess.Popen(["flock", str(victim / "hello.lock"), "sleep", "120"])
    try:
        deadline = time.time() + 10
        while f" {holder.pid} " not in Path("/proc/locks").read_text() and time.time() < deadline:
            time.sleep(0.05)
        # The attacker: its log and lock folders become links to root's folder, and so does
        # the hand-made setup's lock folder.
        as_user(f"cd {USER_HOME} && mv logs logs.real && mv locks locks.real && "
                f"ln -s {victim} logs && ln -s {victim} locks && ln -s {victim} legacy")
        seen = looks(project)
        for what, result in seen.items():
            assert leaked(result) == [], f"{what} told of root's files: {leaked(result)}\n{result}"
            assert f"pid {holder.pid}" not in result.stdout, (what, result)
        plan = seen["plan dev"].stdout
        assert (f"{USER_HOME}/logs/hello.log: not looked at: {USER_HOME}/logs is a symlink that root did not make"
                in plan), plan
        assert f"{USER_HOME}/logs: is a link, not a folder" in plan, plan
        verify = seen["verify dev"].stdout
        assert f"{USER_HOME}/legacy/q.lock not looked at: {USER_HOME}/legacy is a symlink that root did not make" in verify
        status = json.loads(seen["status dev --json"].stdout)
        assert "free space not measured" in json.dumps(status) or "free space not measured" in seen["verify dev"].stdout
        # apply refuses to act through the links, and root's files stay as they were.
        applied = project.deployer("apply", "dev", "--yes", timeout=60)
        assert applied.exit_code == 1 and leaked(applied) == [], applied
        assert all((victim / n).stat().st_mode & 0o7777 == ODD_MODE for n in ("hello.log", "hello.lock", "q.lock"))
    finally:
        holder.kill()
        holder.wait()


def test_fifos_planted_where_the_probe_looks_are_said_not_waited_on(project: Project, victim: Path) -> None:
    declare(project)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    # The attacker: FIFOs at the log, the lock and the legacy lock (folders it owns).
    as_user(f"cd {USER_HOME} && rm -f logs/hello.log && mkfifo logs/hello.log && "
            f"mv locks locks.real && mkdir locks && mkfifo locks/hello.lock && "
            f"mkdir -p legacy && mkfifo legacy/q.lock")
    seen = looks(project)
    plan = seen["plan dev"].stdout
    assert f"{USER_HOME}/logs/hello.log: is a FIFO, not a file" in plan, plan
    assert f"{USER_HOME}/locks/hello.lock: is a FIFO, not a file" in plan, plan
    verify = seen["verify dev"].stdout
    assert f"{USER_HOME}/legacy/q.lock is a FIFO, not a lock file: left alone" in verify, verify
    for what, result in seen.items():
        assert leaked(result) == [], (what, result)
    # apply replaces the FIFOs at the job's own paths (names in the user's folders, never opened).
    applied = project.deployer("apply", "dev", "--yes", timeout=60)
    assert applied.exit_code == 0, applied
    assert (USER_HOME / "logs/hello.log").is_file() and (USER_HOME / "locks/hello.lock").is_file()
