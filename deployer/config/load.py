"""Load ``deployer.yml``: parse, validate, apply an environment's overrides.

The result is a ``Project``: plain frozen data, with every job already merged for each
environment (defaults <- environment defaults <- job <- environment's job override).
Every problem found is collected and raised together as ``InvalidInput`` (exit 2), each
naming the file, the key path and the line.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from deployer.config import alerting, model
from deployer.config.chars import control_character
from deployer.config.project import (
    DEFAULT_HOME,
    DEFAULT_KEEP_RELEASES,
    DEFAULT_LOCK_DIR,
    DEFAULT_LOG_DIR,
    DEFAULT_TIMEOUT,
    EnvironmentConfig,
    Job,
    JobAlerts,
    Project,
    RetentionPolicy,
    Secret,
    Settings,
    Variable,
)
from deployer.config.yamlsource import KeyPath, SourceMap, format_key_path, load_yaml_file
from deployer.errors import InvalidInput, Problem

__all__ = ["DEFAULT_FILE", "EnvironmentConfig", "Job", "Project", "Secret", "Settings", "Variable", "load_project"]

DEFAULT_FILE = "deployer.yml"



# ----------------------------------------------------------------------------- errors


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


_TAGS = {"plain-value", "secret-ref", "var-text", "var-boolean"}


def _clean_loc(loc: tuple[Any, ...]) -> KeyPath:
    return tuple(part for part in loc if part not in _TAGS and not str(part).startswith("function-"))


MODEL_WORDS = {
    "JobFields": "a mapping of job settings (script, schedule, ...)",
    "Environment": "a mapping of environment settings (inventory, vars, defaults, jobs)",
    "Defaults": "a mapping of default settings (timeout, env, logs, ...)",
    "Declaration": "a mapping (project, jobs, environments, ...)",
    "Logs": "a mapping (dir, mode, owner, group)",
    "Locks": "a mapping (dir, mode)",
    "SecretRef": "a mapping such as {secret: {env: NAME}}",
    "SecretSource": "a mapping such as {env: NAME} or {file: PATH}",
    "Alerts": "a mapping (channels, route, rules, grace, metrics)",
    "JobAlerts": "a mapping (route, rules, grace, ping)",
    "AlertRules": "a mapping (when, after, quiet)",
    "Channel": "a mapping with one of mail or webhook",
    "MailChannel": "a mapping (to, sender, smtp or sendmail)",
    "SmtpRelay": "a mapping (host, port, starttls, user, password, ca_file)",
    "WebhookChannel": "a mapping (url, headers)",
    "Metrics": "a mapping (dir)",
}


def _alert_shapes() -> dict[tuple[str, ...], type[BaseModel]]:
    shapes: dict[tuple[str, ...], type[BaseModel]] = {}
    secret: dict[tuple[str, ...], type[BaseModel]] = {(): model.SecretRef, ("secret",): model.SecretSource}
    for prefix, whole in ((("alerts",), True), (("environments", "*", "alerts"), True),
                          (("jobs", "*", "alerts"), False), (("environments", "*", "jobs", "*", "alerts"), False)):
        shapes[prefix] = model.Alerts if whole else model.JobAlerts
        shapes[(*prefix, "rules")] = model.AlertRules
        if whole:
            channel = (*prefix, "channels", "*")
            shapes.update({channel: model.Channel, (*channel, "mail"): model.MailChannel,
                           (*channel, "mail", "smtp"): model.SmtpRelay, (*channel, "webhook"): model.WebhookChannel,
                           (*prefix, "metrics"): model.Metrics})
            shapes.update({(*channel, "mail", "smtp", "password", *k): v for k, v in secret.items()})
            shapes.update({(*channel, "webhook", "headers", "*", *k): v for k, v in secret.items()})
        else:
            shapes.update({(*prefix, "ping", *k): v for k, v in secret.items()})
    return shapes


def _message(err: Any, path: KeyPath, src: SourceMap) -> str:
    kind = err["type"]
    if kind == "model_type":
        name = err.get("ctx", {}).get("class_name", "")
        return f"should be {MODEL_WORDS.get(name, 'a mapping')}, not {_describe(err.get('input'))}"
    if kind == "string_type" and isinstance(err.get("input"), bool) and path in src.booleans:
        spelt = src.booleans[path]
        what = "an argument" if "args" in path else "text"
        return f"YAML reads {spelt} as the boolean {str(err['input']).lower()}; quote it ('{spelt}') to pass it as {what}"
    if kind == "extra_forbidden":
        key = str(path[-1])
        allowed = _allowed_keys(path[:-1])
        hint = _suggest(key, allowed)
        listing = f" (allowed: {', '.join(allowed)})" if allowed and not hint else ""
        return f"unknown key '{key}'{hint}{listing}"
    if kind == "missing":
        return f"required key '{path[-1]}' is missing"
    msg: str = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if kind == "bool_parsing":
        return f"should be true or false, not {_describe(err.get('input'))}"
    if msg.startswith("Input should be"):
        msg = "should be" + msg[len("Input should be"):]
        if kind in {"string_type", "int_type", "bool_type", "list_type", "dict_type", "model_type", "bool_parsing", "int_parsing"}:
            msg += f", not {_describe(err.get('input'))}"
    return msg


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return f"{value} (a number)"
    return f"'{value}'"


def _allowed_keys(parent: KeyPath) -> list[str]:
    """Allowed keys at a parent path of deployer.yml, by shape (names of jobs/envs skipped)."""
    shape = _shape(parent)
    models: dict[tuple[str, ...], type[BaseModel]] = {
        (): model.Declaration,
        ("defaults",): model.Defaults,
        ("defaults", "logs"): model.Logs,
        ("defaults", "locks"): model.Locks,
        ("jobs", "*"): model.JobFields,
        ("environments", "*"): model.Environment,
        ("environments", "*", "defaults"): model.Defaults,
        ("environments", "*", "defaults", "logs"): model.Logs,
        ("environments", "*", "defaults", "locks"): model.Locks,
        ("environments", "*", "jobs", "*"): model.JobFields,
        ("defaults", "retention"): model.Retention,
        ("jobs", "*", "retention"): model.Retention,
        ("environments", "*", "defaults", "retention"): model.Retention,
        ("environments", "*", "jobs", "*", "retention"): model.Retention,
        ("jobs", "*", "env", "*"): model.SecretRef,
        ("jobs", "*", "env", "*", "secret"): model.SecretSource,
        ("defaults", "env", "*"): model.SecretRef,
        ("defaults", "env", "*", "secret"): model.SecretSource,
        ("environments", "*", "jobs", "*", "env", "*"): model.SecretRef,
        ("environments", "*", "jobs", "*", "env", "*", "secret"): model.SecretSource,
        **_alert_shapes(),
    }
    found = models.get(shape)
    return list(found.model_fields) if found else []


def _shape(path: KeyPath) -> tuple[str, ...]:
    out: list[str] = []
    for i, part in enumerate(path):
        parent = out[-1] if out else None
        if parent in {"jobs", "environments", "env", "channels", "headers"} and (i == 0 or out[-1] != "*"):
            out.append("*")
        else:
            out.append(str(part))
    return tuple(out)


def _validation_problems(exc: ValidationError, src: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[KeyPath, str]] = set()
    for err in exc.errors():
        path = _clean_loc(tuple(err["loc"]))
        msg = _message(err, path, src)
        if (path, msg) in seen:
            continue
        seen.add((path, msg))
        problems.append(src.problem(path, msg))
    return problems


# ----------------------------------------------------------------------------- loading


def load_project(path: str | Path = DEFAULT_FILE) -> Project:
    """Load and fully validate a declaration file; raise InvalidInput listing every problem."""
    file = Path(path)
    shown = str(path)
    raw, src = load_yaml_file(file, shown)
    root = file.resolve().parent
    if not isinstance(raw, dict):
        raise InvalidInput([Problem("the declaration must be a mapping (project, jobs, environments, ...)", file=shown, line=1)])

    problems = _check_names(raw, src)
    problems.extend(_check_var_names(raw, src))
    try:
        decl = model.Declaration.model_validate(raw)
    except ValidationError as exc:
        problems.extend(_validation_problems(exc, src))
        raise InvalidInput(_sorted(problems)) from None
    if problems:
        raise InvalidInput(_sorted(problems))

    problems.extend(_check_files(decl, root, src))
    environments: dict[str, EnvironmentConfig] = {}
    for env_name, env in decl.environments.items():
        try:
            environments[env_name] = _environment(decl, env_name, env, root, src)
        except InvalidInput as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInput(_sorted(problems))
    return Project(decl.project, root, shown, tuple(decl.files), environments, src)


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda p: (p.file or "", p.line or 0, p.key_path or ""))


def _check_names(raw: dict[str, Any], src: SourceMap) -> list[Problem]:
    """Names used as keys (job ids, variable names, environments), located at their line."""
    problems: list[Problem] = []
    jobs = raw.get("jobs")
    if isinstance(jobs, dict):
        for job_id, job in jobs.items():
            if not model.JOB_ID.fullmatch(job_id):
                problems.append(src.problem(("jobs", job_id), (
                    f"'{job_id}' is not a valid job id: use lowercase letters, digits, '-' and '_' "
                    "(it names files and crontab entries, so no '/', spaces or shell characters)")))
            if isinstance(job, dict):
                problems.extend(_check_env_names(job.get("env"), ("jobs", job_id, "env"), src))
    defaults = raw.get("defaults")
    if isinstance(defaults, dict):
        problems.extend(_check_env_names(defaults.get("env"), ("defaults", "env"), src))
    envs = raw.get("environments")
    if isinstance(envs, dict):
        for name, env in envs.items():
            if not model.ENVIRONMENT_NAME.fullmatch(name):
                problems.append(src.problem(("environments", name), f"'{name}' is not a valid environment name (lowercase letters, digits, '-' and '_')"))
            if not isinstance(env, dict):
                continue
            env_defaults = env.get("defaults")
            if isinstance(env_defaults, dict):
                problems.extend(_check_env_names(env_defaults.get("env"), ("environments", name, "defaults", "env"), src))
            overrides = env.get("jobs")
            if isinstance(overrides, dict):
                for job_id, job in overrides.items():
                    if isinstance(jobs, dict) and job_id not in jobs:
                        problems.append(src.problem(("environments", name, "jobs", job_id),
                                                    f"overrides job '{job_id}', which is not declared under jobs{_suggest(job_id, list(jobs))}"))
                    if isinstance(job, dict):
                        problems.extend(_check_env_names(job.get("env"), ("environments", name, "jobs", job_id, "env"), src))
    return problems


RESERVED_VARS = {"project", "env", "host", "home", "data_root", "deploy_home", "vars", "job"}


def _check_var_names(raw: dict[str, Any], src: SourceMap) -> list[Problem]:
    places: list[tuple[KeyPath, Any]] = [(("vars",), raw.get("vars"))]
    envs = raw.get("environments")
    if isinstance(envs, dict):
        places += [(("environments", n, "vars"), e.get("vars")) for n, e in envs.items() if isinstance(e, dict)]
    problems: list[Problem] = []
    for path, variables in places:
        if not isinstance(variables, dict):
            continue
        for name in variables:
            if name in RESERVED_VARS:
                problems.append(src.problem((*path, name), f"'{name}' is set by deployer itself; choose another variable name"))
            elif not model.ENV_NAME.fullmatch(name):
                problems.append(src.problem((*path, name), f"'{name}' is not a valid variable name (letters, digits and '_')"))
    return problems


def _check_env_names(env: Any, path: KeyPath, src: SourceMap) -> list[Problem]:
    if not isinstance(env, dict):
        return []
    return [
        src.problem((*path, name), f"'{name}' is not a valid environment variable name (letters, digits and '_', not starting with a digit)")
        for name in env
        if not model.ENV_NAME.fullmatch(name)
    ]


def _inside(root: Path, relative: str) -> Path | None:
    """The file ``relative`` inside the project root, or None if it escapes it."""
    candidate = (root / relative).resolve()
    try:
        candidate.relative_to(root)
    except ValueError:
        return None
    return candidate


def _check_local_file(root: Path, relative: str, what: str, path: KeyPath, src: SourceMap) -> Problem | None:
    if Path(relative).is_absolute() or _inside(root, relative) is None:
        return src.problem(path, f"{what} '{relative}' must be a path inside the project folder ({root})")
    full = root / relative
    if not full.exists():
        return src.problem(path, f"{what} '{relative}' does not exist (looked in {root})")
    if not full.is_file():
        return src.problem(path, f"{what} '{relative}' is not a regular file")
    try:
        full.read_bytes()
    except OSError as exc:
        return src.problem(path, f"{what} '{relative}' cannot be read: {exc.strerror}")
    return None


def _check_files(decl: model.Declaration, root: Path, src: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    pushed: dict[str, KeyPath] = {}

    claimed: dict[str, str] = {}

    def claim(relative: str, path: KeyPath) -> None:
        # Scripts and extra files land in one folder on the target: one name, one file.
        name = Path(relative).name
        if name in claimed and claimed[name] != relative:
            problems.append(src.problem(path, f"'{relative}' and '{claimed[name]}' (at {_fmt(pushed[name])}) would both land on the target as '{name}'; rename one"))
        claimed.setdefault(name, relative)
        pushed.setdefault(name, path)

    for i, relative in enumerate(decl.files):
        problem = _check_local_file(root, relative, "file", ("files", i), src)
        if problem:
            problems.append(problem)
        claim(relative, ("files", i))
    scripts: dict[str, KeyPath] = {}
    for job_id, job in decl.jobs.items():
        if job.script is not None:
            scripts.setdefault(job.script, ("jobs", job_id, "script"))
    for env_name, env in decl.environments.items():
        for job_id, job in (env.jobs or {}).items():
            if job.script is not None:
                scripts.setdefault(job.script, ("environments", env_name, "jobs", job_id, "script"))
    for relative, path in scripts.items():
        problem = _check_local_file(root, relative, "script", path, src)
        if problem:
            problems.append(problem)
        claim(relative, path)
    return problems


def _fmt(path: KeyPath) -> str:
    return format_key_path(path)


def _merge(layers: list[tuple[KeyPath, model.JobFields | model.Defaults | None]]) -> tuple[dict[str, Any], dict[str, KeyPath]]:
    """Later layers win field by field; ``env`` mappings merge key by key."""
    values: dict[str, Any] = {}
    origin: dict[str, KeyPath] = {}
    for path, layer in layers:
        if layer is None:
            continue
        for name in layer.model_fields_set:
            value = getattr(layer, name)
            if value is None:
                continue
            if name == "env":
                merged = dict(values.get("env", {}))
                for var, var_value in value.items():
                    merged[var] = var_value
                    origin[f"env.{var}"] = (*path, "env", var)
                values["env"] = merged
            else:
                values[name] = value
            origin[name] = (*path, name)
    return values, origin


def _retention(declared: model.Retention | None) -> RetentionPolicy:
    base = RetentionPolicy()
    if declared is None:
        return base
    return RetentionPolicy(
        runs=declared.runs or base.runs, days=declared.days or base.days,
        log_size=declared.log_size or base.log_size, log_files=declared.log_files or base.log_files,
        run_logs=base.run_logs if declared.run_logs is None else declared.run_logs,
    )


class _Defaults:
    """The environment's ``defaults:`` over the top level's: the first that sets a key wins."""

    def __init__(self, decl: model.Declaration, env: model.Environment) -> None:
        self.top = decl.defaults
        self.local = env.defaults or model.Defaults()

    def pick(self, name: str, default: Any) -> Any:
        for layer in (self.local, self.top):
            value = getattr(layer, name)
            if value is not None:
                return value
        return default

    def pick_sub(self, section: str, name: str, default: Any) -> Any:
        for layer in (self.local, self.top):
            sub = getattr(layer, section)
            if sub is not None and getattr(sub, name) is not None:
                return getattr(sub, name)
        return default

    def settings(self) -> Settings:
        return Settings(
            home=self.pick("home", DEFAULT_HOME),
            log_dir=self.pick_sub("logs", "dir", DEFAULT_LOG_DIR),
            log_mode=self.pick_sub("logs", "mode", None),
            log_owner=self.pick_sub("logs", "owner", None),
            log_group=self.pick_sub("logs", "group", None),
            lock_dir=self.pick_sub("locks", "dir", DEFAULT_LOCK_DIR),
            lock_mode=self.pick_sub("locks", "mode", None),
            keep_releases=self.pick("keep_releases", DEFAULT_KEEP_RELEASES),
            python=self.pick("python", "python3"),
        )

    def job_layers(self, job_id: str, base: Any, override: Any, env_path: KeyPath) -> list[tuple[KeyPath, Any]]:
        """A job's layers, later winning: defaults' env, defaults, the job, the environment's override."""
        shared = model.JobFields(run_as=self.pick("run_as", None), timeout=self.pick("timeout", None),
                                 concurrency=self.pick("concurrency", None), retention=self.pick("retention", None))
        env_defaults: dict[str, Any] = dict(self.top.env or {})
        env_defaults.update(self.local.env or {})
        return [
            (("defaults",), model.JobFields(env=env_defaults) if env_defaults else None),
            (("defaults",), shared),
            (("jobs", job_id), base),
            ((*env_path, "jobs", job_id), override),
        ]


def _environment(decl: model.Declaration, env_name: str, env: model.Environment, root: Path, src: SourceMap) -> EnvironmentConfig:
    env_path: KeyPath = ("environments", env_name)
    defaults = _Defaults(decl, env)
    channels, metrics_dir, problems = alerting.environment_channels(decl, env_name, env, src)
    inventory_path = _inside(root, env.inventory)
    if Path(env.inventory).is_absolute() or inventory_path is None:
        problems.append(src.problem((*env_path, "inventory"), f"inventory '{env.inventory}' must be a path inside the project folder"))
    elif not inventory_path.exists():
        problems.append(src.problem((*env_path, "inventory"), f"inventory '{env.inventory}' does not exist (looked in {root})"))

    jobs: list[Job] = []
    for job_id, base in decl.jobs.items():
        values, origin = _merge(defaults.job_layers(job_id, base, (env.jobs or {}).get(job_id), env_path))
        values.pop("alerts", None)  # merged key by key, by alerting.job_alerts
        if not _in_environment(decl, env_name, values, origin, src, problems):
            continue
        if (problem := _job_shape_problem(values, origin, ("jobs", job_id), src)) is not None:
            problems.append(problem)
            continue
        job_alerts, alert_problems = alerting.job_alerts(decl, env_name, env, job_id, channels, src)
        problems.extend(alert_problems)
        jobs.append(_job(job_id, values, origin, job_alerts))
    problems += _previous_id_problems(decl, jobs, src)
    if problems:
        raise InvalidInput(problems)
    variables = {name: Variable(name, value, ("vars", name)) for name, value in decl.vars.items()}
    for name, value in (env.vars or {}).items():
        variables[name] = Variable(name, value, (*env_path, "vars", name))
    return EnvironmentConfig(env_name, inventory_path or root, env.inventory, defaults.settings(), tuple(jobs),
                             tuple(variables.values()), channels, metrics_dir,
                             alerting.environment_healthchecks(decl, env_name, env),
                             alerting.environment_alerts(decl, env_name, env, channels))


def _in_environment(decl: model.Declaration, env_name: str, values: dict[str, Any], origin: dict[str, KeyPath],
                    src: SourceMap, problems: list[Problem]) -> bool:
    """Whether the job's ``environments:`` (if any) takes in this one; unknown names are problems."""
    allowed_envs = values.get("environments")
    if allowed_envs is None:
        return True
    for i, name in enumerate(allowed_envs):
        if name not in decl.environments:
            problems.append(src.problem(origin["environments"] + (i,),
                                        f"unknown environment '{name}'{_suggest(name, list(decl.environments))} (declared: {', '.join(decl.environments)})"))
    return env_name in allowed_envs


def _job_shape_problem(values: dict[str, Any], origin: dict[str, KeyPath], where: KeyPath, src: SourceMap) -> Problem | None:
    """A job that cannot be one: no schedule, not exactly one of script and command, a command that is a shell line."""
    if "schedule" not in values:
        return src.problem(where, "required key 'schedule' is missing")
    if ("script" in values) == ("command" in values):
        return src.problem(where, "a job needs exactly one of 'script' (a Python task script, pushed) or 'command' (a program on the target)")
    command = values.get("command")
    if command is not None:
        if command.strip() != command or any(c.isspace() for c in command):
            return src.problem(origin["command"],
                               f"'{command}' looks like a shell line; 'command' is one program (path or name), put its arguments in 'args' as a list")
        if found := control_character(command):
            return src.problem(origin["command"], f"contains the control character {found}; 'command' is one program (path or name)")
    return None


def _job(job_id: str, values: dict[str, Any], origin: dict[str, KeyPath], job_alerts: JobAlerts) -> Job:
    env_items: list[tuple[str, str | Secret]] = [
        (var, Secret(value.secret.env, value.secret.file, value.secret.key) if isinstance(value, model.SecretRef) else value)
        for var, value in sorted(values.get("env", {}).items())]
    return Job(
        id=job_id,
        schedule=values["schedule"],
        description=values.get("description", ""),
        script=values.get("script"),
        command=values.get("command"),
        args=tuple(values.get("args", ())),
        run_as=values.get("run_as"),
        log_file=values.get("log_file"),
        timeout=values.get("timeout", DEFAULT_TIMEOUT),
        concurrency=values.get("concurrency", "forbid"),
        env=tuple(env_items),
        enabled=values.get("enabled", True),
        hosts=tuple(values["hosts"]) if "hosts" in values else None,
        workdir=values.get("workdir"),
        legacy_locks=tuple(values.get("legacy_locks", ())),
        legacy_scripts=tuple(values.get("legacy_scripts", ())),
        previous_ids=tuple(values.get("previous_ids", ())),
        retention=_retention(values.get("retention")),
        alerts=job_alerts,
        origin=origin,
    )


def _previous_id_problems(decl: model.Declaration, jobs: list[Job], src: SourceMap) -> list[Problem]:
    """A previous id must be gone from the declaration and claimed by one job only."""
    problems: list[Problem] = []
    claimed: dict[str, str] = {}
    for job in jobs:
        for old in job.previous_ids:
            where = job.origin.get("previous_ids", ("jobs", job.id))
            if old in decl.jobs:
                problems.append(src.problem(where, (
                    f"'{old}' is the id of a declared job; previous_ids names ids that no longer exist")))
            elif old in claimed:
                problems.append(src.problem(where, f"'{old}' is also a previous id of job '{claimed[old]}': which one is it?"))
            claimed.setdefault(old, job.id)
    return problems
