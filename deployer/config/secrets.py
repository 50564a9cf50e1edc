"""Resolve secret references on the controller, at deploy time.

Secrets never pass through the declaration's templates, the crontab, argv or plan
output: they go into the job's 0600 env file on the target and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from deployer.config.project import Job, Project, Secret
from deployer.errors import InvalidInput, Problem


def _read_key(path: Path, key: str) -> str | None:
    """A key from a YAML mapping or a KEY=VALUE (dotenv) file."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        value = data.get(key)
        return None if value is None else str(value)
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().removeprefix("export ").strip() == key:
            return value.strip().strip('"').strip("'")
    return None


def resolve_secret(secret: Secret, project: Project, environ: Mapping[str, str]) -> str:
    """The secret's value; ValueError with a person's message when it cannot be found."""
    if secret.env is not None:
        if secret.env not in environ:
            raise ValueError(f"environment variable {secret.env} is not set on this machine; export it before running deployer")
        return environ[secret.env]
    assert secret.file is not None
    path = Path(secret.file).expanduser()
    if not path.is_absolute():
        path = project.root / path
    try:
        if secret.key is None:
            return path.read_text(encoding="utf-8").rstrip("\n")
        value = _read_key(path, secret.key)
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"secret file {path} cannot be read: {exc}") from None
    if value is None:
        raise ValueError(f"secret file {path} has no key '{secret.key}'")
    return value


def resolve_env(job: Job, project: Project, environ: Mapping[str, str] | None = None,
                resolve: bool = True) -> tuple[dict[str, str], frozenset[str]]:
    """The job's environment with secrets resolved (or left empty), and the names that are secret."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    secret_names: set[str] = set()
    problems: list[Problem] = []
    for name, value in job.env:
        if isinstance(value, Secret):
            secret_names.add(name)
            if not resolve:
                values[name] = ""
                continue
            try:
                values[name] = resolve_secret(value, project, environ)
            except ValueError as exc:
                path = job.origin.get(f"env.{name}", ("jobs", job.id, "env", name))
                problems.append(project.source.problem(path, f"secret of job '{job.id}': {exc}"))
        else:
            values[name] = value
    if problems:
        raise InvalidInput(problems)
    return values, frozenset(secret_names)
