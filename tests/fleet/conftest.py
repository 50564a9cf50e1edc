"""Fleet tier: the real ``deployer`` CLI over real SSH to the harness's test hosts.

Each test starts its own hosts (``fleet_factory``, tests/harness) and writes its own small
project whose inventory points at them: ``ansible_host`` = the host's address, the harness's
client key, and a copy of the harness's known_hosts passed as ``DEPLOYER_KNOWN_HOSTS``.
``deployer`` runs in a subprocess inside the harness's ``ctl`` network namespace, where the
hosts' addresses exist, so a stopped host gives a real "connection refused" and a downed
link a real timeout. Its ``HOME`` is a temporary folder: ``~/.ssh`` of the machine is never
read or written.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import HELLO, CliResult, RemoteProjectFiles
from tests.harness import TestHosts
from tests.harness.fixtures import fleet_factory  # noqa: F401  (a fixture, used by the tests)


@dataclass
class FleetProject(RemoteProjectFiles):
    """A throwaway project whose inventory targets the harness's hosts over SSH."""

    th: TestHosts
    root: Path
    home: Path
    known_hosts: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def host_vars(self, name: str, *, user: str = "root", via: str = "ctl", **extra: Any) -> dict[str, Any]:
        """Connection variables of one harness host, as an operator would write them."""
        h = self.th.host(name)
        if via == "ctl":
            address, port = h.ip, h.port
        else:  # the loopback forward, for a deployer running in the machine's namespace
            address, port = self.th.loopback_address(h)
        return {"ansible_host": address, "ansible_port": port, "ansible_user": user,
                "ansible_ssh_private_key_file": str(self.th.client_key_path), **extra}

    def inventory(self, hosts: dict[str, dict[str, Any]], groups: dict[str, list[str]] | None = None) -> None:
        data: dict[str, Any] = {"all": {"hosts": {name: dict(v) for name, v in hosts.items()}}}
        if groups:
            data["all"]["children"] = {g: {"hosts": {n: None for n in names}} for g, names in groups.items()}
        self.write("inventories/dev/hosts.yml", yaml.safe_dump(data, sort_keys=False))

    def tier_env(self) -> dict[str, str]:
        return {"DEPLOYER_KNOWN_HOSTS": str(self.known_hosts)}

    def deployer(self, *args: str, ctl: bool = True, timeout: float = 180) -> CliResult:
        """The real CLI in a subprocess: inside ctl (default) or in the machine's namespace."""
        argv = [sys.executable, "-m", "deployer", "--no-color", *args]
        if ctl:
            argv = self.th.ctl_argv(argv)
        proc = subprocess.run(argv, cwd=self.root, env=self.env(), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def crontab(self, host: str, user: str = "root") -> str:
        proc = self.th.exec_on(host, ["crontab", "-l", "-u", user])
        return proc.stdout if proc.returncode == 0 else ""


def make_project(th: TestHosts, tmp_path: Path) -> FleetProject:
    root = tmp_path / "project"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    known = tmp_path / "known_hosts"
    shutil.copyfile(th.known_hosts_path, known)
    project = FleetProject(th, root, home, known)
    project.write("tasks/hello.py", HELLO)
    return project


def flat(text: str) -> str:
    """Output with runs of whitespace (table wrapping) collapsed to one space."""
    return " ".join(text.split())
