"""Root never acts through a path the job's user controls (issue 12, class 2), for real.

deployer runs here as root; the job's user is the cron tier's throwaway user. Each test
performs the attack as that user would (``setpriv`` to its uid, gid and groups): swapping a
folder on a path root walks for a symlink, hard-linking a file where root will chown, planting
links where root reads, a FIFO where root writes. The victim is always a root-only file or
folder; each test shows it is untouched, unread and unchanged, and says what deployer said.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_USER, Project

pytestmark = pytest.mark.cron

HOME = Path("/var/lib/deployer/demo-dev")
VICTIM = Path("/var/lib/deployer-victim")  # root's, 0700: nothing of it may change or leak
SECRET = "root-only-4f1c9a"


def as_user(script: str) -> None:
    """The attacker's steps, run as the job's user with its own groups."""
    proc = subprocess.run(["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups",
                           "sh", "-ec", script], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, f"the attacker's step failed: {proc.stderr}"


def user_can(script: str) -> bool:
    """Whether one of the attacker's steps works, as the job's user."""
    return subprocess.run(["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups", "sh", "-ec", script],
                          capture_output=True, cwd="/").returncode == 0


def records_of_user(state: Path) -> None:
    """A job's state folder as a release from before root kept the records left it: the user's."""
    subprocess.run(["chown", "-R", f"{TEST_USER}:{TEST_USER}", str(state)], check=True)


def user_can_read(path: Path) -> bool:
    proc = subprocess.run(["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups",
                           "cat", str(path)], capture_output=True, text=True, cwd="/")
    return proc.returncode == 0


def snapshot(root: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Owner, group, mode and content of everything under ``root`` (links not followed)."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), data)
    return out


@pytest.fixture
def victim() -> Iterator[Path]:
    shutil.rmtree(VICTIM, ignore_errors=True)
    VICTIM.mkdir(mode=0o700)
    os.chmod(VICTIM, 0o700)
    yield VICTIM
    shutil.rmtree(VICTIM, ignore_errors=True)


@pytest.fixture
def user_home(user_crontab: str) -> Iterator[Path]:
    """The job's user's home, with the attacker's earlier files cleaned away."""
    home = Path(f"/home/{TEST_USER}")
    for name in ("app", "logs", "locks"):
        path = home / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
    yield home
    for name in ("app", "logs", "locks"):
        path = home / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)


def declare(project: Project, jobs: str, defaults: str = "") -> None:
    project.write("inventories/dev/hosts.yml", "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    project.write("deployer.yml", f"project: demo\ndefaults:\n  run_as: {TEST_USER}\n  timeout: 1m\n{defaults}"
                                  f"jobs:\n{jobs}\nenvironments:\n  dev:\n    inventory: inventories/dev\n")


HELLO = "  hello:\n    script: tasks/hello.py\n    schedule: '0 3 * * *'\n"


def test_a_middle_folder_swapped_for_a_link_never_makes_apply_chown_roots_folder(
        project: Project, user_home: Path, victim: Path) -> None:
    """The log folder sits under the user's home; the user swaps a folder on the way for a
    link to a root-only folder: apply must not chown or chmod what the link leads to."""
    (victim / "logs").mkdir(mode=0o700)
    (victim / "logs" / "hello.log").write_text(SECRET + "\n")
    os.chmod(victim / "logs" / "hello.log", 0o600)
    declare(project, HELLO, f"  logs: {{dir: {user_home}/app/var/logs, mode: '0750', owner: {TEST_USER}}}\n")
    as_user(f"mkdir -p {user_home}/app && ln -s {victim} {user_home}/app/var")
    before = snapshot(victim)

    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 1, applied
    assert (f"{user_home}/app/var is a symlink that root did not make (or in a folder others can write); "
            "deployer will not follow it") in applied.stdout + applied.stderr, applied
    assert snapshot(victim) == before
    assert not user_can_read(victim / "logs" / "hello.log")

    # The user puts a real folder back: the same apply goes through.
    as_user(f"rm {user_home}/app/var && mkdir {user_home}/app/var")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    log = user_home / "app/var/logs/hello.log"
    assert log.stat().st_uid == pwd_uid() and snapshot(victim) == before


def pwd_uid() -> int:
    import pwd

    return pwd.getpwnam(TEST_USER).pw_uid


def test_a_hard_link_at_the_log_path_is_refused_not_chowned(project: Project, user_home: Path, victim: Path) -> None:
    """The user may hard-link a root file it can read and write (fs.protected_hardlinks allows
    that); apply, which hands the log file to the user, must not hand over root's file."""
    shared = victim / "shared.conf"
    shared.write_text("root's shared settings\n")
    os.chmod(shared, 0o666)
    os.chmod(victim, 0o755)  # the user can reach it, not change the folder
    declare(project, HELLO, f"  logs: {{dir: {user_home}/logs, mode: '0750', owner: {TEST_USER}}}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    log = user_home / "logs/hello.log"
    as_user(f"rm {log} && ln {shared} {log}")
    before = snapshot(victim)

    planned = project.deployer("plan", "dev")
    assert "owner root -> deployer-test" in " ".join(planned.stdout.split()), planned
    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 1, applied
    assert f"{log} has 2 names (a hard link to another file); deployer will not use it" in applied.stdout, applied
    assert snapshot(victim) == before
    assert shared.stat().st_uid == 0

    # The wrapper (the job's user) will not write its output into that file either.
    run = project.deployer("run", "dev", "hello")
    assert run.exit_code == 1 and f"{log} has 2 names" in run.stdout + run.stderr, run
    assert snapshot(victim) == before


def test_a_legacy_lock_folder_swapped_for_a_link_never_makes_apply_delete_roots_file(
        project: Project, user_home: Path, victim: Path) -> None:
    """legacy_locks under the user's folder: the user points that folder at a root-only one
    holding a file of the same name. Seen before the probe, or swapped after the probe while
    apply holds the deploy lock, root's file stays."""
    (victim / "q.lock").write_text("")
    old = time.time() - 3 * 3600
    os.utime(victim / "q.lock", (old, old))
    declare(project, HELLO.replace("'0 3 * * *'\n", f"'0 3 * * *'\n    legacy_locks: [{user_home}/locks/q.lock]\n"))
    as_user(f"ln -s {victim} {user_home}/locks")
    before = snapshot(victim)

    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert snapshot(victim) == before
    verified = project.deployer("verify", "dev")
    assert f"{user_home}/locks/q.lock not looked at: {user_home}/locks is a symlink that root did not make" in verified.stdout, verified

    # The race: a real folder with a stale lock when plan looks, a link when apply acts.
    as_user(f"rm {user_home}/locks && mkdir {user_home}/locks && touch -d '3 hours ago' {user_home}/locks/q.lock")
    pause = Path("/tmp/deployer-pause.demo-dev.locked")
    pause.unlink(missing_ok=True)
    env = dict(os.environ, DEPLOYER_TEST_PAUSE_AT="locked", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--no-color", "apply", "dev", "--yes"], cwd=project.root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not pause.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert pause.exists(), "the applier never paused"
    as_user(f"mv {user_home}/locks {user_home}/locks.real && ln -s {victim} {user_home}/locks")
    pause.unlink()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "removed stale legacy lock" not in out
    assert snapshot(victim) == before
    shutil.rmtree(user_home / "locks.real")


def test_logs_run_never_follows_a_planted_runs_link(project: Project, user_home: Path, victim: Path) -> None:
    """`deployer logs --run` reads a run's own log in the job's state folder. Root keeps it, so
    the user cannot plant anything there; in a state folder still the user's (a release from
    before root kept the records, until the next apply), a `runs` link to a root-only folder
    must not make root print a file of it."""
    declare(project, "  counted:\n    script: tasks/hello.py\n    schedule: '0 3 * * *'\n    retention: {run_logs: 2}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert project.deployer("run", "dev", "counted").exit_code == 0
    state = HOME / "state/counted"
    [name] = os.listdir(state / "runs")
    (victim / name).write_text(SECRET + "\n")
    assert not user_can(f"mv {state}/runs {state}/runs.old")
    records_of_user(state)
    as_user(f"mv {state}/runs {state}/runs.old && ln -s {victim} {state}/runs")

    shown = project.deployer("logs", "dev", "counted", "--run", "last")
    assert SECRET not in shown.stdout + shown.stderr, shown
    assert f"its log file {state}/runs is not read" in shown.stdout + shown.stderr, shown


def test_a_running_marker_link_never_makes_root_read_a_root_only_file(project: Project, user_home: Path,
                                                                       victim: Path) -> None:
    """A `running` marker is JSON root reads; a link to root's own JSON must not be parsed
    nor echoed by status or verify (in a state folder still the user's: see above)."""
    declare(project, HELLO)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    (victim / "token.json").write_text(json.dumps({"run_id": SECRET, "pid": 1, "start": "2026-01-01T00:00:00.000Z"}))
    os.chmod(victim / "token.json", 0o600)
    state = HOME / "state/hello"
    assert not user_can(f"mkdir -p {state}/running")
    records_of_user(state)
    as_user(f"mkdir -p {state}/running && ln -s {victim}/token.json {state}/running/x.json")
    for args in (("status", "dev", "--json"), ("verify", "dev", "--json")):
        seen = project.deployer(*args)
        assert SECRET not in seen.stdout + seen.stderr, seen
        assert "Traceback" not in seen.stderr


ROOT_JOB = "  rootjob:\n    command: /bin/echo\n    args: [" + SECRET + "]\n    schedule: '0 3 * * *'\n    run_as: root\n"


def test_a_root_jobs_log_in_the_users_folder_never_becomes_the_users(project: Project, user_home: Path) -> None:
    """logs.owner is the run-as user, but this job runs as root: the user owns the folder and
    can swap the log for a file of its own (to read root's output) or for a FIFO (to hang every
    root run). Root writes only into its own regular file; a FIFO costs one refused run."""
    logs = Path("/var/log/demo-root-paths")
    shutil.rmtree(logs, ignore_errors=True)
    try:
        declare(project, ROOT_JOB, f"  logs: {{dir: {logs}, mode: '0750', owner: {TEST_USER}}}\n")
        assert project.deployer("apply", "dev", "--yes").exit_code == 0
        log = logs / "rootjob.log"
        assert project.deployer("run", "dev", "rootjob").exit_code == 0
        assert SECRET in log.read_text() and not user_can_read(log)

        # A file of the user's in its place: the wrapper refuses it and writes nothing there.
        as_user(f"rm -f {log} && touch {log} && chmod 0644 {log}")
        run = project.deployer("run", "dev", "rootjob")
        assert run.exit_code == 1, run
        assert f"{log} belongs to uid {pwd_uid()}, not to the user it is for" in run.stdout + run.stderr, run
        assert log.read_text() == ""

        # A FIFO nobody reads: the run ends at once instead of blocking.
        as_user(f"rm -f {log} && mkfifo -m 0666 {log}")
        started = time.monotonic()
        run = project.deployer("run", "dev", "rootjob", timeout=60)
        assert run.exit_code == 1 and time.monotonic() - started < 30, run
        assert f"{log} is not a regular file (a FIFO was put there)" in run.stdout + run.stderr, run

        # apply puts root's file back (the FIFO is a name in the user's folder, removed, not opened).
        assert project.deployer("apply", "dev", "--yes").exit_code == 0
        assert stat.S_ISREG(log.lstat().st_mode) and log.lstat().st_uid == 0
        assert project.deployer("run", "dev", "rootjob").exit_code == 0
        assert SECRET in log.read_text() and not user_can_read(log)
    finally:
        shutil.rmtree(logs, ignore_errors=True)
