"""Freshness, success and hung-run maths, with facts built here (the clock is ours)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from deployer.core.check import Check
from deployer.core.desired import JobSpec
from deployer.core.facts import Facts
from deployer.core.health import job_checks
from deployer.core.release import Identity
from deployer.core.timing import next_fire, period, previous_fire
from deployer.remote.messages import JobRuntime


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else datetime.fromisoformat(text)


@pytest.mark.parametrize(("schedule", "now", "tz", "expected"), [
    ("*/5 * * * *", "2026-06-01T10:07:00", "UTC", "2026-06-01T10:05:00+00:00"),
    ("*/5 * * * *", "2026-06-01T10:05:00", "UTC", "2026-06-01T10:05:00+00:00"),  # exactly now counts
    ("0 2 * * *", "2026-06-01T10:00:00", "Europe/Paris", "2026-06-01T00:00:00+00:00"),  # 02:00 CEST
    ("0 2 * * *", "2026-01-15T10:00:00", "Europe/Paris", "2026-01-15T01:00:00+00:00"),  # 02:00 CET
    # Spring forward in Paris (2026-03-29 02:00 -> 03:00): 02:30 does not exist that day;
    # cron runs such a job right after the change, at 03:00 CEST = 01:00 UTC.
    ("30 2 * * *", "2026-03-29T05:00:00", "Europe/Paris", "2026-03-29T01:00:00+00:00"),
    # Fall back (2026-10-25 03:00 -> 02:00): 02:30 comes twice; Debian's cron runs a fixed-time
    # job in the first pass only (its main loop runs only wildcard jobs while the clock is
    # back), so the last fire is 02:30 CEST = 00:30 UTC. (croniter said the later 02:30 CET,
    # 01:30 UTC, a run cron never starts; tests/oracle compares with cron's own main loop.)
    ("30 2 * * *", "2026-10-25T05:00:00", "Europe/Paris", "2026-10-25T00:30:00+00:00"),
    ("0 4 1 * *", "2026-06-15T00:00:00", "UTC", "2026-06-01T04:00:00+00:00"),
    ("@reboot", "2026-06-15T00:00:00", "UTC", None),
])
def test_previous_fire(schedule: str, now: str, tz: str, expected: str | None) -> None:
    fire = previous_fire(schedule, at(now), tz)
    assert (fire.isoformat() if fire else None) == expected


def test_next_fire_and_period_across_dst() -> None:
    assert next_fire("0 2 * * *", at("2026-03-28T12:00:00"), "Europe/Paris") == at("2026-03-29T01:00:00")
    assert period("0 * * * *", at("2026-06-01T10:30:00"), "UTC") == timedelta(hours=1)
    assert period("@daily", at("2026-03-29T23:30:00"), "Europe/Paris") == timedelta(hours=24)


def job(schedule: str = "*/5 * * * *", timeout: int = 120) -> JobSpec:
    return JobSpec(id="j", description="", schedule=schedule, script="j.py", command=None, args=(), run_as=None,
                   log_file="/l", lock_file="/k", state_dir="/s", timeout=timeout, concurrency="forbid", workdir=None,
                   env=(), secret_names=frozenset())


def facts(now: str, deployed: str | None, runs: list[dict[str, object]] | None = None, **job_info: object) -> Facts:
    info: dict[str, Any] = {"runs": runs or [], "last_success": next((r for r in reversed(runs or []) if r["outcome"] == "success"), None),
            "running": [], "lock": {"holders": [], "content": ""}}
    info.update(job_info)
    return Facts(hostname="h", identity=Identity("u", 1000, "/home/u"), python="python3", python_version="3.11",
                 deploy_home="/d", users={}, crontabs={}, paths={}, releases={}, current="r", cron_running=True,
                 now=at(now).timestamp(), timezone="UTC", deployed_at=at(deployed).timestamp() if deployed else None,
                 jobs={"j": cast(JobRuntime, info)})


def run(start: str, outcome: str = "success", exit_code: int = 0) -> dict[str, object]:
    return {"start": start + "Z", "outcome": outcome, "exit_code": exit_code}


def details(checks: Sequence[Check]) -> list[tuple[str, str, str]]:
    return [(c.name, c.status, c.detail) for c in checks]


def test_fresh_job_passes() -> None:
    result = details(job_checks(job(), facts("2026-06-01T10:08:00", "2026-06-01T09:00:00", [run("2026-06-01T10:05:01")])))
    assert result == [("freshness", "pass", "last run started 2m ago"), ("success", "pass", "last success 2m ago")]


def test_not_due_since_deploy() -> None:
    result = details(job_checks(job(), facts("2026-06-01T10:08:00", "2026-06-01T10:06:30")))
    assert result[0] == ("freshness", "pass", "not due since the deploy 1m ago")


def test_no_run_since_deploy_is_a_failure() -> None:
    result = details(job_checks(job(), facts("2026-06-01T10:20:00", "2026-06-01T10:00:00")))
    assert result[0] == ("freshness", "fail", "should have run at 2026-06-01 10:15 UTC since the deploy 20m ago but has no run")


def test_a_missed_run_is_a_failure() -> None:
    result = details(job_checks(job(), facts("2026-06-01T10:20:00", "2026-06-01T09:00:00", [run("2026-06-01T10:00:00")])))
    assert result[0] == ("freshness", "fail", "missed its run of 2026-06-01 10:15 UTC: last run started 20m ago")


def test_failures_warn_then_fail() -> None:
    one = [run("2026-06-01T10:00:00"), run("2026-06-01T10:05:00", "failure", 2)]
    assert details(job_checks(job(), facts("2026-06-01T10:06:00", "2026-06-01T09:00:00", one)))[1] == (
        "success", "warn", "last run failure (exit 2); last success 6m ago")
    three = [*one, run("2026-06-01T10:10:00", "timeout", 124), run("2026-06-01T10:15:00", "crashed", 137)]
    assert details(job_checks(job(), facts("2026-06-01T10:16:00", "2026-06-01T09:00:00", three)))[1] == (
        "success", "fail", "3 failed runs in a row; last success 16m ago")


def test_crashed_and_hung_runs() -> None:
    gone = {"run_id": "r1", "start": "2026-06-01T10:05:00Z", "pid": 4242, "alive": False}
    hung = {"run_id": "r2", "start": "2026-06-01T09:00:00Z", "pid": 4343, "alive": True}
    checks = details(job_checks(job(), facts("2026-06-01T10:10:00", "2026-06-01T08:00:00", [run("2026-06-01T10:05:00")],
                                             running=[gone, hung])))
    assert ("runs", "fail", "run r1 started 5m ago never ended and its process 4242 is gone (crashed)") in checks
    assert ("runs", "fail", "run r2 (pid 4343) has run for 1h, past its timeout of 120s") in checks


def test_a_timeout_as_long_as_the_period_is_linted() -> None:
    checks = details(job_checks(job(timeout=600), facts("2026-06-01T10:08:00", "2026-06-01T10:06:30")))
    assert checks[-1] == ("timeout", "warn", "timeout 600s is not shorter than the period (300s): runs will be skipped while one is late")


def test_nothing_is_expected_of_a_job_not_deployed_yet() -> None:
    assert details(job_checks(job(), facts("2026-06-01T10:20:00", None))) == [
        ("freshness", "warn", "not deployed yet: no run is expected")]


def lock(pid: int | None, alive: bool, held: bool = False, age: float = 30.0, kind: str = "file") -> dict[str, object]:
    return {"type": kind, "mode": 0o644, "owner": "u", "group": "u", "pid": pid, "alive": alive, "held": held, "age": age}


def test_legacy_lock_files_of_a_hand_made_setup() -> None:
    locks = {"/tmp/a.lock": lock(4242, alive=False), "/tmp/b.lock": lock(4343, alive=True),
             "/tmp/c.lock": lock(None, alive=False, age=3600), "/tmp/d.lock": lock(None, alive=False, age=10),
             "/tmp/e.lock": lock(None, alive=False, kind="link")}
    checks = details(job_checks(job(), facts("2026-06-01T10:08:00", "2026-06-01T10:06:30", legacy_locks=locks)))
    legacy = [c for c in checks if c[0] == "legacy-lock"]
    assert legacy == [
        ("legacy-lock", "warn", "/tmp/a.lock is stale (pid 4242 is gone): apply removes it"),
        ("legacy-lock", "warn", "/tmp/b.lock names pid 4343, which is running: the hand-made job may still be running (take it out of the crontab)"),
        ("legacy-lock", "warn", "/tmp/c.lock is stale (no pid in it, 60 min old): apply removes it"),
        ("legacy-lock", "warn", "/tmp/d.lock is 10s old and names no process: the hand-made job may still be running (take it out of the crontab)"),
        ("legacy-lock", "warn", "/tmp/e.lock is a link, not a lock file: left alone"),
    ]
