"""One command over the targets of an environment: render, observe, plan, apply, verify.

Phases, so that people can read every plan before anything is written:

1. ``Session.load``: declaration + inventory + render for every target. Pure; any
   problem is InvalidInput (exit 2) and no target has been contacted.
2. ``Session.observe``: in parallel, connect and run ONE probe per target; plan.
3. ``Session.apply`` / ``Session.verify``: in parallel, ONE applier exec per target that
   has changes (none for the others); verify reuses the observation.

A target that fails or cannot be reached never stops the others; its outcome says why.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from deployer.config.cached import load_project_cached
from deployer.config.inventory import Target, limit_targets, load_inventory
from deployer.config.project import EnvironmentConfig, Project
from deployer.core.check import FAIL, WARN, Check
from deployer.core.checks import checks
from deployer.core.desired import DesiredState
from deployer.core.facts import Facts, parse_facts
from deployer.core.plan import Plan, ledger_path, plan
from deployer.core.release import Release, materialize
from deployer.core.render import check_job_hosts, render
from deployer.engine import remote
from deployer.engine.outcome import CHANGED, EXIT_CODES, FAILED, OK, TargetStatus, exit_code_of, status_of
from deployer.errors import ChangedUnderUs, InvalidInput, Problem, TargetError
from deployer.remote.messages import ApplyRequest, ProbeAnswer, ProbeJob, ProbeRequest, RunLogRequest
from deployer.transport import ConnectOptions, connect
from deployer.transport.base import Counters, Transport


@dataclass(frozen=True)
class Reads:
    """What a probe reads beyond what plan and verify need: more bytes, never another exec."""

    log_tail: int = 0  # the last lines of each job's log (logs)
    ledger_all: bool = False  # every ledger line (history --export)
    backups: bool = False  # backups/*/index.json (rollback)
    run_log: RunLogRequest | None = None  # one run's own log (logs --run)
    release_jobs: bool = False  # each kept release's jobs (rollback: its healthchecks checks)


NOTHING_MORE = Reads()


@dataclass
class TargetState:
    """Everything known about one target during one command."""

    target: Target
    desired: DesiredState
    transport: Transport | None = None
    facts: Facts | None = None
    release: Release | None = None
    plan: Plan | None = None
    status: TargetStatus = OK
    error: str | None = None
    applied: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def exit_code(self) -> int:
        """This target's exit code: its status's (engine/outcome.py), never kept apart from it."""
        return EXIT_CODES[self.status]

    @property
    def counters(self) -> Counters:
        return self.transport.counters if self.transport else Counters()

    def fail(self, exc: TargetError) -> None:
        self.status = status_of(exc)
        self.error = str(exc)


@dataclass
class Session:
    project: Project
    env: EnvironmentConfig
    states: list[TargetState]
    parallel: int = 10
    connect_options: ConnectOptions | None = None
    # Called with (phase, state) when a host finishes a phase: the CLI's progress display.
    progress: Callable[[str, TargetState], None] | None = None

    # ------------------------------------------------------------------ phase 1 (pure)
    @classmethod
    def load(cls, file: str | Path, env_name: str, limit: str | None = None, parallel: int = 10,
             environ: Mapping[str, str] | None = None, connect_options: ConnectOptions | None = None) -> Session:
        project, env, targets = load_environment(file, env_name)
        chosen = limit_targets(targets, limit, env.inventory_shown)
        states = render_states(project, env, chosen, targets, environ)
        return cls(project, env, states, max(1, parallel), connect_options)

    # ------------------------------------------------------------------ helpers
    def _each(self, work: Callable[[TargetState], None], states: list[TargetState] | None = None,
              phase: str = "") -> None:
        todo = self.states if states is None else states

        def guarded(state: TargetState) -> None:
            try:
                guard(state, work)
            finally:
                if self.progress is not None:
                    self.progress(phase, state)

        if len(todo) <= 1:
            for state in todo:
                guarded(state)
            return
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(todo))) as pool:
            list(pool.map(guarded, todo))

    def close(self) -> None:
        for state in self.states:
            if state.transport is not None:
                state.transport.close()

    # ------------------------------------------------------------------ phase 2
    def observe(self, reads: Reads = NOTHING_MORE, adopt: bool = False) -> None:
        """Connect to every target, probe it once, and plan."""

        def work(state: TargetState) -> None:
            state.transport = connect(state.target, self.connect_options)
            observe_target(state, reads, adopt)

        self._each(work, phase="observed")

    # ------------------------------------------------------------------ phase 3
    def apply(self, expected: Mapping[str, Any] | None = None) -> None:
        """Send one bundle to every target whose plan has changes."""

        def work(state: TargetState) -> None:
            apply_target(state, expected.get(state.name) if expected is not None else None, check_saved=expected is not None)

        self._each(work, [s for s in self.states if s.status in (OK, CHANGED)], phase="applied")

    def verify(self, strict: bool = False) -> None:
        self._each(lambda state: verify_target(state, strict), [s for s in self.states if s.plan is not None])

    # ------------------------------------------------------------------ results
    def exit_code(self, changes_pending: bool = False) -> int:
        """The command's exit code from its targets' statuses (engine/outcome.py)."""
        return exit_code_of((s.status for s in self.states), changes_pending)

    def saved_plan(self) -> dict[str, Any]:
        """What ``plan --out`` keeps: enough to refuse an apply if anything moved since."""
        return {
            "project": self.project.name,
            "env": self.env.name,
            "targets": {
                s.name: {
                    "revision": s.release.revision if s.release else None,
                    "crontabs": {u: _digest(c.text) for u, c in s.facts.crontabs.items()} if s.facts else {},
                }
                for s in self.states
            },
        }


# ---------------------------------------------------------------------- one target at a time
# Session runs these over a fleet; the Ansible action plugins (deployer/ansible) run them for
# the one host Ansible hands them, over Ansible's own connection. One code path for both.


def load_environment(file: str | Path, env_name: str,
                     project: Project | None = None) -> tuple[Project, EnvironmentConfig, list[Target]]:
    """The declaration (unless already loaded), one environment of it and its inventory, checked."""
    project = project or load_project_cached(file)
    env = project.environment(env_name)
    targets = load_inventory(env.inventory, env.inventory_shown)
    check_job_hosts(project, env, targets)
    return project, env, targets


def render_states(project: Project, env: EnvironmentConfig, chosen: list[Target], targets: list[Target],
                  environ: Mapping[str, str] | None = None) -> list[TargetState]:
    """Render each chosen target; every problem of every target in one InvalidInput."""
    problems: list[Problem] = []
    states: list[TargetState] = []
    for target in chosen:
        try:
            states.append(TargetState(target, render(project, env, target, targets, environ)))
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(list(dict.fromkeys(problems)))
    return states


def guard(state: TargetState, work: Callable[[TargetState], None]) -> None:
    """Run one phase on one target; its failure becomes the target's outcome, never a traceback."""
    started = time.monotonic()
    try:
        work(state)
    except TargetError as exc:
        state.fail(exc)
    except OSError as exc:  # e.g. the local machine cannot fork: still this target's failure
        state.fail(TargetError(f"{type(exc).__name__}: {exc}"))
    finally:
        state.seconds += time.monotonic() - started


def observe_target(state: TargetState, reads: Reads = NOTHING_MORE, adopt: bool = False) -> None:
    """Probe a connected target once (``state.transport``) and plan it."""
    assert state.transport is not None
    state.facts = probe(state.transport, state.desired, reads)
    state.release = materialize(state.desired, state.facts.identity)
    state.plan = plan(state.release, state.facts, adopt)
    if state.plan.errors:
        state.status = FAILED
        state.error = "; ".join(state.plan.errors)
    elif not state.plan.empty:
        state.status = CHANGED


def apply_target(state: TargetState, saved: Mapping[str, Any] | None = None, check_saved: bool = False) -> None:
    """Send the observed plan's bundle to the target, if it has changes (one exec)."""
    assert state.plan is not None and state.transport is not None
    if check_saved:
        check_saved_plan(state, saved)
    if state.plan.empty:
        return
    send_bundle(state, state.plan.bundle())


def send_bundle(state: TargetState, bundle: ApplyRequest) -> None:
    """ONE applier exec with this bundle (apply, rollback, destroy); a refusal is the target's failure."""
    assert state.transport is not None
    answer = remote.call_applier(state.transport, bundle)
    state.applied = answer["done"]
    if not answer["ok"]:
        message = answer.get("error", "the apply failed")
        kind = answer.get("kind")
        if kind == "conflict":
            raise ChangedUnderUs(message)
        if kind == "disk-full":
            raise TargetError(f"the disk is full on the target: {message}", hint="nothing was switched; free space and apply again")
        raise TargetError(message)


def verify_target(state: TargetState, strict: bool = False) -> None:
    """verify's checks on an observed target; its status says whether the audit passed."""
    assert state.plan is not None
    state.checks = checks(state.plan)
    failing = {FAIL, WARN} if strict else {FAIL}
    failed = sorted({c.name for c in state.checks if c.status in failing})
    if failed:
        state.status = FAILED
        state.error = state.error or f"failed: {', '.join(failed)}"
    else:
        state.status = OK


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def probe(transport: Transport, desired: DesiredState, reads: Reads = NOTHING_MORE) -> Facts:
    """ONE exec: everything plan, verify and status need to know about the target."""
    users = sorted({j.run_as for j in desired.jobs if j.run_as} | {d.owner for d in desired.dirs if d.owner})
    paths = [desired.deploy_home, f"{desired.deploy_home}/releases", f"{desired.deploy_home}/state",
             f"{desired.deploy_home}/backups"]
    paths += [d.path for d in desired.dirs]
    for job in desired.jobs:
        paths += [job.state_dir, ledger_path(job.state_dir), job.lock_file, job.log_file] + [old for old, _ in job.moves]
    jobs: list[ProbeJob] = [{"id": j.id, "state_dir": j.state_dir, "lock_file": j.lock_file, "log_file": j.log_file,
                             "legacy_locks": list(j.legacy_locks)} for j in desired.jobs]
    params: ProbeRequest = {"deploy_home": desired.deploy_home, "users": users, "crontab_users": users, "paths": paths, "jobs": jobs,
              "log_tail": reads.log_tail, "ledger_all": reads.ledger_all, "backups": reads.backups,
              "run_log": reads.run_log, "release_jobs": reads.release_jobs,
              # Lock folders hold empty files, often on a small tmpfs (/run/lock): not a disk to watch.
              "space": sorted(({desired.deploy_home} | {d.path for d in desired.dirs})
                              - {posixpath.dirname(j.lock_file) for j in desired.jobs})}
    answer = remote.call(transport, "probe", dict(params))
    if not answer.get("ok"):
        raise TargetError(f"the probe failed: {answer.get('error', 'no detail')}")
    # the probe's own answer (deployer/remote/probe.py builds a ProbeAnswer); parse_facts
    # still checks what a target could make odd
    return parse_facts(cast(ProbeAnswer, answer), desired.project, desired.env)


def check_saved_plan(state: TargetState, saved: Mapping[str, Any] | None) -> None:
    """``apply --plan FILE``: refuse when the declaration or the target moved since."""
    assert state.release is not None and state.facts is not None
    if saved is None:
        raise ChangedUnderUs(f"the saved plan has no entry for {state.name}", hint="run plan again")
    if saved.get("revision") != state.release.revision:
        raise ChangedUnderUs("the declaration changed since the plan was saved (new revision "
                             f"{state.release.revision}, planned {saved.get('revision')})", hint="run plan again")
    now = {u: _digest(c.text) for u, c in state.facts.crontabs.items()}
    for user, digest in saved.get("crontabs", {}).items():
        if now.get(user) != digest:
            raise ChangedUnderUs(f"the crontab of {user} changed since the plan was saved (edited by hand?); nothing was changed",
                                 hint="run plan again and review the new diff")


def default_parallel() -> int:
    return int(os.environ.get("DEPLOYER_PARALLEL", "10"))
