"""Alert thresholds derived from a job's schedule and timeout. Pure.

Prometheus' guidance for batch jobs is to alert when the last success is older than about
two periods; healthchecks.io's is a period and a grace. Both need the schedule's period,
which for a cron schedule is not one number ("0 9 * * 1-5" fires a day apart, then three
days): the longest gap between fires is the one that must not raise a false alarm.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from deployer.config.project import Job
from deployer.core.timing import fires_after
from deployer.remote.cronengine import DEFAULT_FLAVOUR

CRON_SLACK = 120  # seconds cron may start a job late (a busy or just-woken daemon), as verify's freshness allows
_GAPS_LOOKED_AT = 400  # fires looked at for the longest gap: a year of a daily job, ~7 hours of a minutely one
_HORIZON = timedelta(days=400)


def longest_gap(schedule: str, now: datetime, flavour: str = DEFAULT_FLAVOUR) -> int | None:
    """The longest time between two fires from ``now`` on, in seconds (UTC: the zone moves a
    gap by an hour at most, which the grace covers); None for @reboot or a schedule that
    fires fewer than twice."""
    fires = fires_after(schedule, now, "UTC", _GAPS_LOOKED_AT, flavour)
    fires = [f for f in fires if f - now <= _HORIZON] or fires[:2]
    if len(fires) < 2:
        return None
    return int(max((b - a).total_seconds() for a, b in itertools.pairwise(fires)))


def grace_seconds(job: Job, now: datetime, flavour: str = DEFAULT_FLAVOUR) -> int:
    """How long after a scheduled time a job is late: the declared ``alerts.grace``, else the
    time a run may take (its timeout, at most the period) plus CRON_SLACK."""
    if job.alerts.grace is not None:
        return job.alerts.grace
    gap = longest_gap(job.schedule, now, flavour)
    return min(job.timeout, gap if gap is not None else job.timeout) + CRON_SLACK
