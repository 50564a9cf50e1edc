"""Ansible tier: the real ``ansible-playbook`` with this repository's playbooks and action
plugins, against the harness's real sshd hosts (and, when the Incus tier is available, real
Incus containers through ``community.general.incus``).

A project is the fleet tier's throwaway project (tests/fleet/conftest.py); ``ansible-playbook``
runs like ``deployer`` there: a subprocess inside the harness's ``ctl`` namespace, with a
temporary ``HOME``; Ansible's ssh connection (OpenSSH) checks host keys strictly against a copy of
the harness's known_hosts, the same file the CLI is given. ``PYTHONPATH`` is this checkout, so
the playbook and the CLI run the code under test, whatever pip installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import REPO, CliResult
from tests.fleet.conftest import FleetProject, make_project
from tests.harness import TestHosts
from tests.harness.fixtures import fleet_factory  # noqa: F401  (a fixture, used by the tests)

PLAYBOOKS = REPO / "playbooks"
# The ansible-playbook of the Python running the tests (the one deployer is installed for).
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook")) \
    if Path(sys.executable).with_name("ansible-playbook").exists() else (shutil.which("ansible-playbook") or "ansible-playbook")

# Schedules that cannot fire during a test: snapshots of the targets must not move on their own.
QUIET_JOBS = """\
  hello:
    description: Say hello
    script: tasks/hello.py
    args: [a b, "50%"]
    schedule: "0 3 1 1 *"
    env: {GREETING: hi}
  nightly:
    command: /bin/true
    schedule: "0 4 1 1 *"
"""

RECAP = re.compile(r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
                   r"failed=(?P<failed>\d+)", re.M)


@dataclass(repr=False)
class PlaybookResult(CliResult):
    def __repr__(self) -> str:  # pytest shows an assertion's message with repr: the whole output
        return str(self)

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP per host: ok, changed, unreachable, failed."""
        return {m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
                for m in RECAP.finditer(self.stdout)}

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}

    def json(self) -> dict[str, Any]:
        """The ``ansible.builtin.json`` callback's report."""
        try:
            return json.loads(self.stdout)  # type: ignore[no-any-return]
        except ValueError:
            raise AssertionError(f"not JSON:\n{self}") from None

    def task_results(self, play: int = 0, task: int = 0) -> dict[str, dict[str, Any]]:
        return self.json()["plays"][play]["tasks"][task]["hosts"]  # type: ignore[no-any-return]


@dataclass
class AnsibleProject(FleetProject):
    """A fleet project that ansible-playbook can also deploy."""

    def env(self) -> dict[str, str]:
        env = super().env()
        env = {k: v for k, v in env.items() if not k.startswith("ANSIBLE_")}
        env.update(PYTHONPATH=str(REPO), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   # OpenSSH reads ~/.ssh of the passwd entry, not $HOME: name the test's own file.
                   ANSIBLE_SSH_COMMON_ARGS=f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes")
        env.update(self.extra_env)
        return env

    def playbook(self, name: str, *args: str, json_output: bool = False, cwd: Path | None = None,
                 inventory: str = "inventories/dev", env: dict[str, str] | None = None, ctl: bool = True,
                 config: str | None = str(REPO / "ansible.cfg"), timeout: float = 300) -> PlaybookResult:
        """The real ansible-playbook with the repository's playbook ``name`` (apply, verify).

        ``config``: the ansible.cfg (ANSIBLE_CONFIG); None lets ansible-playbook find one
        itself, in the folder it runs in."""
        argv = [ANSIBLE_PLAYBOOK, "-i", inventory, str(PLAYBOOKS / f"{name}.yml"), *args]
        if ctl:
            argv = self.th.ctl_argv(argv)
        full_env = self.env()
        if config is not None:
            full_env["ANSIBLE_CONFIG"] = config
        if json_output:
            full_env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.builtin.json"
        full_env.update(env or {})
        proc = subprocess.run(argv, cwd=cwd or self.root, env=full_env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        return PlaybookResult(proc.returncode, proc.stdout, proc.stderr)

    def snapshot(self, host: str, root: str = "/var/lib/deployer/demo-dev") -> dict[str, Any]:
        """Everything under ``root`` on the host: type, mode, owner, group, sha256 or link target."""
        return snapshot(lambda argv: self.th.exec_on(host, argv), root)


def snapshot(run: Any, root: str) -> dict[str, Any]:
    script = r"""
import hashlib, json, os, pwd, grp, stat, sys
root = sys.argv[1]
out = {}
for base, dirs, files in os.walk(root):
    for name in sorted(dirs + files):
        path = os.path.join(base, name)
        st = os.lstat(path)
        entry = {"mode": oct(stat.S_IMODE(st.st_mode)), "owner": pwd.getpwuid(st.st_uid).pw_name,
                 "group": grp.getgrgid(st.st_gid).gr_name}
        if stat.S_ISLNK(st.st_mode):
            entry["link"] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            entry["sha256"] = hashlib.sha256(open(path, "rb").read()).hexdigest()
        else:
            entry["type"] = "dir"
        out[os.path.relpath(path, root)] = entry
print(json.dumps(out, sort_keys=True))
"""
    proc = run(["python3", "-c", script, root])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def make_ansible_project(th: TestHosts, tmp_path: Path) -> AnsibleProject:
    base = make_project(th, tmp_path)
    return AnsibleProject(base.th, base.root, base.home, base.known_hosts)


def community_general() -> bool:
    """Whether ansible-playbook can load ``community.general.incus`` here."""
    proc = subprocess.run([str(Path(ANSIBLE_PLAYBOOK).with_name("ansible-doc")), "-t", "connection", "community.general.incus"],
                          capture_output=True, text=True, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    return proc.returncode == 0
