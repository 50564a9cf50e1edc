"""verify as an audit, status, logs, run now and history, on the real crontab and wrapper.

The jobs run as the dedicated test user (root deploys them with run_as). No cron daemon
is needed here: runs are started the way cron starts them, or with `deployer run`.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CRON_PYTHON, TEST_USER, Project, read_crontab, write_crontab
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.cron

HOME = Path("/var/lib/deployer/demo-dev")
JOBS = """\
  quick:
    script: tasks/quick.py
    schedule: "* * * * *"
    timeout: 30s
    env: {TOKEN: {secret: {env: DEMO_TOKEN}}}
  slow:
    script: tasks/slow.py
    schedule: "0 3 * * *"
    timeout: 1m
"""
SECRET = {"DEMO_TOKEN": "tok-5e6f7a8b9c"}


@pytest.fixture
def deployed(project: Project, user_crontab: str) -> Project:
    project.write("tasks/quick.py", "import os, sys\nprint('quick ran', len(os.environ['TOKEN']))\nsys.exit(int(os.environ.get('EXIT', '0')))\n")
    project.write("tasks/slow.py", "import os, time\nprint('slow pid', os.getpid(), flush=True)\ntime.sleep(60)\n")
    declare(project, JOBS)
    result = project.deployer("apply", "dev", "--yes", env=SECRET)
    assert result.exit_code == 0, result
    return project


def backdate_deploy(minutes: int) -> None:
    """The one fake here: pretend the release went live earlier (the probe reads this mtime)."""
    then = time.time() - minutes * 60
    os.utime(HOME / "current", (then, then), follow_symlinks=False)


def test_run_now_status_logs_and_history(deployed: Project, tmp_path: Path) -> None:
    ran = deployed.deployer("run", "dev", "quick", env=SECRET)
    assert ran.exit_code == 0, ran
    assert ran.stdout == "quick ran 14\n"
    status = json.loads(deployed.deployer("status", "dev", "--json", env=SECRET).stdout)
    quick = next(r for r in status["jobs"] if r["job"] == "quick")
    assert quick["last_run"]["outcome"] == "success" and quick["consecutive_failures"] == 0
    assert quick["schedule_words"] == "Every minute" and quick["next_run"]
    slow = next(r for r in status["jobs"] if r["job"] == "slow")
    assert slow["last_run"] is None and slow["last_success_ago"] == "never"

    logs = deployed.deployer("logs", "dev", "quick", "-n", "3", env=SECRET)
    assert logs.exit_code == 0
    assert logs.stdout.splitlines()[1] == "localhost | quick ran 14"

    export = tmp_path / "runs.sqlite"
    assert deployed.deployer("history", "dev", "--export", str(export), env=SECRET).exit_code == 0
    rows = sqlite3.connect(export).execute("select host, job, outcome, trigger, user from runs").fetchall()
    assert rows == [("localhost", "quick", "success", "manual", TEST_USER)]


def test_run_now_returns_the_jobs_exit_code(deployed: Project) -> None:
    deployed.write("tasks/quick.py", "import sys\nprint('failing')\nsys.exit(7)\n")
    assert deployed.deployer("apply", "dev", "--yes", env=SECRET).exit_code == 0
    ran = deployed.deployer("run", "dev", "quick", env=SECRET)
    assert ran.exit_code == 7 and ran.stdout == "failing\n"
    verify = deployed.deployer("verify", "dev", env=SECRET)
    assert "warn success quick last run failure (exit 7); last success never" in verify.stdout


def test_verify_fails_when_a_job_has_not_run_since_it_was_due(deployed: Project, tmp_path: Path) -> None:
    backdate_deploy(10)
    junit = tmp_path / "verify.xml"
    result = deployed.deployer("verify", "dev", "--junit", str(junit), env=SECRET)
    assert result.exit_code == 1
    assert "fail freshness quick should have run at " in result.stdout
    assert "since the deploy 10m ago but has no run" in result.stdout
    # The same report as JUnit XML, for CI systems.
    from xml.etree import ElementTree as ET

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "localhost"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    failure = cases["freshness quick"].find("failure")
    assert failure is not None and "but has no run" in (failure.get("message") or "")
    assert cases["crontab"].find("failure") is None
    assert int(suite.get("failures") or 0) == sum(1 for c in cases.values() if c.find("failure") is not None)


def test_verify_reports_a_run_that_crashed_with_its_wrapper(deployed: Project) -> None:
    # Started by root, as root's cron starts it (the job runs as the test user)
    wrapper = subprocess.Popen([CRON_PYTHON, str(HOME / "current/run"), "slow"], start_new_session=True, cwd="/")
    log = HOME / "logs" / "slow.log"
    deadline = time.time() + 20
    while "slow pid" not in (log.read_text() if log.exists() else "") and time.time() < deadline:
        time.sleep(0.1)
    # kill -9 the wrapper and the job: no ledger line, a running marker left behind.
    os.killpg(wrapper.pid, signal.SIGKILL)
    job_pid = int(log.read_text().split("slow pid ")[1].split()[0])
    os.kill(job_pid, signal.SIGKILL)
    wrapper.wait()
    deadline = time.time() + 5
    while Path(f"/proc/{job_pid}").exists() and time.time() < deadline:
        time.sleep(0.05)
    result = deployed.deployer("verify", "dev", env=SECRET)
    assert result.exit_code == 1
    assert f"never ended and its process {job_pid} is gone (crashed)" in result.stdout
    # The kernel dropped the lock with the processes: the next run proceeds.
    deployed.write("tasks/slow.py", "print('quick this time')\n")
    assert deployed.deployer("apply", "dev", "--yes", env=SECRET).exit_code == 0
    assert deployed.deployer("run", "dev", "slow", env=SECRET).stdout == "quick this time\n"


def test_verify_fails_when_a_secret_leaks_into_the_crontab(deployed: Project) -> None:
    text = read_crontab(TEST_USER) or ""
    write_crontab(TEST_USER, "0 0 * * * MYSQL_PWD=tok-5e6f7a8b9c backup.sh\n" + text)
    result = deployed.deployer("verify", "dev", env=SECRET)
    assert result.exit_code == 1
    assert ("fail secrets      the crontab of deployer-test contains the value of a declared secret: "
            "move it to the job's env (a secret reference) and rotate it") in result.stdout
    assert "tok-5e6f7a8b9c" not in result.stdout + result.stderr


def test_stale_legacy_lock_files_are_reported_and_removed(project: Project, user_crontab: str, tmp_path: Path) -> None:
    """/tmp/<job>.lock left by the hand-made setup: removed when its process is gone, kept while it lives."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    alive = subprocess.Popen(["sleep", "60"])
    stale_lock, live_lock = tmp_path / "email_queue.lock", tmp_path / "backup.lock"
    stale_lock.write_text(f"{dead.pid}\n")
    live_lock.write_text(f"{alive.pid}\n")
    try:
        project.write("tasks/quick.py", "print('ok')\n")
        declare(project, f"  quick:\n    script: tasks/quick.py\n    schedule: '@daily'\n    timeout: 1m\n"
                         f"    legacy_locks: [{stale_lock}, {live_lock}]\n")
        plan = project.deployer("plan", "dev")
        assert f"{stale_lock}: remove stale legacy lock (pid {dead.pid} is gone)" in plan.stdout
        assert str(live_lock) + ":" not in plan.stdout
        assert project.deployer("apply", "dev", "--yes").exit_code == 0
        assert not stale_lock.exists() and live_lock.exists()
        verify = project.deployer("verify", "dev")
        assert (f"warn legacy-lock quick {live_lock} names pid {alive.pid}, which is running: the hand-made job may "
                "still be running (take it out of the crontab)") in verify.stdout
        assert str(stale_lock) not in verify.stdout
    finally:
        alive.kill()
        alive.wait()


STEPPED = """\
import os, sys, time
print("first line")  # no flush: the wrapper makes `deployer run` unbuffered
go = sys.argv[1]
for _ in range(300):
    if os.path.exists(go):
        print("second line")
        sys.exit(0)
    time.sleep(0.1)
print("nobody saw the first line in time")
sys.exit(3)
"""


def stream_check(argv: list[str], cwd: Path, env: dict[str, str], release: Callable[[], None]) -> None:
    """`deployer run` must show the first line while the job still runs: the job only goes on
    once the test has read that line (no clock involved; a buffered run would end in exit 3)."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    assert first == "first line\n", (first, proc.stderr.read() if proc.poll() is not None else "")
    assert proc.poll() is None  # the job is still waiting for us
    release()
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (rest, err)
    assert rest == "second line\n"


def test_run_now_streams_the_output_as_it_comes(project: Project, user_crontab: str, tmp_path: Path) -> None:
    shared = Path(tempfile.mkdtemp(prefix="deployer-stream-", dir="/tmp"))  # the job's user can look here
    shared.chmod(0o755)
    go = shared / "go"
    project.write("tasks/stepped.py", STEPPED)
    declare(project, f"  stepped:\n    script: tasks/stepped.py\n    args: ['{go}']\n    schedule: '@daily'\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    env = dict(os.environ, COLUMNS="200")
    stream_check([sys.executable, "-m", "deployer", "--no-color", "run", "dev", "stepped"], project.root, env, go.touch)
    assert "first line\nsecond line\n" in (HOME / "logs/stepped.log").read_text()
    shutil.rmtree(shared)


def test_logs_run_shows_one_runs_own_log(project: Project, user_crontab: str) -> None:
    """retention.run_logs on a real target: `deployer logs --run last|failed|RUN_ID` shows that
    run's own output under its ledger line; a run whose file was pruned is named, not shown."""
    # The job counts its runs in `seen`, in its cwd: its user's home, which outlives one test
    # session (the test user is made once per machine). Start from none.
    shutil.rmtree(Path(pwd.getpwnam(TEST_USER).pw_dir) / "seen", ignore_errors=True)
    project.write("tasks/counted.py", "import os, sys\nos.makedirs('seen', exist_ok=True)\ncount = len(os.listdir('seen'))\n"
                  "open('seen/%d' % count, 'w').close()\nprint('run', count + 1, 'says hi')\n"
                  "sys.exit(3 if count == 1 else 0)\n")
    declare(project, "  counted:\n    script: tasks/counted.py\n    schedule: '0 3 * * *'\n    retention: {run_logs: 2}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert [project.deployer("run", "dev", "counted").exit_code for _ in range(3)] == [0, 3, 0]
    ledger = [json.loads(line) for line in (HOME / "state" / "counted" / "ledger.jsonl").read_text().splitlines()]
    first, failed, last = ledger

    shown = project.deployer("logs", "dev", "counted", "--run", "last")
    assert shown.exit_code == 0, shown
    header, *lines = shown.stdout.splitlines()
    assert header.startswith(f"── localhost: run {last['run_id']} of counted, started {last['start']}, success, ")
    assert "localhost | run 3 says hi" in lines and not any("run 2" in line for line in lines)

    shown = project.deployer("logs", "dev", "counted", "--run", "failed", "-n", "2")
    assert shown.exit_code == 0, shown
    header, *lines = shown.stdout.splitlines()
    assert f"run {failed['run_id']} of counted" in header and "failure" in header
    assert len(lines) == 2 and lines[-1].startswith("localhost | [") and "end: failure (exit 3" in lines[-1]

    data = json.loads(project.deployer("logs", "dev", "counted", "--run", failed["run_id"][:6], "--json").stdout)
    assert data["hosts"]["localhost"]["run"]["run_id"] == failed["run_id"]
    assert any("run 2 says hi" in line for line in data["hosts"]["localhost"]["lines"])

    gone = project.deployer("logs", "dev", "counted", "--run", first["run_id"])
    assert gone.exit_code == 1, gone
    assert "its log file is gone" in gone.stderr and "older than the run_logs kept" in gone.stderr
    unknown = project.deployer("logs", "dev", "counted", "--run", "nosuchrun")
    assert unknown.exit_code == 1 and "no kept run log matches 'nosuchrun' (3 kept)" in unknown.stderr, unknown
    kept = sorted(p.name for p in (HOME / "state" / "counted" / "runs").iterdir())
    # root's: the job's user can read its log but cannot rewrite the record of a run
    assert len(kept) == 2 and all(p.stat().st_uid == 0 for p in (HOME / "state" / "counted" / "runs").iterdir())
