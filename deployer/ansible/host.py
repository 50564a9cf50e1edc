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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from deployer.config.project import Project
from deployer.core.check import FAIL, WARN
from deployer.core.plan import CrontabChange
from deployer.core.redaction import Redactor
from deployer.engine import healthchecks
from deployer.engine import notify as notifying
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


def open_api(host: Host, environ: Mapping[str, str] | None = None) -> healthchecks.Api | None:
    """The environment's healthchecks API, its key read before the host is contacted (a missing
    one is invalid input) and masked in every result, as the CLI masks it."""
    api = healthchecks.open_api(host.session.project, host.session.env, dict(environ) if environ is not None else None)
    if api is not None:
        host.redactor = Redactor(host.redactor.secrets | {api.key})
    return api


def apply(host: Host, transport: Transport, check_mode: bool, diff: bool, adopt: bool = False,
          api: healthchecks.Api | None = None) -> dict[str, Any]:
    """The ``deployer_apply`` result: check mode is the same path with the applier skipped.
    With ``api``, the host's healthchecks checks are synced after it is applied (check mode:
    compared only); an API that fails fails the task, the host staying applied."""
    state = host.state
    if observe(host, transport, adopt=adopt) and not check_mode:
        guard(state, apply_target)
    # After the host, as the CLI: the jobs are what is deployed, their checks watch them.
    checks = healthchecks.sync_host(api, host.session, apply=not check_mode) if api is not None else None
    result: dict[str, Any] = {"changed": False, "deployer": host_plan(state, applied=not check_mode)}
    if checks is not None:
        result["healthchecks"] = checks.data()
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
    if checks is not None:
        result["msg"] += "\n" + checks.summary()
        result["changed"] = result["changed"] or checks.changes > 0
        if checks.error is not None:
            result.update(failed=True, msg=f"{result['msg']}\nerror: healthchecks: {checks.error}\n   {checks.hint}; "
                                           "the host is applied, and the next run creates or updates what was not")
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


def verify(host: Host, transport: Transport, strict: bool, notify: bool = False,
           notify_state: str | None = None, check_mode: bool = False) -> dict[str, Any]:
    """The ``deployer_verify`` result: the audit's checks as data; failed when one fails.
    With ``notify``, as ``verify --notify`` for this host: its incidents told once, under the
    state file's lock (the play's other hosts wait for it, never lose each other's updates);
    in check mode nothing is sent and the state file is not written."""
    if notify_state is not None and not notify:
        raise InvalidInput([Problem("notify_state is the state of notify: add notify: true, or leave it out")])
    state = host.state
    path, channels = None, None
    if notify:  # the state file's path and the channels' secrets, before the host is contacted
        try:
            path = notifying.state_path(notify_state)
        except InvalidInput as exc:  # the CLI's words, naming the task's option
            raise InvalidInput([replace(p, message=_as_task_option(p.message)) for p in exc.problems]) from None
        secrets = set(host.redactor.secrets)
        channels = notifying.prepare(host.session, secrets)
        host.redactor = Redactor(frozenset(secrets))
    observe(host, transport)
    if state.plan is not None:  # as in the CLI, a plan's errors are checks that fail
        guard(state, lambda s: verify_target(s, strict))
    data = host_checks(state)
    result: dict[str, Any] = {"changed": False, "checks": data["checks"],
                              "deployer": {"status": data["status"], "error": data["error"], "counters": data["counters"]}}
    told: list[str] = []
    if path is not None and channels is not None:
        told = ["notify: check mode: nothing was sent"] if check_mode else tell(host, path, channels, result)
    if state.status in (FAILED, UNREACHABLE):
        failing = {FAIL, WARN} if strict else {FAIL}
        lines = [state.error or "failed"] + [str(words.CheckLine(c)) for c in state.checks if c.status in failing]
        return redacted(host, {**result, "failed": True, "msg": "\n".join(lines + told)})
    warnings = sum(c.status == WARN for c in state.checks)
    result["msg"] = "\n".join([f"{words.IN_SYNC}: {len(state.checks)} checks, {words.counted(warnings, 'warning')}", *told])
    return redacted(host, result)


def _as_task_option(message: str) -> str:
    return message.replace(notifying.OPTION, "notify_state", 1)


def tell(host: Host, path: Path, channels: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """``verify --notify`` for the host verified: ``result["notify"]`` is what became of each
    delivery; the lines for the task's message. What was sent never fails the task; a state
    file that cannot be opened now (held too long by another run) does, as it is the CLI's exit 2."""
    try:
        with notifying.open_state(str(path)) as handle:
            told = notifying.run(host.session, host.redactor.text, handle, channels)
    except InvalidInput as exc:
        why = "; ".join(_as_task_option(p.message).removesuffix(notifying.UNTOUCHED) for p in exc.problems)
        result["failed"] = True
        return [f"notify: {why}; nothing was sent (the host was verified: its checks are in this result)"]
    result["notify"] = told
    lines = [f"notify: warning: {w}" for w in told["warnings"]]
    if not told["channels"]:
        lines.append("notify: the environment's alert route has no channel: nothing to send")
    lines += [words.notify_delivery_line(item) for item in told["sent"]]
    if not told["sent"]:
        opened = [k for k in told["open"] if k.split(" ", 1)[0] == host.state.name]
        lines.append(f"notify: nothing new to tell ({words.counted(len(opened), 'incident')} of {host.state.name} open, "
                     "already told)" if opened else "notify: nothing new to tell")
    return lines


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
