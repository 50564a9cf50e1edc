"""Did each job run, and succeed, when it should have? Pure: facts in, checks out.

Inputs are the probe's runtime facts (ledger tail, running markers, lock holders, the
target's clock and timezone, when the release went live) and the job's schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from deployer.core.check import FAIL, PASS, WARN, Check
from deployer.core.desired import JobSpec
from deployer.core.facts import Facts
from deployer.core.legacy import stale_legacy_locks
from deployer.core.outcomes import FAILURES, SUCCESS
from deployer.core.timing import CronRules, cron_rules, period, previous_fire
from deployer.remote.messages import LegacyLock, LockSeen, RunFound


@dataclass(frozen=True)
class Thresholds:
    """When history turns into warnings and failures (defaults a demanding operator would pick)."""

    grace: timedelta = timedelta(minutes=2)  # cron's latency + a slow start
    failures_fail: int = 3  # consecutive failures that fail verify (1 already warns)
    min_free_bytes: int = 100 * 1024 * 1024
    min_free_inodes: int = 1000


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, TypeError):
        return None
    # the wrapper writes UTC; a time without a zone (not the wrapper's) is read as UTC too,
    # never compared naive against aware
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "never"
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def consecutive_failures(runs: list[RunFound]) -> int:
    count = 0
    for run in reversed(runs):
        outcome = run.get("outcome")
        if outcome == SUCCESS:
            break
        if outcome in FAILURES:
            count += 1
    return count


def job_checks(job: JobSpec, facts: Facts, limits: Thresholds = Thresholds(), rules: CronRules | None = None) -> list[Check]:
    """The job's checks; its fire times by ``rules`` (default: what the probe found, else Debian's)."""
    flavour = (rules or cron_rules(None, facts.cron_flavour)).flavour
    info = facts.runtime(job.id)
    runs: list[RunFound] = list(info.get("runs", []))
    now = datetime.fromtimestamp(facts.now, UTC) if facts.now else datetime.now(UTC)
    deployed = datetime.fromtimestamp(facts.deployed_at, UTC) if facts.deployed_at else None
    if deployed is None:
        return [Check("freshness", WARN, "not deployed yet: no run is expected", job.id)]
    return [
        _freshness(job, runs, facts, limits, now, deployed, flavour),
        _success(job, runs, info.get("last_success"), limits, now),
        *_unfinished(job, info.get("running", []), limits, now),
        *_lock(job, info.get("lock", {}), limits, now),
        *_legacy_locks(job, info.get("legacy_locks", {}), facts),
        *_timeout_vs_period(job, facts, now, flavour),
    ]


def _freshness(job: JobSpec, runs: list[RunFound], facts: Facts, limits: Thresholds, now: datetime,
               deployed: datetime, flavour: str) -> Check:
    """The last scheduled time older than the grace must have a run."""
    due = previous_fire(job.schedule, now - limits.grace, facts.timezone, flavour)
    started = [t for r in runs if (t := parse_time(r.get("start"))) is not None]
    last_start = max(started) if started else None
    if due is None:
        return Check("freshness", PASS, "runs at boot only: no schedule to check", job.id)
    if deployed > due:
        return Check("freshness", PASS, f"not due since the deploy {ago(deployed, now)}", job.id)
    if last_start is None:
        return Check("freshness", FAIL, f"should have run at {due:%Y-%m-%d %H:%M} UTC since the deploy "
                                        f"{ago(deployed, now)} but has no run", job.id)
    if last_start < due - timedelta(minutes=1):
        return Check("freshness", FAIL, f"missed its run of {due:%Y-%m-%d %H:%M} UTC: last run started "
                                        f"{ago(last_start, now)}", job.id)
    return Check("freshness", PASS, f"last run started {ago(last_start, now)}", job.id)


def _success(job: JobSpec, runs: list[RunFound], success: RunFound | None, limits: Thresholds, now: datetime) -> Check:
    """Consecutive failures, and how long since the last success."""
    failures = consecutive_failures(runs)
    success_at = parse_time(success.get("start")) if success else None
    if failures >= limits.failures_fail:
        return Check("success", FAIL, f"{failures} failed runs in a row; last success {ago(success_at, now)}", job.id)
    if failures:
        last = runs[-1]  # failures counts runs: there is one
        return Check("success", WARN, f"last run {last.get('outcome')} (exit {last.get('exit_code')}); "
                                      f"last success {ago(success_at, now)}", job.id)
    if success_at is not None:
        return Check("success", PASS, f"last success {ago(success_at, now)}", job.id)
    return Check("success", PASS, "no run yet", job.id)


def _unfinished(job: JobSpec, running: list[RunFound], limits: Thresholds, now: datetime) -> list[Check]:
    """Runs that started and did not end: crashed (process gone) or hung (past the timeout)."""
    out: list[Check] = []
    for run in running:
        start = parse_time(run.get("start"))
        if not run.get("alive"):
            out.append(Check("runs", FAIL, f"run {run.get('run_id')} started {ago(start, now)} never ended and its "
                                           f"process {run.get('pid')} is gone (crashed)", job.id))
        elif start is not None and now - start > timedelta(seconds=job.timeout) + limits.grace:
            out.append(Check("runs", FAIL, f"run {run.get('run_id')} (pid {run.get('pid')}) has run for "
                                           f"{ago(start, now).removesuffix(' ago')}, past its timeout of {job.timeout}s", job.id))
        else:
            out.append(Check("runs", PASS, f"running since {ago(start, now)} (pid {run.get('pid')})", job.id))
    return out


def _lock(job: JobSpec, lock: LockSeen, limits: Thresholds, now: datetime) -> list[Check]:
    """The lock: who holds it, for how long."""
    holders = lock.get("holders", [])
    if not holders:
        return []
    content = lock.get("content", "")
    since = parse_time(content.rsplit(" since ", 1)[1]) if " since " in content else None
    if since is not None and now - since > timedelta(seconds=job.timeout) + limits.grace:
        return [Check("lock", WARN, f"held by pid {', '.join(map(str, holders))} for "
                                    f"{ago(since, now).removesuffix(' ago')}, longer than the timeout", job.id)]
    return [Check("lock", PASS, f"held by the running job (pid {', '.join(map(str, holders))})", job.id)]


def _legacy_locks(job: JobSpec, locks: Mapping[str, LegacyLock | None], facts: Facts) -> list[Check]:
    """Lock files of the hand-made setup this job replaced."""
    out: list[Check] = []
    stale = dict(stale_legacy_locks(job, facts))
    for path, lock in locks.items():
        if not lock:
            continue
        if path in stale:
            out.append(Check("legacy-lock", WARN, f"{path} is stale ({stale[path]}): apply removes it", job.id))
        elif lock.get("type") == "error":
            out.append(Check("legacy-lock", WARN, f"{path} not looked at: {lock.get('error')}; left alone", job.id))
        elif lock.get("type") != "file":
            out.append(Check("legacy-lock", WARN, f"{path} is a {lock.get('type')}, not a lock file: left alone", job.id))
        else:
            if lock.get("held"):
                why = "is locked (flock) by a running process"
            elif lock.get("pid"):
                why = f"names pid {lock.get('pid')}, which is running"
            else:
                why = f"is {int(float(lock.get('age', 0)))}s old and names no process"
            out.append(Check("legacy-lock", WARN, f"{path} {why}: the hand-made job may still be running "
                                                  "(take it out of the crontab)", job.id))
    return out


def _timeout_vs_period(job: JobSpec, facts: Facts, now: datetime, flavour: str) -> list[Check]:
    """The declaration itself: a timeout as long as the period lets runs pile up on the lock."""
    every = period(job.schedule, now, facts.timezone, flavour)
    if every is not None and timedelta(seconds=job.timeout) >= every:
        return [Check("timeout", WARN, f"timeout {job.timeout}s is not shorter than the period "
                                       f"({int(every.total_seconds())}s): runs will be skipped while one is late", job.id)]
    return []


def space_checks(facts: Facts, limits: Thresholds = Thresholds()) -> list[Check]:
    out: list[Check] = []
    for path, info in sorted(facts.space.items()):
        free, inodes = info.get("free_bytes", 0), info.get("free_inodes", 0)
        if free < limits.min_free_bytes or (info.get("total_inodes", 0) and inodes < limits.min_free_inodes):
            out.append(Check("disk", FAIL, f"{path}: only {free // (1024 * 1024)} MiB and {inodes} inodes free"))
    if not out and facts.space:
        least = min(facts.space.values(), key=lambda i: i.get("free_bytes", 0))
        out.append(Check("disk", PASS, f"at least {least.get('free_bytes', 0) // (1024 * 1024)} MiB free where jobs write"))
    return out
