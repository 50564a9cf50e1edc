"""verify --notify's state file: a path that cannot be one is a person's error (exit 2)
before any host is contacted; two runs at once take turns (the flock on <file>.lock)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from deployer.engine import notify
from deployer.errors import InvalidInput
from tests.conftest import CliResult, Project

pytestmark = pytest.mark.alerts

AFTER = "; nothing was sent and no host was contacted"


def verify_notify(project: Project, state: Path | str, *prefix: str) -> CliResult:
    argv = [*prefix, sys.executable, "-m", "deployer", "--no-color", "verify", "dev", "--notify", "--notify-state", str(state)]
    # the test's own python, maybe in a mount namespace of its own (prefix)
    proc = subprocess.run(argv, cwd=project.root, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "250"})
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_refused(result: CliResult, message: str) -> None:
    assert result.exit_code == 2, result
    assert result.stderr.splitlines()[0] == f"error: {message}{AFTER}", result
    assert "Traceback" not in result.stderr and result.stdout == "", result


def declare(project: Project) -> None:
    project.declare("project: demo\njobs:\n  hello:\n    command: /bin/true\n    schedule: '0 3 * * *'\n"
                    "environments:\n  dev:\n    inventory: inventories/dev\n")


def test_a_folder_a_link_or_a_missing_folder_is_refused(project: Project, tmp_path: Path) -> None:
    declare(project)
    folder = tmp_path / "state"
    folder.mkdir()
    assert_refused(verify_notify(project, folder), f"--notify-state {folder}: is a folder; give the path of a file "
                                                   "(it is created if missing)")
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    assert_refused(verify_notify(project, link), f"--notify-state {link}: is a link; give the path of a file "
                                                 "(it is created if missing)")
    missing = tmp_path / "nowhere" / "notify.json"
    assert_refused(verify_notify(project, missing), f"--notify-state {missing}: the folder {missing.parent} does not exist "
                                                    "(create it, or choose another file)")
    assert not (tmp_path / "elsewhere.json").exists()


def test_a_read_only_folder_is_refused(project: Project, tmp_path: Path) -> None:
    declare(project)
    folder = tmp_path / "ro"
    folder.mkdir()
    state = folder / "notify.json"
    # A read-only mount, in a mount namespace of the run's own: root cannot write there either.
    result = verify_notify(project, state, "unshare", "--mount", "sh", "-c", f"mount --bind -o ro {folder} {folder} && exec \"$@\"", "-")
    assert_refused(result, f"--notify-state {state}: its lock file {state}.lock cannot be opened (Read-only file system)")


def test_the_state_option_needs_notify(project: Project) -> None:
    declare(project)
    result = project.deployer("verify", "dev", "--notify-state", "x.json")
    assert result.exit_code == 2, result
    assert "error: --notify-state is the state of --notify: add --notify, or leave it out" in result.stderr


def test_a_second_run_waits_for_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "notify.json"
    monkeypatch.setattr(notify, "LOCK_WAIT", 0.5)
    with notify.open_state(str(state)):
        errors: list[str] = []

        def second() -> None:
            try:
                with notify.open_state(str(state)):
                    errors.append("got it")
            except InvalidInput as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(10)
    assert errors == [f"--notify-state {state}: another verify --notify is using it (waited 0.5s); try again once it is done{AFTER}"]
    with notify.open_state(str(state)) as handle:  # once the first is done, it is free
        assert handle.state == {"version": 1, "environments": {}}


def test_the_default_state_file_follows_xdg() -> None:
    assert notify.default_state_path({"XDG_STATE_HOME": "/srv/state"}) == Path("/srv/state/deployer/notify.json")
    # XDG: a relative value is to be ignored
    assert notify.default_state_path({"XDG_STATE_HOME": "rel"}) == Path.home() / ".local/state/deployer/notify.json"
    assert notify.default_state_path({}) == Path.home() / ".local/state/deployer/notify.json"
