"""verify's freshness on the schedules croniter got wrong: no false "missed its run", and a
real miss still reported. Fixed clock (the facts' now), no wall clock."""

from __future__ import annotations

import pytest

from deployer.core.health import job_checks
from tests.unit.test_health import facts, job


def freshness(schedule: str, now: str, deployed: str, last_start: str | None, tz: str = "UTC") -> tuple[str, str]:
    runs = [{"start": last_start + "+00:00", "outcome": "success", "exit_code": 0}] if last_start else []
    f = facts(now, deployed, runs)
    f = type(f)(**{**f.__dict__, "timezone": tz})
    check = next(c for c in job_checks(job(schedule, timeout=30), f) if c.name == "freshness")
    return check.status, check.detail


@pytest.mark.parametrize(("schedule", "now", "deployed", "last_start", "tz"), [
    # '*/2' starts with '*': cron ANDs the day fields (odd days that are Mondays); the 3rd
    # (a Wednesday) is not due
    ("0 0 */2 * 1", "2026-06-04T12:00:00", "2026-06-01T12:00:00", None, "UTC"),
    # '*,1' likewise: due on Mondays only
    ("0 0 *,1 * mon", "2026-06-04T12:00:00", "2026-06-01T12:00:00", None, "UTC"),
    # an equal-ends range is one value, not the whole field: not due at minute 10
    ("5-5 * * * *", "2026-06-01T10:12:00", "2026-06-01T09:30:00", "2026-06-01T10:05:01", "UTC"),
    # the autumn night in Paris: 02:30 comes twice, cron runs a fixed-time job once (00:30 UTC)
    ("30 2 * * *", "2026-10-25T05:00:00", "2026-10-20T00:00:00", "2026-10-25T00:30:01", "Europe/Paris"),
    # the spring night: 02:30 does not exist, cron runs it at the jump (01:00 UTC)
    ("30 2 * * *", "2026-03-29T05:00:00", "2026-03-20T00:00:00", "2026-03-29T01:00:01", "Europe/Paris"),
    # the most common schedule on the autumn night
    ("0 2 * * *", "2026-10-25T05:00:00", "2026-10-20T00:00:00", "2026-10-25T00:00:01", "Europe/Paris"),
])
def test_no_false_missed_run(schedule: str, now: str, deployed: str, last_start: str | None, tz: str) -> None:
    status, detail = freshness(schedule, now, deployed, last_start, tz)
    assert status == "pass", detail


def test_a_real_miss_on_the_spring_night_is_still_reported() -> None:
    # the run cron starts at the jump (03:00 CEST = 01:00 UTC) did not happen: the last run
    # is the day before's
    status, detail = freshness("30 2 * * *", "2026-03-29T05:00:00", "2026-03-20T00:00:00", "2026-03-28T01:30:01",
                               "Europe/Paris")
    assert (status, detail) == ("fail", "missed its run of 2026-03-29 01:00 UTC: last run started 1d ago")


def test_an_anded_day_rule_still_reports_the_monday_it_missed() -> None:
    # 2026-06-15 is an odd Monday: '0 0 */2 * 1' was due then
    status, detail = freshness("0 0 */2 * 1", "2026-06-16T12:00:00", "2026-06-10T00:00:00", None)
    assert status == "fail"
    assert detail.startswith("should have run at 2026-06-15 00:00 UTC")
