"""Incus tier: the real ``deployer`` CLI against containers of a real incusd on this machine.

The session fixture ``incus_env`` sets everything up from scratch (tests/harness/incus.py):
installs incus from bookworm-backports if missing, starts incusd by hand unless one runs,
initialises it (dir pool, root disk, no managed network), builds and imports the test
image from the cached debootstrap rootfs; it stops the daemon at the end only if it
started it. ``container`` launches a fresh container (~2 s) and deletes it afterwards.
Each test writes its own small project whose inventory uses
``ansible_connection: community.general.incus``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.alerts import remote
from tests.alerts.servers import Relay, Web, smtp_relay, web_server
from tests.conftest import HELLO, CliResult, RemoteProjectFiles
from tests.harness.incus import Incus, LoopbackSshd, incus


@pytest.fixture(scope="session")
def incus_env() -> Iterator[Incus]:
    """A ready incusd with the ``deployer-test`` image; torn down at the end if we started it."""
    if os.geteuid() != 0:
        pytest.skip("the incus tier needs root (it installs and starts incusd)")
    env = Incus().setup()
    print(f"\nincus setup timings: {json.dumps(env.timings)}", file=sys.stderr)
    yield env
    env.close()


@pytest.fixture
def container(incus_env: Incus) -> Iterator[str]:
    """A fresh running container of the test image (cron running in it)."""
    name = incus_env.launch()
    yield name
    incus_env.delete(name)


@pytest.fixture
def containers(incus_env: Incus) -> Iterator[Callable[[int], list[str]]]:
    """``containers(n)``: n fresh containers, deleted after the test."""
    made: list[str] = []

    def make(n: int) -> list[str]:
        names = [incus_env.launch() for _ in range(n)]
        made.extend(names)
        return names

    yield make
    incus_env.delete(*made)


@pytest.fixture(scope="module")
def loopback_sshd(tmp_path_factory: pytest.TempPathFactory, incus_env: Incus) -> Iterator[LoopbackSshd]:
    """An sshd of our own on 127.0.0.1:<free port>, root login with a key; stopped afterwards."""
    sshd = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    yield sshd
    sshd.stop()


@dataclass
class IncusProject(RemoteProjectFiles):
    """A throwaway project whose inventory targets Incus containers."""

    incus: Incus
    root: Path
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def inventory(self, hosts: dict[str, dict[str, Any]]) -> None:
        """Hosts with ``ansible_connection: community.general.incus`` plus the given variables."""
        data = {"all": {"hosts": {name: {"ansible_connection": "community.general.incus", **v}
                                  for name, v in hosts.items()}}}
        self.write("inventories/dev/hosts.yml", yaml.safe_dump(data, sort_keys=False))

    def deployer(self, *args: str, timeout: float = 180) -> CliResult:
        proc = subprocess.run([sys.executable, "-m", "deployer", "--no-color", *args], cwd=self.root, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def exec(self, container: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return self.incus.exec(container, list(argv))

    def crontab(self, container: str, user: str = "root") -> str:
        proc = self.exec(container, "crontab", "-l", "-u", user)
        return proc.stdout if proc.returncode == 0 else ""


@pytest.fixture
def incus_project(incus_env: Incus, tmp_path: Path) -> IncusProject:
    home = tmp_path / "home"
    home.mkdir()
    p = IncusProject(incus_env, tmp_path / "project", home)
    p.write("tasks/hello.py", HELLO)
    return p


def flat(text: str) -> str:
    """Output with runs of whitespace (table wrapping) collapsed to one space."""
    return " ".join(text.split())


def fake_incus(directory: Path, body: str) -> Path:
    """An executable standing in for the incus client (e.g. real incus run as another user)."""
    path = directory / "incus-wrapper"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path



@contextlib.contextmanager
def alert_servers(p: IncusProject, container: str, folder: Path) -> Iterator[tuple[Callable[..., str], Relay, Web]]:
    """A relay and an HTTP server on this machine, reached from the network-less container as an
    operator's would reach them: Incus ``proxy`` devices (``bind=instance``) listening on its
    loopback (brought up first, as a full init would) on the same ports, so URLs and the relay's
    certificate hold in both places; the target prepared (the relay's CA, a user ``app``).
    Yields ``on_target(argv, text=None)`` (its stdout; a failure fails the test) and the servers."""

    def on_target(argv: list[str], text: str | None = None) -> str:
        done = p.incus.exec(container, argv, input=text)
        assert done.returncode == 0, f"{argv} in {container}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    on_target(["ip", "link", "set", "lo", "up"])
    on_target(["useradd", "-m", "-s", "/bin/sh", "-p", "*", "app"])
    with contextlib.ExitStack() as servers:
        relay = servers.enter_context(smtp_relay(folder))
        web = servers.enter_context(web_server())
        for name, port in (("relay", relay.port), ("web", web.port)):
            incus("config", "device", "add", container, name, "proxy", f"listen=tcp:127.0.0.1:{port}",
                  f"connect=tcp:127.0.0.1:{port}", "bind=instance")
        remote.prepare_target(on_target, relay.ca_file.read_text())
        yield on_target, relay, web
