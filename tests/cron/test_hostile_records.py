"""Issue 12, class 6: one bad byte never stops a deploy, nor lies on the operator's terminal.

Root deploys to this machine; the job runs as the test user, who owns the job's log and
writes its output: the attacker here, as that user (runuser). Root keeps the run records
(ledger, running markers) and the env file, which the job's user can no longer write
(tests/cron/test_root_keeps_records.py carries out those attacks); bad bytes still reach
them from a disk that filled up mid-line, a hand edit, or a release from before root kept
them, and the probe reading them is the same: those are written here as root (``damage``).
Then deployer runs as the operator would:

- lines that are not run records in the ledger (``1``, ``[]``, ``{"pid": "x"}``, wrong
  types, not UTF-8), a bad running marker: skipped and said once (a warning in verify, on
  stderr for status and logs); no traceback, no "unreachable", plan and apply still work,
  and the next run of the job is still recorded;
- a FIFO at the ledger, at a running marker and at the log: nothing waits on it;
- a 350 MB ledger: read from its end, in seconds;
- a sparse 5 GB env file: apply restores it without writing 5 GB of backup;
- escape sequences in the job's output and in a marker: shown escaped, JUnit stays XML;
- a PEM key printed by the job: redacted on every line, in every output.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import TEST_USER, CliResult, Project
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.cron

HOME = Path("/var/lib/deployer/demo-dev")
STATE = HOME / "state" / "quick"
LEDGER = STATE / "ledger.jsonl"
JOBS = """\
  quick:
    script: tasks/quick.py
    schedule: "0 3 * * *"
    timeout: 30s
    env: {GREETING: hi, KEY: {secret: {env: DEMO_KEY}}}
"""
PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n"
       "MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n"
       "NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n"
       "-----END PRIVATE KEY-----")
SECRET = {"DEMO_KEY": PEM}
BAD_LINES = [b"1", b"[]", b'{"pid": "x"}', b'{"run_id": 5, "start": "2026-01-01T00:00:00.000Z", "outcome": "success"}',
             b'{"run_id": "f", "start": 5, "outcome": "success"}', b"\xff\xfe not utf-8",
             b'{"run_id": "g", "start": "2026-01-01T00:00:00", "outcome": "success", "duration": "long"}']


def as_job_user(*argv: str, stdin: bytes | None = None) -> None:
    """The attacker's step, as the job's user."""
    subprocess.run(["runuser", "-u", TEST_USER, "--", *argv], input=stdin, check=True, timeout=120)


def damage(*argv: str, stdin: bytes | None = None) -> None:
    """Bad bytes in a file of root's (records, env file): a full disk, a hand edit, an earlier release."""
    subprocess.run(argv, input=stdin, check=True, timeout=120)


def no_traceback(result: CliResult) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result
    assert result.exit_code != 4, result  # the host answered: never "unreachable" for what it holds


@pytest.fixture
def deployed(project: Project, user_crontab: str) -> Project:
    project.write("tasks/quick.py", "import os\nprint('quick ran', os.environ['GREETING'])\n")
    declare(project, JOBS)
    result = project.deployer("apply", "dev", "--yes", env=SECRET)
    assert result.exit_code == 0, result
    ran = project.deployer("run", "dev", "quick", env=SECRET)
    assert ran.exit_code == 0 and ran.stdout == "quick ran hi\n", ran
    return project


def test_ledger_lines_that_are_not_runs_are_skipped_and_said_once(deployed: Project, cron_daemon: int) -> None:
    damage("sh", "-c", f"cat >> {LEDGER}", stdin=b"\n".join(BAD_LINES) + b"\n")
    damage("sh", "-c", f"cat > {STATE}/running/planted.json", stdin=b'{"run_id": "r", "start": "x", "pid": "x"}')

    plan = deployed.deployer("plan", "dev", "--detailed-exitcode", env=SECRET)
    no_traceback(plan)
    assert plan.exit_code == 0, plan  # nothing to change: the probe was not stopped
    apply = deployed.deployer("apply", "dev", "--yes", env=SECRET)
    no_traceback(apply)
    assert apply.exit_code == 0, apply

    verify = deployed.deployer("verify", "dev", env=SECRET)
    no_traceback(verify)
    said = [line for line in verify.stdout.splitlines() if line.split()[1:2] == ["records"]]
    assert said == [
        f"   warn records quick {LEDGER}: 7 of its last 8 lines are not run records, skipped (the first: '1', "
        "not a JSON object)",
        f"   warn records quick {STATE}/running/planted.json: not a running marker (field pid is a string of 1 "
        "characters): skipped"], verify.stdout
    assert "pass success quick last success " in verify.stdout  # the real run is still seen
    assert verify.exit_code == 0, verify  # warnings only
    assert deployed.deployer("verify", "dev", "--strict", env=SECRET).exit_code == 1

    status = deployed.deployer("status", "dev", "--json", env=SECRET)
    no_traceback(status)
    assert status.exit_code == 0
    row = json.loads(status.stdout)["jobs"][0]
    assert row["last_run"]["outcome"] == "success" and row["running"] == []
    assert status.stderr.count(f"warning: {LEDGER}: 7 of its last 8 lines") == 1, status.stderr

    for command in (("logs", "dev", "quick"), ("history", "dev", "--export", str(deployed.root / "h.sqlite"))):
        result = deployed.deployer(*command, env=SECRET)
        no_traceback(result)
        assert result.exit_code == 0, result


def test_a_run_is_still_recorded_after_the_ledger_was_rewritten(deployed: Project) -> None:
    # bad lines first: the wrapper's trim reads the first line to decide
    damage("sh", "-c", f"cat > {LEDGER}", stdin=b"[]\n1\n")
    ran = deployed.deployer("run", "dev", "quick", env=SECRET)
    assert ran.exit_code == 0 and ran.stdout == "quick ran hi\n", ran
    last = json.loads(LEDGER.read_bytes().splitlines()[-1])
    assert last["outcome"] == "success" and last["trigger"] == "manual"


def test_a_fifo_where_a_file_is_read_never_blocks(deployed: Project) -> None:
    log = HOME / "logs" / "quick.log"
    for path in (LEDGER, STATE / "running" / "fifo.json"):
        damage("sh", "-c", f"rm -f {path} && mkfifo {path}")
    as_job_user("sh", "-c", f"rm -f {log} && mkfifo {log}")  # the log is the job user's own
    started = time.monotonic()
    verify = deployed.deployer("verify", "dev", env=SECRET, timeout=60)
    no_traceback(verify)
    assert f"warn records quick {LEDGER}: is a FIFO, not a regular file: not read" in verify.stdout, verify
    assert f"warn records quick {STATE}/running/fifo.json: is a FIFO, not a regular file: not read" in verify.stdout
    logs = deployed.deployer("logs", "dev", "quick", env=SECRET, timeout=60)
    no_traceback(logs)
    assert f"localhost: warning: {log}: is a FIFO, not a regular file: not read" in logs.stderr, logs
    for command in (("status", "dev"), ("plan", "dev"), ("logs", "dev", "quick", "--run", "last")):
        no_traceback(deployed.deployer(*command, env=SECRET, timeout=60))
    assert time.monotonic() - started < 60


LINE = json.dumps({"run_id": "0" * 16, "job": "quick", "project": "demo", "env": "dev", "start": "2026-01-01T00:00:00.000Z",
                   "end": "2026-01-01T00:00:01.000Z", "duration": 1.0, "exit_code": 0, "outcome": "success", "host": "h",
                   "pid": 1, "user": TEST_USER, "revision": "r", "trigger": "cron", "log": "runs/x.log"}).encode() + b"\n"


def test_a_350_mb_ledger_is_read_from_its_end_in_linear_time(deployed: Project) -> None:
    lines = 350 * 10 ** 6 // len(LINE) + 1000
    damage("python3", "-c", f"import sys\nwith open({str(LEDGER)!r}, 'ab') as f:\n"
                                 f"    for _ in range({lines // 1000}): f.write({LINE!r} * 1000)\n")
    assert LEDGER.stat().st_size >= 350 * 10 ** 6
    for command in (("status", "dev", "--json"), ("verify", "dev"), ("logs", "dev", "quick", "--run", "last")):
        started = time.monotonic()
        result = deployed.deployer(*command, env=SECRET, timeout=300)
        took = time.monotonic() - started
        no_traceback(result)
        # linear: the end of the file (status, verify), at most 64 MB of it (logs --run), once each
        assert took < 30, f"{command} took {took:.1f}s"


def test_a_sparse_5_gb_env_file_is_not_copied_into_the_backups(deployed: Project) -> None:
    env_file = next((HOME / "current" / "env").iterdir())
    assert env_file.stat().st_uid == 0  # root's: read by the root-started wrapper
    damage("truncate", "-s", "5G", str(env_file))  # takes no room: a hole
    started = time.monotonic()
    apply = deployed.deployer("apply", "dev", "--yes", "--json", env=SECRET, timeout=120)
    no_traceback(apply)
    assert apply.exit_code == 0, apply
    assert time.monotonic() - started < 60
    done = json.loads(apply.stdout)["hosts"]["localhost"]["applied"]
    assert any(step.startswith(f"did not keep the hand-edited {env_file.resolve()}: 5368709120 bytes") for step in done), done
    used = int(subprocess.check_output(["du", "-s", "--block-size=1", str(HOME / "backups")]).split()[0])
    assert used < 1 << 20, f"the backups take {used} bytes"
    assert env_file.stat().st_size < 4096  # restored
    assert deployed.deployer("run", "dev", "quick", env=SECRET).stdout == "quick ran hi\n"


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x1b[31mred\r\x9b1m"


def test_escape_sequences_from_the_target_are_shown_escaped(deployed: Project, tmp_path: Path) -> None:
    deployed.write("tasks/quick.py", f"print({ESCAPES!r})\n")
    assert deployed.deployer("apply", "dev", "--yes", env=SECRET).exit_code == 0
    assert deployed.deployer("run", "dev", "quick", env=SECRET).exit_code == 0
    # and a running marker whose run id is an escape sequence (its pid is gone)
    marker = {"run_id": "\x1b]0;pwned\x07\x00", "start": "2026-01-01T00:00:00.000Z", "pid": 999999999}
    damage("sh", "-c", f"cat > {STATE}/running/evil.json", stdin=json.dumps(marker).encode())

    logs = deployed.deployer("logs", "dev", "quick", env=SECRET)
    assert logs.exit_code == 0, logs
    assert "localhost | \\x1b[2J\\x1b]0;owned\\x07\\x1b[31mred\\r\\x9b1m" in logs.stdout.splitlines(), logs.stdout
    junit = tmp_path / "verify.xml"
    verify = deployed.deployer("verify", "dev", "--junit", str(junit), env=SECRET)
    assert verify.exit_code == 1  # the crashed run
    assert "run \\x1b]0;pwned\\x07\\x00 started " in verify.stdout, verify.stdout
    for result in (logs, verify):
        control = [c for c in result.stdout + result.stderr if not (c.isprintable() or c in "\n\t ")]
        assert control == [], result
    root = ET.parse(junit).getroot()  # valid XML, the NUL and BEL included
    details = [f.get("message") or "" for f in root.iter("failure")]
    assert any("run \\x1b]0;pwned\\x07\\x00 started" in d for d in details), details


def test_a_multi_line_secret_is_redacted_on_every_line(deployed: Project) -> None:
    deployed.write("tasks/quick.py", "import os\nprint('key:')\nprint(os.environ['KEY'])\nprint('end')\n")
    assert deployed.deployer("apply", "dev", "--yes", env=SECRET).exit_code == 0
    ran = deployed.deployer("run", "dev", "quick", env=SECRET)
    assert ran.exit_code == 0
    assert (HOME / "logs" / "quick.log").read_text().count("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj") == 1
    logs = deployed.deployer("logs", "dev", "quick", "-n", "20", env=SECRET)
    as_json = deployed.deployer("logs", "dev", "quick", "-n", "20", "--json", env=SECRET)
    for result in (ran, logs, as_json):
        assert result.exit_code == 0, result
        shown = result.stdout + result.stderr
        for line in PEM.split("\n"):
            assert line not in shown, (line, shown)
    assert "localhost | ********" in logs.stdout.splitlines()
    assert "key:" in ran.stdout and "end" in ran.stdout



def test_a_host_that_answers_is_never_called_unreachable(project: Project, user_crontab: str) -> None:
    # the host is there, but the probe fails on it: sudo refuses the become user
    project.write("tasks/quick.py", "print('never run')\n")
    declare(project, JOBS)
    project.write("inventories/dev/hosts.yml", """\
        all:
          hosts:
            localhost: {ansible_connection: local, ansible_become: true, ansible_become_user: no-such-user}
        """)
    for command in (("status", "dev"), ("logs", "dev", "quick"), ("verify", "dev")):
        result = project.deployer(*command, env=SECRET)
        assert "Traceback" not in result.stdout + result.stderr, result
        assert result.exit_code == 1, result  # failed there, not 4: it was reached
        assert "unknown user no-such-user" in result.stdout + result.stderr, result
