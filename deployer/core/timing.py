"""Cron-schedule maths: previous and next fire times, period, words. Pure.

croniter does the maths (maintained, DST-aware: a time skipped by a spring-forward fires
just after the change, as Debian's cron does); cron-descriptor says it in words.
Times are evaluated in the target's timezone, since that is the one its cron uses.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options
from croniter import croniter

from deployer.config.schedule import ALIASES


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _expression(schedule: str) -> str | None:
    if schedule.startswith("@"):
        return ALIASES.get(schedule)  # @reboot has no time: None
    return schedule


def previous_fire(schedule: str, now: datetime, tz: str) -> datetime | None:
    """The last time at or before ``now`` that cron starts this schedule (aware, UTC)."""
    expression = _expression(schedule)
    if expression is None:
        return None
    local = now.astimezone(zone(tz))
    # croniter's get_prev is strictly before its start: nudge so that "exactly now" counts.
    fire: datetime = croniter(expression, local + timedelta(seconds=1)).get_prev(datetime)
    return fire.astimezone(timezone.utc)


def next_fire(schedule: str, now: datetime, tz: str) -> datetime | None:
    expression = _expression(schedule)
    if expression is None:
        return None
    fire: datetime = croniter(expression, now.astimezone(zone(tz))).get_next(datetime)
    return fire.astimezone(timezone.utc)


def period(schedule: str, now: datetime, tz: str) -> timedelta | None:
    """The time between the last fire and the one after it (the schedule's current period)."""
    last = previous_fire(schedule, now, tz)
    if last is None:
        return None
    following = next_fire(schedule, last, tz)
    return following - last if following else None


def in_words(schedule: str) -> str:
    if schedule == "@reboot":
        return "At boot"
    expression = _expression(schedule) or schedule
    try:
        options = Options()
        options.use_24hour_time_format = True
        return str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # words are a nicety: never fail a status over them
        return schedule
