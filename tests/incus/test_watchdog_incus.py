"""The lateness watchdog in a real Incus container: a job that did not start when it was due
is told late once, then its recovery by the next run, each checked through `incus exec`.

The container reaches the relay and the HTTP server as in test_alerts_incus.py: it has no
network device, and Incus ``proxy`` devices (``bind=instance``) listen on its loopback and
connect to the servers on this machine's. The watchdog's line is read from root's crontab in
the container and its command run as cron runs it (tests/alerts/watchdog_remote.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.alerts import remote, watchdog_remote
from tests.alerts.watchdog_remote import JOB, as_cron, watchdog_command
from tests.incus.conftest import IncusProject, alert_servers

pytestmark = [pytest.mark.alerts, pytest.mark.incus]

STATE = f"{remote.HOME}/state/{JOB}"


def test_a_job_that_did_not_start_in_a_container_is_told_late_once_then_its_recovery(incus_project: IncusProject,
                                                                                      container: str,
                                                                                      tmp_path: Path) -> None:
    p = incus_project

    def watchdog_round() -> tuple[int, str]:
        """The watchdog's line of root's crontab in the container, run as cron runs it."""
        command = watchdog_command(on_target(["crontab", "-l"]))
        done = p.incus.exec(container, as_cron(command, "root", "/root"))
        return done.returncode, done.stderr

    with alert_servers(p, container, tmp_path) as (on_target, relay, web):
        schedule = f"{watchdog_remote.a_minute_half_an_hour_away()} * * * *"
        p.write("deployer.yml", watchdog_remote.declaration("app", "127.0.0.1", relay.port, web.url + "/hook", schedule, "1m"))
        p.inventory({container: {}})
        p.extra_env.update(remote.SECRETS)
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied
        # The release became current "an hour ago": the watchdog judges only fires after that,
        # and the schedule's next fire, half an hour away, is not the container's cron's to
        # start meanwhile. Dating the link back is the one thing not done for real.
        on_target(["touch", "-h", "-d", f"@{int(time.time()) - 3600}", f"{remote.HOME}/current"])

        assert watchdog_round() == (0, "")
        assert watchdog_round() == (0, "")  # the next round: the same incident, told already
        # The container's hostname is its name; through the proxy every client is 127.0.0.1.
        watchdog_remote.check_late(relay, web, container, None, client=None)
        seen = watchdog_remote.record(on_target(["cat", f"{remote.HOME}/state/watchdog.json"]))
        assert (seen["late"], seen["grace"], seen["errors"]) == (True, 60, []), seen
        assert sorted((d["channel"], d["ok"]) for d in seen["sent"]["deliveries"]) == [("oncall", True), ("team", True)]
        state = json.loads(on_target(["cat", f"{STATE}/alerts.json"]))
        assert (state["incident"]["event"], state["last_alert"]["event"]) == ("late", "late"), state
        assert on_target(["sh", "-c", f"cat {STATE}/ledger.jsonl 2>/dev/null || true"]) == ""  # the job never started

        ran = p.deployer("run", "dev", JOB)
        assert ran.exit_code == 0, ran
        watchdog_remote.check_recovered(relay, web, container, client=None)
        assert watchdog_round() == (0, "")  # a run started since the fire: not late, nothing sent
        assert watchdog_remote.events(relay, web) == (["late", "recovered"], ["late", "recovered"])
        assert watchdog_remote.record(on_target(["cat", f"{remote.HOME}/state/watchdog.json"]))["late"] is False

    assert on_target(["stat", "-c", "%U %a", f"{STATE}/alerts.json"]).split() == ["root", "600"]
    assert json.loads(on_target(["cat", f"{STATE}/alerts.json"]))["incident"] is None
    written = on_target(["cat", f"{remote.HOME}/state/watchdog.json", f"{STATE}/alerts.json"])
    for secret in [*remote.SECRETS.values(), "hook-7d8e9f"]:
        assert secret not in written
