"""plan / apply / verify over real SSH on real test hosts (sshd + cron in network namespaces).

The ``deployer`` CLI runs in a subprocess inside the harness's ctl namespace (see
conftest.py), except the jump-host test, which runs it in the machine's own namespace where
only the loopback forward of the jump host is reachable.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import JOBS
from tests.fleet.conftest import FleetProject, flat, make_project

pytestmark = pytest.mark.fleet

USERS = {"users": ["alice", "bob"], "sudo_users": ["alice"]}


def fingerprint_of(public_key: str) -> str:
    """``SHA256:...`` of an ``ssh-ed25519 AAAA...`` line, by ssh-keygen itself."""
    proc = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=public_key + "\n", capture_output=True,
                          text=True, check=True)
    return proc.stdout.split()[1]


def all_hosts(p: FleetProject, **extra: Any) -> None:
    p.inventory({h.name: p.host_vars(h.name, **extra) for h in p.th.hosts})


def test_apply_then_verify_on_five_hosts(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(5)
    p = make_project(th, tmp_path)
    p.declare()
    all_hosts(p)

    applied, report = p.deployer_json("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert sorted(report["hosts"]) == ["h1", "h2", "h3", "h4", "h5"]
    for name, host in report["hosts"].items():
        assert host["status"] == "changed" and host["error"] is None, (name, host)
        assert "installed crontab of root" in host["applied"]
        crontab = p.crontab(name)
        assert "# BEGIN deployer demo/dev" in crontab and "/run hello" in crontab, (name, crontab)

    verified, checks = p.deployer_json("verify", "dev")
    assert verified.exit_code == 0, verified
    for name, host in checks["hosts"].items():
        assert host["status"] == "ok", (name, host)
        assert {c["name"] for c in host["checks"]} >= {"crontab", "release", "files", "cron-daemon"}
        assert all(c["status"] == "pass" for c in host["checks"]), (name, host["checks"])
        assert host["counters"]["connections"] == 1 and host["counters"]["execs"] == 1

    text = p.deployer("verify", "dev")
    assert text.exit_code == 0, text
    assert flat(text.stdout).count("pass cron-daemon cron is running") == 5


def test_idempotence_across_the_fleet(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(5)
    p = make_project(th, tmp_path)
    p.declare()
    all_hosts(p)
    first, report = p.deployer_json("apply", "dev", "--yes")
    assert first.exit_code == 0, first
    for host in report["hosts"].values():
        assert host["status"] == "changed"
        assert host["counters"]["connections"] == 1 and host["counters"]["execs"] == 2  # probe + applier
    crontabs = {h.name: p.crontab(h.name) for h in th.hosts}

    again, report = p.deployer_json("apply", "dev", "--yes")
    assert again.exit_code == 0, again
    for name, host in report["hosts"].items():
        assert host["status"] == "ok" and host["applied"] == [], (name, host)
        counters = host["counters"]
        assert counters["connections"] == 1 and counters["execs"] == 1, (name, counters)  # one probe, nothing else
        assert counters["bytes_sent"] > 0 and counters["bytes_received"] > 0
    assert {h.name: p.crontab(h.name) for h in th.hosts} == crontabs

    plan = p.deployer("plan", "dev", "--detailed-exitcode")
    assert plan.exit_code == 0, plan

    p.declare(JOBS.replace('"*/5 * * * *"', '"*/7 * * * *"'))
    changed, report = p.deployer_json("apply", "dev", "--yes")
    assert changed.exit_code == 0, changed
    for name, host in report["hosts"].items():
        assert host["status"] == "changed", (name, host)
        assert host["counters"]["connections"] == 1 and host["counters"]["execs"] == 2, (name, host["counters"])
        assert "*/7 * * * * python3" in p.crontab(name)
    assert p.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0


def test_one_host_stopped_the_others_converge(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(3)
    p = make_project(th, tmp_path)
    p.declare()
    all_hosts(p)
    th.stop("h2")

    result = p.deployer("apply", "dev", "--yes")
    assert result.exit_code == 4, result  # 4: a host could not be reached
    summary = flat(result.stdout[result.stdout.index("apply demo/dev"):])
    assert "h1 │ changed" in summary and "h3 │ changed" in summary, summary
    assert "h2 │ unreachable │ h2, root@10.77.0.12:22: connection refused" in summary, summary
    assert "/run hello" in p.crontab("h1") and "/run hello" in p.crontab("h3")
    assert "Traceback" not in result.stderr + result.stdout

    th.restart("h2")
    healed, report = p.deployer_json("apply", "dev", "--yes")
    assert healed.exit_code == 0, healed
    assert {n: h["status"] for n, h in report["hosts"].items()} == {"h1": "ok", "h2": "changed", "h3": "ok"}


def test_why_a_host_is_unreachable(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(4)
    p = make_project(th, tmp_path)
    p.declare()
    other_key = tmp_path / "not-authorized"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True)
    p.inventory({
        "h1": p.host_vars("h1", ansible_timeout=2),
        "h2": p.host_vars("h2", ansible_ssh_private_key_file=str(other_key)),
        "h3": p.host_vars("h3", ansible_host="no-such-host.invalid"),
        "h4": p.host_vars("h4"),
    })
    th.link_down("h1")
    started = time.monotonic()
    result, report = p.deployer_json("apply", "dev", "--yes")
    assert time.monotonic() - started < 30  # hosts in parallel; the dead link costs its 2 s timeout once
    assert result.exit_code == 4, result
    errors = {n: h["error"] for n, h in report["hosts"].items()}
    assert report["hosts"]["h4"]["status"] == "changed"
    assert errors["h1"] in ("h1, root@10.77.0.11:22: connection timed out after 2s (host down, or a firewall?)",
                            "h1, root@10.77.0.11:22: no route to host"), errors
    assert errors["h2"].startswith(f"h2, root@10.77.0.12:22: authentication failed for user root with {other_key} "
                                   "(SHA256:"), errors
    assert "authorized_keys" in errors["h2"]
    assert errors["h3"].startswith("h3, root@no-such-host.invalid:22: cannot resolve no-such-host.invalid (DNS: "), errors
    assert all(report["hosts"][n]["status"] == "unreachable" for n in ("h1", "h2", "h3"))
    assert "Traceback" not in result.stderr


def test_unknown_host_key_refused_then_trusted(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(3)
    p = make_project(th, tmp_path)
    p.declare()
    all_hosts(p)
    h1, h2, h3 = th.hosts
    p.known_hosts.write_text(f"{h2.name},{h2.ip} {h2.host_key}\n")  # only h2 is known

    refused, report = p.deployer_json("plan", "dev")
    assert refused.exit_code == 4, refused
    assert report["hosts"]["h2"]["status"] == "changed"  # the others are not held back
    for h in (h1, h3):
        error = report["hosts"][h.name]["error"]
        assert report["hosts"][h.name]["status"] == "unreachable"
        assert f"host key not known: {h.ip} presents ssh-ed25519 {fingerprint_of(h.host_key)}" in error, error
        assert f"'ssh-keyscan -p 22 {h.ip} >> {p.known_hosts}'" in error, error
        assert "or rerun with --accept-new-host-keys" in error
    assert p.known_hosts.read_text() == f"{h2.name},{h2.ip} {h2.host_key}\n"  # nothing recorded

    # Trust h3 the way the message says, by hand (ssh-keyscan, inside ctl where h3 is reachable).
    error = report["hosts"]["h3"]["error"]
    command = error[error.index("'ssh-keyscan") + 1:error.index(f">> {p.known_hosts}'") + len(f">> {p.known_hosts}")]
    scan = th.run_in_ctl(["sh", "-c", command])
    assert scan.returncode == 0, scan.stderr

    # ... and h1 with --accept-new-host-keys, which records its key in the file in use.
    accepted = p.deployer("apply", "dev", "--yes", "--accept-new-host-keys")
    assert accepted.exit_code == 0, accepted
    lines = p.known_hosts.read_text().splitlines()
    assert f"{h1.ip} {h1.host_key}" in lines, lines
    assert sum(h1.host_key in line for line in lines) == 1

    strict = p.deployer("plan", "dev", "--detailed-exitcode")
    assert strict.exit_code == 0, strict  # all three known now, strict checking passes


def test_changed_host_key_is_refused_loudly(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(2)
    p = make_project(th, tmp_path)
    p.declare()
    all_hosts(p)
    h1, h2 = th.hosts
    # h1's entry now holds h2's key: to deployer, h1 presents a different key than the known one.
    lines = p.known_hosts.read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith(f"{h1.name},{h1.ip} "))
    lines[number - 1] = f"{h1.name},{h1.ip} {h2.host_key}"
    p.known_hosts.write_text("\n".join(lines) + "\n")
    before = p.known_hosts.read_text()

    for extra in ((), ("--accept-new-host-keys",)):  # the flag never accepts a changed key
        result, report = p.deployer_json("apply", "dev", "--yes", *extra)
        assert result.exit_code == 4, result
        error = report["hosts"]["h1"]["error"]
        assert report["hosts"]["h1"]["status"] == "unreachable"
        assert f"HOST KEY CHANGED for {h1.ip}: possible man-in-the-middle attack" in error, error
        assert f"It now presents ssh-ed25519 {fingerprint_of(h1.host_key)}" in error
        assert f"known_hosts has ssh-ed25519 {fingerprint_of(h2.host_key)} ({p.known_hosts} line {number})" in error
        assert f"remove the old key (line {number} of {p.known_hosts}: ssh-keygen -R '{h1.ip}' -f {p.known_hosts})" in error
        assert report["hosts"]["h2"]["error"] is None
        assert p.known_hosts.read_text() == before
    assert "BEGIN deployer" not in p.crontab("h1")
    assert "BEGIN deployer" in p.crontab("h2")

    # The same with hashed host names (HashKnownHosts yes, Debian's default).
    subprocess.run(["ssh-keygen", "-H", "-f", str(p.known_hosts)], capture_output=True, check=True)
    assert h1.ip not in p.known_hosts.read_text()
    result, report = p.deployer_json("plan", "dev", "--accept-new-host-keys")
    assert result.exit_code == 4, result
    error = report["hosts"]["h1"]["error"]
    found = subprocess.run(["ssh-keygen", "-F", h1.ip, "-f", str(p.known_hosts)], capture_output=True, text=True)
    hashed_number = int(found.stdout.split("found: line ")[1].split()[0])  # OpenSSH's own lookup agrees
    assert f"known_hosts has ssh-ed25519 {fingerprint_of(h2.host_key)} ({p.known_hosts} line {hashed_number})" in error, error

    # Following the advice (remove the old line, then trust the new key) works.
    removed = subprocess.run(["ssh-keygen", "-R", h1.ip, "-f", str(p.known_hosts)], capture_output=True, text=True)
    assert removed.returncode == 0, removed.stderr
    trusted = p.deployer("apply", "dev", "--yes", "--accept-new-host-keys")
    assert trusted.exit_code == 0, trusted
    assert f"{h1.ip} {h1.host_key}" in p.known_hosts.read_text().splitlines()


def test_non_root_user_with_become(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(2, **USERS)
    p = make_project(th, tmp_path)
    p.declare(JOBS + "  as-bob:\n    command: /bin/true\n    schedule: \"@hourly\"\n    run_as: bob\n")
    p.inventory({
        # alice logs in and becomes root: every job in root's crontab (the wrapper runs as-bob
        # as bob), home under /var/lib
        "h1": p.host_vars("h1", user="alice", ansible_become=True),
        # alice logs in and becomes bob: everything in bob's crontab, home under ~bob
        "h2": p.host_vars("h2", user="alice", ansible_become=True, ansible_become_user="bob"),
    })
    result, report = p.deployer_json("apply", "dev", "--yes")
    assert result.exit_code == 0, result
    assert all(h["status"] == "changed" for h in report["hosts"].values()), report

    root_h1, bob_h1 = p.crontab("h1", "root"), p.crontab("h1", "bob")
    assert "/var/lib/deployer/demo-dev/releases/" in root_h1 and "/run hello" in root_h1 and "/run as-bob" in root_h1
    assert bob_h1 == ""
    assert p.crontab("h1", "alice") == ""
    bob_h2 = p.crontab("h2", "bob")
    assert "/home/bob/.local/share/deployer/demo-dev/releases/" in bob_h2, bob_h2
    assert "/run hello" in bob_h2 and "/run as-bob" in bob_h2
    assert p.crontab("h2", "root") == "" and p.crontab("h2", "alice") == ""

    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    again, report = p.deployer_json("apply", "dev", "--yes")
    assert again.exit_code == 0 and all(h["status"] == "ok" for h in report["hosts"].values()), again


def test_become_when_sudo_wants_a_password(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1, users=["bob"], sudo_password_users={"carol": "s3cret"})
    p = make_project(th, tmp_path)
    p.declare()
    p.inventory({"h1": p.host_vars("h1", user="carol", ansible_become=True)})
    result, report = p.deployer_json("apply", "dev", "--yes")
    # Exit 1, not 4: the host WAS reached and carol logged in; what failed is on the target
    # (its sudo policy), which ssh retries or a network fix would not change.
    assert result.exit_code == 1, result
    host = report["hosts"]["h1"]
    assert host["status"] == "failed"
    assert host["error"] == "sudo asked for a password (give the user NOPASSWD sudo, or connect as the run-as user)"
    assert host["counters"]["execs"] == 1  # the probe was refused by sudo; nothing was sent after it
    assert p.crontab("h1", "root") == ""
    text = p.deployer("apply", "dev", "--yes")
    assert text.exit_code == 1 and "sudo asked for a password" in text.stdout, text


def test_limit_to_a_host_and_to_a_group(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(3)
    p = make_project(th, tmp_path)
    p.declare()
    p.inventory({h.name: p.host_vars(h.name) for h in th.hosts}, groups={"web": ["h1", "h2"], "db": ["h3"]})

    result, report = p.deployer_json("apply", "dev", "--yes", "--limit", "h3")
    assert result.exit_code == 0, result
    assert list(report["hosts"]) == ["h3"]
    assert "BEGIN deployer" in p.crontab("h3")
    assert p.crontab("h1") == "" and p.crontab("h2") == ""

    result, report = p.deployer_json("apply", "dev", "--yes", "--limit", "web")
    assert result.exit_code == 0, result
    assert sorted(report["hosts"]) == ["h1", "h2"]
    assert all(h["status"] == "changed" for h in report["hosts"].values())

    plan = p.deployer("plan", "dev", "--detailed-exitcode", "-l", "db,h1")
    assert plan.exit_code == 0, plan
    assert "h1 (ssh) no changes" in plan.stdout and "h3 (ssh) no changes" in plan.stdout and "h2 (ssh)" not in plan.stdout

    unknown = p.deployer("plan", "dev", "--limit", "nope")
    assert unknown.exit_code == 2 and "no such host or group" in unknown.stderr, unknown


def test_jump_hosts_and_ssh_config_aliases(fleet_factory: Any, tmp_path: Path) -> None:
    """deployer runs in the machine's namespace: only the bastion (h1, via its loopback
    forward) is reachable from there; h2..h5 are reached through it, four ways."""
    th = fleet_factory(5)
    p = make_project(th, tmp_path)
    p.declare()
    bastion_host, bastion_port = th.loopback_address("h1")
    h2, h3, h4, h5 = th.hosts[1:]
    (p.home / ".ssh" / "config").write_text(
        f"Host app2\n  HostName {h2.ip}\n  User root\n  IdentityFile {th.client_key_path}\n  ProxyJump bastion\n\n"
        f"Host bastion\n  HostName {bastion_host}\n  Port {bastion_port}\n  User root\n")
    jump = f"root@{bastion_host}:{bastion_port}"
    p.inventory({
        "app2": {},  # everything from ~/.ssh/config: HostName, User, IdentityFile, ProxyJump
        "app3": p.host_vars("h3", ansible_ssh_common_args=f"-o ProxyJump={jump} -o ServerAliveInterval=30"),
        "app4": p.host_vars("h4", deployer_ssh_jump=jump),
        # Ansible's classic bastion recipe: the ssh CLI as ProxyCommand (-W), %h:%p filled in
        "app5": p.host_vars("h5", ansible_ssh_common_args=(
            f"-o ProxyCommand='ssh -F {th.ssh_config_path} -W %h:%p h1.lo'")),
    })
    result, report = p.deployer_json("apply", "dev", "--yes", ctl=False)
    assert result.exit_code == 0, result
    for name, host in report["hosts"].items():
        assert host["status"] == "changed", (name, host)
        ssh_connections = 1 if name == "app5" else 2  # the jump + the target; app5's jump is the ssh CLI's
        assert host["counters"]["connections"] == ssh_connections and host["counters"]["execs"] == 2, (name, host)
    for h in (h2, h3, h4, h5):
        assert "BEGIN deployer" in p.crontab(h.name)
    assert p.crontab("h1") == ""

    th.stop("h3")
    result, report = p.deployer_json("plan", "dev", ctl=False)
    assert result.exit_code == 4
    error = report["hosts"]["app3"]["error"]
    assert error.startswith(f"app3, root@{h3.ip}:22: the jump host could not connect to it ("), error


@pytest.mark.e2e
def test_a_job_installed_over_ssh_really_fires(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1, **USERS)
    p = make_project(th, tmp_path)
    p.write("tasks/mark.py", """\
        import os, socket, sys
        print("ran on", socket.gethostname(), "as", os.getuid(), sys.argv[1:])
        """)
    p.declare("  every-minute:\n    script: tasks/mark.py\n    args: [\"50%\"]\n    schedule: \"* * * * *\"\n"
              "    timeout: 30s\n")
    p.inventory({"h1": p.host_vars("h1", user="alice", ansible_become=True)})
    result = p.deployer("apply", "dev", "--yes")
    assert result.exit_code == 0, result

    ledger = "/var/lib/deployer/demo-dev/state/every-minute/ledger.jsonl"
    deadline = time.time() + 130  # the next minute boundary (cron reloads the crontab there), plus margin
    text = ""
    while time.time() < deadline:
        try:
            text = th.read_text("h1", ledger).strip()
        except FileNotFoundError:
            text = ""
        if text:
            break
        time.sleep(1)
    assert text, (f"cron on h1 did not run the job within 130 s; crontab:\n{p.crontab('h1')}\n"
                  f"cron log: {th.read_text('h1', '/var/log/cron.console')[-2000:]}")
    entry = json.loads(text.splitlines()[0])
    assert entry["outcome"] == "success" and entry["exit_code"] == 0, entry
    assert entry["trigger"] == "cron" and entry["user"] == "root" and entry["host"] == "h1", entry
    log = th.read_text("h1", "/var/lib/deployer/demo-dev/logs/every-minute.log")
    assert "ran on h1 as 0 ['50%']" in log, log
