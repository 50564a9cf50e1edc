"""One host of a playbook run, without Ansible: which declaration and environment, the
host's rendered target, and the task result built from deployer's own phases.

The action plugins (plugin.py) only translate between Ansible and this module; the work is
the engine's per-target functions (engine/session.py), the same the CLI runs on a fleet,
and the results are the report layer's data and words (deployer/report), the CLI's JSON
shapes and lines, masked with the same secrets (core/redaction.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployer.config.project import Project
from deployer.core.check import FAIL, WARN
from deployer.core.plan import CrontabChange
from deployer.core.redaction import Redactor
from deployer.engine.lifecycle import ROLLBACK, prepare_target
from deployer.engine.outcome import CHANGED, FAILED, OK, UNREACHABLE
from deployer.engine.session import Reads, Session, TargetState, apply_target, guard, load_environment, observe_target, render_states, send_bundle, verify_target
from deployer.errors import InvalidInput, Problem
from deployer.report import words
from deployer.report.data import host_checks, host_plan
from deployer.transport.base import Transport

ENV_VAR = "deployer_env"
FILE_VAR = "deployer_file"


def declaration_file(explicit: str | None, environ: Mapping[str, str] | None = None) -> str:
    """Like the CLI: the task's ``file``, else ``$DEPLOYER_FILE``, else ``deployer.yml``,
    relative to the folder ansible-playbook runs in. Shown relative to it when inside it,
    so that messages name ``deployer.yml:14`` exactly as the CLI does."""
    environ = os.environ if environ is None else environ
    chosen = explicit or environ.get("DEPLOYER_FILE") or "deployer.yml"
    try:
        relative = os.path.relpath(os.path.abspath(chosen))
    except ValueError:
        return chosen
    return chosen if relative.startswith("..") else relative


def environment_name(project: Project, explicit: str | None, inventory_paths: Iterable[str]) -> str:
    """The environment whose inventory Ansible is reading, unless ``deployer_env`` says.

    ``ansible-playbook -i inventories/prod`` reads the inventory that deployer.yml gives
    prod: the environment is the one whose inventory holds the host's inventory source.
    """
    if explicit:
        project.environment(explicit)  # an unknown name is the CLI's error, word for word
        return explicit
    paths = [Path(p).resolve() for p in inventory_paths if p]
    matches = [env.name for env in project.environments.values()
               if any(p == env.inventory.resolve() or p.is_relative_to(env.inventory.resolve()) for p in paths)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(f"{e.name}: {e.inventory_shown}" for e in project.environments.values())
    shown = ", ".join(str(p) for p in paths) or "none"
    if not matches:
        why = f"the inventory Ansible reads ({shown}) is not the inventory of any environment ({known})"
    else:
        why = f"the inventory Ansible reads ({shown}) belongs to several environments ({', '.join(matches)})"
    raise InvalidInput([Problem(f"cannot tell which environment to deploy: {why}; set the variable {ENV_VAR} "
                                "(-e deployer_env=NAME, or in group_vars)", file=project.file, key_path="environments")])


CHECK_MODE = " (check mode: nothing was changed)"


@dataclass
class Host:
    """The one target an action plugin works on, inside a one-host Session (as the CLI's engine
    wants it), with the secrets its results must never show."""

    session: Session
    redactor: Redactor

    @property
    def state(self) -> TargetState:
        return self.session.states[0]


def load_host(file: str, env_name: str | None, host: str, inventory_paths: Iterable[str],
              environ: Mapping[str, str] | None = None) -> Host:
    """Declaration + this environment's inventory + render of this one host. Pure."""
    from deployer.config.cached import load_project_cached

    project = load_project_cached(file)
    name = environment_name(project, env_name, inventory_paths)
    project, env, targets = load_environment(file, name, project)
    chosen = [t for t in targets if t.name == host]
    if not chosen:
        raise InvalidInput([Problem(f"host '{host}' is not in the inventory of environment '{name}' "
                                    f"(hosts: {', '.join(t.name for t in targets)})", file=env.inventory_shown)])
    session = Session(project, env, render_states(project, env, chosen, targets, environ))
    return Host(session, Redactor.of_jobs(session.states[0].desired.jobs))  # as the CLI: secrets never leave unmasked


def invalid_message(exc: InvalidInput) -> str:
    """The CLI's words for invalid input (report/words.py)."""
    return words.invalid_message(exc)


# ---------------------------------------------------------------------------------- phases


def observe(host: Host, transport: Transport, **options: Any) -> bool:
    """One probe and the plan (``options``: observe_target's, e.g. ``reads=Reads(backups=True)``
    for a rollback); False when the host failed (its error says why)."""
    host.state.transport = transport
    guard(host.state, lambda state: observe_target(state, **options))
    return host.state.status in (OK, CHANGED)


def apply(host: Host, transport: Transport, check_mode: bool, diff: bool, adopt: bool = False) -> dict[str, Any]:
    """The ``deployer_apply`` result: check mode is the same path with the applier skipped."""
    state = host.state
    if observe(host, transport, adopt=adopt) and not check_mode:
        guard(state, apply_target)
    result: dict[str, Any] = {"changed": False, "deployer": host_plan(state, applied=not check_mode)}
    if state.plan is not None and diff:
        result["diff"] = diff_entries(state)
    if state.status in (FAILED, UNREACHABLE):
        return redacted(host, {**result, "failed": True, "msg": state.error or "failed"})
    if state.status == CHANGED:
        assert state.plan is not None
        count = len(state.plan.changes) + len(state.plan.crontab_changes)
        revision = state.release.revision if state.release else "?"
        result["changed"] = True
        result["msg"] = (f"{words.counted(count, 'change')} to apply, revision {revision}{CHECK_MODE}"
                         if check_mode else words.summary_row(state, "apply").detail)
    else:
        result["msg"] = words.NOTHING_TO_CHANGE
    return redacted(host, result)


def lifecycle(host: Host, transport: Transport, kind: str, check_mode: bool, diff: bool,
              **options: Any) -> dict[str, Any]:
    """``deployer_rollback`` / ``deployer_destroy``: the CLI's plan of that name, then one applier exec."""
    state = host.state
    lp = None
    if observe(host, transport, reads=Reads(backups=kind == ROLLBACK)):
        lp = prepare_target(state, kind, **options)
        bundle = lp.params  # set when the plan has changes and no errors
        if not check_mode and not lp.empty and not lp.errors and bundle is not None:
            guard(state, lambda s: send_bundle(s, bundle))
    result: dict[str, Any] = {"changed": False}
    if lp is not None:
        result["deployer"] = {"status": state.status, "revision": lp.revision, "applied": state.applied,
                              "changes": [c.as_dict() for c in lp.changes]}
        if diff:
            result["diff"] = crontab_diff_entries(lp.crontab_changes)
    if state.status in (FAILED, UNREACHABLE):
        return redacted(host, {**result, "failed": True, "msg": state.error or "failed"})
    if lp is not None and not lp.empty:
        result["changed"] = True
        result["msg"] = "; ".join(c.summary for c in lp.changes) + (CHECK_MODE if check_mode else "")
    else:
        result["msg"] = words.NOTHING_TO_DO
    return redacted(host, result)


def verify(host: Host, transport: Transport, strict: bool) -> dict[str, Any]:
    """The ``deployer_verify`` result: the audit's checks as data; failed when one fails."""
    state = host.state
    observe(host, transport)
    if state.plan is not None:  # as in the CLI, a plan's errors are checks that fail
        guard(state, lambda s: verify_target(s, strict))
    data = host_checks(state)
    result: dict[str, Any] = {"changed": False, "checks": data["checks"],
                              "deployer": {"status": data["status"], "error": data["error"], "counters": data["counters"]}}
    if state.status in (FAILED, UNREACHABLE):
        failing = {FAIL, WARN} if strict else {FAIL}
        lines = [state.error or "failed"] + [str(words.CheckLine(c)) for c in state.checks if c.status in failing]
        return redacted(host, {**result, "failed": True, "msg": "\n".join(lines)})
    warnings = sum(c.status == WARN for c in state.checks)
    result["msg"] = f"{words.IN_SYNC}: {len(state.checks)} checks, {words.counted(warnings, 'warning')}"
    return redacted(host, result)


def diff_entries(state: TargetState) -> list[dict[str, str]]:
    """Ansible ``diff`` entries: each crontab before/after (whole file, like the cron module),
    then the other changes as the CLI's plan lists them."""
    assert state.plan is not None
    entries = crontab_diff_entries(state.plan.crontab_changes)
    if state.plan.changes:
        lines = [words.change_line(c) for c in state.plan.changes]
        entries.append({"prepared": f"deployer changes on {state.name}:\n" + "\n".join(lines) + "\n"})
    return entries


def crontab_diff_entries(changes: list[CrontabChange]) -> list[dict[str, str]]:
    """Each crontab before/after, whole, as Ansible's ``diff`` shows a file."""
    return [{"before_header": f"crontab of {c.user} (now)", "after_header": f"crontab of {c.user} (planned)",
             "before": c.before or "", "after": c.after} for c in changes]


def redacted(host: Host, result: dict[str, Any]) -> dict[str, Any]:
    """A task result with declared secrets' values masked in every string, and in the keys of
    its data as the CLI's --json masks them; the result's own keys (``changed``, ``failed``,
    ``msg``...) are Ansible's words and stay."""
    return {key: host.redactor.data(value) for key, value in result.items()}
