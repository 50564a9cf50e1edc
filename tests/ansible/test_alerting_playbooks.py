"""The Ansible front keeps up with the CLI's alerting: ``deployer_apply`` gets or creates its
host's healthchecks checks, ``deployer_verify`` with ``notify`` tells its host's incidents
once, with the real ansible-playbook on real sshd hosts.

The healthchecks API is the fake of tests/alerts/fake_healthchecks.py (healthchecks itself is
a Django application no test machine here can install), started in the fleet's ``ctl``
namespace where ansible-playbook runs and calls it, on ctl's loopback. The hosts ping it
from their own namespaces: the declaration takes http only for a server on the loopback (a
key goes with every request), so each host runs a plain TCP relay on its own loopback to the
fake's port on the bridge (ctl's 10.77.0.1): the pings cross the real network from the host.
The webhook of ``notify`` is the real recording HTTP server (tests/alerts/servers.py), also in
ctl, where the task sends from.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.fake_healthchecks import API_KEY, PING_KEY, FakeHealthchecks, fake_healthchecks
from tests.alerts.servers import Web, in_netns, web_server
from tests.ansible.conftest import QUIET_JOBS, AnsibleProject, make_ansible_project
from tests.harness import TestHosts

pytestmark = [pytest.mark.ansible, pytest.mark.fleet, pytest.mark.alerts]

HOSTS = ("h1", "h2")
SECRETS = {"HC_API_KEY": API_KEY, "HC_PING_KEY": PING_KEY}
SLUGS = sorted(f"demo-dev-{job}-{host}" for job in ("hello", "nightly") for host in HOSTS)

# A relay from the host's loopback to the fake in ctl, run by the host's own python3.
RELAY = r"""
import socket, sys, threading
port, to = int(sys.argv[1]), (sys.argv[2], int(sys.argv[1]))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen(16)
def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(to)
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""


def healthchecks_yaml(port: int) -> str:
    return f"""\
alerts:
  healthchecks:
    api: http://127.0.0.1:{port}
    api_key: {{secret: {{env: HC_API_KEY}}}}
    ping_url: http://127.0.0.1:{port}/ping
    ping_key: {{secret: {{env: HC_PING_KEY}}}}
"""


def declare(p: AnsibleProject, head: str, jobs: str = QUIET_JOBS) -> None:
    p.write("deployer.yml", f"project: demo\ndefaults:\n  timeout: 1m\n{head}jobs:\n{jobs}\n"
                            "environments:\n  dev:\n    inventory: inventories/dev\n")


@pytest.fixture
def fleet_and_hc(fleet_factory: Any, tmp_path: Path) -> Iterator[tuple[AnsibleProject, FakeHealthchecks]]:
    th: TestHosts = fleet_factory(list(HOSTS))
    with ExitStack() as stack:
        hc = in_netns(th.ctl_netns_path, lambda: stack.enter_context(fake_healthchecks(address="0.0.0.0")))  # noqa: S104 - in ctl only
        for host in HOSTS:
            th.exec_on(host, ["sh", "-c", 'setsid python3 -c "$0" "$1" "$2" </dev/null >/dev/null 2>&1 &', RELAY,
                              str(hc.port), th.gateway], check=True)
            wait_for(lambda h=host: th.exec_on(h, ["python3", "-c", "import socket, sys; socket.create_connection("
                                                   "('127.0.0.1', int(sys.argv[1])), 1)", str(hc.port)]).returncode == 0,
                     f"the relay on {host}")
        p = make_ansible_project(th, tmp_path)
        p.inventory({h: p.host_vars(h) for h in HOSTS})
        p.extra_env.update(SECRETS)
        declare(p, healthchecks_yaml(hc.port))
        yield p, hc


def wait_for(condition: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def actions(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {c["slug"]: c["action"] for r in results.values() for c in r["healthchecks"]["checks"]}


def methods(hc: FakeHealthchecks, since: int = 0) -> list[str]:
    return [method for method, _ in hc.calls[since:]]


def test_the_apply_playbook_creates_each_hosts_checks_once(fleet_and_hc: tuple[AnsibleProject, FakeHealthchecks]) -> None:
    p, hc = fleet_and_hc

    # Check mode: the list is read (once per host), nothing is created, and the task says what would be.
    checked = p.playbook("apply", "--check", json_output=True)
    assert checked.exit_code == 0, checked
    results = checked.task_results()
    assert actions(results) == dict.fromkeys(SLUGS, "create"), results
    assert all(results[h]["changed"] for h in HOSTS)
    assert hc.checks == [] and methods(hc) == ["GET", "GET"], hc.calls

    # A wrong key: the hosts are applied all the same, the task fails with the CLI's words, the key shown nowhere.
    wrong = "hcw_" + "w" * 28
    refused = p.playbook("apply", env={"HC_API_KEY": wrong}, json_output=True)
    assert refused.exit_code == 2, refused
    for host, result in refused.task_results().items():
        assert result["failed"] is True and result["changed"] is True, result
        assert result["msg"].splitlines()[-2:] == [
            f"error: healthchecks: the healthchecks API at {hc.url} refused the API key (401 (wrong api key))",
            "   set alerts.healthchecks.api_key to the project's read-write API key (healthchecks: Project Settings, "
            "API Access); the host is applied, and the next run creates or updates what was not"], (host, result)
        assert result["healthchecks"]["ok"] is False and result["deployer"]["status"] == "changed", result
    assert wrong not in refused.stdout + refused.stderr and "Traceback" not in refused.stdout + refused.stderr
    assert hc.checks == []
    for host in HOSTS:
        assert "# BEGIN deployer demo/dev" in p.crontab(host), host

    # The right key: each host's task creates its own checks (the hosts have nothing to change).
    calls = len(hc.calls)
    applied = p.playbook("apply", "-vvv")
    assert applied.exit_code == 0, applied
    assert applied.changed() == {"h1": 1, "h2": 1}, applied
    assert sorted(c["slug"] for c in hc.checks) == SLUGS
    assert sorted(methods(hc, calls)) == ["GET", "GET", "POST", "POST", "POST", "POST"], hc.calls
    check = hc.check("demo-dev-hello-h1")
    assert (check["schedule"], check["tags"], check["name"]) == ("0 3 1 1 *", "deployer demo dev", "demo/dev hello on h1")
    assert "SSH: EXEC" in applied.stdout and "slug: demo-dev-hello-h1" in applied.stdout, applied  # -vvv shows it all
    for secret in (API_KEY, PING_KEY):  # ansible-playbook -vvv shows commands, arguments and results: never a key
        assert secret not in applied.stdout + applied.stderr, secret

    # A second run changes nothing and calls nothing but the list.
    calls = len(hc.calls)
    again = p.playbook("apply", json_output=True)
    assert again.exit_code == 0, again
    results = again.task_results()
    assert actions(results) == dict.fromkeys(SLUGS, "unchanged") and not any(results[h]["changed"] for h in HOSTS), results
    assert methods(hc, calls) == ["GET", "GET"], hc.calls
    assert results["h1"]["healthchecks"]["ok"] is True and results["h1"]["healthchecks"]["error"] is None
    assert results["h1"]["msg"].splitlines()[-1] == f"healthchecks checks at {hc.url}: 2 unchanged", results["h1"]

    # A real run of the job on h2, through its wrapper: its pings land on h2's check.
    ran = p.deployer("run", "dev", "hello", "-H", "h2")
    assert ran.exit_code == 0, ran
    wait_for(lambda: len(hc.pings) == 2, "the start and success pings")
    assert [(ping.slug, ping.kind) for ping in hc.pings] == [("demo-dev-hello-h2", "start"), ("demo-dev-hello-h2", "success")]
    assert hc.pings[0].rid == hc.pings[1].rid


def test_a_task_pauses_only_its_own_hosts_checks_of_jobs_gone(fleet_and_hc: tuple[AnsibleProject, FakeHealthchecks]) -> None:
    p, hc = fleet_and_hc
    assert p.playbook("apply").exit_code == 0
    assert sorted(c["slug"] for c in hc.checks) == SLUGS
    # A host gone from the inventory, whose check only the CLI (which sees the whole fleet) may pause.
    with hc.lock:
        hc.checks.append({**hc.check("demo-dev-hello-h1"), "uuid": "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                          "slug": "demo-dev-hello-h3", "name": "demo/dev hello on h3"})

    # hello is now h2's alone: h1's task pauses h1's hello check, h2's keeps its own.
    declare(p, healthchecks_yaml(hc.port), QUIET_JOBS.replace("    env: {GREETING: hi}\n", "    env: {GREETING: hi}\n    hosts: [h2]\n"))
    checked = p.playbook("apply", "--check", json_output=True)
    assert checked.exit_code == 0, checked
    assert actions(checked.task_results())["demo-dev-hello-h1"] == "pause", checked
    assert hc.check("demo-dev-hello-h1")["status"] != "paused"

    applied = p.playbook("apply", json_output=True)
    assert applied.exit_code == 0, applied
    results = applied.task_results()
    assert {c["slug"]: c["action"] for c in results["h1"]["healthchecks"]["checks"]} == {
        "demo-dev-nightly-h1": "unchanged", "demo-dev-hello-h1": "paused"}, results["h1"]
    assert {c["slug"]: c["action"] for c in results["h2"]["healthchecks"]["checks"]} == {
        "demo-dev-hello-h2": "unchanged", "demo-dev-nightly-h2": "unchanged"}, results["h2"]
    assert hc.check("demo-dev-hello-h1")["status"] == "paused"
    assert hc.check("demo-dev-hello-h3")["status"] != "paused"  # another host's: never a task's to pause
    assert all(hc.check(s)["status"] != "paused" for s in SLUGS if s != "demo-dev-hello-h1")


# ----------------------------------------------------------------------------- notify

HOOK_TOKEN = "Bearer hook-secret-2718"


def hooks(web: Web) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in web.requests if r.path == "/hook"]


def test_verify_with_notify_tells_a_drift_once_and_its_recovery_once(fleet_factory: Any, tmp_path: Path) -> None:
    th: TestHosts = fleet_factory(list(HOSTS))
    with ExitStack() as stack:
        web = in_netns(th.ctl_netns_path, lambda: stack.enter_context(web_server()))
        p = make_ansible_project(th, tmp_path)
        p.inventory({h: p.host_vars(h) for h in HOSTS})
        p.extra_env["HOOK_TOKEN"] = HOOK_TOKEN
        declare(p, f"""\
alerts:
  channels:
    team:
      webhook:
        url: {web.url}/hook
        headers: {{Authorization: {{secret: {{env: HOOK_TOKEN}}}}}}
""")
        assert p.playbook("apply").exit_code == 0
        state = tmp_path / "notify.json"
        notify = ("-e", "deployer_notify=true", "-e", f"deployer_notify_state={state}", "-f", "2")

        healthy = p.playbook("verify", *notify, json_output=True)
        assert healthy.exit_code == 0, healthy
        for host, result in healthy.task_results().items():
            assert result["msg"].splitlines()[-1] == "notify: nothing new to tell", (host, result)
            assert result["notify"]["channels"] == ["team"] and result["notify"]["sent"] == [], (host, result)
        assert hooks(web) == []

        for host in HOSTS:  # our block gone from both crontabs: the jobs are not scheduled any more
            th.exec_on(host, ["crontab", "-r"], check=True)
        checked = p.playbook("verify", "--check", *notify, json_output=True)  # check mode: the audit, nothing sent
        assert checked.exit_code == 2, checked
        assert {h: r["msg"].splitlines()[-1] for h, r in checked.task_results().items()} == dict.fromkeys(
            HOSTS, "notify: check mode: nothing was sent"), checked
        assert hooks(web) == []
        # Both hosts' tasks at once (two forks) read and write one state file: neither loses the other's incident.
        first = p.playbook("verify", *notify, json_output=True)  # every field of the results, as -v shows them
        assert first.exit_code == 2, first
        for host, result in first.task_results().items():
            assert result["failed"] is True and "fail crontab" in result["msg"], (host, result)
            assert result["msg"].splitlines()[-1] == f"notify: {host} drift -> team: sent", (host, result)
            assert [(s["host"], s["incident"], s["channel"], s["ok"]) for s in result["notify"]["sent"]] == [
                (host, "drift", "team", True)], (host, result)
        assert HOOK_TOKEN not in first.stdout + first.stderr
        told = sorted((b["host"], b["event"], b["source"]) for b in hooks(web))
        assert told == [("h1", "drift", "verify"), ("h2", "drift", "verify")], told
        assert hooks(web)[0]["text"].startswith("[demo/dev] the crontab block on h"), hooks(web)[0]
        assert all(r.headers["authorization"] == HOOK_TOKEN for r in web.requests)
        assert state.stat().st_mode & 0o777 == 0o600

        second = p.playbook("verify", *notify, json_output=True)
        assert second.exit_code == 2, second
        results = second.task_results()
        for host in HOSTS:
            assert results[host]["notify"]["sent"] == [], results[host]
            assert f"{host} drift" in results[host]["notify"]["open"], results[host]
        assert len(hooks(web)) == 2

        assert p.playbook("apply").exit_code == 0  # the block back: each drift recovers, told once
        back = p.playbook("verify", *notify, json_output=True)
        assert back.exit_code == 0, back
        for host, result in back.task_results().items():
            assert result["msg"].splitlines()[-1] == f"notify: {host} drift recovered -> team: sent", (host, result)
        recovered = sorted((b["host"], b["event"], b["incident"]) for b in hooks(web)[2:])
        assert recovered == [("h1", "recovered", "drift"), ("h2", "recovered", "drift")], recovered
        assert p.playbook("verify", *notify).exit_code == 0
        assert len(hooks(web)) == 4


def test_a_bad_notify_state_is_refused_before_the_host_is_contacted(fleet_factory: Any, tmp_path: Path) -> None:
    th: TestHosts = fleet_factory(["h1"])
    p = make_ansible_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1")})
    p.declare(QUIET_JOBS)
    alone = p.playbook("verify", "-e", f"deployer_notify_state={tmp_path / 'notify.json'}", json_output=True)
    assert alone.exit_code == 2, alone
    result = alone.task_results()["h1"]
    assert result["msg"].splitlines()[0] == "error: notify_state is the state of notify: add notify: true, or leave it out"
    assert "checks" not in result and not (tmp_path / "notify.json").exists(), result

    folder = p.playbook("verify", "-e", "deployer_notify=true", "-e", f"deployer_notify_state={tmp_path}", json_output=True)
    assert folder.exit_code == 2, folder
    result = folder.task_results()["h1"]
    assert result["msg"].splitlines()[0] == (f"error: notify_state {tmp_path}: is a folder; give the path of a file (it is "
                                             "created if missing); nothing was sent and no host was contacted"), result
    assert "checks" not in result, result
