"""Issue 12, class 1: the job's user never becomes root through deployer's own processes.

Attacks carried out for real, as root deploying to this machine with jobs that run as the
test user:

- modules planted where a careless ``python3 -`` would import them (the folder the operator
  runs deployer from, the user site of HOME, a folder on PYTHONPATH) never run in the probe
  or the applier, which run as root;
- ``deployer run`` started from a real terminal (a pty, as an operator's root shell) gives
  neither the wrapper nor the job that terminal: no controlling tty, stdin from /dev/null,
  and a TIOCSTI by the job (or by a ``.pth`` the job's user planted in its Python) types
  nothing into the operator's shell.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BLOCK_USER, TEST_USER, Project
from tests.cron.test_crontab_tier import declare

pytestmark = pytest.mark.cron

PLANTED = "import pathlib; pathlib.Path({marker!r}).write_text('ran as uid %d' % __import__('os').getuid())\n"
SYSTEM_PYTHON = "/usr/bin/python3"  # what the probe runs as `python3` here
USER_SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


@pytest.fixture
def drop() -> Iterator[Path]:
    """A folder every user may write to: where the attacker's code leaves its proof of running."""
    folder = Path(tempfile.mkdtemp(prefix="deployer-attack-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def plant_modules(project: Project, home: Path, evil_path: Path, drop: Path) -> dict[str, Path]:
    """Modules the probe would run if it were not isolated; each writes its own marker."""
    markers = {name: drop / f"{name}.ran" for name in ("cwd", "user-site", "pythonpath")}
    # the folder the operator runs deployer from: base64 is the first module the probe imports
    project.write("base64.py", PLANTED.format(marker=str(markers["cwd"])) + "from binascii import *\n")
    site = home / ".local" / USER_SITE
    site.mkdir(parents=True)
    (site / "planted.pth").write_text(PLANTED.format(marker=str(markers["user-site"])))
    evil_path.mkdir()
    (evil_path / "usercustomize.py").write_text(PLANTED.format(marker=str(markers["pythonpath"])))
    return markers


def test_planted_modules_never_run_in_the_probe_or_the_applier(project: Project, user_crontab: str, tmp_path: Path,
                                                               drop: Path) -> None:
    declare(project, "  hello:\n    script: tasks/hello.py\n    schedule: '@daily'\n")
    home, evil_path = tmp_path / "home", tmp_path / "evil-path"
    markers = plant_modules(project, home, evil_path, drop)
    # No empty entry: with PYTHONPATH unset (as in CI), ":evil" would put the current folder on the
    # controller's own path, which the operator's `deployer` command never does.
    python_path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(evil_path)]))
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": python_path, "COLUMNS": "200"}

    # The attack is real: the system's python3 run as `python3 -` from there, as deployer did, runs all three.
    subprocess.run([SYSTEM_PYTHON, "-"], input=b"import base64\n", cwd=project.root, env=env, check=True)
    assert {name for name, marker in markers.items() if marker.exists()} == set(markers)
    for marker in markers.values():
        marker.unlink()

    # deployer itself, as its console script runs it (-P: the controller does not put the folder first either)
    for command in (["plan", "dev"], ["apply", "dev", "--yes"], ["verify", "dev"]):
        proc = subprocess.run([sys.executable, "-P", "-m", "deployer", "--no-color", *command], cwd=project.root, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode in (0, 1), proc  # verify may fail (no run yet): what matters is below
        assert "Traceback" not in proc.stderr, proc.stderr
        ran = {name: marker.read_text() for name, marker in markers.items() if marker.exists()}
        assert ran == {}, f"deployer {command[0]}: planted code ran: {ran}"
    assert read_crontab_has_block()


def read_crontab_has_block() -> bool:
    proc = subprocess.run(["crontab", "-u", BLOCK_USER, "-l"], capture_output=True, text=True)
    return "# BEGIN deployer demo/dev" in proc.stdout


# ----------------------------------------------------------------------------- the terminal

# The job (and the .pth below) report what they could reach, then try to type into a terminal.
SPY = r"""
import fcntl, json, os, sys, termios

def tty_nr(pid):
    with open("/proc/%s/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[4])

def spy(who, report):
    seen = {"pid": os.getpid(), "uid": os.getuid(), "tty_nr": tty_nr("self"), "parent_tty_nr": tty_nr(os.getppid()),
            "stdin": os.readlink("/proc/self/fd/0"), "injected": []}
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
        seen["dev_tty"] = "opened"
    except OSError as exc:
        fd = None
        seen["dev_tty"] = exc.strerror
    for target in ([fd] if fd is not None else []) + [0, 1, 2]:
        try:
            for c in "id >/tmp/typed-by-the-job\n":
                fcntl.ioctl(target, termios.TIOCSTI, c.encode())
            seen["injected"].append(target)
        except OSError:
            pass
    with open(os.path.join(report, who + ".json"), "w") as f:
        json.dump(seen, f)
"""
INJECTED = b"typed-by-the-job"


def run_in_a_terminal(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, bytes]:
    """Run ``argv`` as an operator would in a shell: a pty that is its controlling terminal.
    Returns (exit code, everything the terminal showed, typed-in echo included)."""
    master, slave = pty.openpty()

    def own_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                            preexec_fn=own_the_terminal)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave end is closed
                break
            if not data:
                break
            shown += data
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(master)
    return code, shown


def test_a_job_run_from_a_root_terminal_cannot_type_into_it(project: Project, user_crontab: str, drop: Path) -> None:
    report = drop
    spy = drop / "spy.py"
    spy.write_text(SPY)
    spy.chmod(0o644)
    project.write("tasks/job.py", f"import sys; sys.path.insert(0, {str(drop)!r}); import spy; spy.spy('job', {str(report)!r})\n"
                                  "print('job done')\n")
    declare(project, "  job:\n    script: tasks/job.py\n    schedule: '@daily'\n")
    assert project.deployer("apply", "dev", "--yes").exit_code == 0

    # The job's user plants a .pth in its own user site: without -I it runs in every Python it starts.
    home = Path(f"~{TEST_USER}").expanduser()
    site = home / ".local" / USER_SITE
    subprocess.run(["runuser", "-u", TEST_USER, "--", "mkdir", "-p", str(site)], check=True)
    pth = f"import sys; sys.path.insert(0, {str(drop)!r}); import spy; spy.spy('pth-' + str(__import__('os').getpid()), {str(report)!r})\n"
    subprocess.run(["runuser", "-u", TEST_USER, "--", "sh", "-c", f"cat > {site}/spy.pth"], input=pth.encode(), check=True)
    try:
        # The detector works: the same spy, run in the terminal's own session, does type into it.
        code, shown = run_in_a_terminal([SYSTEM_PYTHON, "-c", f"import sys; sys.path.insert(0, {str(drop)!r}); import spy; "
                                                              f"spy.spy('control', {str(report)!r})"], cwd=project.root,
                                        env=dict(os.environ))
        assert code == 0 and INJECTED in shown, shown
        control = json.loads((report / "control.json").read_text())
        assert control["tty_nr"] != 0 and control["dev_tty"] == "opened"

        env = {**os.environ, "COLUMNS": "200"}
        code, shown = run_in_a_terminal([sys.executable, "-m", "deployer", "--no-color", "run", "dev", "job"],
                                        cwd=project.root, env=env)
    finally:
        shutil.rmtree(home / ".local" / "lib", ignore_errors=True)
    assert code == 0, shown
    assert b"job done" in shown  # its output still streams to the operator, through a pipe
    assert INJECTED not in shown, shown
    job = json.loads((report / "job.json").read_text())
    assert job["uid"] == int(subprocess.check_output(["id", "-u", TEST_USER]))
    assert job["tty_nr"] == 0, job  # no controlling terminal
    assert job["parent_tty_nr"] == 0, job  # nor has the wrapper that started it
    assert job["dev_tty"] == "No such device or address", job
    assert job["stdin"] == "/dev/null", job
    assert job["injected"] == [], job
    # The .pth runs in the job's own Python (the job's user's code, as that user), never in the
    # wrapper (isolated), and gets no terminal there either.
    planted = [json.loads(p.read_text()) for p in report.glob("pth-*.json")]
    assert [p["pid"] for p in planted] == [job["pid"]], planted
    assert all(p["tty_nr"] == 0 and p["injected"] == [] for p in planted), planted
    assert not Path("/tmp/typed-by-the-job").exists()
