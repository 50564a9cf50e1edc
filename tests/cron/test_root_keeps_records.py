"""Root keeps the run records (issue 12, class 5): the job's user cannot forge the proof.

Deployed by root, a job of another user is started from root's crontab by a wrapper that
keeps its ledger, running markers and run logs in a folder of root's, opens the job's log
and lock with that user's ids, and runs the job as that user with its groups, in the
environment cron gives that user's jobs. Each attack below is carried out as the job's
user, for real, on this machine.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BLOCK_USER, CRON_PYTHON, TEST_USER, Project, read_crontab
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.cron

HOME = Path("/var/lib/deployer/demo-dev")
STATE = HOME / "state/whoami"
LEDGER = STATE / "ledger.jsonl"
FORGED = ('{"run_id": "f0f0f0f0f0f0f0f0", "job": "whoami", "start": "2999-01-01T00:00:00.000Z", '
          '"end": "2999-01-01T00:00:01.000Z", "outcome": "success", "exit_code": 0}')

WHOAMI = """\
import json, os
print(json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
                  "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in ("HOME", "USER", "LOGNAME", "PATH", "SHELL",
                  "ROOT_ONLY_SECRET", "GREETING")}}))
"""


def deploy(project: Project) -> None:
    project.write("tasks/whoami.py", WHOAMI)
    declare(project, "  whoami:\n    script: tasks/whoami.py\n    schedule: '*/5 * * * *'\n    env: {GREETING: hi}\n"
                     "    retention: {run_logs: 3}\n")
    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied


def attempt_as_user(script: str) -> subprocess.CompletedProcess[str]:
    """One of the attacker's steps, as the job's user with its own groups; may fail."""
    return subprocess.run(["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups", "sh", "-c", script],
                          capture_output=True, text=True, cwd="/")


def last_output(log: Path) -> dict[str, object]:
    lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
    output: dict[str, object] = json.loads(lines[-1])
    return output


def test_the_job_runs_as_its_user_and_cannot_forge_its_records(project: Project, user_crontab: str) -> None:
    deploy(project)
    user = pwd.getpwnam(TEST_USER)
    block = read_crontab(BLOCK_USER) or ""
    assert "/run whoami" in block and "/run whoami" not in (read_crontab(TEST_USER) or "")

    ran = project.deployer("run", "dev", "whoami")
    assert ran.exit_code == 0, ran
    seen = last_output(HOME / "logs/whoami.log")
    groups = sorted(int(g) for g in subprocess.run(["id", "-G", TEST_USER], capture_output=True, text=True,
                                                   check=True).stdout.split())
    assert (seen["uid"], seen["euid"], seen["gid"]) == (user.pw_uid, user.pw_uid, user.pw_gid), seen
    assert seen["groups"] == groups, seen  # its own groups, as cron's initgroups gives them
    assert seen["cwd"] == user.pw_dir, seen  # where cron starts a job of that user: its home
    assert seen["env"] == {"HOME": user.pw_dir, "USER": TEST_USER, "LOGNAME": TEST_USER, "PATH": "/usr/bin:/bin",
                           "SHELL": "/bin/sh", "ROOT_ONLY_SECRET": None, "GREETING": "hi"}, seen

    # Root's records, the user's log.
    for path in (STATE, LEDGER, STATE / "runs"):
        assert path.stat().st_uid == 0, path
    assert oct(STATE.stat().st_mode & 0o777) == "0o750"
    [record] = [json.loads(line) for line in LEDGER.read_text().splitlines()]
    assert record["outcome"] == "success" and record["user"] == TEST_USER and record["trigger"] == "manual"
    assert (HOME / "logs/whoami.log").stat().st_uid == user.pw_uid
    assert (HOME / "current/env/whoami.env").stat().st_uid == 0  # the job gets the values, not the file

    # The attacker's steps: append a success, plant a record or a link, replace the ledger.
    before = LEDGER.read_bytes()
    for step in (f"echo '{FORGED}' >> {LEDGER}",
                 f"echo '{FORGED}' > {STATE}/ledger.new && mv {STATE}/ledger.new {LEDGER}",
                 f"ln -s /etc/shadow {STATE}/runs/x.log",
                 f"echo '{{}}' > {STATE}/running/f0f0.json",
                 f"rm -rf {STATE}"):
        tried = attempt_as_user(step)
        assert tried.returncode != 0, f"the job's user could: {step}"
    assert LEDGER.read_bytes() == before

    verified = project.deployer("verify", "dev")
    assert ("pass trust root keeps the run records of every job; 1 run as their own users, who cannot forge them"
            in " ".join(verified.stdout.split())), verified


def test_root_crontab_variables_never_reach_the_job(project: Project, user_crontab: str) -> None:
    """cron starts the wrapper with root's crontab's variables (VAR= lines may hold root's
    secrets): the job gets the environment cron gives its own user, not those."""
    deploy(project)
    env = dict(os.environ, ROOT_ONLY_SECRET="root-secret-1f2e3d")
    ran = subprocess.run([CRON_PYTHON, str(HOME / "current/run"), "whoami"], capture_output=True, text=True, cwd="/", env=env)
    assert ran.returncode == 0, ran.stderr
    seen = last_output(HOME / "logs/whoami.log")
    assert seen["env"]["ROOT_ONLY_SECRET"] is None and seen["uid"] == pwd.getpwnam(TEST_USER).pw_uid, seen  # type: ignore[index]
    assert "root-secret-1f2e3d" not in (HOME / "logs/whoami.log").read_text()


def test_records_the_user_wrote_are_taken_over_and_a_kept_descriptor_writes_nowhere(project: Project,
                                                                                     user_crontab: str) -> None:
    """A target deployed before root kept the records: the job's user owns its state folder
    and ledger, and can keep a descriptor open on it to write a forged line later."""
    deploy(project)
    assert project.deployer("run", "dev", "whoami").exit_code == 0
    subprocess.run(["chown", "-R", f"{TEST_USER}:{TEST_USER}", str(STATE)], check=True)  # as the user's wrapper left it
    history = LEDGER.read_bytes()

    # A wrapper started by root now refuses before the job starts: records it cannot keep.
    log_before = (HOME / "logs/whoami.log").read_text()
    refused = subprocess.run([CRON_PYTHON, str(HOME / "current/run"), "whoami"], capture_output=True, text=True, cwd="/")
    assert refused.returncode == 1, refused
    uid = pwd.getpwnam(TEST_USER).pw_uid
    assert (f"deployer run: the run records in {STATE} still belong to uid {uid}, not root: run `deployer apply`"
            in refused.stderr), refused.stderr
    assert (HOME / "logs/whoami.log").read_text() == log_before  # the job did not run

    # The attacker keeps the ledger open for appending, to write a success after the takeover.
    holder = subprocess.Popen(
        ["setpriv", f"--reuid={TEST_USER}", f"--regid={TEST_USER}", "--init-groups", CRON_PYTHON, "-c",
         "import os, sys\n"
         f"fd = os.open({str(LEDGER)!r}, os.O_WRONLY | os.O_APPEND)\n"
         "print('ready', flush=True)\n"
         "sys.stdin.readline()\n"
         f"os.write(fd, {FORGED!r}.encode() + b'\\n')\n"
         "print('wrote', flush=True)\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/")
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"

        verified = project.deployer("verify", "dev")
        assert ("warn trust runs are recorded by the jobs' own users (whoami by deployer-test), who can forge them"
                in " ".join(verified.stdout.split())), verified
        planned = project.deployer("plan", "dev")
        assert (f"root keeps the run records from now on ({TEST_USER} wrote them and could forge them)"
                in " ".join(planned.stdout.split())), planned
        applied = project.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied

        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "wrote"  # into the old file, which no one reads
    finally:
        holder.kill()
        holder.wait()
    assert LEDGER.read_bytes() == history  # the history kept, the forged line not in it
    for path in (STATE, LEDGER, STATE / "runs", *(STATE / "runs").iterdir()):
        assert path.stat().st_uid == 0, path
    assert project.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0
    assert project.deployer("run", "dev", "whoami").exit_code == 0
    assert LEDGER.read_text().count("\n") == 2
    verified = project.deployer("verify", "dev")
    assert "pass trust root keeps the run records" in " ".join(verified.stdout.split()), verified


def test_without_root_the_boundary_is_the_deploying_user(project: Project, user_crontab: str) -> None:
    declare(project, "  hello:\n    script: tasks/hello.py\n    schedule: '*/5 * * * *'\n", become=True)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    as_self = project.deployer("verify", "dev")
    assert (f"pass trust deployer is {TEST_USER} here, not root: every job, its records and this audit are as "
            f"trustworthy as {TEST_USER}") in " ".join(as_self.stdout.split()), as_self
