"""Folders deployer did not create (issue 12, class 7), on this machine as root with the test
user's crontab: a shared folder declared as the log folder keeps its owner, mode and sticky
bit unless the declaration says otherwise; `destroy --purge-logs` removes only what deployer
put in a home that was already there."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_USER, Project

pytestmark = pytest.mark.cron


@pytest.fixture
def outside() -> Iterator[Path]:
    """A folder outside deployer's home that the test user can reach (not under pytest's 0700 tmp)."""
    path = Path(f"/var/tmp/deployer-test-foreign-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _declare(project: Project, defaults: str) -> None:
    project.declare(f"project: demo\ndefaults:\n  run_as: {TEST_USER}\n  timeout: 1m\n{defaults}jobs:\n"
                    "  hello:\n    script: tasks/hello.py\n    schedule: \"*/5 * * * *\"\n"
                    "environments:\n  dev:\n    inventory: inventories/dev\n")


def _files_check(project: Project) -> list[dict[str, str]]:
    verified = project.deployer("verify", "dev", "--json")
    report = json.loads(verified.stdout)
    checks = report["hosts"]["localhost"]["checks"]
    return [c for c in checks if c["name"] == "files"]


def test_a_shared_log_folder_keeps_its_owner_mode_and_sticky_bit(project: Project, user_crontab: str,
                                                                 outside: Path) -> None:
    shared = outside / "log"  # stands for /var/log or /tmp: root's, world-writable, sticky
    shared.mkdir()
    os.chmod(shared, 0o1777)
    _declare(project, f"  logs: {{dir: {shared}}}\n")

    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    st = shared.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o1777, 0, 0)
    log = (shared / "hello.log").stat()  # the job's own log file is deployer's: created for its user
    assert stat.S_IMODE(log.st_mode) == 0o640 and log.st_uid != 0
    assert [c["status"] for c in _files_check(project)] == ["pass"]
    planned = project.deployer("plan", "dev", "--detailed-exitcode")
    assert planned.exit_code == 0, planned

    # Declared, the mode is the operator's word: applied to the existing folder.
    _declare(project, f"  logs: {{dir: {shared}, mode: \"0755\"}}\n")
    planned = project.deployer("plan", "dev")
    assert "mode 1777 -> 0755" in planned.stdout, planned
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert (stat.S_IMODE(shared.stat().st_mode), shared.stat().st_uid) == (0o755, 0)


def test_a_log_folder_deployer_creates_gets_the_defaults_and_keeps_them(project: Project, user_crontab: str,
                                                                        outside: Path) -> None:
    created = outside / "shop-cron"
    _declare(project, f"  logs: {{dir: {created}}}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    st = created.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == pwd.getpwnam(TEST_USER).pw_uid


def test_purge_logs_removes_only_what_deployer_put_in_an_existing_home(project: Project, user_crontab: str,
                                                                      outside: Path) -> None:
    home = outside / "apphome"  # an operator's folder, declared as deployer's home
    home.mkdir(mode=0o711)
    (home / "precious.txt").write_text("not deployer's\n")
    _declare(project, f"  home: {home}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert (home / "releases").is_dir() and (home / "state" / "hello").is_dir()

    purged = project.deployer("destroy", "dev", "--yes", "--purge-logs")
    assert purged.exit_code == 0, purged
    assert (home / "precious.txt").read_text() == "not deployer's\n"
    assert sorted(p.name for p in home.iterdir()) == ["precious.txt"]

    # A home with nothing but deployer's things goes entirely, as before.
    (home / "precious.txt").unlink()
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert project.deployer("destroy", "dev", "--yes", "--purge-logs").exit_code == 0
    assert not home.exists()
