#!/usr/bin/env python3
"""End-to-end self test of tests/harness/hosts.py (needs root; about 1-2 minutes).

    python3 tests/harness/selftest.py [--no-cron] [--bench]

Starts 3 hosts, checks over real SSH (``ssh`` CLI inside ctl, with the harness's key and
known_hosts) that each answers ``hostname`` and that ``crontab -l`` works for root and a
user, installs ``* * * * *`` crontabs that write a file and waits for cron to fire (<= 70 s),
exercises sudo, exec_on, connect_socket (+ paramiko if installed), loopback forwarding,
link_down/link_up, stop/restart, a second concurrent harness and crash leftovers cleanup,
then tears down and verifies nothing is left. Prints timings. Exit status 0 = all passed.
``--no-cron`` skips the minute-long cron wait; ``--bench`` adds n=5 up/down and
repeated-connect timings.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Run as a script (python3 tests/harness/selftest.py), beside hosts.py; the type checker sees the package.
if TYPE_CHECKING:
    from tests.harness.hosts import DEFAULT_STATE_DIR, TestHosts, _mountpoints, _pid_alive, cleanup_stale
else:
    from hosts import DEFAULT_STATE_DIR, TestHosts, _mountpoints, _pid_alive, cleanup_stale

TIMINGS: dict[str, float] = {}
FAILURES: list[str] = []


def check(cond: bool, what: str, detail: Any = "") -> None:
    """Record and print one check."""
    print(f"  [{'ok' if cond else 'FAIL'}] {what}" + (f"  -- {detail}" if not cond and detail != "" else ""))
    if not cond:
        FAILURES.append(what)


def timed(name: str, fn: Callable[[], Any]) -> Any:
    t = time.monotonic()
    try:
        return fn()
    finally:
        TIMINGS[name] = time.monotonic() - t


def optional_paramiko() -> Any:
    """The paramiko module, or None if it is not installed (the harness does not need it)."""
    try:
        return importlib.import_module("paramiko")
    except ImportError:
        return None


def netns_with_prefix(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]


def verify_gone(state: dict[str, Any], label: str) -> None:
    """Check that nothing recorded in a harness state is left."""
    prefix = state["prefix"]
    check(not netns_with_prefix(prefix), f"{label}: no netns left", netns_with_prefix(prefix))
    mps = _mountpoints()
    left_mounts = [m for m in mps if m in state["mounts"] or m.startswith(state["owned_dir"])]
    check(not left_mounts, f"{label}: no mounts left", left_mounts)
    alive = [p for p in state["pids"] if _pid_alive(int(p["pid"]), p.get("starttime"))]
    check(not alive, f"{label}: no saved PID alive", alive)
    check(not os.path.exists(state["owned_dir"]), f"{label}: workdir removed", state["owned_dir"])
    check(not os.path.exists(f"/etc/netns/{prefix}-ctl"), f"{label}: /etc/netns entry removed")
    check(not (DEFAULT_STATE_DIR / f"{prefix}.json").exists(), f"{label}: state file removed")


def crash_cleanup_test(die_with_parent: bool) -> None:
    """A harness in a process that is SIGKILLed leaves things behind; cleanup_stale removes them."""
    print(f"crash leftovers (die_with_parent={die_with_parent}):")
    code = (
        f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from hosts import TestHosts\n"
        f"th = TestHosts(2, die_with_parent={die_with_parent!r}).start()\n"
        "print(th.prefix, flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        prefix = proc.stdout.readline().strip()
    finally:
        proc.kill()  # our own child: simulates a crashed test run
        proc.wait()
    state = json.loads((DEFAULT_STATE_DIR / f"{prefix}.json").read_text())
    time.sleep(0.3)
    alive = [p for p in state["pids"] if _pid_alive(int(p["pid"]), p.get("starttime"))]
    check(bool(netns_with_prefix(prefix)), "crashed harness left its netns behind (as expected)")
    if die_with_parent:
        check(not alive, "host processes died with their parent", alive)
    else:
        check(bool(alive), "host processes outlived their parent (as expected)", alive)
    cleaned = timed(f"stale cleanup (die_with_parent={die_with_parent})", lambda: cleanup_stale(prefix=prefix))
    check(cleaned == [prefix], "cleanup_stale found the crashed harness", cleaned)
    verify_gone(state, "after cleanup_stale")


def main() -> int:
    no_cron = "--no-cron" in sys.argv
    bench = "--bench" in sys.argv
    if os.geteuid() != 0:
        print("selftest needs root", file=sys.stderr)
        return 2
    users = ["alice", "bob"]
    th = TestHosts(3, users=users, sudo_users=["alice"], sudo_password_users={"carol": "s3cret"})
    state: dict[str, Any] = {}
    try:
        timed("up n=3", th.start)
        state = json.loads(th.state_path.read_text())
        print(f"harness {th.prefix}: ctl={th.ctl_netns} workdir={th.dir} steps={ {k: round(v, 3) for k, v in th.timings.items()} }")

        print("ssh (CLI inside ctl):")
        for h in th.hosts:
            cp = timed(f"ssh hostname {h.name}", functools.partial(th.ssh, h, "hostname"))
            check(cp.returncode == 0 and cp.stdout.strip() == h.name, f"{h.name} answers hostname", cp)
        for user in ("root", "alice"):
            cp = th.ssh("h1", "crontab -l", user=user)
            check(cp.returncode == 1 and "no crontab for" in cp.stderr, f"crontab -l works for {user} (empty)", cp)

        print("install crontabs:")
        job = "* * * * * echo \"$(hostname) $(id -un)\" > $HOME/cron-fired\n"
        t_install = time.time()
        for h in th.hosts:
            for user in ("root", "alice"):
                cp = th.ssh(h, "crontab - && crontab -l", user=user, input=job)
                check(cp.returncode == 0 and cp.stdout == job, f"crontab installed for {user}@{h.name}", cp)

        print("sudo:")
        check(th.ssh("h1", "sudo -n id -u", user="alice").stdout.strip() == "0", "alice: passwordless sudo")
        check(th.ssh("h1", "sudo -n true", user="bob").returncode != 0, "bob: no sudo")
        check(th.ssh("h1", "sudo -n true", user="carol").returncode != 0, "carol: sudo -n refused (needs password)")
        cp = th.ssh("h1", "sudo -S -p '' id -u", user="carol", input="s3cret\n")
        check(cp.stdout.strip() == "0", "carol: sudo with password", cp)

        print("exec_on / read_file:")
        cp = th.exec_on("h2", ["id", "-un"], user="alice")
        check(cp.stdout.strip() == "alice", "exec_on as alice", cp)
        cp = th.exec_on("h2", ["hostname"])
        check(cp.stdout.strip() == "h2", "exec_on hostname", cp)
        check(th.read_text("h2", "/etc/hostname").strip() == "h2", "read_file /etc/hostname")
        cp = th.exec_on("h2", ["cat", "/etc/localtime", "/etc/os-release"], text=False)
        mine = th.read_file("h2", "/etc/localtime") + th.read_file("h2", "/etc/os-release")
        check(cp.stdout == mine, "read_file resolves symlinks inside the host root", len(cp.stdout))
        cp = th.exec_on("h1", ["python3", "-c", "import socket; s=socket.create_connection(('h2',22),3); print(s.recv(64).decode())"])
        check(cp.stdout.startswith("SSH-2.0-"), "host-to-host by name (h1 -> h2:22)", cp)

        print("loopback forward / connect_socket:")
        cp = timed("ssh via loopback", lambda: th.ssh("h1", "hostname", via="loopback"))
        check(cp.stdout.strip() == "h1", f"ssh via 127.0.0.1:{th.hosts[0].forward_port}", cp)
        s = timed("connect_socket", lambda: th.connect_socket("h3"))
        banner = s.recv(64)
        s.close()
        check(banner.startswith(b"SSH-2.0-"), "connect_socket gives a socket connected inside ctl", banner)
        paramiko = optional_paramiko()
        if paramiko is None:
            print("  (paramiko not installed: skipped)")
        if paramiko is not None:
            def pk(h: str, via: str) -> str:
                c = paramiko.SSHClient()
                c.load_host_keys(str(th.known_hosts_path))
                c.set_missing_host_key_policy(paramiko.RejectPolicy())
                host = th.host(h)
                if via == "sock":
                    c.connect(host.ip, port=22, username="alice", key_filename=str(th.client_key_path),
                              sock=th.connect_socket(host), look_for_keys=False, allow_agent=False)
                else:
                    addr, port = th.loopback_address(host)
                    c.connect(addr, port=port, username="alice", key_filename=str(th.client_key_path),
                              look_for_keys=False, allow_agent=False)
                _, out, _ = c.exec_command("hostname")
                text: str = out.read().decode().strip()
                c.close()
                return text
            check(timed("paramiko via connect_socket", lambda: pk("h2", "sock")) == "h2", "paramiko via connect_socket")
            check(timed("paramiko via loopback", lambda: pk("h3", "lo")) == "h3", "paramiko via loopback forward")

        print("link down/up:")
        th.link_down("h2")
        cp = th.run_in_ctl(["ssh", "-F", str(th.ssh_config_path), "-o", "ConnectTimeout=2", "h2", "true"])
        check(cp.returncode == 255, "h2 unreachable over ssh while link down", cp)
        try:
            th.connect_socket("h2", timeout=1).close()
            check(False, "connect_socket times out while link down")
        except TimeoutError:
            check(True, "connect_socket times out while link down")
        th.link_up("h2")
        cp = th.ssh("h2", "hostname")
        check(cp.stdout.strip() == "h2", "h2 reachable again after link_up", cp)

        print("second harness at the same time (same subnet):")
        with TestHosts(2, users=["alice"]) as th2:
            cp = th2.ssh("h1", "hostname; cat /etc/passwd | grep -c carol || true", user="alice")
            check(cp.stdout.split() == ["h1", "0"], "second harness independent (no carol there)", cp)
            check(th.ssh("h1", "hostname").stdout.strip() == "h1", "first harness still fine")
            state2 = json.loads(th2.state_path.read_text())
        verify_gone(state2, "second harness")

        if not no_cron:
            print("wait for cron (fires at the next minute boundary):")
            t = time.monotonic()
            pending = {(h.name, u) for h in th.hosts for u in ("root", "alice")}
            while pending and time.monotonic() - t < 75:
                for name, user in list(pending):
                    path = "/root/cron-fired" if user == "root" else f"/home/{user}/cron-fired"
                    try:
                        if th.read_text(name, path, layer="upper").strip() == f"{name} {user}":
                            pending.discard((name, user))
                    except FileNotFoundError:
                        pass
                time.sleep(0.2)
            TIMINGS["cron fired (after install)"] = time.time() - t_install
            check(not pending, "cron fired for root and alice on every host", sorted(pending))

        print("stop / restart:")
        timed("stop h3", lambda: th.stop("h3"))
        cp = th.run_in_ctl(["ssh", "-F", str(th.ssh_config_path), "-o", "ConnectTimeout=3", "h3", "true"])
        check(cp.returncode == 255 and "refused" in cp.stderr, "h3 unreachable after stop (refused)", cp)
        try:
            th.connect_socket("h3", timeout=2).close()
            check(False, "connect_socket refused after stop")
        except ConnectionRefusedError:
            check(True, "connect_socket refused after stop")
        check(not th.hosts[2].running, "h3 reports not running")
        check(th.read_text("h3", "/etc/hostname").strip() == "h3", "read_file works on a stopped host")
        timed("restart h3", lambda: th.restart("h3"))
        cp = th.ssh("h3", "hostname && crontab -l")
        check(cp.returncode == 0 and cp.stdout == "h3\n" + job, "h3 back after restart, crontab kept", cp)
        th.stop("h3")
    finally:
        timed("down n=3", th.close)
    print("teardown:")
    check(th.leftovers() == [], "leftovers() empty", th.leftovers())
    if state:
        state = json.loads(json.dumps(state))
        state["pids"] = th._state["pids"]  # includes the PIDs of the restarted host
        verify_gone(state, "main harness")

    crash_cleanup_test(die_with_parent=False)
    crash_cleanup_test(die_with_parent=True)

    if bench:
        print("bench:")
        ups, downs, cli, pk_times = [], [], [], []
        paramiko = optional_paramiko()
        for _ in range(3):
            t5 = TestHosts(5)
            t = time.monotonic()
            t5.start()
            ups.append(time.monotonic() - t)
            try:
                for _ in range(5):
                    t = time.monotonic()
                    t5.ssh("h3", "true")
                    cli.append(time.monotonic() - t)
                for _ in range(5 if paramiko is not None else 0):
                    t = time.monotonic()
                    c = paramiko.SSHClient()
                    c.load_host_keys(str(t5.known_hosts_path))
                    c.connect(t5.host("h3").ip, username="root", key_filename=str(t5.client_key_path),
                              sock=t5.connect_socket("h3"), look_for_keys=False, allow_agent=False)
                    c.exec_command("true")[1].channel.recv_exit_status()
                    c.close()
                    pk_times.append(time.monotonic() - t)
            finally:
                t = time.monotonic()
                t5.close()
                downs.append(time.monotonic() - t)
        TIMINGS["bench up n=5 (median of 3)"] = statistics.median(ups)
        TIMINGS["bench down n=5 (median of 3)"] = statistics.median(downs)
        TIMINGS["bench ssh CLI connect+command (median)"] = statistics.median(cli)
        if pk_times:
            TIMINGS["bench paramiko connect+command (median)"] = statistics.median(pk_times)

    print("timings:")
    for k, v in TIMINGS.items():
        print(f"  {k:45s} {v * 1000:9.1f} ms")
    print("RESULT:", "PASS" if not FAILURES else f"FAIL ({len(FAILURES)}): {FAILURES}")
    return 0 if not FAILURES else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run finally/atexit cleanup
    sys.exit(main())
