"""Shared test fixtures: small projects on disk, the CLI, a dedicated test user, cron.

Tiers (markers): plain unit tests need nothing; ``cron`` uses the real crontab binary
for a dedicated user and needs root; ``e2e`` waits for the real cron daemon to fire.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_USER = "deployer-test"

# A task script and two jobs, shared by the tiers that deploy to remote hosts (fleet, incus).
HELLO = """\
import os, socket, sys
print("hello from", socket.gethostname(), os.environ.get("GREETING", ""), sys.argv[1:])
"""

JOBS = """\
  hello:
    description: Say hello
    script: tasks/hello.py
    args: [a b, "50%"]
    schedule: "*/5 * * * *"
    env: {GREETING: hi}
  nightly:
    command: /bin/true
    schedule: "@daily"
"""


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_deployer(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None,
                 timeout: float = 120) -> CliResult:
    """The real CLI, in a subprocess, as an operator would run it."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("COLUMNS", "200")
    proc = subprocess.run([sys.executable, "-m", "deployer", "--no-color", *args], cwd=cwd, env=full_env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class ProjectFiles:
    """Writing a throwaway project's files under ``root`` (the tiers' project classes)."""

    root: Path

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


class RemoteProjectFiles(ProjectFiles):
    """A project of the remote tiers (fleet, incus): project demo, env dev, given jobs; the
    CLI run in a subprocess with its own HOME (fields of the tiers' dataclasses)."""

    home: Path
    extra_env: dict[str, str]

    def deployer(self, *args: str, timeout: float = 180) -> CliResult:
        raise NotImplementedError  # each tier runs the CLI its own way (inside ctl, or not)

    def env(self) -> dict[str, str]:
        """This machine's environment without the caller's deployer settings and SSH agent."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "SSH_AUTH_SOCK"))}
        env.update(HOME=str(self.home), COLUMNS="250", **self.tier_env())
        env.update(self.extra_env)
        return env

    def tier_env(self) -> dict[str, str]:
        return {}

    def deployer_json(self, *args: str, **kwargs: Any) -> tuple[CliResult, dict[str, Any]]:
        result = self.deployer(*args, "--json", **kwargs)
        try:
            return result, json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"not JSON:\n{result}") from None

    def declare(self, jobs: str = JOBS, defaults: str = "  timeout: 1m\n") -> None:
        self.write("deployer.yml", f"project: demo\ndefaults:\n{defaults}jobs:\n{jobs}\n"
                                   "environments:\n  dev:\n    inventory: inventories/dev\n")


@dataclass
class Project(ProjectFiles):
    """A throwaway project folder: deployer.yml, task scripts, an inventory."""

    root: Path

    def declare(self, text: str) -> None:
        self.write("deployer.yml", text)

    def deployer(self, *args: str, **kwargs: object) -> CliResult:
        return run_deployer(*args, cwd=self.root, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    p = Project(tmp_path / "project")
    p.write("inventories/dev/hosts.yml", """\
        all:
          hosts:
            localhost:
              ansible_connection: local
        """)
    p.write("tasks/hello.py", """\
        import os, sys
        print("hello", os.environ.get("GREETING", ""), sys.argv[1:])
        """)
    return p


# ----------------------------------------------------------------------------- root tiers


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this tier needs root (it creates a dedicated user and starts cron); run it as root or deselect it with -m 'not cron and not e2e'")


@pytest.fixture(scope="session")
def test_user() -> Iterator[pwd.struct_passwd]:
    """A dedicated user whose crontab the tests own (created, and removed, by the tests)."""
    require_root()
    created = False
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-p", "*", TEST_USER], check=True)
        created = True
    yield pwd.getpwnam(TEST_USER)
    subprocess.run(["crontab", "-u", TEST_USER, "-r"], capture_output=True)
    if created:
        subprocess.run(["userdel", "-r", TEST_USER], capture_output=True)


def read_crontab(user: str) -> str | None:
    proc = subprocess.run(["crontab", "-u", user, "-l"], capture_output=True, text=True)
    if proc.returncode != 0:
        assert "no crontab" in proc.stderr, proc.stderr
        return None
    return proc.stdout


def write_crontab(user: str, text: str | None) -> None:
    if text is None:
        subprocess.run(["crontab", "-u", user, "-r"], capture_output=True)
    else:
        subprocess.run(["crontab", "-u", user, "-"], input=text, text=True, check=True)


# Deploying as root, our block goes into root's crontab whatever user a job runs as: the
# wrapper starts as root, keeps the run records and runs the job as its user.
BLOCK_USER = "root"
# The python3 our crontab lines name, as cron finds it (PATH=/usr/bin:/bin): the root-started
# wrapper runs a job's script with its own interpreter, as the job's user (the venv's python
# under /root would not be that user's to run).
CRON_PYTHON = "/usr/bin/python3"


@pytest.fixture
def user_crontab(test_user: pwd.struct_passwd, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test user's crontab and root's, emptied before each test; after it, the test user's
    is removed and root's is put back as it was (this machine's own lines stay its own).

    A test that does not ask for ``cron_daemon`` gets none of ours: one an earlier test
    started would fire its every-minute jobs in the middle of it (CI saw a cron-started run
    of the old release land after ``deployer run``'s and turn verify's warning into a pass)."""
    if "cron_daemon" not in request.fixturenames:
        stop_our_cron_daemon()
    roots = read_crontab(BLOCK_USER)

    def clean() -> None:
        write_crontab(TEST_USER, None)
        write_crontab(BLOCK_USER, None)
        shutil.rmtree(Path(test_user.pw_dir) / ".local/share/deployer", ignore_errors=True)
        # The tests' projects are all called "demo"; as root their state is under /var/lib.
        for leftover in Path("/var/lib/deployer").glob("demo-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    clean()
    try:
        yield TEST_USER
    finally:
        clean()
        write_crontab(BLOCK_USER, roots)


def cron_daemon_pids() -> list[int]:
    """cron daemons of this system; not those of containers or namespaced test hosts."""
    pids = []
    own = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("pid", "mnt")}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() not in {"cron", "crond"}:
                    continue
                if any(os.readlink(entry / "ns" / ns) != own[ns] for ns in own):
                    continue
                pids.append(int(entry.name))
            except OSError:
                continue
    return pids


_OURS: list[subprocess.Popen[bytes]] = []  # the cron daemon this session started, while it runs


def _start_cron() -> int:
    if not shutil.which("cron"):
        pytest.fail("the cron package is not installed (apt-get install cron)")
    proc = subprocess.Popen(["cron", "-f", "-L", "15"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 5
    while proc.pid not in cron_daemon_pids() and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"cron exited at once with code {proc.returncode}"
    _OURS.append(proc)
    # cron remembers the spool's mtime in whole seconds: a crontab written in the second it
    # started in could go unnoticed. Let that second pass.
    time.sleep(1.1)
    return proc.pid


def stop_our_cron_daemon() -> bool:
    """Stop the cron daemon this session started (by its saved PID), for a test that needs
    none; the next test that needs one starts it again. False: none of ours runs."""
    if not _OURS:
        return False
    proc = _OURS.pop()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return True


@pytest.fixture
def no_cron_daemon() -> None:
    """No cron daemon of the tests' runs during the test: one an earlier test needed is
    stopped (the next test that needs one starts it again). A fixture, not an import: pytest
    loads this file as ``conftest``, and ``from tests.conftest import`` would get a second
    copy of it, whose list of daemons is empty."""
    stop_our_cron_daemon()


@pytest.fixture(scope="session", autouse=True)
def _our_cron_daemon_stops_with_the_session() -> Iterator[None]:
    yield
    stop_our_cron_daemon()


@pytest.fixture
def cron_daemon() -> int:
    """A running Debian cron daemon: the machine's, or ours (started once, kept for the
    session unless a test stops it, stopped at its end by saved PID)."""
    require_root()
    running = cron_daemon_pids()
    return running[0] if running else _start_cron()
