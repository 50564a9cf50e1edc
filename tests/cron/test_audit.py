"""verify as an audit, status, logs, run now and history, on the real crontab and wrapper.

The jobs run as the dedicated test user (root deploys them with run_as). No cron daemon
is needed here: runs are started the way cron starts them, or with `deployer run`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_USER, Project, read_crontab, write_crontab
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


def test_verify_fails_when_a_job_has_not_run_since_it_was_due(deployed: Project) -> None:
    backdate_deploy(10)
    result = deployed.deployer("verify", "dev", env=SECRET)
    assert result.exit_code == 1
    assert "fail freshness quick should have run at " in result.stdout
    assert "since the deploy 10m ago but has no run" in result.stdout


def test_verify_reports_a_run_that_crashed_with_its_wrapper(deployed: Project) -> None:
    wrapper = subprocess.Popen(["runuser", "-u", TEST_USER, "--", "python3", str(HOME / "current/run"), "slow"],
                               start_new_session=True)
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
