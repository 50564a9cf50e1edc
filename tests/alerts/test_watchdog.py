"""The on-target watchdog, end to end: root deploys a job (run as the test user) whose alerts
tell ``late`` to a real SMTP relay and a real HTTP server on the loopback; the watchdog line
is read from root's real crontab and its command run as cron runs it (root, ``sh -c``, cron's
environment); a successful `deployer run` then tells the recovery. Its line in the managed
block: verify passes, a second apply changes nothing, destroy takes it away. And the job's
user cannot lead root's watchdog through a link or make it believe forged records."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployer.remote.hostzone import target_timezone
from tests.alerts.servers import Relay, Web, channels_yaml, smtp_relay, web_server
from tests.conftest import BLOCK_USER, TEST_USER, Project, read_crontab, write_crontab

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

HOME = Path("/var/lib/deployer/demo-dev")
STATE = HOME / "state" / "nightly"
SECRETS = {"SMTP_PASSWORD": "relay-password-1", "HOOK_TOKEN": "Bearer hook-7d8e9f"}
# What cron gives a root crontab's command (Debian cron: entry.c / do_command.c), nothing of ours.
CRON_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LOGNAME": "root", "SHELL": "/bin/sh"}


def a_minute_half_an_hour_away() -> int:
    """A minute of the hour that is about 30 minutes from now in the target's zone: its last
    fire is long past its grace, and its next one comes after the test (the session's cron
    daemon, if one runs, must not start the job)."""
    return (datetime.now(ZoneInfo(target_timezone())).minute + 30) % 60


def declaration(relay: Relay, web: Web, schedule: str, when: str = "[failure, late, recovered]", quiet: str | None = None) -> str:
    return f"""\
project: demo
defaults:
  run_as: {TEST_USER}
  timeout: 1m
alerts:
{channels_yaml("127.0.0.1", relay.port, relay.ca_file, web.url + "/hook")}
  rules: {{when: {when}{f", quiet: {quiet}" if quiet else ""}}}
jobs:
  nightly:
    script: tasks/hello.py
    schedule: "{schedule}"
    alerts: {{grace: 1m}}
environments:
  dev:
    inventory: inventories/dev
"""


def deploy(project: Project, relay: Relay, web: Web, *, current_since: float | None = None, quiet: str | None = None) -> None:
    project.declare(declaration(relay, web, f"{a_minute_half_an_hour_away()} * * * *", quiet=quiet))
    result = project.deployer("apply", "dev", "--yes", env=SECRETS)
    assert result.exit_code == 0, result
    if current_since is not None:
        # The release became current "an hour ago": the watchdog judges only fires after that
        # (lateness.judge), and a fire that comes while the test runs would be the session's
        # cron daemon's to start. Dating the link back is the one thing not done for real.
        os.utime(HOME / "current", (current_since, current_since), follow_symlinks=False)


def watchdog_line() -> tuple[str, str]:
    """The watchdog's schedule and command, from root's real crontab."""
    lines = [line for line in (read_crontab(BLOCK_USER) or "").splitlines() if "/watchdog" in line and not line.startswith("#")]
    assert len(lines) == 1, lines
    fields = lines[0].split(" ", 5)
    return " ".join(fields[:5]), fields[5]


def run_as_cron(command: str) -> subprocess.CompletedProcess[str]:
    """The command as cron runs it: /bin/sh -c, root, cron's environment, from root's home."""
    return subprocess.run(["/bin/sh", "-c", command], env=CRON_ENV, cwd="/root", capture_output=True, text=True, timeout=120,
                          check=False)


def events(relay: Relay, web: Web) -> tuple[list[str], list[str]]:
    mails = [str(m["X-Deployer-Event"]) for m in relay.messages]
    hooks = [json.loads(r.body)["event"] for r in web.requests if r.path == "/hook"]
    return mails, hooks


def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HOME / "state" / "watchdog.json").read_text())
    return data


def test_a_job_that_did_not_start_is_told_late_once_then_its_recovery(project: Project, user_crontab: str,
                                                                      tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay, web_server() as web:
        deploy(project, relay, web, current_since=time.time() - 3600)
        schedule, command = watchdog_line()
        assert schedule == "*/5 * * * *"
        release = (HOME / "current").resolve()
        assert command == f"python3 -I {release}/watchdog"

        first = run_as_cron(command)
        assert (first.returncode, first.stderr) == (0, "")
        assert events(relay, web) == (["late"], ["late"])
        mail = relay.messages[0]
        assert mail["Subject"].startswith("[demo/dev] nightly is late on ") and "no start since" in mail["Subject"]
        assert "grace 60s" in mail.get_content()
        hook = next(json.loads(r.body) for r in web.requests if r.path == "/hook")
        assert hook["event"] == "late" and hook["job"] == "nightly"
        assert web.requests[0].headers["authorization"] == SECRETS["HOOK_TOKEN"]
        seen = record()["jobs"]["nightly"]
        assert seen["late"] is True and seen["grace"] == 60 and seen["errors"] == []
        assert sorted((d["channel"], d["event"], d["ok"]) for d in seen["sent"]["deliveries"]) == [
            ("oncall", "late", True), ("team", "late", True)]
        kept = json.loads((STATE / "alerts.json").read_text())  # what status and verify show of it
        assert (kept["incident"]["event"], kept["last_alert"]["event"], kept["last_alert"]["channels"]) == (
            "late", "late", ["oncall", "team"])
        shown = project.deployer("status", "dev", "--json", env=SECRETS)
        assert shown.exit_code == 0, shown
        row = next(r for r in json.loads(shown.stdout)["jobs"] if r["job"] == "nightly")
        assert (row["alerts"]["incident"]["event"], row["alerts"]["last_alert"]["event"]) == ("late", "late")

        second = run_as_cron(command)  # the next round: the same incident, told already
        assert (second.returncode, second.stderr) == (0, "")
        assert events(relay, web) == (["late"], ["late"])
        assert record()["jobs"]["nightly"]["sent"] == seen["sent"]  # the last message sent stays on record

        ran = project.deployer("run", "dev", "nightly", env=SECRETS)
        assert ran.exit_code == 0, ran
        assert events(relay, web) == (["late", "recovered"], ["late", "recovered"])
        assert relay.messages[1]["Subject"].startswith("[demo/dev] nightly recovered on ")

        third = run_as_cron(command)  # a run started since the fire: not late
        assert (third.returncode, third.stderr) == (0, "")
        assert events(relay, web) == (["late", "recovered"], ["late", "recovered"])
        assert record()["jobs"]["nightly"]["late"] is False

    state = STATE / "alerts.json"
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (0, 0o600)
    assert json.loads(state.read_text())["incident"] is None
    written = (HOME / "state" / "watchdog.json").read_text()
    for secret in [*SECRETS.values(), "hook-7d8e9f", "127.0.0.1"]:
        assert secret not in written


def test_a_late_message_a_dead_channel_missed_is_sent_by_the_next_round_once(project: Project, user_crontab: str,
                                                                              tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay, web_server() as web:
        # quiet 1s: a channel owed the message is tried again by the next round (5 minutes
        # after its last try, or the quiet period if shorter; the rounds here come seconds apart)
        deploy(project, relay, web, current_since=time.time() - 3600, quiet="1s")
        _, command = watchdog_line()
        web.status = 500
        first = run_as_cron(command)
        assert first.returncode == 1 and first.stderr.splitlines() == [
            "deployer watchdog: nightly: late to team failed: HTTP 500 Internal Server Error"], first
        mails, _ = events(relay, web)
        assert mails == ["late"] and [r.status for r in web.requests if r.path == "/hook"][-1] == 500
        incident = json.loads((STATE / "alerts.json").read_text())["incident"]
        assert (incident["told_to"], incident["owed"], incident["tries"]) == (["oncall"], ["team"], 1)

        web.status = 200
        second = run_as_cron(command)  # the next round: the late message to the webhook alone
        assert (second.returncode, second.stderr) == (0, "")
        delivered = [json.loads(r.body) for r in web.requests if r.path == "/hook" and r.status == 200]
        assert [(h["event"], h["attempt"]) for h in delivered] == [("late", 2)]
        assert "(repeated: incident since " in delivered[0]["text"]
        assert events(relay, web)[0] == ["late"]  # the relay took it the first time: not told twice
        assert [(d["channel"], d["ok"]) for d in record()["jobs"]["nightly"]["sent"]["deliveries"]] == [("team", True)]
        third = run_as_cron(command)  # told to every channel: nothing more
        assert (third.returncode, third.stderr) == (0, "")
        hooks = [json.loads(r.body)["event"] for r in web.requests if r.path == "/hook" and r.status == 200]
        assert (events(relay, web)[0], hooks) == (["late"], ["late"])

        ran = project.deployer("run", "dev", "nightly", env=SECRETS)
        assert ran.exit_code == 0, ran
        hooks = [json.loads(r.body)["event"] for r in web.requests if r.path == "/hook" and r.status == 200]
        assert (events(relay, web)[0], hooks) == (["late", "recovered"], ["late", "recovered"])


def test_the_watchdog_line_verifies_clean_applies_once_and_goes_with_destroy(project: Project, user_crontab: str, cron_daemon: int,
                                                                             tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay, web_server() as web:
        deploy(project, relay, web)
        crontab = read_crontab(BLOCK_USER)
        release = (HOME / "current").resolve()
        # The mtime of `current` is the watchdog's baseline (fires before it are not judged):
        # an apply of the same release must leave the link alone, or it would forget a miss.
        baseline = (HOME / "current").lstat().st_mtime_ns
        assert (release / "watchdog").stat().st_mode & 0o777 == 0o755
        verify = project.deployer("verify", "dev", env=SECRETS)
        assert verify.exit_code == 0, verify
        assert "holds the declared block (1 job)" in verify.stdout, verify.stdout
        again = project.deployer("apply", "dev", "--yes", env=SECRETS)
        assert again.exit_code == 0, again
        assert read_crontab(BLOCK_USER) == crontab and (HOME / "current").resolve() == release
        assert (HOME / "current").lstat().st_mtime_ns == baseline
        assert project.deployer("plan", "dev", "--detailed-exitcode", env=SECRETS).exit_code == 0

        # The line is part of the block: taken out by hand, verify says so and apply puts it back.
        assert crontab is not None
        write_crontab(BLOCK_USER, "".join(line for line in crontab.splitlines(keepends=True) if "/watchdog" not in line))
        drifted = project.deployer("verify", "dev", env=SECRETS)
        assert drifted.exit_code == 1 and "edited by hand" in drifted.stdout, drifted
        assert project.deployer("apply", "dev", "--yes", env=SECRETS).exit_code == 0
        assert read_crontab(BLOCK_USER) == crontab
        assert (HOME / "current").lstat().st_mtime_ns == baseline  # the same release: not made current again

        # Without late among its rules, the release has no watchdog and the block no line for it.
        project.declare(declaration(relay, web, "0 3 * * *", when="[failure, recovered]"))
        assert project.deployer("apply", "dev", "--yes", env=SECRETS).exit_code == 0
        assert "/watchdog" not in (read_crontab(BLOCK_USER) or "")
        assert not ((HOME / "current").resolve() / "watchdog").exists()

        # Rollback puts the release with the watchdog back, its line with it, and hands over the
        # records of the block's jobs only (core/crontab.block_jobs: the watchdog's line is no job's).
        back = project.deployer("rollback", "dev", "--yes", env=SECRETS)
        assert back.exit_code == 0, back
        assert read_crontab(BLOCK_USER) == crontab and (HOME / "current").resolve() == release
        assert sorted(p.name for p in (HOME / "state").iterdir() if p.is_dir()) == ["nightly"]
        verify = project.deployer("verify", "dev", env=SECRETS)
        assert verify.exit_code == 0, verify
        gone = project.deployer("destroy", "dev", "--yes", env=SECRETS)
        assert gone.exit_code == 0, gone
        assert "/watchdog" not in (read_crontab(BLOCK_USER) or "")


def test_the_jobs_user_cannot_lead_roots_watchdog_astray(project: Project, user_crontab: str, tmp_path: Path) -> None:
    user = pwd.getpwnam(TEST_USER)
    with smtp_relay(tmp_path) as relay, web_server() as web:
        deploy(project, relay, web, current_since=time.time() - 3600)
        _, command = watchdog_line()
        st = STATE.stat()
        assert (st.st_uid, st.st_mode & 0o022) == (0, 0)  # root's: the job's user cannot write there
        # What the job's user would plant if it could (it cannot: root owns the folder; the test,
        # as root, puts it there): a ledger that is a link to its own file saying the job ran,
        # an alert state of its own saying the incident was told, a running marker of its own.
        forged = Path(user.pw_dir) / "forged-ledger.jsonl"
        forged_text = '{"start": "2099-01-01T00:00:00.000Z", "outcome": "success"}\n'
        forged.write_text(forged_text)
        os.chown(forged, user.pw_uid, user.pw_gid)
        (STATE / "ledger.jsonl").symlink_to(forged)
        told = {"version": 1, "incident": {"opened": 1.0, "event": "late", "told": True}, "last_told": time.time(), "untold": 0,
                "consecutive_failures": 0, "last_run": time.time(), "last_success": None, "last_exit_code": None,
                "last_duration": None}
        (STATE / "alerts.json").write_text(json.dumps(told))
        os.chown(STATE / "alerts.json", user.pw_uid, user.pw_gid)
        (STATE / "running").mkdir(exist_ok=True)
        marker = {"run_id": "f", "start": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "wrapper_pid": os.getpid()}
        (STATE / "running" / "f.json").write_text(json.dumps(marker))
        os.chown(STATE / "running" / "f.json", user.pw_uid, user.pw_gid)

        done = run_as_cron(command)
        assert done.returncode == 1, done
        problems = done.stderr.splitlines()
        assert all(line.startswith("deployer watchdog: nightly: ") for line in problems), problems
        assert any("ledger.jsonl" in line and "symlink" in line for line in problems), problems
        assert any("alerts.json" in line and f"uid {user.pw_uid}" in line for line in problems), problems
        assert "Traceback" not in done.stderr
        assert events(relay, web) == (["late"], ["late"])  # none of it was believed

    assert forged.read_text() == forged_text and (STATE / "ledger.jsonl").is_symlink()
    state = STATE / "alerts.json"
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (0, 0o600)
    assert json.loads(state.read_text())["incident"]["told"] is True
