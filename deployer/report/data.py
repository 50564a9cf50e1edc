"""The JSON shapes of a command's result (``--json``) and of the Ansible task results, typed.

Plain data, built from a Session and its TargetStates; each front redacts and encodes it.
The keys and their order are part of the output: machines read them.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from deployer.core.alertstate import AlertView, alert_view
from deployer.core.check import CheckStatus
from deployer.core.lifecycle import LifecyclePlan
from deployer.engine.notify import NotifyReport, NotifySent  # noqa: F401 - verify --json's "notify", typed where it is made
from deployer.engine.outcome import TargetStatus
from deployer.engine.session import Session, TargetState


class HostPlan(TypedDict):
    """One host of ``plan --json`` / ``apply --json``, and the ``deployer`` key of ``deployer_apply``."""

    status: TargetStatus
    error: str | None
    revision: str | None
    changes: list[dict[str, str]]
    crontab_diffs: dict[str, str]  # user -> unified diff
    drift_diffs: dict[str, str]  # where -> unified diff
    warnings: list[str]
    applied: list[str]
    counters: dict[str, float | int]
    seconds: float


class PlanReport(TypedDict):
    project: str
    env: str
    exit_code: int
    hosts: dict[str, HostPlan]


class CheckData(TypedDict):
    """One check of verify's audit."""

    name: str
    status: CheckStatus
    detail: str
    job: str | None


class HostChecks(TypedDict):
    """One host of ``verify --json``."""

    status: TargetStatus
    error: str | None
    checks: list[CheckData]
    counters: dict[str, float | int]
    alerts: dict[str, AlertView]  # job -> its alert state, for the jobs with alerts (core/alertstate.py)


class ChecksReport(TypedDict):
    project: str
    env: str
    exit_code: int
    hosts: dict[str, HostChecks]
    notify: NotRequired[NotifyReport]  # with --notify only


class HostLifecycle(TypedDict):
    """One host of ``rollback --json`` / ``destroy --json``."""

    status: TargetStatus
    error: str | None
    revision: str | None
    changes: list[dict[str, str]]
    crontab_diffs: dict[str, str]
    applied: list[str]
    counters: dict[str, float | int]


class LifecycleReport(TypedDict):
    project: str
    env: str
    exit_code: int
    hosts: dict[str, HostLifecycle]


def host_plan(state: TargetState, applied: bool = False) -> HostPlan:
    """A host's plan (and, once ``applied``, the steps the applier reported)."""
    p = state.plan
    return {
        "status": state.status,
        "error": state.error,
        "revision": p.release.revision if p else None,
        "changes": [c.as_dict() for c in p.changes] if p else [],
        "crontab_diffs": {c.user: c.diff() for c in p.crontab_changes} if p else {},
        "drift_diffs": dict(p.drift) if p else {},
        "warnings": p.warnings if p else [],
        "applied": state.applied if applied else [],
        "counters": state.counters.as_dict(),
        "seconds": round(state.seconds, 3),
    }


def plan_report(session: Session, applied: bool = False) -> PlanReport:
    return {"project": session.project.name, "env": session.env.name, "exit_code": session.exit_code(),
            "hosts": {s.name: host_plan(s, applied) for s in session.states}}


def check_data(state: TargetState) -> list[CheckData]:
    return [{"name": c.name, "status": c.status, "detail": c.detail, "job": c.job} for c in state.checks]


def host_alerts(state: TargetState) -> dict[str, AlertView]:
    """Each job's alert state on the host ({} when it was not probed, or no job has alerts)."""
    if state.facts is None or state.release is None:
        return {}
    facts = state.facts
    views = {job.id: alert_view(job, facts.runtime(job.id), facts.now) for job in state.release.jobs}
    return {job: view for job, view in views.items() if view is not None}


def host_checks(state: TargetState) -> HostChecks:
    return {"status": state.status, "error": state.error, "checks": check_data(state), "counters": state.counters.as_dict(),
            "alerts": host_alerts(state)}


def checks_report(session: Session) -> ChecksReport:
    return {"project": session.project.name, "env": session.env.name, "exit_code": session.exit_code(),
            "hosts": {s.name: host_checks(s) for s in session.states}}


def host_lifecycle(state: TargetState, lp: LifecyclePlan | None, done: bool) -> HostLifecycle:
    """A host's rollback or destroy plan (``lp``: None when it could not be planned)."""
    return {
        "status": state.status, "error": state.error,
        "revision": lp.revision if lp else None,
        "changes": [c.as_dict() for c in lp.changes] if lp else [],
        "crontab_diffs": {c.user: c.diff() for c in lp.crontab_changes} if lp else {},
        "applied": state.applied if done else [],
        "counters": state.counters.as_dict(),
    }


def lifecycle_report(session: Session, plans: dict[str, LifecyclePlan], done: bool) -> LifecycleReport:
    return {"project": session.project.name, "env": session.env.name, "exit_code": session.exit_code(),
            "hosts": {s.name: host_lifecycle(s, plans.get(s.name), done) for s in session.states}}
