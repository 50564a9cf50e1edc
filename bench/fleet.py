#!/usr/bin/env python3
"""Benchmark: deployer vs ansible-playbook vs the SSH floor, on N real namespaced test hosts.

    sudo python bench/fleet.py --hosts 10 [--reps 5]

Needs root (the test-host harness, tests/harness: network namespaces, overlayfs, sshd and
cron per host; the shared rootfs is built on first use, about 45 s) and ansible-core.
Everything runs inside the harness's ctl network namespace, where the hosts' addresses
exist, as separate processes, the way an operator runs them; the time of each is the wall
time of its whole process (interpreter start included), median of ``--reps`` runs:

* deployer: ``apply --yes`` with nothing to do (no-op), ``apply --yes`` with one job's
  schedule changed, ``verify``; ``--parallel N``.
* ansible-playbook: the same jobs (folders with ``file``, scripts with ``copy``, crontab
  entries with ``cron``), ``forks=N``, pipelining on, no fact gathering, python3 named in the
  inventory (no interpreter discovery), OpenSSH with Ansible's default ControlPersist; the
  SAME inventory file as deployer. Timed: the no-op run.
* the floor: one process that opens one paramiko connection per host (host key checked,
  same key) and runs ``true`` on each, all in parallel.

The last line is machine-readable (ratios of medians):
``RESULT hosts=N noop_vs_floor=X change_vs_floor=Y verify_vs_floor=Z ansible_vs_deployer=W``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import TestHosts  # noqa: E402

SCHEDULES = ("*/5", "*/7")  # the changed job alternates between these minutes

FLOOR = r"""
import sys, time
from concurrent.futures import ThreadPoolExecutor
import paramiko
ips, key, known_hosts = sys.argv[1].split(","), sys.argv[2], sys.argv[3]
def one(ip):
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(ip, username="root", key_filename=key, look_for_keys=False, allow_agent=False)
    channel = client.get_transport().open_session()
    channel.exec_command("true")
    code = channel.recv_exit_status()
    client.close()
    return code
with ThreadPoolExecutor(len(ips)) as pool:
    codes = list(pool.map(one, ips))
assert codes == [0] * len(ips), codes
"""

PLAYBOOK = """\
- hosts: all
  gather_facts: false
  vars:
    home: /var/lib/ansible-bench/demo-dev
  tasks:
    - name: folders
      ansible.builtin.file:
        path: "{{ item }}"
        state: directory
        mode: "0750"
      loop: ["{{ home }}", "{{ home }}/scripts", "{{ home }}/logs", "{{ home }}/state", "{{ home }}/locks"]
    - name: task scripts
      ansible.builtin.copy:
        src: "tasks/{{ item }}.py"
        dest: "{{ home }}/scripts/{{ item }}.py"
        mode: "0755"
      loop: [hello, report]
    - name: crontab entries
      ansible.builtin.cron:
        name: "{{ item.id }}"
        minute: "{{ item.minute | default(omit) }}"
        hour: "{{ item.hour | default(omit) }}"
        special_time: "{{ item.special | default(omit) }}"
        job: "{{ item.job }} >> {{ home }}/logs/{{ item.id }}.log 2>&1"
        # Another user's crontab: in root's, deployer's verify would rightly see every job
        # run twice (a hand-made line naming the same script) and fail the bench.
        user: nobody
      loop:
        - {id: hello, minute: "MINUTE", job: "python3 {{ home }}/scripts/hello.py a b"}
        - {id: report, minute: "30", hour: "2", job: "python3 {{ home }}/scripts/report.py"}
        - {id: nightly, special: daily, job: /bin/true}
"""


def declaration(minute: str) -> str:
    return textwrap.dedent(f"""\
        project: demo
        defaults:
          timeout: 10m
        jobs:
          hello:
            script: tasks/hello.py
            args: [a, b]
            schedule: "{minute} * * * *"
          report:
            script: tasks/report.py
            schedule: "30 2 * * *"
          nightly:
            command: /bin/true
            schedule: "@daily"
        environments:
          dev:
            inventory: inventories/dev
        """)


class Bench:
    def __init__(self, th: TestHosts, root: Path) -> None:
        self.th = th
        self.root = root
        self.home = root / "home"
        self.n = len(th.hosts)

    # ------------------------------------------------------------------ setup
    def write_project(self) -> None:
        (self.home / ".ssh").mkdir(parents=True, mode=0o700)
        (self.root / "tasks").mkdir()
        (self.root / "tasks/hello.py").write_text("import sys\nprint('hello', sys.argv[1:])\n")
        (self.root / "tasks/report.py").write_text("print('report')\n")
        hosts = {h.name: {"ansible_host": h.ip, "ansible_user": "root",
                          "ansible_ssh_private_key_file": str(self.th.client_key_path),
                          "ansible_ssh_common_args": f"-o UserKnownHostsFile={self.th.known_hosts_path}",
                          "ansible_python_interpreter": "/usr/bin/python3"} for h in self.th.hosts}
        inventory = self.root / "inventories/dev/hosts.yml"
        inventory.parent.mkdir(parents=True)
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))  # JSON is YAML
        self.set_minute(SCHEDULES[0])
        self.set_playbook_minute(SCHEDULES[0])

    def set_minute(self, minute: str) -> None:
        (self.root / "deployer.yml").write_text(declaration(minute))

    def set_playbook_minute(self, minute: str) -> None:
        (self.root / "playbook.yml").write_text(PLAYBOOK.replace("MINUTE", minute))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DEPLOYER_", "ANSIBLE_", "SSH_AUTH_SOCK"))}
        env.update(HOME=str(self.home), COLUMNS="200", ANSIBLE_FORKS=str(self.n), ANSIBLE_PIPELINING="True",
                   ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.home / "cp"))
        return env

    # ------------------------------------------------------------------ runs
    def run(self, argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.monotonic()
        proc = subprocess.run(self.th.ctl_argv(argv), cwd=self.root, env=self.env(), capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        return time.monotonic() - started, proc

    def deployer(self, *args: str) -> tuple[float, dict[str, Any]]:
        seconds, proc = self.run([sys.executable, "-m", "deployer", "--no-color", *args, "--parallel", str(self.n),
                                  "--json"])
        if proc.returncode != 0:
            raise SystemExit(f"deployer {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return seconds, json.loads(proc.stdout)

    def ansible(self, expect_changed: int) -> float:
        seconds, proc = self.run(["ansible-playbook", "-i", "inventories/dev/hosts.yml", "playbook.yml"])
        recap = proc.stdout[proc.stdout.rfind("PLAY RECAP"):]
        if proc.returncode != 0 or recap.count(f"changed={expect_changed} ") != self.n:
            raise SystemExit(f"ansible-playbook: expected changed={expect_changed} on every host "
                             f"(exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return seconds

    def floor(self) -> float:
        seconds, proc = self.run([sys.executable, "-c", FLOOR, ",".join(h.ip for h in self.th.hosts),
                                  str(self.th.client_key_path), str(self.th.known_hosts_path)])
        if proc.returncode != 0:
            raise SystemExit(f"floor failed:\n{proc.stderr}")
        return seconds

    def startup(self) -> float:
        """deployer's own start: interpreter, imports, declaration and inventory (no host contacted)."""
        seconds, proc = self.run([sys.executable, "-m", "deployer", "--no-color", "validate"])
        if proc.returncode != 0:
            raise SystemExit(f"deployer validate failed:\n{proc.stdout}\n{proc.stderr}")
        return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10, help="number of test hosts (default 10)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each measure (default 5)")
    options = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/fleet.py needs root (network namespaces, overlayfs): run it with sudo", file=sys.stderr)
        return 2
    if not shutil.which("ansible-playbook"):
        print("ansible-playbook is not installed (pip install ansible-core)", file=sys.stderr)
        return 2
    n, reps = options.hosts, max(1, options.reps)
    root = Path(tempfile.mkdtemp(prefix="deployer-bench-"))
    try:
        with TestHosts(n, build_rootfs=True) as th:
            print(f"{n} hosts up in {th.timings['up']:.2f}s; {reps} repetitions of each measure", flush=True)
            bench = Bench(th, root)
            bench.write_project()

            # Converge both tools once (not timed), so the timed runs are the steady state.
            bench.deployer("apply", "--yes", "dev")
            bench.ansible(expect_changed=3)
            bench.ansible(expect_changed=0)

            floor, noop, change, verify, ansible, startup, host_noop, host_change = ([] for _ in range(8))
            for rep in range(reps):
                floor.append(bench.floor())
                startup.append(bench.startup())
                seconds, report = bench.deployer("apply", "--yes", "dev")
                assert all(h["status"] == "ok" and h["counters"]["execs"] == 1 for h in report["hosts"].values()), report
                noop.append(seconds)
                host_noop.append(max(h["seconds"] for h in report["hosts"].values()))
                bench.set_minute(SCHEDULES[(rep + 1) % 2])
                seconds, report = bench.deployer("apply", "--yes", "dev")
                assert all(h["status"] == "changed" and h["counters"]["execs"] == 2 for h in report["hosts"].values()), report
                change.append(seconds)
                host_change.append(max(h["seconds"] for h in report["hosts"].values()))
                seconds, report = bench.deployer("verify", "dev")
                verify.append(seconds)
                ansible.append(bench.ansible(expect_changed=0))
            # ansible-playbook with the same one-job change, for the record (not a target)
            bench.set_playbook_minute(SCHEDULES[1])
            ansible_change = bench.ansible(expect_changed=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    m = {k: median(v) for k, v in {"floor": floor, "noop": noop, "change": change, "verify": verify,
                                     "ansible": ansible, "startup": startup, "host_noop": host_noop,
                                     "host_change": host_change}.items()}
    print()
    print(f"{'measure (median, seconds)':44} {'time':>7}")
    rows = [
        ("floor: connect + `true` on every host", m["floor"]),
        ("deployer apply, nothing to do", m["noop"]),
        ("deployer apply, one job changed", m["change"]),
        ("deployer verify", m["verify"]),
        ("ansible-playbook, nothing to do", m["ansible"]),
        ("ansible-playbook, one job changed (1 run)", ansible_change),
        ("  deployer start: imports + inventory (validate)", m["startup"]),
        ("  deployer no-op, slowest host (connect+probe)", m["host_noop"]),
        ("  deployer change, slowest host (+ applier)", m["host_change"]),
    ]
    for label, value in rows:
        print(f"{label:44} {value:7.3f}")
    print(f"RESULT hosts={n} noop_vs_floor={m['noop'] / m['floor']:.2f} change_vs_floor={m['change'] / m['floor']:.2f} "
          f"verify_vs_floor={m['verify'] / m['floor']:.2f} ansible_vs_deployer={m['ansible'] / m['noop']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
