"""rollback and destroy over the targets of an environment, built on Session's phases.

Same shape as apply: observe every target (one probe, with its backups for a rollback),
plan (pure: core/lifecycle.py) so people can read it first, then one applier exec per
target that has something to do.
"""

from __future__ import annotations

from deployer.core.lifecycle import LifecyclePlan, plan_destroy, plan_rollback
from deployer.engine.outcome import CHANGED, FAILED, OK
from deployer.engine.session import Reads, Session, TargetState, send_bundle

ROLLBACK, DESTROY = "rollback", "destroy"


def prepare(session: Session, kind: str, to: str | None = None, purge_logs: bool = False) -> dict[str, LifecyclePlan]:
    """Observe every target and plan the rollback or destroy of each; nothing is written."""
    session.observe(Reads(backups=kind == ROLLBACK, release_jobs=kind == ROLLBACK))
    plans: dict[str, LifecyclePlan] = {}
    for state in session.states:
        if state.facts is not None and state.release is not None:  # else unreachable: its outcome says why
            plans[state.name] = prepare_target(state, kind, to, purge_logs)
    return plans


def prepare_target(state: TargetState, kind: str, to: str | None = None, purge_logs: bool = False) -> LifecyclePlan:
    """The rollback or destroy plan of one observed target (also used by the Ansible plugins)."""
    assert state.facts is not None and state.release is not None
    lp = plan_rollback(state.release, state.facts, to) if kind == ROLLBACK else plan_destroy(state.release, state.facts, purge_logs)
    # The declaration's own plan does not matter here (a target may lag behind it).
    if lp.errors:
        state.status, state.error = FAILED, "; ".join(lp.errors)
    else:
        state.status, state.error = (OK if lp.empty else CHANGED), None
    return lp


def execute(session: Session, plans: dict[str, LifecyclePlan], kind: str) -> None:
    """One applier exec per target with changes; the others are left alone."""

    def work(state: TargetState) -> None:
        bundle = plans[state.name].params
        if bundle is not None:  # a plan with changes and no errors (CHANGED) always has one
            send_bundle(state, bundle)

    session._each(work, [s for s in session.states if s.status == CHANGED and s.name in plans], phase=kind)
