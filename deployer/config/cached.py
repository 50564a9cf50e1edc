"""The loaded declaration, cached by content: commands on an unchanged deployer.yml skip
parsing and validation (and importing pydantic, a tenth of a no-op apply's time).

The entry is keyed by the declaration's bytes, the name it was given as, and the versions
of deployer and Python; it records the files the declaration points at (scripts, extra
files, inventories) with size and mtime, and is used only while all of them are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

from deployer import __version__
from deployer.config import project as project_module
from deployer.config.project import Project

CACHE_VERSION = 1


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deployer"


def _stamp(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


def _dependencies(project: Project) -> list[Path]:
    paths = [project.root / f for f in project.files]
    for env in project.environments.values():
        paths.append(env.inventory)
        paths += [project.root / job.script for job in env.jobs if job.script]
    return sorted(set(paths))


def _code_stamp() -> str:
    folder = Path(project_module.__file__ or "").parent
    return ";".join(f"{s[0]},{s[1]},{s[2]}" for p in sorted(folder.glob("*.py")) if (s := _stamp(p)) is not None)


def load_project_cached(path: str | Path) -> Project:
    """``load_project``, reusing the result of an identical earlier load."""
    from_disk = None
    if os.environ.get("DEPLOYER_PROJECT_CACHE", "1") != "0":
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
        if data is not None:
            # What a declaration loads into is the config package's code (project.py's shapes,
            # load.py's and alerting.py's reading of it): any file of it changed is a new key.
            shape = _code_stamp()
            key = hashlib.sha256(f"{CACHE_VERSION}\0{__version__}\0{shape}\0{sys.version}\0{path}\0{Path(path).resolve()}\0"
                                 .encode() + data).hexdigest()[:32]
            from_disk = _cache_dir() / f"project-{key}.pickle"
            try:
                # deployer's own objects, in the running user's own cache folder, written 0o600 by
                # that user: whoever can write there can already run code as that user.
                entry = pickle.loads(from_disk.read_bytes())  # noqa: S301
                if all(_stamp(Path(dep[0])) == tuple(dep) for dep in entry["deps"]):
                    project: Project = entry["project"]
                    return project
            except (OSError, pickle.PickleError, EOFError, KeyError, TypeError, ValueError, AttributeError):
                pass
    from deployer.config.load import load_project

    project = load_project(path)
    if from_disk is not None:
        deps = [s for p in _dependencies(project) if (s := _stamp(p)) is not None]
        try:
            from_disk.parent.mkdir(parents=True, exist_ok=True)
            tmp = from_disk.with_suffix(f".tmp-{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pickle.dumps({"deps": deps, "project": project}))
            tmp.replace(from_disk)
        except OSError:
            pass
    return project
