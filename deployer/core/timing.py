"""Cron-schedule maths: previous and next fire times, period, words. Pure.

deployer's own cron engine (deployer.remote.cronengine) does the maths, with the semantics
of the target's cron (Debian's by default): its day-of-month/day-of-week rule and its main
loop's handling of clock changes, so a DST night gives the instants the daemon really
runs the job at. cron-descriptor says the schedule in words.
Times are evaluated in the target's timezone, since that is the one its cron uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from cron_descriptor import ExpressionDescriptor, Options

from deployer.config.schedule import ALIASES
from deployer.errors import InvalidInput, Problem
from deployer.remote import cronengine
from deployer.remote.cronengine import DEFAULT_FLAVOUR, FLAVOUR_NAMES, FLAVOURS, zone

__all__ = ["FLAVOUR_VAR", "CronRules", "cron_rules", "declared_flavour", "entry_of", "fires_after", "flavour_of", "in_words",
           "next_fire", "period", "previous_fire", "zone"]

# The inventory variable that says which cron a host runs (default: Debian's).
FLAVOUR_VAR = "deployer_cron_flavour"


def flavour_of(host_vars: dict[str, object], key_path: str, file: str | None = None) -> str:
    """The inventory's ``deployer_cron_flavour`` of a host (checked), or the default."""
    return declared_flavour(host_vars, key_path, file) or DEFAULT_FLAVOUR


def declared_flavour(host_vars: dict[str, object], key_path: str, file: str | None = None) -> str | None:
    """The inventory's ``deployer_cron_flavour`` of a host, checked; None when not set."""
    value = host_vars.get(FLAVOUR_VAR)
    if value is None:
        return None
    if value not in FLAVOURS:
        raise InvalidInput([Problem(f"'{value}' is not a cron deployer knows; write one of {', '.join(FLAVOURS)} "
                                    "(debian: Debian/Ubuntu cron, cronie: Fedora/RHEL, busybox: busybox crond)",
                                    file=file, key_path=key_path)])
    return str(value)


@dataclass(frozen=True)
class CronRules:
    """Whose rules a host's fire times follow, and why those."""

    flavour: str  # debian | cronie | busybox
    source: str  # inventory | probe | default

    def __str__(self) -> str:
        why = {"inventory": f"as {FLAVOUR_VAR} in the inventory says", "probe": "probed",
               "default": "the default: no cron daemon deployer knows was seen"}[self.source]
        return f"the rules of {FLAVOUR_NAMES[self.flavour]}, {why}"


def cron_rules(declared: str | None, probed: str | None) -> CronRules:
    """The one choice of a host's cron flavour, wherever fire times are computed: what the
    operator wrote in the inventory wins; else the daemon the probe found; else Debian's.
    ``probed`` is None without a probe (explain --tz) or when no known daemon runs."""
    if declared is not None:
        return CronRules(declared, "inventory")
    if probed is not None:
        return CronRules(probed, "probe")
    return CronRules(DEFAULT_FLAVOUR, "default")


@lru_cache(maxsize=512)
def entry_of(schedule: str, flavour: str = DEFAULT_FLAVOUR) -> cronengine.Entry:
    """The schedule as the flavour's cron holds it (schedules reaching here passed validation)."""
    return cronengine.parse(schedule, flavour)


_entry = entry_of


def previous_fire(schedule: str, now: datetime, tz: str, flavour: str = DEFAULT_FLAVOUR) -> datetime | None:
    """The last instant at or before ``now`` at which cron started this schedule (aware, UTC);
    None for @reboot and for a schedule that never fires."""
    return cronengine.previous_fire(_entry(schedule, flavour), now, tz)


def next_fire(schedule: str, now: datetime, tz: str, flavour: str = DEFAULT_FLAVOUR) -> datetime | None:
    """The first instant strictly after ``now`` at which cron starts this schedule (aware, UTC)."""
    return cronengine.next_fire(_entry(schedule, flavour), now, tz)


def fires_after(schedule: str, now: datetime, tz: str, count: int, flavour: str = DEFAULT_FLAVOUR) -> list[datetime]:
    """The next ``count`` instants strictly after ``now`` at which cron starts this schedule (UTC)."""
    return cronengine.fires_after(_entry(schedule, flavour), now, tz, count)


def period(schedule: str, now: datetime, tz: str, flavour: str = DEFAULT_FLAVOUR) -> timedelta | None:
    """The time between the last fire and the one after it (the schedule's current period)."""
    last = previous_fire(schedule, now, tz, flavour)
    if last is None:
        return None
    following = next_fire(schedule, last, tz, flavour)
    return following - last if following else None


def in_words(schedule: str) -> str:
    if schedule == "@reboot":
        return "At boot"
    expression = ALIASES.get(schedule, schedule)
    try:
        options = Options()
        options.use_24hour_time_format = True
        return str(ExpressionDescriptor(expression, options).get_description())
    except Exception:  # noqa: BLE001 - words are a nicety: never fail a status over them
        return schedule
