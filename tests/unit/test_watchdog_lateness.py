"""The watchdog's lateness, pure (deployer/remote/lateness.py): the fire it judges, in the
target's zone on DST days, a run going on, a fire before the release; what it reads of a
job's records (ledger tail, running markers) from real files; its crontab line, and that
no reader of the block takes it for a job. The real watchdog against real servers, started
as cron starts it, is in tests/alerts/test_watchdog.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deployer.config.inventory import Target
from deployer.config.load import load_project
from deployer.core.crontab import block_jobs
from deployer.core.desired import JobSpec
from deployer.core.facts import Facts
from deployer.core.plan import plan
from deployer.core.release import Identity, Release, crontab_block, materialize, watches_lateness
from deployer.core.render import render
from deployer.remote import alerts, cronengine, lateness, runalerts, watchdog
from deployer.remote.messages import UserInfo


def _t(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


HOURLY = cronengine.parse("15 * * * *")
GRACE = 300


def test_a_job_with_no_start_since_its_fire_is_late() -> None:
    verdict = lateness.judge(HOURLY, "UTC", _t(2026, 5, 4, 10, 21), GRACE, since=_t(2026, 5, 1), last_start=_t(2026, 5, 4, 9, 15),
                             running=False)
    assert verdict == lateness.Verdict(_t(2026, 5, 4, 10, 15), True, verdict.why)


def test_within_the_grace_the_fire_before_is_judged() -> None:
    # 10:19: the 10:15 fire is still in its grace; the 09:15 one ran
    verdict = lateness.judge(HOURLY, "UTC", _t(2026, 5, 4, 10, 19), GRACE, since=_t(2026, 5, 1), last_start=_t(2026, 5, 4, 9, 15, 1),
                             running=False)
    assert (verdict.due, verdict.late) == (_t(2026, 5, 4, 9, 15), False)


def test_a_start_at_or_after_the_fire_is_not_late_one_before_is() -> None:
    now, due = _t(2026, 5, 4, 10, 21), _t(2026, 5, 4, 10, 15)
    assert not lateness.judge(HOURLY, "UTC", now, GRACE, 0, due, False).late
    assert lateness.judge(HOURLY, "UTC", now, GRACE, 0, due - 1, False).late  # a manual run just before does not count


def test_a_job_running_now_is_not_late() -> None:
    verdict = lateness.judge(HOURLY, "UTC", _t(2026, 5, 4, 10, 21), GRACE, since=0, last_start=None, running=True)
    assert (verdict.due, verdict.late) == (_t(2026, 5, 4, 10, 15), False)


def test_a_fire_before_the_release_became_current_is_not_judged() -> None:
    now = _t(2026, 5, 4, 10, 21)
    assert not lateness.judge(HOURLY, "UTC", now, GRACE, since=_t(2026, 5, 4, 10, 15, 30), last_start=None, running=False).late
    assert lateness.judge(HOURLY, "UTC", now, GRACE, since=_t(2026, 5, 4, 10, 14, 59), last_start=None, running=False).late


def test_on_the_spring_dst_day_the_skipped_time_is_due_when_cron_runs_it() -> None:
    # Europe/Paris, 2026-03-29: 02:00 -> 03:00. Debian cron runs a 02:30 job at 03:00 CEST (01:00 UTC).
    daily = cronengine.parse("30 2 * * *")
    verdict = lateness.judge(daily, "Europe/Paris", _t(2026, 3, 29, 1, 6), GRACE, 0, last_start=_t(2026, 3, 28, 1, 30), running=False)
    assert (verdict.due, verdict.late) == (_t(2026, 3, 29, 1, 0), True)
    assert not lateness.judge(daily, "Europe/Paris", _t(2026, 3, 29, 1, 6), GRACE, 0, _t(2026, 3, 29, 1, 0, 2), False).late


def test_on_the_autumn_dst_day_a_fixed_time_is_due_once_at_its_first_occurrence() -> None:
    # Europe/Paris, 2026-10-25: 02:30 happens twice (00:30 and 01:30 UTC); Debian cron runs the job once, at the first.
    daily = cronengine.parse("30 2 * * *")
    verdict = lateness.judge(daily, "Europe/Paris", _t(2026, 10, 25, 1, 40), GRACE, 0, last_start=_t(2026, 10, 25, 0, 30, 1),
                             running=False)
    assert (verdict.due, verdict.late) == (_t(2026, 10, 25, 0, 30), False)


def test_reboot_has_no_fire_to_miss() -> None:
    verdict = lateness.judge(cronengine.parse("@reboot"), "UTC", _t(2026, 5, 4), GRACE, 0, None, False)
    assert (verdict.due, verdict.late) == (None, False)


def test_grace_is_declared_or_derived_from_timeout_and_gap() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert lateness.grace_seconds(600, HOURLY, 7200, now) == 600
    assert lateness.grace_seconds(None, HOURLY, 7200, now) == 3600 + lateness.CRON_SLACK  # at most the period
    assert lateness.grace_seconds(None, HOURLY, 240, now) == 240 + lateness.CRON_SLACK
    assert lateness.grace_seconds(None, cronengine.parse("@reboot"), 240, now) == 240 + lateness.CRON_SLACK


# ----------------------------------------------------------------------------- the job's records, real files


def _marker(folder: Path, name: str, start: float, wrapper_pid: int) -> None:
    (folder / "running").mkdir(exist_ok=True)
    start_iso = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    (folder / "running" / name).write_text(json.dumps({"run_id": name, "start": start_iso, "wrapper_pid": wrapper_pid}))


def test_a_run_going_on_is_a_marker_whose_wrapper_lives_and_is_recent(tmp_path: Path) -> None:
    now = time.time()
    assert not watchdog.run_going_on(str(tmp_path), 60, now)
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    _marker(tmp_path, "a.json", now - 10, dead.pid)  # its wrapper is gone (killed -9): no run
    assert not watchdog.run_going_on(str(tmp_path), 60, now)
    _marker(tmp_path, "b.json", now - 3600, os.getpid())  # alive, but older than its timeout allows: a reused pid
    assert not watchdog.run_going_on(str(tmp_path), 60, now)
    _marker(tmp_path, "c.json", now - 10, os.getpid())
    assert watchdog.run_going_on(str(tmp_path), 60, now)


def test_the_ledger_tail_gives_the_latest_start_whatever_its_garbage(tmp_path: Path) -> None:
    assert watchdog.last_ledger_start(str(tmp_path)) == (None, None)
    filler = json.dumps({"run_id": "x", "start": "2026-05-01T00:00:00.000Z", "pad": "x" * 1000}) + "\n"
    lines = [filler] * 100 + ['{"start": "2026-05-04T10:15:00.250Z", "outcome": "success"}\n', "not json\n", "[]\n",
                              '{"start": 5}\n', '{"start": "2026-05-03T00:00:00.000Z"}\n', '{"start": "cut']
    (tmp_path / "ledger.jsonl").write_text("".join(lines))
    assert watchdog.last_ledger_start(str(tmp_path)) == (_t(2026, 5, 4, 10, 15) + 0.25, None)


def test_a_ledger_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text('{"start": "2030-01-01T00:00:00.000Z"}\n')
    (tmp_path / "ledger.jsonl").symlink_to(elsewhere)
    start, problem = watchdog.last_ledger_start(str(tmp_path))
    assert start is None and problem is not None and "symlink" in problem


# ----------------------------------------------------------------------------- its crontab line


def _job(job_id: str, alerts: Mapping[str, object] | None) -> JobSpec:
    return JobSpec(id=job_id, description="", schedule="15 * * * *", script="j.py", command=None, args=(), run_as=None,
                   log_file="/l", lock_file="/k", state_dir=f"/s/{job_id}", timeout=60, concurrency="forbid", workdir=None,
                   env=(), secret_names=frozenset(), alerts=json.dumps(alerts) if alerts is not None else None)


LATE = {"rules": {"when": ["failure", "late"]}, "channels": [{"name": "team", "type": "webhook"}]}


def test_the_watchdog_line_comes_with_late_alerts_to_a_channel_only() -> None:
    plain, late = _job("plain", None), _job("late", LATE)
    no_late = _job("nolate", {**LATE, "rules": {"when": ["failure"]}})
    no_channel = _job("nochannel", {**LATE, "channels": []})
    assert [watches_lateness(j) for j in (plain, late, no_late, no_channel)] == [False, True, False, False]
    without = crontab_block("demo", "dev", "r1", [plain, no_late, no_channel], "python3", "/h/releases/r1")
    assert "watchdog" not in without
    block = crontab_block("demo", "dev", "r1", [plain, late], "python3", "/h/releases/r1", "busybox")
    assert block.splitlines()[-3:] == ["# watchdog: tells of late jobs (alerts when: late), every 5 minutes",
                                       "*/5 * * * * python3 -I /h/releases/r1/watchdog --flavour busybox",
                                       "# END deployer demo/dev"]
    assert block_jobs(block) == {"plain", "late"}  # rollback, destroy, `deployer run` and verify read it so
    under_run = crontab_block("demo", "dev", "r1", [late], "python3", "/run/deployer/releases/r1", "busybox")
    assert block_jobs(under_run) == {"late"}  # a home under /run: its watchdog line is still no job's
    quoted = crontab_block("demo", "dev", "r1", [replace(late, id="a-b")], "python3", "/my home/releases/r1")
    assert "python3 -I '/my home/releases/r1/watchdog'\n" in quoted and block_jobs(quoted) == {"a-b"}


def _release(tmp_path: Path, who: Identity, run_as: list[str | None]) -> Release:
    """A release of jobs j0, j1... (each run as the given user) whose alerts tell ``late``."""
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "a.py").write_text("print('a')\n")
    (tmp_path / "inv").mkdir(exist_ok=True)
    (tmp_path / "inv" / "hosts.yml").write_text("all: {hosts: {h1: {ansible_connection: local}}}\n")
    jobs = "".join(f"  j{i}:\n    script: tasks/a.py\n    schedule: '@hourly'\n" + (f"    run_as: {user}\n" if user else "")
                   for i, user in enumerate(run_as))
    (tmp_path / "deployer.yml").write_text(
        "project: p\nalerts:\n  channels: {team: {webhook: {url: 'http://127.0.0.1:9/hook'}}}\n  rules: {when: [late]}\n"
        f"jobs:\n{jobs}environments:\n  dev:\n    inventory: inv\n")
    project = load_project(tmp_path / "deployer.yml")
    target = Target("h1", "local")
    return materialize(render(project, project.environment("dev"), target, [target]), who)


def _watchdog_lines(release: Release) -> list[str]:
    return [line for block in release.crontab_blocks.values() for line in block.splitlines()
            if "/watchdog" in line and not line.startswith("#")]


@pytest.mark.parametrize(("who", "run_as"), [
    (Identity("root", 0, "/root"), ["www-data", "nobody", None, "root"]),  # root: every job in root's crontab
    (Identity("alice", 1000, "/home/alice"), [None, "alice"]),  # a user: every job its own, in its own crontab
])
def test_a_release_has_one_watchdog_line_so_each_late_job_is_judged_once(tmp_path: Path, who: Identity,
                                                                          run_as: list[str | None]) -> None:
    # The watchdog judges every late-alerting job of its release (watchdog.Watch.jobs), not
    # the jobs of its own block: right while a release installs one block, which it does.
    release = _release(tmp_path, who, run_as)
    assert list(release.crontab_blocks) == [who.user]
    assert len(_watchdog_lines(release)) == 1


def test_a_user_cannot_deploy_jobs_of_another_user_so_no_second_block_judges_them(tmp_path: Path) -> None:
    # Jobs of two users deployed by a non-root user would make two blocks, each with a
    # watchdog line judging both jobs: plan refuses the release before that.
    alice = Identity("alice", 1000, "/home/alice")
    release = _release(tmp_path, alice, [None, "bob"])
    assert len(_watchdog_lines(release)) == 2  # what would be installed
    users: dict[str, UserInfo | None] = {"bob": {"uid": 1001, "gid": 1001, "home": "/home/bob"}}
    facts = Facts(hostname="h1", identity=alice, python="/usr/bin/python3", python_version="3.11",
                  deploy_home=release.deploy_home, users=users, crontabs={}, paths={}, releases={}, current=None,
                  cron_running=True)
    refused = plan(release, facts)
    assert refused.errors == ["job 'j1' runs as 'bob', but deployer connects as 'alice', who is not root: "
                              "set ansible_become: true (sudo) or run_as: alice"]


# ----------------------------------------------------------------------------- the state lock the wrapper shares


def test_the_state_lock_waits_a_bounded_time_and_refuses_a_link(tmp_path: Path) -> None:
    with alerts.state_lock(str(tmp_path), 0.2) as problem:
        assert problem is None
        with alerts.state_lock(str(tmp_path), 0.2) as second:  # another holder (flock: per open file)
            assert second is not None and "not had within" in second
    with alerts.state_lock(str(tmp_path), 0.2) as problem:
        assert problem is None  # released
    (tmp_path / alerts.STATE_LOCK).unlink()
    (tmp_path / alerts.STATE_LOCK).symlink_to(tmp_path / "elsewhere")
    with alerts.state_lock(str(tmp_path), 0.2) as problem:
        assert problem is not None and "symlink" in problem
    assert not (tmp_path / "elsewhere").exists()


def test_a_run_whose_state_lock_is_held_still_keeps_its_state_and_says_so(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "LOCK_WAIT", 0.2)
    config: dict[str, Any] = {"project": "demo", "env": "dev", "job": "j", "rules": {"when": ["failure"], "after": 1, "quiet": 60},
                              "channels": [], "ping": None, "metrics_dir": None}
    spec = {"id": "j", "project": "demo", "env": "dev", "schedule": "* * * * *", "state_dir": str(tmp_path)}
    run = runalerts.RunAlerts(config, spec, "r1", "host")  # type: ignore[arg-type]  # the fields it reads
    with alerts.state_lock(str(tmp_path), 0.2) as held:  # the watchdog's round, say
        assert held is None
        started = time.monotonic()
        run.ended("failure", 1, time.time() - 1, time.time(), b"", ())
        assert time.monotonic() - started < 5
    assert any("not had within" in e for e in run.errors), run.errors
    assert json.loads((tmp_path / "alerts.json").read_text())["consecutive_failures"] == 1
