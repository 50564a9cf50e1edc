"""render: declaration + target -> DesiredState. Pure: no I/O but reading local files.

String fields that hold paths, arguments or environment values are Jinja2 templates,
rendered per target with ``project``, ``env``, ``host``, ``deploy_home`` and ``vars`` (the
host's inventory variables). A leading ``~/`` in a path means the home directory of the
user deployer connects as, on the target; ``{{ data_root }}`` is /var/lib for root and
~/.local/share for other users.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from deployer.config.chars import control_character
from deployer.config.inventory import Target
from deployer.config.project import DEFAULT_LOCK_MODE, DEFAULT_LOG_MODE, EnvironmentConfig, Job, Project
from deployer.config.sandbox import BoundedEnvironment
from deployer.config.schedule import ScheduleError, normalize
from deployer.config.secrets import resolve_env
from deployer.config.yamlsource import KeyPath
from deployer.core.alertconfig import render_alerts
from deployer.core.crontab import unsafe_character
from deployer.core.desired import DATA, HOME, DesiredState, DirSpec, JobSpec
from deployer.core.timing import FLAVOUR_VAR, declared_flavour
from deployer.errors import InvalidInput, Problem

_CR = "\x00cr\x00"
_JINJA = BoundedEnvironment()  # sandboxed, no loops or macros, every value and the output size-bounded


class _Renderer:
    def __init__(self, project: Project, env: EnvironmentConfig, target: Target) -> None:
        self.project = project
        self.env = env
        self.target = target
        self.problems: list[Problem] = []
        # Inventory variables are top-level names, as in Ansible, and win over declared vars.
        self.context: dict[str, Any] = {
            "project": project.name,
            "env": env.name,
            "host": target.name,
            "vars": target.vars,
            "home": HOME,
            "data_root": DATA,
        }
        for variable in env.vars:
            if variable.name in target.vars:
                continue
            value = variable.value
            self.context[variable.name] = self.text(value, variable.origin, f"variable {variable.name}") if isinstance(value, str) else value
        for name, value in target.vars.items():
            self.context.setdefault(name, value)

    def text(self, template: str, where: KeyPath, what: str) -> str:
        try:
            value = template
            if any(mark in template for mark in ("{{", "{%", "{#")):
                # Jinja turns every line ending into "\n": a "\r" the operator wrote must reach
                # the job as written (NUL cannot appear in a declared value, so the mark is free).
                value = _JINJA.render(template.replace("\r", _CR), self.context).replace(_CR, "\r")
        except jinja2.TemplateError as exc:
            self.problems.append(self.project.source.problem(where, f"{what} '{template}' on host {self.target.name}: {exc}"))
            return template
        except Exception as exc:  # noqa: BLE001 - Python's own errors while computing (OverflowError, ZeroDivisionError...)
            self.problems.append(self.project.source.problem(
                where, f"{what} '{template}' on host {self.target.name} cannot be computed: {type(exc).__name__}: {exc}"))
            return template
        if "\x00" in value.replace(HOME, "").replace(DATA, ""):
            self.problems.append(self.project.source.problem(where, f"{what} renders to a value with a NUL byte on host {self.target.name}"))
        return value

    def path(self, template: str, where: KeyPath, what: str) -> str:
        value = self.text(template, where, what)
        found = control_character(value.replace(HOME, "").replace(DATA, ""))
        if found:  # a path names files on the target: an inventory variable cannot smuggle a newline into it
            self.problems.append(self.project.source.problem(
                where, f"{what} renders to a value with the control character {found} on host {self.target.name}"))
            return value
        if value == "~" or value.startswith("~/"):
            value = HOME + value[1:]
        if not (value.startswith("/") or value.startswith(HOME) or value.startswith(DATA)):
            self.problems.append(self.project.source.problem(
                where, f"{what} '{value}' must be absolute or start with ~/ (on host {self.target.name})"))
            return value
        normal = posixpath.normpath(value)
        if ".." in value.split("/"):
            self.problems.append(self.project.source.problem(where, f"{what} '{value}' must not contain '..'"))
        return normal


def _check_crontab_fields(r: _Renderer, project: Project, env: EnvironmentConfig, deploy_home: str,
                          jobs: list[JobSpec]) -> None:
    """Every text that lands in the crontab block: its markers (project, environment), each
    job's comment (id, description) and line (schedule, python, the release under home).
    A control or line-separating character there could end our block early, fake another
    project's marker, or add a line cron runs: refused here, where we can say which key."""
    fields: list[tuple[str, KeyPath, str]] = [
        (project.name, ("project",), "project"),
        (env.name, ("environments", env.name), "environment name"),
        (env.settings.python, ("defaults", "python"), "python"),
        # home's marks (~, data_root) are expanded on the target, to a passwd entry's home or /var/lib
        (deploy_home.replace(HOME, "~").replace(DATA, "/var/lib"), ("defaults", "home"), "home"),
    ]
    rendered = {job.id for job in jobs}
    for job in env.jobs:
        if job.id in rendered:
            where: KeyPath = ("jobs", job.id)
            fields += [(job.id, where, "job id"),
                       (job.description, job.origin.get("description", (*where, "description")), "description"),
                       (job.schedule, job.origin.get("schedule", (*where, "schedule")), "schedule")]
    for value, where, what in fields:
        if value and (bad := unsafe_character(value)) is not None:
            r.problems.append(project.source.problem(where, (
                f"{what} {value!r} holds the character {bad}, which must not reach a crontab (it can end a line "
                f"or hide one); on host {r.target.name}: write it without control or line-separating characters")))


def targets_of(job: Job, targets: list[Target]) -> list[Target]:
    """The targets a job runs on (all of them unless it names hosts or groups)."""
    if job.hosts is None:
        return list(targets)
    return [t for t in targets if any(t.matches(p) for p in job.hosts)]


def check_job_hosts(project: Project, env: EnvironmentConfig, targets: list[Target]) -> None:
    """Every host or group a job names must exist in the environment's inventory."""
    problems: list[Problem] = []
    for job in env.jobs:
        for i, pattern in enumerate(job.hosts or ()):
            if not any(t.matches(pattern) for t in targets):
                where = (*job.origin.get("hosts", ("jobs", job.id, "hosts")), i)
                problems.append(project.source.problem(
                    where, f"job '{job.id}': no host or group '{pattern}' in inventory {env.inventory_shown}"))
    if problems:
        raise InvalidInput(problems)


def render(project: Project, env: EnvironmentConfig, target: Target, all_targets: list[Target],
           environ: Mapping[str, str] | None = None, resolve_secrets: bool = True) -> DesiredState:
    """The desired state of one target. Raises InvalidInput (exit 2) on any template or secret error.

    ``resolve_secrets=False`` (validate) checks everything else and leaves secrets empty.
    """
    r = _Renderer(project, env, target)
    settings = env.settings
    home_template = str(target.vars.get("deployer_home", settings.home))
    deploy_home = r.path(home_template, ("defaults", "home"), "home")
    if r.problems:  # every other path derives from home: one mistake, one message
        raise InvalidInput(r.problems)
    r.context["deploy_home"] = deploy_home
    try:
        flavour = declared_flavour(target.vars, f"{target.name}.{FLAVOUR_VAR}", env.inventory_shown)
    except InvalidInput as exc:
        r.problems.extend(exc.problems)
        flavour = None
    log_dir = r.path(settings.log_dir, ("defaults", "logs", "dir"), "log directory")
    lock_dir = r.path(settings.lock_dir, ("defaults", "locks", "dir"), "lock directory")

    jobs: list[JobSpec] = []
    skipped: list[tuple[str, str]] = []
    files: dict[str, bytes] = {}
    script_names: set[str] = set()
    for relative in project.files:
        files[Path(relative).name] = (project.root / relative).read_bytes()
    def enforce(directory: str, mode: int | None, owner: str | None = None, group: str | None = None) -> tuple[str, ...]:
        # Inside deploy_home every folder is deployer's own; elsewhere only what is declared.
        if directory == deploy_home or directory.startswith(deploy_home.rstrip("/") + "/"):
            return ("mode", "owner", "group")
        return tuple(name for name, value in (("mode", mode), ("owner", owner), ("group", group)) if value is not None)

    lock_mode = DEFAULT_LOCK_MODE if settings.lock_mode is None else settings.lock_mode
    dirs: dict[str, DirSpec] = {lock_dir: DirSpec(lock_dir, lock_mode, enforce=enforce(lock_dir, settings.lock_mode))}
    log_dir_users: dict[str, set[str | None]] = {}

    for job in env.jobs:
        if target not in targets_of(job, all_targets):
            skipped.append((job.id, "not for this host (hosts: " + ", ".join(job.hosts or ()) + ")"))
            continue
        if not job.enabled:
            skipped.append((job.id, "disabled"))
            continue
        where: KeyPath = ("jobs", job.id)
        r.context["job"] = job.id
        env_values, secret_names = resolve_env(job, project, environ, resolve_secrets)
        rendered_env = tuple(
            (name, value if name in secret_names else r.text(value, job.origin.get(f"env.{name}", where), f"env {name}"))
            for name, value in sorted(env_values.items())
        )
        alert_file, alert_problems = render_alerts(job, env, project, os.environ if environ is None else environ,
                                                   secret_names, resolve_secrets, target.name)
        r.problems.extend(alert_problems)
        script = None
        if job.script is not None:
            script = Path(job.script).name
            files[script] = (project.root / job.script).read_bytes()
            script_names.add(script)
        log_file = (r.path(job.log_file, job.origin.get("log_file", where), "log_file")
                    if job.log_file else f"{log_dir}/{job.id}.log")
        log_dir_users.setdefault(posixpath.dirname(log_file), set()).add(job.run_as)
        workdir = r.path(job.workdir, job.origin.get("workdir", where), "workdir") if job.workdir else None
        if flavour is not None:
            # The declaration was checked as Debian's cron reads it; this host runs the cron
            # its inventory names, whose crontab may refuse what Debian's takes (busybox: '7').
            try:
                normalize(job.schedule, flavour)
            except ScheduleError as exc:
                r.problems.append(project.source.problem(
                    job.origin.get("schedule", (*where, "schedule")),
                    f"{exc} (host {target.name}: {FLAVOUR_VAR} is {flavour} in inventory {env.inventory_shown})"))
        jobs.append(JobSpec(
            id=job.id,
            description=job.description,
            schedule=job.schedule,
            script=script,
            command=job.command,
            args=tuple(r.text(a, (*job.origin.get("args", where), i), "argument") for i, a in enumerate(job.args)),
            run_as=job.run_as,
            log_file=log_file,
            lock_file=f"{lock_dir}/{job.id}.lock",
            state_dir=f"{deploy_home}/state/{job.id}",
            timeout=job.timeout,
            concurrency=job.concurrency,
            workdir=workdir,
            env=rendered_env,
            secret_names=secret_names,
            legacy_locks=tuple(r.path(p, (*job.origin.get("legacy_locks", where), i), "legacy lock")
                               for i, p in enumerate(job.legacy_locks)),
            legacy_scripts=tuple(r.path(p, (*job.origin.get("legacy_scripts", where), i), "legacy script")
                                 for i, p in enumerate(job.legacy_scripts)),
            retention=job.retention,
            moves=tuple(move for old in job.previous_ids for move in (
                (f"{deploy_home}/state/{old}", f"{deploy_home}/state/{job.id}"),
                *([(f"{log_dir}/{old}.log", log_file)] if not job.log_file else []))),
            alerts=alert_file.text if alert_file else None,
            alerts_public=alert_file.public if alert_file else None,
            alert_secrets=alert_file.secrets if alert_file else frozenset(),
        ))
    for directory, users in sorted(log_dir_users.items()):
        # A log folder shared by jobs of different users belongs to the connecting user;
        # each job's log file is created for its own user, so every job can still write.
        owner = settings.log_owner or (next(iter(users)) if len(users) == 1 else None)
        log_mode = DEFAULT_LOG_MODE if settings.log_mode is None else settings.log_mode
        dirs[directory] = DirSpec(directory, log_mode, owner, settings.log_group,
                                  enforce(directory, settings.log_mode, settings.log_owner, settings.log_group))
    _check_crontab_fields(r, project, env, deploy_home, jobs)
    if r.problems:
        raise InvalidInput(r.problems)
    return DesiredState(
        project=project.name,
        env=env.name,
        target=target.name,
        deploy_home=deploy_home,
        python=settings.python,
        keep_releases=settings.keep_releases,
        jobs=tuple(jobs),
        files=tuple(sorted(files.items())),
        script_names=frozenset(script_names),
        dirs=tuple(dirs[k] for k in sorted(dirs)),
        skipped=tuple(skipped),
        cron_flavour=flavour,
    )
