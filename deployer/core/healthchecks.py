"""The healthchecks checks an environment should have: one per job and host. Pure.

One check per job *and host*: a job on three hosts pinging one check would stay green while
one host is dead, since the other two keep pinging. Each check has a slug derived from names
alone (``<project>-<env>-<job>-<host>``), so the release's ping URL is
``<ping_url>/<ping_key>/<slug>`` (healthchecks' slug-based ping URLs) without asking the API:
render stays pure and a second apply renders the same bytes. Its schedule is the job's cron
schedule, its tz the zone the host's cron reads schedules in (the probe's), its grace the
job's derived grace (core/alerting.py), as the healthchecks Management API v3 takes them
(https://healthchecks.io/docs/api/#create-check).
"""

from __future__ import annotations

import hashlib
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from deployer.config.project import EnvironmentConfig, Job
from deployer.config.schedule import SPECIAL
from deployer.core.alerting import grace_seconds
from deployer.core.timing import entry_of
from deployer.remote import lateness
from deployer.remote.cronengine import ALIASES

SLUG_MAX = 100  # the API's limit on slug and name (hc/api/views.py: Spec)
GRACE_MIN, GRACE_MAX = 60, 31536000  # the API's bounds on grace, in seconds
_NOT_SLUG = re.compile(r"[^a-z0-9_-]+")
# A ping key as healthchecks' URL patterns take it (Django's slug converter): it becomes a path segment.
PING_KEY = re.compile(r"[-a-zA-Z0-9_]+")
# What deployer compares and sets; anything else on the check (integrations, keywords) is the dashboard's.
FIELDS = ("name", "tags", "desc", "schedule", "tz", "grace")


@dataclass(frozen=True)
class CheckSpec:
    """One job's check on one host, as the Management API's create/update call takes it."""

    job: str
    host: str
    slug: str
    name: str
    tags: str
    desc: str
    schedule: str
    tz: str
    grace: int

    def fields(self) -> dict[str, str | int]:
        return {"name": self.name, "tags": self.tags, "desc": self.desc, "schedule": self.schedule,
                "tz": self.tz, "grace": self.grace}


def has_check(job: Job, env: EnvironmentConfig) -> bool:
    """Whether apply manages a check for this job: the environment names a healthchecks project,
    the job has no ping URL of its own (that check is the operator's), and its schedule has a
    time to miss (@reboot has none)."""
    return env.healthchecks is not None and job.alerts.ping is None and job.schedule not in SPECIAL


def check_slug(project: str, env: str, job: str, host: str) -> str:
    """``<project>-<env>-<job>-<host>``, the host lowercased and anything but ``a-z0-9_-`` made
    ``-``; past the API's 100 characters, cut and ended with a digest of the whole, so two long
    names still differ."""
    slug = f"{project}-{env}-{job}-{_NOT_SLUG.sub('-', host.lower()).strip('-') or 'host'}"
    if len(slug) > SLUG_MAX:
        digest = hashlib.sha256(f"{project}\0{env}\0{job}\0{host}".encode()).hexdigest()[:12]
        slug = f"{slug[:SLUG_MAX - 13]}-{digest}"
    return slug


def ping_url(ping_endpoint: str, ping_key: str, slug: str) -> str:
    """The check's slug-based ping URL (https://healthchecks.io/docs/http_api/#success-slug)."""
    return f"{ping_endpoint.rstrip('/')}/{ping_key}/{slug}"


def cron_schedule(schedule: str) -> str:
    """The schedule as five fields: the API takes cron expressions, not every cron's aliases."""
    return ALIASES.get(schedule, schedule)


def check_tags(project: str, env: str) -> str:
    """The tags of an environment's checks (space-separated, as the API takes them): what apply
    tells its own checks by, to pause those of jobs and hosts no longer declared."""
    return f"deployer {project} {env}"


def check_spec(project: str, env: str, job: Job, host: str, tz: str, now: datetime) -> CheckSpec:
    """The check of ``job`` on ``host``, whose cron reads schedules in ``tz``."""
    return spec_of(project, env, job.id, job.description, job.schedule, grace_seconds(job, now), host, tz)


def spec_of(project: str, env: str, job: str, description: str | None, schedule: str, grace: int, host: str,
            tz: str) -> CheckSpec:
    """The check of a job known by its parts (a declared job, or one of a release kept on a host)."""
    grace = min(max(grace, GRACE_MIN), GRACE_MAX)  # the API's bounds: a declared grace under a minute is taken as one
    desc = "Managed by deployer apply: edit deployer.yml, not this check."
    if description:
        desc = f"{description}\n\n{desc}"
    return CheckSpec(job=job, host=host, slug=check_slug(project, env, job, host),
                     name=f"{project}/{env} {job} on {host}"[:SLUG_MAX], tags=check_tags(project, env),
                     desc=desc, schedule=cron_schedule(schedule), tz=tz, grace=grace)


def release_spec(project: str, env: str, job: str, kept: Mapping[str, Any], host: str, tz: str,
                 now: datetime) -> CheckSpec | None:
    """The check of a job as a release kept on ``host`` runs it (rollback), from what the probe
    read of that release (messages.ReleaseJob: the target's word, checked here); None when that
    release's job pings no check of deployer's for this host, or the record is unusable."""
    slug = check_slug(project, env, job, host)
    schedule, timeout, declared = kept.get("schedule"), kept.get("timeout"), kept.get("grace")
    if kept.get("ping_slug") != slug or not isinstance(schedule, str) or schedule in SPECIAL:
        return None
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        return None
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool)):
        return None
    try:
        grace = lateness.grace_seconds(declared, entry_of(schedule), timeout, now)
    except ValueError:  # CronSyntaxError: the target's word for a schedule
        return None
    description = kept.get("description")
    return spec_of(project, env, job, description if isinstance(description, str) else None, schedule, grace, host, tz)


def differences(spec: CheckSpec, existing: Mapping[str, Any], now: datetime | None = None) -> tuple[str, ...]:
    """The fields of an existing check (as the API lists it) that differ from the spec; a tz the
    API renamed (a legacy name of the same zone) does not."""
    wanted = spec.fields()
    return tuple(name for name in FIELDS if existing.get(name) != wanted[name]
                 and not (name == "tz" and isinstance(existing.get(name), str) and same_time(spec.tz, existing[name], now)))


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
SAME_TIME_DAYS = 400  # a year of DST rules and then some: what a check's next due times depend on


def same_time(ours: str, theirs: str, now: datetime | None = None) -> bool:
    """Whether two zone names keep the same time (the same UTC offset at every hour of the next
    SAME_TIME_DAYS), by the controller's tz database.

    healthchecks stores a legacy name as the zone it links to now (Spec.check_tz in hc/api/views.py
    renames by hc/lib/tz.py's legacy_timezones: Europe/Kiev -> Europe/Kyiv, US/Eastern ->
    America/New_York, CET -> Europe/Brussels), so a host reporting Europe/Kiev would otherwise get an
    update on every apply. Same offsets, not the same name: the controller's tz database may be
    older or newer than the server's (CET is a zone of its own before tzdata 2024b), and only the
    time matters to when a check is due. Two names never seen by the tz database are never equal."""
    if ours == theirs:
        return True
    hour = int((now or datetime.now(UTC)).timestamp()) // 3600 * 3600
    return _offsets(ours, hour) is not None and _offsets(ours, hour) == _offsets(theirs, hour)


@lru_cache(maxsize=64)
def _offsets(name: str, start: int) -> tuple[timedelta | None, ...] | None:
    if not _ZONE_NAME.fullmatch(name) or ".." in name:  # the API's answer: a name, never a path
        return None
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return tuple(datetime.fromtimestamp(start + 3600 * h, zone).utcoffset() for h in range(SAME_TIME_DAYS * 24))
