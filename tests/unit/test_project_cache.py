"""The loaded-declaration cache (deployer/config/cached.py): reused for an unchanged
declaration, and not once the code that reads declarations changed (a development tree,
where deployer's version stays the same)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import deployer.config.alerting
import deployer.config.load
from deployer.config.cached import load_project_cached

SKELETON = Path(__file__).resolve().parents[1] / "bad_inputs" / "skeleton"
DECLARATION = "project: demo\njobs:\n  hello:\n    script: tasks/hello.py\n    schedule: '@daily'\n" \
              "environments:\n  dev:\n    inventory: inventories/dev\n"


def test_a_change_to_any_file_of_the_config_code_is_a_new_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(SKELETON, tmp_path / "p")
    (tmp_path / "p" / "deployer.yml").write_text(DECLARATION)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEPLOYER_PROJECT_CACHE", raising=False)
    loads: list[Path] = []
    real = deployer.config.load.load_project

    def counted(path: str | Path) -> object:
        loads.append(Path(path))
        return real(path)

    monkeypatch.setattr(deployer.config.load, "load_project", counted)
    declaration = tmp_path / "p" / "deployer.yml"
    load_project_cached(declaration)
    load_project_cached(declaration)
    assert len(loads) == 1  # the second load came from the cache

    code = Path(deployer.config.alerting.__file__ or "")
    before = code.stat()
    try:
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))  # as an edit of it would
        load_project_cached(declaration)
        assert len(loads) == 2
    finally:
        os.utime(code, ns=(before.st_atime_ns, before.st_mtime_ns))
