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
import subprocess
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

    # Emptied of the operator's file, the folder is still the operator's: destroy never
    # removes a home it did not create, even with nothing left in it.
    (home / "precious.txt").unlink()
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    purged = project.deployer("destroy", "dev", "--yes", "--purge-logs")
    assert purged.exit_code == 0, purged
    assert home.is_dir() and list(home.iterdir()) == []
    assert stat.S_IMODE(home.stat().st_mode) == 0o711

    # A home deployer made goes entirely.
    made = outside / "made-by-deployer"
    _declare(project, f"  home: {made}\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert stat.S_IMODE(made.stat().st_mode) == 0o755
    assert project.deployer("destroy", "dev", "--yes", "--purge-logs").exit_code == 0
    assert not made.exists()


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p): (p.lstat().st_uid, p.lstat().st_gid, stat.S_IMODE(p.lstat().st_mode))
            for p in [root, *sorted(root.rglob("*"))]}


def test_an_existing_home_keeps_its_owner_and_mode(project: Project, user_crontab: str, outside: Path) -> None:
    """An operator's folder declared as the home (and its releases/ and state/ folders) is
    not chmodded to 0755 nor chowned; deployer's own folders inside it get their modes."""
    home = outside / "apphome"
    for folder, mode in ((home, 0o705), (home / "releases", 0o745), (home / "state", 0o755)):
        folder.mkdir()
        os.chmod(folder, mode)
        os.chown(folder, 0, 60)  # group games: not deployer's to change
    _declare(project, f"  home: {home}\n")
    planned = project.deployer("plan", "dev")
    assert planned.exit_code == 0, planned
    assert f"{home}: " not in planned.stdout and "0705 ->" not in planned.stdout, planned
    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert [(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) for st in
            (home.stat(), (home / "releases").stat(), (home / "state").stat())] == [(0, 60, 0o705), (0, 60, 0o745),
                                                                                   (0, 60, 0o755)]
    assert stat.S_IMODE((home / "backups").stat().st_mode) == 0o700  # made by deployer
    assert not (home / ".created-by-deployer").exists()
    assert project.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0
    assert [c["status"] for c in _files_check(project)] == ["pass"]
    # The job's user walks through 0705 and 0745 (o+rx): the job runs.
    assert project.deployer("run", "dev", "hello").exit_code == 0

    # Without o+rx the job's user cannot walk to its wrapper: plan says so, apply keeps the mode.
    os.chmod(home / "releases", 0o711)
    warned = project.deployer("plan", "dev")
    assert (f"{home}/releases is mode 0711 (kept: deployer did not create it): {TEST_USER} may not reach the run "
            f"wrapper and records under it; chmod o+rx {home}/releases") in " ".join(warned.stdout.split()), warned
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert stat.S_IMODE((home / "releases").stat().st_mode) == 0o711


@pytest.mark.parametrize("unsafe", ["world-writable", "group-writable", "the job user's"])
def test_an_existing_home_others_can_write_is_refused(project: Project, user_crontab: str, outside: Path,
                                                       unsafe: str) -> None:
    """Whoever can add, rename or remove entries in the home could swap a release under cron:
    such a folder is refused by plan and apply (exit 1, the reason, what to do), nothing written."""
    home = outside / "apphome"
    home.mkdir()
    os.chmod(home, {"world-writable": 0o1777, "group-writable": 0o775, "the job user's": 0o755}[unsafe])
    if unsafe == "the job user's":
        os.chown(home, pwd.getpwnam(TEST_USER).pw_uid, 0)
    _declare(project, f"  home: {home}\n")
    before = _tree(home)
    owner = TEST_USER if unsafe == "the job user's" else "root"
    mode = {"world-writable": "1777", "group-writable": "0775", "the job user's": "0755"}[unsafe]
    message = (f"{home} is writable by others than root (owner {owner}, mode {mode}): deployer keeps its releases "
               "and run records there and writes nothing into it; make it root's and not group- or "
               "world-writable (chmod go-w), or declare another home")
    for args in (("plan", "dev"), ("apply", "dev", "--yes")):
        refused = project.deployer(*args)
        assert refused.exit_code == 1, refused
        assert message in " ".join(refused.stdout.split()), refused
    assert _tree(home) == before
    crontab = subprocess.run(["crontab", "-u", TEST_USER, "-l"], capture_output=True, text=True)
    assert "BEGIN deployer" not in crontab.stdout


def test_the_applier_itself_refuses_a_home_others_can_write(outside: Path) -> None:
    """The same refusal on the target, for a home that became writable by others after plan
    looked (plan's own check cannot see that): the real applier, run as apply runs it, writes
    nothing there, not even its deploy lock."""
    from deployer.engine import remote
    from deployer.transport.local import LocalTransport

    home = outside / "apphome"
    home.mkdir()
    os.chmod(home, 0o777)
    before = _tree(home)
    answer = remote.call(LocalTransport(), "applier", {"project": "demo", "env": "dev", "deploy_home": str(home),
                                                        "revision": "0" * 12, "crontabs": [], "dirs": [], "files": []})
    assert answer["ok"] is False and answer["kind"] == "unsafe-home", answer
    assert answer["error"].startswith(f"{home} is writable by others than root (owner root, mode 0777)"), answer
    assert answer["done"] == [] and _tree(home) == before
