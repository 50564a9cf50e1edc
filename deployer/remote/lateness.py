"""When a job is late: its grace and the fire it missed. Pure; runs on the target and the controller.

Standard library only (plus the cron engine): the watchdog on the target judges lateness
with it, and the controller derives the same grace from it for ``deployer alerts`` and
the Prometheus rules (core/alerting.py), so both ends use one definition.

Prometheus' guidance for batch jobs is to alert when the last success is older than about
two periods; healthchecks.io's is a period and a grace. Both need the schedule's period,
which for a cron schedule is not one number ("0 9 * * 1-5" fires a day apart, then three
days): the longest gap between fires is the one that must not raise a false alarm.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from deployer.remote import cronengine

CRON_SLACK = 120  # seconds cron may start a job late (a busy or just-woken daemon), as verify's freshness allows
_GAPS_LOOKED_AT = 400  # fires looked at for the longest gap: a year of a daily job, ~7 hours of a minutely one
_HORIZON = timedelta(days=400)


def longest_gap(entry: cronengine.Entry, now: datetime) -> int | None:
    """The longest time between two fires from ``now`` on, in seconds (UTC: the zone moves a
    gap by an hour at most, which the grace covers); None for @reboot or a schedule that
    fires fewer than twice."""
    fires = cronengine.fires_after(entry, now, "UTC", _GAPS_LOOKED_AT)
    fires = [f for f in fires if f - now <= _HORIZON] or fires[:2]
    if len(fires) < 2:
        return None
    return int(max((b - a).total_seconds() for a, b in itertools.pairwise(fires)))


def grace_seconds(declared: int | None, entry: cronengine.Entry, timeout: int, now: datetime) -> int:
    """How long after a scheduled time a job is late: the declared grace, else the time a run
    may take (its timeout, at most the longest gap between fires) plus CRON_SLACK."""
    if declared is not None:
        return declared
    gap = longest_gap(entry, now)
    return min(timeout, gap if gap is not None else timeout) + CRON_SLACK


@dataclass(frozen=True)
class Verdict:
    """What the watchdog found of one job: the fire it judged (epoch seconds, None: none to
    judge), whether the job missed it, and why, in words for its record."""

    due: float | None
    late: bool
    why: str


def judge(entry: cronengine.Entry, tz: str, now: float, grace: int, since: float, last_start: float | None,
          running: bool) -> Verdict:
    """Whether the job is late at ``now``: the latest fire ``due`` with due + grace <= now was
    after ``since`` (when the release that runs the job became current: a fire before it was
    not this schedule's to run), no run started at or after it, and none is going on."""
    moment = datetime.fromtimestamp(now - grace, UTC)
    fire = cronengine.previous_fire(entry, moment, tz)
    if fire is None:
        return Verdict(None, False, "the schedule has no fire to miss")
    due = fire.timestamp()
    if due <= since:
        return Verdict(due, False, "no fire due since the release became current")
    if running:
        return Verdict(due, False, "a run is going on")
    if last_start is not None and last_start >= due:
        return Verdict(due, False, "a run started since the fire was due")
    return Verdict(due, True, f"no run started since the fire it was due at, {grace}s of grace past")
