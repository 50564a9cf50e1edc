"""verify --notify, the dead-man, over real SSH on namespaced hosts: a real cron daemon
killed, a real host stopped, messages to a real SMTP relay (STARTTLS, login) and a real
HTTP server. deployer runs inside the fleet's ``ctl`` namespace: the servers listen there,
on ctl's loopback, started in ctl (servers.in_netns) and served from this process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.servers import Relay, Web, in_netns, smtp_relay, web_server
from tests.fleet.conftest import FleetProject, flat, make_project

pytestmark = [pytest.mark.fleet, pytest.mark.alerts]

HOME = "/var/lib/deployer/demo-dev"
DEAD_PORT = 9  # nothing listens there in ctl: a real "connection refused"


def declaration(relay: Relay, hook_url: str) -> str:
    return f"""\
project: demo
defaults:
  timeout: 1m
alerts:
  channels:
    oncall:
      mail:
        to: [oncall@example.org]
        sender: cron@example.org
        smtp: {{host: 127.0.0.1, port: {relay.port}, user: {relay.user}, password: {{secret: {{env: SMTP_PASSWORD}}}},
                ca_file: {relay.ca_file}}}
    team:
      webhook:
        url: {hook_url}
        headers: {{Authorization: {{secret: {{env: HOOK_TOKEN}}}}}}
jobs:
  hello:
    script: tasks/hello.py
    schedule: "* * * * *"
environments:
  dev:
    inventory: inventories/dev
"""


@pytest.fixture
def servers(fleet_factory: Any, tmp_path: Path) -> Iterator[tuple[Any, Relay, Web]]:
    th = fleet_factory(["h1"])
    with ExitStack() as stack:
        relay = in_netns(th.ctl_netns_path, lambda: stack.enter_context(smtp_relay(tmp_path)))
        web = in_netns(th.ctl_netns_path, lambda: stack.enter_context(web_server()))
        yield th, relay, web


def project(th: Any, tmp_path: Path, relay: Relay, hook_url: str) -> FleetProject:
    p = make_project(th, tmp_path)
    p.write("deployer.yml", declaration(relay, hook_url))
    p.extra_env.update(SMTP_PASSWORD=relay.password, HOOK_TOKEN="Bearer hook-secret-3141")
    p.inventory({"h1": p.host_vars("h1")})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    return p


def hooks(web: Web) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in web.requests if r.path == "/hook"]


def wait_for(condition: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_stopped_cron_daemon_is_told_once_then_its_recovery_once(servers: tuple[Any, Relay, Web], tmp_path: Path) -> None:
    th, relay, web = servers
    p = project(th, tmp_path, relay, f"http://127.0.0.1:{web.port}/hook")
    state = tmp_path / "notify.json"

    # cron, killed by its pid; deployed ten minutes ago (the deploy's time is when `current`
    # last moved): the every-minute job has missed its runs since
    th.exec_on("h1", ["sh", "-c", "pid=$(cat /run/crond.pid) && kill $pid && rm -f /run/crond.pid && "
                                  "for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"],
               check=True)
    th.exec_on("h1", ["touch", "-h", "-d", f"@{int(time.time()) - 600}", f"{HOME}/current"], check=True)
    plain = p.deployer("verify", "dev")
    assert plain.exit_code == 1 and "fail cron-daemon no cron daemon is running" in flat(plain.stdout), plain

    first = p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    assert first.exit_code == plain.exit_code, first  # what was sent never changes verify's exit code
    text = flat(first.stdout)
    assert "notify: h1 cron-stopped -> oncall: sent" in text, first
    assert "notify: h1 cron-stopped -> team: sent" in text, first
    wait_for(lambda: len(relay.messages) == 1 and len(hooks(web)) == 1, "the mail and the webhook")
    mail = relay.messages[0]
    assert mail["Subject"] == "[demo/dev] no cron daemon runs on h1: hello late", mail["Subject"]
    assert mail["X-Deployer-Event"] == "cron-stopped" and mail["To"] == "oncall@example.org"
    assert "Host:    h1" in mail.get_content() and "Late:    hello" in mail.get_content()
    body = hooks(web)[0]
    assert (body["event"], body["host"], body["late_jobs"], body["project"], body["env"], body["job"]) == \
        ("cron-stopped", "h1", ["hello"], "demo", "dev", None), body
    assert web.requests[0].headers["authorization"] == "Bearer hook-secret-3141"
    assert relay.logins == ["alerts:ok"]
    assert "hook-secret-3141" not in first.stdout + first.stderr and relay.password not in first.stdout + first.stderr
    assert state.stat().st_mode & 0o777 == 0o600

    second, report = p.deployer_json("verify", "dev", "--notify", "--notify-state", str(state))
    assert second.exit_code == 1 and report["notify"]["sent"] == [], second
    assert report["notify"]["open"] == ["h1 cron-stopped"]
    assert "nothing new to tell" not in second.stdout  # --json: the report only
    time.sleep(0.5)
    assert len(relay.messages) == 1 and len(hooks(web)) == 1

    # cron again: one recovery, to each channel
    th.exec_on("h1", ["sh", "-c", "setsid cron -f -L 15 </dev/null >/dev/null 2>&1 &"], check=True)
    th.exec_on("h1", ["sh", "-c", "for i in $(seq 100); do [ -s /run/crond.pid ] && exit 0; sleep 0.1; done; exit 1"], check=True)
    back, report = p.deployer_json("verify", "dev", "--notify", "--notify-state", str(state))
    assert [(s["event"], s["incident"], s["channel"], s["ok"]) for s in report["notify"]["sent"]] == \
        [("recovered", "cron-stopped", "oncall", True), ("recovered", "cron-stopped", "team", True)], back
    wait_for(lambda: len(relay.messages) == 2 and len(hooks(web)) == 2, "the recovery")
    assert relay.messages[1]["Subject"].startswith("[demo/dev] cron runs again on h1 (stopped "), relay.messages[1]["Subject"]
    assert (hooks(web)[1]["event"], hooks(web)[1]["incident"]) == ("recovered", "cron-stopped")
    again = p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    assert "notify: nothing new to tell" in flat(again.stdout), again
    time.sleep(0.5)
    assert len(relay.messages) == 2 and len(hooks(web)) == 2


def test_an_unreachable_host_is_told_once_a_dead_channel_is_tried_again(servers: tuple[Any, Relay, Web],
                                                                         tmp_path: Path) -> None:
    th, relay, _ = servers
    p = project(th, tmp_path, relay, f"http://127.0.0.1:{DEAD_PORT}/hook")
    state = tmp_path / "notify.json"
    state.write_text("{not json")  # damaged: a warning, and a fresh start

    th.stop("h1")
    plain = p.deployer("verify", "dev")
    assert plain.exit_code == 4, plain
    first, report = p.deployer_json("verify", "dev", "--notify", "--notify-state", str(state))
    assert first.exit_code == 4 and report["exit_code"] == 4, first
    assert report["notify"]["warnings"] == [f"{state} is not a notify state deployer wrote (damaged, or edited by hand): "
                                            "starting afresh, so open incidents may be told once more"]
    sent = {(s["channel"], s["event"], s["ok"]): s["error"] for s in report["notify"]["sent"]}
    assert sent == {("oncall", "unreachable", True): None, ("team", "unreachable", False): "Connection refused"}, report
    wait_for(lambda: len(relay.messages) == 1, "the mail")
    assert relay.messages[0]["Subject"] == "[demo/dev] h1 cannot be reached"
    assert "connection refused" in relay.messages[0].get_content()

    # Again: the mail is not sent twice; the dead webhook, never told, is tried again.
    second = p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    assert second.exit_code == 4, second
    text = flat(second.stdout)
    assert "notify: h1 unreachable -> team: not sent (Connection refused); tried again next run" in text, second
    assert "-> oncall" not in text
    time.sleep(0.5)
    assert len(relay.messages) == 1

    # Back: one recovery, to the channel that was told (the webhook never heard of it).
    th.restart("h1")
    back, report = p.deployer_json("verify", "dev", "--notify", "--notify-state", str(state))
    assert back.exit_code == p.deployer("verify", "dev").exit_code, back
    assert [(s["channel"], s["event"], s["incident"], s["ok"]) for s in report["notify"]["sent"]] == \
        [("oncall", "recovered", "unreachable", True)], report
    wait_for(lambda: len(relay.messages) == 2, "the recovery")
    assert relay.messages[1]["Subject"].startswith("[demo/dev] h1 can be reached again (down "), relay.messages[1]["Subject"]
    assert report["notify"]["open"] == []


def test_our_block_removed_by_hand_is_drift_told_once(servers: tuple[Any, Relay, Web], tmp_path: Path) -> None:
    th, relay, web = servers
    p = project(th, tmp_path, relay, f"http://127.0.0.1:{web.port}/hook")
    state = tmp_path / "notify.json"
    th.exec_on("h1", ["crontab", "-r"], check=True)
    for _ in range(2):
        p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    wait_for(lambda: len(relay.messages) == 1 and len(hooks(web)) == 1, "the drift mail and webhook")
    assert relay.messages[0]["Subject"] == "[demo/dev] the crontab block on h1 was removed or edited by hand"
    assert "the crontab of root no longer holds deployer's block" in hooks(web)[0]["detail"]
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    healed = p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    assert "notify: h1 drift recovered -> oncall: sent" in flat(healed.stdout), healed
    wait_for(lambda: len(relay.messages) == 2, "the recovery")
    assert relay.messages[1]["Subject"].startswith("[demo/dev] the crontab block on h1 is as deployed again (after ")
    time.sleep(0.5)
    assert len(hooks(web)) == 2


def test_a_job_nobody_on_the_target_tells_of_is_told_by_verify(servers: tuple[Any, Relay, Web], tmp_path: Path) -> None:
    th, relay, web = servers
    p = project(th, tmp_path, relay, f"http://127.0.0.1:{web.port}/hook")
    # route: [] -- the wrapper tells nobody of this job (say its host cannot reach the relay): verify does
    text = declaration(relay, f"http://127.0.0.1:{web.port}/hook").replace(
        "jobs:\n", "jobs:\n  quiet:\n    command: /bin/sh\n    args: ['-c', 'test -e /root/ok']\n"
                   "    schedule: '0 3 * * *'\n    alerts: {route: []}\n")
    p.write("deployer.yml", text)
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    state = tmp_path / "notify.json"
    for _ in range(3):
        assert p.deployer("run", "dev", "quiet").exit_code == 1
    for _ in range(2):
        failing = p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
        assert failing.exit_code == 1, failing
    wait_for(lambda: len(relay.messages) == 1 and len(hooks(web)) == 1, "the failure")
    assert relay.messages[0]["Subject"] == "[demo/dev] quiet keeps failing on h1"
    body = hooks(web)[0]
    assert (body["event"], body["job"], body["host"]) == ("failure", "quiet", "h1"), body
    assert body["detail"].startswith("3 failed runs in a row"), body

    th.exec_on("h1", ["touch", "/root/ok"], check=True)
    assert p.deployer("run", "dev", "quiet").exit_code == 0
    p.deployer("verify", "dev", "--notify", "--notify-state", str(state))
    wait_for(lambda: len(relay.messages) == 2, "the recovery")
    assert relay.messages[1]["Subject"].startswith("[demo/dev] quiet recovered on h1 (failing "), relay.messages[1]["Subject"]
    time.sleep(0.5)
    assert len(hooks(web)) == 2
