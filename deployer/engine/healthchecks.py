"""Get-or-create each job's healthchecks check through the Management API v3, from the controller.

So that silence itself alerts: a host or cron daemon that is down never pings, and the check,
which knows the schedule, goes down. The protocol (https://healthchecks.io/docs/api/):

- every call carries the project's read-write key in ``X-Api-Key`` (hc/api/decorators.py:
  anything but a known 32-character key is 401);
- ``GET <api>/api/v3/checks/`` lists the project's checks (one call: the API asks for at
  most 100 calls a minute), each with its slug, schedule, tz and grace;
- ``POST <api>/api/v3/checks/`` with ``"unique": ["slug"]`` creates the check (201) or
  updates the one with that slug (200), for a check missing or different; one that matches
  gets no call, so a second apply sends nothing but the list.

A new check gets the project's integrations (``"channels": "*"``, as healthchecks' own
auto-provisioning by ping does); later updates leave them as the dashboard has them.
Calls are sequential, each bounded by TIMEOUT; the first failure of the API (unreachable,
a refused key, an unexpected answer) stops the sync with a person's message. The keys never
reach a message, an argv or a log.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from deployer.config.project import EnvironmentConfig, HealthchecksSite, Project
from deployer.config.secrets import resolve_secret
from deployer.core import crontab
from deployer.core.healthchecks import CheckSpec, check_slug, check_spec, check_tags, differences, has_check, release_spec
from deployer.engine.outcome import CHANGED, OK
from deployer.engine.session import Session, TargetState
from deployer.errors import InvalidInput

TIMEOUT = 10.0  # seconds per call, connection included
_MAX_ANSWER = 10 * 1024 * 1024  # a list of thousands of checks is a few MB

ACTION_WORDS = {"create": "would create", "update": "would update", "pause": "would pause"}  # plan's actions, for people
Action = Literal["created", "updated", "unchanged", "paused", "create", "update", "pause", "skipped", "deleted"]


@dataclass(frozen=True)
class CheckResult:
    """What became of one check: created/updated/unchanged (apply), create/update (plan), skipped."""

    spec: CheckSpec
    action: Action
    changed: tuple[str, ...] = ()
    detail: str = ""


@dataclass
class SyncReport:
    """Every check of the command's hosts, and the API's failure if the sync stopped on one."""

    api: str
    results: list[CheckResult] = field(default_factory=list)
    error: str | None = None
    hint: str | None = None

    def summary(self) -> str:
        """``healthchecks checks at <api>: 1 created, 1 unchanged`` (plan: ``1 would create``)."""
        counts: dict[str, int] = {}
        for result in self.results:
            word = ACTION_WORDS.get(result.action, result.action)
            counts[word] = counts.get(word, 0) + 1
        return f"healthchecks checks at {self.api}: " + (", ".join(f"{n} {w}" for w, n in counts.items()) or "none")

    @property
    def changes(self) -> int:
        """Checks created, updated or paused (plan: to be)."""
        return sum(r.action in ("created", "updated", "paused", "create", "update", "pause") for r in self.results)

    @property
    def pending(self) -> int:
        return sum(r.action in ("create", "update", "pause") for r in self.results)

    def data(self) -> dict[str, Any]:
        """``--json``'s ``healthchecks``: the API's address, each check, the error."""
        return {"api": self.api, "ok": self.error is None, "error": self.error, "hint": self.hint,
                "checks": [{"job": r.spec.job, "host": r.spec.host, "slug": r.spec.slug, "action": r.action,
                            "changed": list(r.changed), "detail": r.detail, "schedule": r.spec.schedule,
                            "tz": r.spec.tz, "grace": r.spec.grace} for r in self.results]}


class ApiError(Exception):
    """The API could not be used: what happened, and what to do."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would resend X-Api-Key to wherever a redirect points: an API that moved is an error.
    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


@dataclass
class Api:
    """The Management API v3 of one healthchecks project."""

    site: str
    key: str = field(repr=False)  # never in a repr, a log line or a traceback's locals shown
    timeout: float = TIMEOUT

    def _call(self, method: str, body: dict[str, Any] | None = None, path: str = "") -> tuple[int, Any]:
        url = f"{self.site}/api/v3/checks/{path}"
        data = json.dumps(body).encode() if body is not None else None
        # The site is https, or http on the loopback: config/model.py's KeyUrl refuses every other scheme.
        request = urllib.request.Request(url, data=data, method=method,  # noqa: S310
                                         headers={"X-Api-Key": self.key, "Accept": "application/json",
                                                  "User-Agent": "deployer",
                                                  **({"Content-Type": "application/json"} if data else {})})
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=self.timeout) as answer:
                status, raw = answer.status, answer.read(_MAX_ANSWER)
        except urllib.error.HTTPError as exc:
            raise _refusal(exc.code, _error_of(exc), self.site) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach the healthchecks API at {self.site} ({reason})",
                           "check alerts.healthchecks.api and that the server answers from here") from None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise ApiError(f"{self.site} answered {method} /api/v3/checks/{path} with something that is not JSON",
                           "alerts.healthchecks.api must be the healthchecks site (e.g. https://healthchecks.io)") from None

    def checks(self) -> dict[str, list[dict[str, Any]]]:
        """The project's checks by slug (a slug can be several checks': the API does not forbid it)."""
        _, answer = self._call("GET")
        listed = answer.get("checks") if isinstance(answer, dict) else None
        if not isinstance(listed, list):
            raise ApiError(f"{self.site} answered the list of checks without a 'checks' list",
                           "alerts.healthchecks.api must be the healthchecks site (e.g. https://healthchecks.io)")
        by_slug: dict[str, list[dict[str, Any]]] = {}
        for check in listed:
            if isinstance(check, dict) and isinstance(check.get("slug"), str):
                by_slug.setdefault(check["slug"], []).append(check)
        return by_slug

    def pause(self, uuid: str) -> None:
        """Stop monitoring a check (a ping resumes it: https://healthchecks.io/docs/api/#pause-check)."""
        self._call("POST", path=f"{urllib.parse.quote(uuid, safe='')}/pause")

    def delete(self, uuid: str) -> None:
        """Delete a check and its pings (https://healthchecks.io/docs/api/#delete-check)."""
        self._call("DELETE", path=urllib.parse.quote(uuid, safe=""))

    def upsert(self, spec: CheckSpec, new: bool) -> int:
        """Create or update the check with this slug; the API's status (201 created, 200 updated)."""
        body: dict[str, Any] = {**spec.fields(), "slug": spec.slug, "unique": ["slug"]}
        if new:
            body["channels"] = "*"
        status, _ = self._call("POST", body)
        return status


def _error_of(exc: urllib.error.HTTPError) -> str:
    try:
        answer = json.loads(exc.read(64 * 1024))
        return str(answer.get("error", "")) if isinstance(answer, dict) else ""
    except (ValueError, OSError):
        return ""


def _refusal(status: int, error: str, site: str) -> ApiError:
    said = f" ({error})" if error else ""
    if status == 401:
        return ApiError(f"the healthchecks API at {site} refused the API key (401{said})",
                        "set alerts.healthchecks.api_key to the project's read-write API key "
                        "(healthchecks: Project Settings, API Access)")
    if status == 403:
        return ApiError(f"the healthchecks API at {site} refused to create a check (403: the account's check limit?)",
                        "free some checks or raise the account's limit, then apply again")
    if status == 400:
        return ApiError(f"the healthchecks API at {site} refused a check (400{said})",
                        "see what it says of the field; the job's schedule or the host's timezone may be one it does not know")
    return ApiError(f"the healthchecks API at {site} answered HTTP {status}{said}",
                    "check alerts.healthchecks.api and the server, then apply again")


def open_api(project: Project, env: EnvironmentConfig, environ: dict[str, str] | None = None) -> Api | None:
    """The environment's API with its key read (before any host is touched: a missing key is
    invalid input, exit 2); None when the environment declares no healthchecks."""
    site = env.healthchecks
    if site is None or not any(has_check(job, env) for job in env.jobs):
        return None
    return Api(site.api, _api_key(site, project, os.environ if environ is None else environ))


def _api_key(site: HealthchecksSite, project: Project, environ: Any) -> str:
    where = (*site.origin, "api_key")
    try:
        key = resolve_secret(site.api_key, project, environ)
    except ValueError as exc:
        raise InvalidInput([project.source.problem(where, f"the healthchecks API key: {exc}")]) from None
    if not key or not key.isprintable() or not key.isascii():
        raise InvalidInput([project.source.problem(where, f"the healthchecks API key (from {site.api_key.describe()}) "
                                                          "is empty or not one line of text")])
    return key


def desired_checks(session: Session, now: datetime | None = None) -> tuple[list[CheckSpec], list[CheckResult]]:
    """The checks of the hosts that were observed and not failed, and those skipped (with why)."""
    now = now or datetime.now(UTC)
    specs: list[CheckSpec] = []
    skipped: list[CheckResult] = []
    for state in session.states:
        for job_spec in state.desired.jobs:
            job = next(j for j in session.env.jobs if j.id == job_spec.id)
            if not has_check(job, session.env):
                continue
            if state.facts is None:
                skipped.append(CheckResult(check_spec(session.project.name, session.env.name, job, state.name, "UTC", now),
                                           "skipped", detail=f"host {state.name} not observed: {state.error or 'no answer'}"))
                continue
            spec = check_spec(session.project.name, session.env.name, job, state.name, state.facts.timezone, now)
            if state.status not in (OK, CHANGED):
                skipped.append(CheckResult(spec, "skipped", detail=f"host {state.name} failed: {state.error or ''}".rstrip(": ")))
                continue
            specs.append(spec)
    return specs, skipped


def sync(api: Api, specs: Iterable[CheckSpec], apply: bool, stale_tags: str | None = None,
         declared: frozenset[str] = frozenset(), owned: Callable[[str, dict[str, Any]], bool] | None = None) -> SyncReport:
    """Compare each check with the API's list; with ``apply``, create or update those that differ.
    With ``stale_tags``, a check of those tags whose slug is not ``declared`` (its job or host
    is gone) is paused: it would go down, and tell, for a job that no longer exists; with
    ``owned`` too, only a check for which ``owned(slug, check)`` holds."""
    report = SyncReport(api.site)
    todo = list(specs)
    try:
        existing = api.checks()
    except ApiError as exc:
        report.error, report.hint = str(exc), exc.hint
        report.results.extend(CheckResult(s, "skipped", detail="not synced: the API failed") for s in todo)
        return report
    hosts_of: dict[str, list[str]] = {}
    for spec in todo:
        hosts_of.setdefault(spec.slug, []).append(spec.host)
    if same := next((hosts for hosts in hosts_of.values() if len(hosts) > 1), None):
        # Names that differ only in what a slug cannot hold ('db.1', 'db-1'): one check for two hosts would hide one.
        report.error = f"hosts {' and '.join(same)} give their checks the same slug"
        report.hint = "rename one of them in the inventory (a slug keeps a-z, 0-9, '-' and '_')"
        report.results.extend(CheckResult(s, "skipped", detail="not synced") for s in todo)
        return report
    for i, spec in enumerate(todo):
        found = existing.get(spec.slug, [])
        if len(found) > 1:
            # Pings to the slug are refused (409 "ambiguous slug"), so the wrapper's pings would be lost.
            report.error = f"{len(found)} checks of the healthchecks project have the slug {spec.slug}"
            report.hint = "delete all but one of them in healthchecks, then apply again"
            report.results.extend(CheckResult(s, "skipped", detail="not synced") for s in todo[i:])
            return report
        changed = differences(spec, found[0]) if found else ()
        if found and not changed:
            report.results.append(CheckResult(spec, "unchanged"))
            continue
        if not apply:
            report.results.append(CheckResult(spec, "update" if found else "create", changed))
            continue
        try:
            status = api.upsert(spec, new=not found)
        except ApiError as exc:
            report.error, report.hint = f"check {spec.slug}: {exc}", exc.hint
            report.results.extend(CheckResult(s, "skipped", detail="not synced: the API failed") for s in todo[i:])
            return report
        report.results.append(CheckResult(spec, "created" if status == 201 else "updated", changed))
    if stale_tags is not None:
        _pause_stale(api, existing, stale_tags, declared, apply, report, owned)
    return report


def _pause_stale(api: Api, existing: dict[str, list[dict[str, Any]]], tags: str, declared: frozenset[str], apply: bool,
                 report: SyncReport, owned: Callable[[str, dict[str, Any]], bool] | None = None) -> None:
    for slug, found in sorted(existing.items()):
        for check in found:
            if slug in declared or check.get("tags") != tags or check.get("status") == "paused":
                continue
            if owned is not None and not owned(slug, check):
                continue
            grace = check.get("grace")  # the API's word: shown, never trusted to be a number
            spec = CheckSpec(job="", host="", slug=slug, name=str(check.get("name", "")), tags=tags, desc="",
                             schedule=str(check.get("schedule", "")), tz=str(check.get("tz", "")),
                             grace=grace if isinstance(grace, int) else 0)
            detail = "no longer declared"
            if not apply:
                report.results.append(CheckResult(spec, "pause", detail=detail))
                continue
            try:
                api.pause(str(check.get("uuid", "")))
            except ApiError as exc:
                report.error, report.hint = f"check {slug}: {exc}", exc.hint
                return
            report.results.append(CheckResult(spec, "paused", detail=detail))


def sync_session(api: Api, session: Session, apply: bool, every_host: bool = False) -> SyncReport:
    """``sync`` over the checks of the session's hosts; those of hosts that failed are skipped.
    ``every_host`` (no --limit): the session knows every check the environment should have, so
    those of removed jobs and hosts are paused."""
    specs, skipped = desired_checks(session)
    declared = frozenset(s.slug for s in specs) | frozenset(r.spec.slug for r in skipped)
    tags = check_tags(session.project.name, session.env.name) if every_host else None
    report = sync(api, specs, apply, tags, declared)
    report.results = skipped + report.results
    return report


def sync_host(api: Api, session: Session, apply: bool) -> SyncReport:
    """``sync`` for the one host of an Ansible ``deployer_apply`` task, which sees no other host:
    get or create that host's checks, and pause only checks that are provably that host's (its
    name and slug are what ``check_spec`` gives some job on it) whose job is no longer declared
    there; other hosts' checks, and those of hosts gone from the inventory, are never touched
    (``deployer apply`` without ``--limit`` pauses those). A host that failed or was not reached
    gets no call: its checks are skipped, as the CLI skips them."""
    specs, skipped = desired_checks(session)
    if skipped:
        return SyncReport(api.site, results=skipped)
    project, env = session.project.name, session.env.name
    hosts = {state.name for state in session.states}

    def owned(slug: str, check: dict[str, Any]) -> bool:
        name = check.get("name")
        return isinstance(name, str) and any(_job_of(project, env, host, name, slug) for host in hosts)

    return sync(api, specs, apply, check_tags(project, env), frozenset(s.slug for s in specs), owned)


def _job_of(project: str, env: str, host: str, name: str, slug: str) -> str | None:
    """The job of a check named as ``check_spec`` names ``<job>`` on ``host`` and slugged as it
    slugs it (a name cut at the API's 100 characters, or renamed in the dashboard, is nobody's)."""
    head, tail = f"{project}/{env} ", f" on {host}"
    if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head) + len(tail):
        return None
    job = name[len(head):-len(tail)]
    return job if " " not in job and check_slug(project, env, job, host) == slug else None


# ---------------------------------------------------------------------- destroy and rollback


def host_jobs(state: TargetState) -> set[str]:
    """Every job this host may have a check for: declared for it, in its crontab blocks now, or
    in a release it keeps (a host may lag behind the declaration, or have been rolled back)."""
    jobs = {j.id for j in state.desired.jobs}
    if state.facts is None:
        return jobs
    project, env = state.desired.project, state.desired.env
    blocks = [b for rel in state.facts.release_blocks.values() for b in rel.values()]
    for seen in state.facts.crontabs.values():
        with contextlib.suppress(crontab.CrontabConflict):  # a block with two begins: its jobs are unknown, not an error here
            blocks.append(crontab.block_of(seen.text, project, env) or "")
    for block in blocks:
        jobs |= crontab.block_jobs(block)
    return jobs


def retire(api: Api, slugs: Iterable[str], delete: bool, why: str, tags: str | None = None,
           keep: frozenset[str] = frozenset()) -> SyncReport:
    """Pause (``delete``: delete) the checks with these slugs, so that jobs taken away on purpose
    page nobody; with ``tags``, every other check of those tags too, but those of ``keep``."""
    report = SyncReport(api.site)
    wanted = set(slugs)
    try:
        existing = api.checks()
    except ApiError as exc:
        report.error, report.hint = str(exc), exc.hint
        return report
    for slug, found in sorted(existing.items()):
        for check in found:
            if slug in keep or not (slug in wanted or (tags is not None and check.get("tags") == tags)):
                continue
            grace = check.get("grace")  # the API's word: shown, never trusted to be a number
            spec = CheckSpec(job="", host="", slug=slug, name=str(check.get("name", "")), tags=str(check.get("tags", "")),
                             desc="", schedule=str(check.get("schedule", "")), tz=str(check.get("tz", "")),
                             grace=grace if isinstance(grace, int) else 0)
            if not delete and check.get("status") == "paused":
                report.results.append(CheckResult(spec, "unchanged", detail=f"{why}; already paused"))
                continue
            try:
                if delete:
                    api.delete(str(check.get("uuid", "")))
                else:
                    api.pause(str(check.get("uuid", "")))
            except ApiError as exc:
                report.error, report.hint = f"check {slug}: {exc}", exc.hint
                return report
            report.results.append(CheckResult(spec, "deleted" if delete else "paused", detail=why))
    return report


def _slugs(session: Session, state: TargetState) -> set[str]:
    return {check_slug(session.project.name, session.env.name, job, state.name) for job in host_jobs(state)}


def retire_destroyed(api: Api, session: Session, delete: bool, every_host: bool = False) -> SyncReport:
    """After destroy: the checks of the hosts destroyed paused (or deleted); those of a host that
    failed or was not reached stay (its jobs still run). ``every_host`` (no --limit): every other
    check of the environment's tags too (a job or host removed before), but the failed hosts'."""
    done = [s for s in session.states if s.facts is not None and s.release is not None and s.status in (OK, CHANGED)]
    kept = [s for s in session.states if s not in done]
    slugs = {slug for s in done for slug in _slugs(session, s)}
    keep = frozenset(slug for s in kept for slug in _slugs(session, s))
    tags = check_tags(session.project.name, session.env.name) if every_host else None
    report = retire(api, slugs - keep, delete, "destroyed", tags, keep)
    now = datetime.now(UTC)
    for state in kept:  # what the declaration gives them: their checks are left as they are
        why = f"host {state.name} {'not reached' if state.facts is None else 'failed'}: {state.error or ''}".rstrip(": ")
        tz = state.facts.timezone if state.facts is not None else "UTC"
        report.results += [CheckResult(check_spec(session.project.name, session.env.name, job, state.name, tz, now), "skipped",
                                       detail=why)
                           for job in session.env.jobs if has_check(job, session.env) and job.id in {j.id for j in state.desired.jobs}]
    return report


def resync_rolled_back(api: Api, session: Session, revisions: dict[str, str | None],
                       now: datetime | None = None) -> SyncReport:
    """After rollback: each rolled-back host's checks as the release now live there runs its jobs
    (schedule, grace and description from that release's own files, probed; tz the host's), so
    that they watch the schedule that runs; the checks of the host's other jobs (those the
    release rolled back from had, or the declaration has) are paused. ``revisions``: host ->
    the revision it went back to. A host that failed or was not reached: its checks left alone."""
    now = now or datetime.now(UTC)
    project, env = session.project.name, session.env.name
    specs: list[CheckSpec] = []
    others: set[str] = set()
    for state in session.states:
        revision = revisions.get(state.name)
        if state.facts is None or revision is None or state.status not in (OK, CHANGED):
            continue
        kept = state.facts.release_jobs.get(revision, {})
        mine = [s for job, record in sorted(kept.items())
                if (s := release_spec(project, env, job, record, state.name, state.facts.timezone, now)) is not None]
        specs += mine
        others |= _slugs(session, state) - {s.slug for s in mine}
    report = sync(api, specs, apply=True)
    if report.error is None and others:
        paused = retire(api, others, delete=False, why="not in the release rolled back to")
        report.results += paused.results
        report.error, report.hint = paused.error, paused.hint
    return report
