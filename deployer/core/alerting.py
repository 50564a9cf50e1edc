"""Alert thresholds derived from a job's schedule and timeout. Pure.

The rule itself lives in deployer/remote/lateness.py, target code: the watchdog judges
lateness on the target with the same grace that ``deployer alerts`` shows and the
Prometheus rules use. The alert config carries only a declared grace (a derived one
depends on the day it is computed, and the release's bytes must not).
"""

from __future__ import annotations

from datetime import datetime

from deployer.config.project import Job
from deployer.core.timing import entry_of
from deployer.remote import lateness
from deployer.remote.cronengine import DEFAULT_FLAVOUR
from deployer.remote.lateness import CRON_SLACK

__all__ = ["CRON_SLACK", "grace_seconds", "longest_gap"]


def longest_gap(schedule: str, now: datetime, flavour: str = DEFAULT_FLAVOUR) -> int | None:
    """The longest time between two fires from ``now`` on, in seconds (see lateness.longest_gap)."""
    return lateness.longest_gap(entry_of(schedule, flavour), now)


def grace_seconds(job: Job, now: datetime, flavour: str = DEFAULT_FLAVOUR) -> int:
    """How long after a scheduled time a job is late: the declared ``alerts.grace``, else the
    time a run may take (its timeout, at most the period) plus CRON_SLACK."""
    return lateness.grace_seconds(job.alerts.grace, entry_of(job.schedule, flavour), job.timeout, now)
