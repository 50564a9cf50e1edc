"""verify --notify, the dead-man, for a real Incus container: its cron daemon killed, then
the container itself stopped. The messages go from the controller (this machine), where
``verify --notify`` runs, to a real SMTP relay (STARTTLS, login) and a real HTTP server on
this machine's loopback; the container needs no network for them."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.servers import channels_yaml, smtp_relay, web_server
from tests.harness.incus import incus
from tests.incus.conftest import IncusProject, flat

pytestmark = [pytest.mark.alerts, pytest.mark.incus]

PROJECT = "incusnotify"  # not "demo": the cron tier deploys that one on this machine
HOME = f"/var/lib/deployer/{PROJECT}-dev"


def declaration(smtp_port: int, ca_file: Path, hook_url: str) -> str:
    # rules.when without "late": no watchdog line, so nothing in the container tells of the
    # job's lateness once its cron is back; what is told here is verify's alone.
    return (f"project: {PROJECT}\n"
            f"alerts:\n{channels_yaml('127.0.0.1', smtp_port, ca_file, hook_url)}\n"
            f"  rules: {{when: [failure, recovered]}}\n"
            f"jobs:\n"
            f"  hello:\n"
            f"    script: tasks/hello.py\n"
            f"    schedule: \"* * * * *\"\n"
            f"environments:\n"
            f"  dev:\n"
            f"    inventory: inventories/dev\n")


def wait_for(condition: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_containers_stopped_cron_then_the_container_itself_are_told_once_each(
        incus_project: IncusProject, container: str, tmp_path: Path) -> None:
    p = incus_project
    state = tmp_path / "notify.json"
    with contextlib.ExitStack() as servers:
        relay = servers.enter_context(smtp_relay(tmp_path))
        web = servers.enter_context(web_server())

        def hooks() -> list[dict[str, Any]]:
            return [json.loads(r.body) for r in web.requests if r.path == "/hook"]

        def notify() -> tuple[int, dict[str, Any]]:
            result, report = p.deployer_json("verify", "dev", "--notify", "--notify-state", str(state))
            assert "Traceback" not in result.stderr, result
            return result.exit_code, report

        p.write("deployer.yml", declaration(relay.port, relay.ca_file, web.url + "/hook"))
        p.inventory({container: {}})
        p.extra_env.update(SMTP_PASSWORD=relay.password, HOOK_TOKEN="Bearer hook-secret-2718")
        # The container's cron, killed by its pid before the deploy (killed after it, a minute
        # boundary in between let it start the job: CI saw "no job will run"); the deploy
        # backdated ten minutes (its time is when `current` last moved): the every-minute job
        # has missed its runs since.
        assert p.exec(container, "sh", "-c", "kill $(cat /run/crond.pid) && rm -f /run/crond.pid").returncode == 0
        deadline = time.monotonic() + 5
        while p.exec(container, "sh", "-c", "ps -eo comm | grep -qx cron").returncode == 0:
            assert time.monotonic() < deadline, "cron still runs in the container"
            time.sleep(0.05)
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied
        assert p.exec(container, "touch", "-h", "-d", f"@{int(time.time()) - 600}", f"{HOME}/current").returncode == 0

        for _ in range(2):
            code, report = notify()
            assert code == 1 and report["notify"]["open"] == [f"{container} cron-stopped"], report
        wait_for(lambda: len(relay.messages) == 1 and len(hooks()) == 1, "the mail and the webhook")
        assert relay.messages[0]["Subject"] == f"[{PROJECT}/dev] no cron daemon runs on {container}: hello late"
        body = hooks()[0]
        assert (body["event"], body["host"], body["late_jobs"]) == ("cron-stopped", container, ["hello"]), body

        # cron again (it forks to the background, as the image's init started it): one recovery each
        assert p.exec(container, "cron").returncode == 0
        code, report = notify()
        assert [(s["event"], s["incident"], s["channel"], s["ok"]) for s in report["notify"]["sent"]] == \
            [("recovered", "cron-stopped", "oncall", True), ("recovered", "cron-stopped", "team", True)], report
        wait_for(lambda: len(relay.messages) == 2 and len(hooks()) == 2, "the recovery")
        assert relay.messages[1]["Subject"].startswith(f"[{PROJECT}/dev] cron runs again on {container} (stopped ")

        # The container stopped: unreachable, told once; started again: one recovery.
        p.incus.stop(container)
        for _ in range(2):
            code, report = notify()
            assert code == 4 and report["notify"]["open"] == [f"{container} unreachable"], report
        wait_for(lambda: len(relay.messages) == 3 and len(hooks()) == 3, "the unreachable mail and webhook")
        assert relay.messages[2]["Subject"] == f"[{PROJECT}/dev] {container} cannot be reached"
        assert hooks()[2]["event"] == "unreachable" and hooks()[2]["host"] == container
        assert "hook-secret-2718" not in relay.messages[2].get_content()

        assert p.exec(container, "true").returncode != 0  # stopped indeed
        incus("start", container)
        wait_for(lambda: p.exec(container, "test", "-s", "/run/crond.pid").returncode == 0, "cron in the container", 30)
        code, report = notify()
        assert [(s["event"], s["incident"], s["channel"]) for s in report["notify"]["sent"]] == \
            [("recovered", "unreachable", "oncall"), ("recovered", "unreachable", "team")], report
        assert report["notify"]["open"] == [], report
        wait_for(lambda: len(relay.messages) == 4 and len(hooks()) == 4, "the recovery")
        assert relay.messages[3]["Subject"].startswith(f"[{PROJECT}/dev] {container} can be reached again (down ")
        time.sleep(0.5)
        assert len(relay.messages) == 4 and len(hooks()) == 4
        assert "notify: nothing new to tell" in flat(p.deployer("verify", "dev", "--notify", "--notify-state",
                                                                str(state)).stdout)
