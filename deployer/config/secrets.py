"""Resolve secret references on the controller, at deploy time.

Secrets never pass through the declaration's templates, the crontab, argv or plan
output: they go into the job's 0600 env file on the target and nowhere else.

A secret file is read only from inside the project folder: a declaration (someone else's
pull request, a copied example) must not be able to ship any file of the controller (SSH
keys, cloud credentials) into a target's env file. Absolute paths, ``~`` and ``..`` are
refused, and so is a link that leads out of the project. The operator, not the declaration,
can allow folders outside it: ``DEPLOYER_SECRET_DIRS`` (colon-separated, on the machine
running deployer), e.g. ``DEPLOYER_SECRET_DIRS=/etc/shop-secrets:~/.config/shop``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from deployer.config.project import Job, Project, Secret
from deployer.config.yamlsource import load_yaml
from deployer.errors import InvalidInput, Problem

SECRET_DIRS = "DEPLOYER_SECRET_DIRS"  # noqa: S105 - the name of an environment variable, not a secret
MAX_SECRET_FILE = 1024 * 1024  # a secret file bigger than this is a mistake (a log, a dump, /dev/zero)


def allowed_folders(root: Path, environ: Mapping[str, str]) -> list[Path]:
    """The project folder, then every folder the operator allows in $DEPLOYER_SECRET_DIRS."""
    extra = [Path(p).expanduser() for p in environ.get(SECRET_DIRS, "").split(":") if p.strip()]
    return [root.resolve(), *(p.resolve() for p in extra if p.is_absolute())]


def secret_file_path(name: str, root: Path, environ: Mapping[str, str]) -> Path:
    """Where the secret file ``name`` is, once checked to be inside an allowed folder (ValueError if not)."""
    try:
        path = Path(name).expanduser()
    except RuntimeError:  # ~user of an unknown user: not in the project, whoever it is
        path = Path(name)
    written = path if path.is_absolute() else root / path
    real = written.resolve()  # every link followed, so a link out of the project is seen
    project, *allowed = allowed_folders(root, environ)
    if any(_within(real, folder) for folder in allowed):
        return real  # the operator allowed that folder, however the declaration spells the path
    plain = not (Path(name).is_absolute() or name.startswith("~") or ".." in Path(name).parts)
    if plain and _within(real, project):
        return real
    how = f"allow its folder with {SECRET_DIRS}=/that/folder on this machine"
    if plain:  # a plain relative path leaves the project only through a link
        raise ValueError(f"secret file '{name}' is a link to {real}, outside the project folder ({root}); "
                       f"deployer reads secret files only inside it: copy the file into the project, or {how}")
    raise ValueError(f"secret file '{name}' is outside the project folder ({root}); deployer reads secret files "
                   f"only inside it (no absolute path, '~' or '..'): move the file into the project, or {how}")


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _read_key(path: Path, key: str) -> str | None:
    """A key from a YAML mapping or a KEY=VALUE (dotenv) file."""
    text = _read(path)
    try:
        data, _ = load_yaml(text, str(path))  # bounded: no alias bomb in a secret file either
    except InvalidInput:
        data = None
    if isinstance(data, dict):
        value = data.get(key)
        return None if value is None else str(value)
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip().removeprefix("export ").strip() == key:
            return value.strip().strip('"').strip("'")
    return None


def _read(path: Path) -> str:
    """A regular file of at most MAX_SECRET_FILE bytes (a FIFO or a device would hang or never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(0, "not a regular file")
        data = f.read(MAX_SECRET_FILE + 1)
    if len(data) > MAX_SECRET_FILE:
        raise OSError(0, f"bigger than {MAX_SECRET_FILE // 1024} KiB, too big for a secret")
    return data.decode("utf-8")


def resolve_secret(secret: Secret, project: Project, environ: Mapping[str, str]) -> str:
    """The secret's value; ValueError with a person's message when it cannot be found."""
    if secret.env is not None:
        if secret.env not in environ:
            raise ValueError(f"environment variable {secret.env} is not set on this machine; export it before running deployer")
        return environ[secret.env]
    assert secret.file is not None
    path = secret_file_path(secret.file, project.root, environ)
    try:
        if secret.key is None:
            return _read(path).rstrip("\n")
        value = _read_key(path, secret.key)
    except FileNotFoundError:
        raise ValueError(f"secret file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"secret file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"secret file {path} cannot be read: it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
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
            try:
                if not resolve:  # validate: where the file is can be checked without reading it
                    if value.file is not None:
                        secret_file_path(value.file, project.root, environ)
                    values[name] = ""
                    continue
                values[name] = resolve_secret(value, project, environ)
            except ValueError as exc:
                path = job.origin.get(f"env.{name}", ("jobs", job.id, "env", name))
                problems.append(project.source.problem(path, f"secret of job '{job.id}': {exc}"))
        else:
            values[name] = value
    if problems:
        raise InvalidInput(problems)
    return values, frozenset(secret_names)
