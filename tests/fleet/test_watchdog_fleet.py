"""The lateness watchdog on real SSH hosts.

Root deploys a minutely job that tells ``late`` to two hosts; h2's cron daemon is stopped over
its first fire, so its job does not start while h1's cron runs it: once h2's daemon is back, the
watchdog's line, run on each host as cron runs it, tells h2's job late once, from h2, and
h1's nothing; at the job's next fire h2's cron starts it, and that run tells the recovery. The relay and the HTTP server
listen in the fleet's ``ctl`` namespace and record the address each connection came from
(see test_alerts_fleet.py), so the messages are proven to come from h2 itself.

Not waited for: the real cron daemon starting the watchdog's own line. It is ``*/5``: the test
would wait up to five more minutes on every run of the tier. Its command is run here byte for
byte, with cron's environment; that the daemon starts the lines of our block is the cron
tiers' (tests/cron, tests/e2e); how cron reads ``*/5`` is the cron engine's, checked against
the real cron's own code (tests/oracle).

A non-root deploy: the deploying user's own crontab holds the line, the records are under its
home, and another unprivileged user of the host cannot make its watchdog believe them forged.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from tests.alerts import remote, watchdog_remote
from tests.alerts.servers import in_netns, smtp_relay, web_server
from tests.alerts.watchdog_remote import JOB, as_cron, watchdog_command
from tests.fleet.conftest import make_project
from tests.harness import TestHosts

pytestmark = [pytest.mark.alerts, pytest.mark.fleet]

GRACE = 30  # seconds: h1's cron starts the job within a second of its fire, a minutely fire is judged 30 s after it
ROOT_STATE = f"{remote.HOME}/state/{JOB}"


def on(th: TestHosts, host: str, argv: list[str], *, user: str = "root", check: bool = True) -> Any:
    """``argv`` run on ``host`` as ``user`` over real SSH."""
    done = th.ssh(host, shlex.join(argv), user=user)
    if check:
        assert done.returncode == 0, f"{argv} on {host} as {user}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def run_watchdog(th: TestHosts, host: str, user: str = "root", home: str = "/root") -> Any:
    """The watchdog's line of ``user``'s crontab on ``host``, run as cron runs it, over SSH."""
    command = watchdog_command(on(th, host, ["crontab", "-l"], user=user).stdout)
    return on(th, host, as_cron(command, user, home), user=user, check=False)


def stop_cron(th: TestHosts, host: str) -> None:
    """The host's real cron daemon stops (its own pid file says which process it is)."""
    th.exec_on(host, ["sh", "-c", "pid=$(cat /run/crond.pid) && kill $pid && rm -f /run/crond.pid && "
                                  "for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"],
               check=True)


def start_cron(th: TestHosts, host: str) -> None:
    th.exec_on(host, ["sh", "-c", "setsid cron -f -L 15 </dev/null >/dev/null 2>&1 &"], check=True)
    th.exec_on(host, ["sh", "-c", "for i in $(seq 100); do [ -s /run/crond.pid ] && exit 0; sleep 0.1; done; exit 1"], check=True)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def ledger(th: TestHosts, host: str, state: str, user: str = "root") -> list[dict[str, Any]]:
    text = on(th, host, ["sh", "-c", f"cat {state}/ledger.jsonl 2>/dev/null || true"], user=user).stdout
    return [json.loads(line) for line in text.splitlines()]


def test_a_host_whose_cron_stopped_tells_its_job_late_once_then_its_recovery(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(["h1", "h2"], users=["app"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1"), "h2": p.host_vars("h2")})
    with contextlib.ExitStack() as servers:
        relay = in_netns(th.ctl_netns_path, lambda: servers.enter_context(smtp_relay(tmp_path, address=th.gateway)))
        web = in_netns(th.ctl_netns_path, lambda: servers.enter_context(web_server(address=th.gateway)))
        for host in ("h1", "h2"):
            remote.prepare_target(functools.partial(on_target, th, host), relay.ca_file.read_text())
        p.write("deployer.yml", watchdog_remote.declaration("app", th.gateway, relay.port, web.url + "/hook", "* * * * *",
                                                            f"{GRACE}s"))
        p.extra_env.update(remote.SECRETS)
        stop_cron(th, "h2")  # before the deploy: no fire of the job can slip in before it stops
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied
        assert "no cron daemon is running on this target" in applied.stdout, applied
        # The first fire h1's cron starts: a minute boundary a few seconds after the deploy (a
        # daemon reads a changed crontab when it wakes for the minute: one installed in that
        # same second could be read only a minute later).
        due = math.ceil((time.time() + 3) / 60) * 60

        # The fire's grace has passed: h1's cron started the job at it, h2's did not.
        sleep_until(due + GRACE + 5)
        runs_h1 = ledger(th, "h1", ROOT_STATE)
        assert any(r["trigger"] == "cron" and r["start"] >= watchdog_remote.iso(due) for r in runs_h1), runs_h1
        assert ledger(th, "h2", ROOT_STATE) == []
        # h2's daemon is back before the job's next fire: the watchdog runs only where cron
        # runs, and its round after the outage finds the fire that was missed.
        start_cron(th, "h2")
        for _ in range(2):  # two rounds: the second finds the incident told
            for host in ("h1", "h2"):
                done = run_watchdog(th, host)
                assert (done.returncode, done.stderr) == (0, ""), (host, done)
        assert time.time() < due + 60, "the rounds ended after the job's next fire: the machine is too slow for this test"
        watchdog_remote.check_late(relay, web, "h2", due, client=th.host("h2").ip)

        seen_h1 = watchdog_remote.record(on(th, "h1", ["cat", f"{remote.HOME}/state/watchdog.json"]).stdout)
        # Its last run started after the fire; the next may be going on if the machine is slow.
        assert (seen_h1["late"], seen_h1["errors"]) == (False, []), seen_h1
        assert seen_h1["why"] in ("a run started since the fire was due", "a run is going on"), seen_h1
        assert "sent" not in seen_h1
        seen_h2 = watchdog_remote.record(on(th, "h2", ["cat", f"{remote.HOME}/state/watchdog.json"]).stdout)
        assert (seen_h2["late"], seen_h2["grace"], seen_h2["errors"]) == (True, GRACE, [])
        assert sorted((d["channel"], d["ok"]) for d in seen_h2["sent"]["deliveries"]) == [("oncall", True), ("team", True)]
        state = json.loads(on(th, "h2", ["cat", f"{ROOT_STATE}/alerts.json"]).stdout)
        assert (state["incident"]["event"], state["incident"]["told"]) == ("late", True), state

        # At the job's next fire h2's daemon starts it, and that run tells the recovery.
        deadline = due + 60 + 60
        while len(relay.messages) < 2 and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)  # the webhook goes at the same time as the mail: let it land
        watchdog_remote.check_recovered(relay, web, "h2", client=th.host("h2").ip)
        runs_h2 = ledger(th, "h2", ROOT_STATE)
        assert runs_h2 and runs_h2[0]["trigger"] == "cron" and runs_h2[0]["outcome"] == "success", runs_h2

        again = run_watchdog(th, "h2")  # a run started since the fire: not late, nothing sent
        assert (again.returncode, again.stderr) == (0, ""), again
        assert watchdog_remote.events(relay, web) == (["late", "recovered"], ["late", "recovered"])
    state = json.loads(on(th, "h2", ["cat", f"{ROOT_STATE}/alerts.json"]).stdout)
    assert state["incident"] is None, state
    assert on(th, "h2", ["stat", "-c", "%U %a", f"{ROOT_STATE}/alerts.json"]).stdout.split() == ["root", "600"]
    kept_h1 = json.loads(on(th, "h1", ["cat", f"{ROOT_STATE}/alerts.json"]).stdout)  # its runs' state: nothing told
    assert (kept_h1["incident"], kept_h1["last_alert"]) == (None, None), kept_h1


def test_a_non_root_deploy_tells_late_from_its_own_crontab_and_believes_no_other_user(fleet_factory: Any,
                                                                                     tmp_path: Path) -> None:
    th = fleet_factory(["h1"], users=["app", "mallory"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1", user="app")})  # app logs in and deploys as itself: no sudo
    home = "/home/app/.local/share/deployer/demo-dev"
    state = f"{home}/state/{JOB}"
    with contextlib.ExitStack() as servers:
        relay = in_netns(th.ctl_netns_path, lambda: servers.enter_context(smtp_relay(tmp_path, address=th.gateway)))
        web = in_netns(th.ctl_netns_path, lambda: servers.enter_context(web_server(address=th.gateway)))
        remote.prepare_target(functools.partial(on_target, th, "h1"), relay.ca_file.read_text())
        schedule = f"{watchdog_remote.a_minute_half_an_hour_away()} * * * *"
        p.write("deployer.yml", watchdog_remote.declaration("app", th.gateway, relay.port, web.url + "/hook", schedule, "1m"))
        p.extra_env.update(remote.SECRETS)
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied
        release = on(th, "h1", ["readlink", "-f", f"{home}/current"], user="app").stdout.strip()
        assert watchdog_command(on(th, "h1", ["crontab", "-l"], user="app").stdout) == f"python3 -I {release}/watchdog"
        assert on(th, "h1", ["crontab", "-l"], check=False).returncode == 1  # root has no crontab: nothing of ours
        # The release became current "an hour ago": the watchdog judges only fires after that,
        # and the schedule's next fire, half an hour away, is not the host's cron's to start
        # meanwhile. Dating the link back (its owner may) is the one thing not done for real.
        on(th, "h1", ["touch", "-h", "-d", f"@{int(time.time()) - 3600}", f"{home}/current"], user="app")

        # Another user of the host cannot write app's records, nor read its channels' secrets.
        tried = on(th, "h1", ["sh", "-c", f"echo forged >> {state}/ledger.jsonl"], user="mallory", check=False)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried
        tried = on(th, "h1", ["cat", f"{release}/alerts/{JOB}.json"], user="mallory", check=False)
        assert tried.returncode != 0 and "Permission denied" in tried.stderr, tried
        # Once app opens its state folder to everyone by mistake, mallory plants, as herself, a
        # ledger saying the job ran and an alert state saying its incident was told already.
        on(th, "h1", ["chmod", "0777", state], user="app")
        told = {"version": 1, "incident": {"opened": 1.0, "event": "late", "told": True}, "last_told": time.time(),
                "untold": 0, "consecutive_failures": 0, "last_run": time.time(), "last_success": None,
                "last_exit_code": None, "last_duration": None}
        forged = ('{"start": "2099-01-01T00:00:00.000Z", "outcome": "success"}\n', json.dumps(told))
        for name, text in zip(("ledger.jsonl", "alerts.json"), forged, strict=True):
            planted = th.ssh("h1", f"cat > {state}/{name}", user="mallory", input=text)
            assert planted.returncode == 0, planted
        mallory = on(th, "h1", ["id", "-u"], user="mallory").stdout.strip()

        fooled = run_watchdog(th, "h1", "app", "/home/app")
        assert fooled.returncode == 1, fooled
        problems = fooled.stderr.splitlines()
        assert all(line.startswith(f"deployer watchdog: {JOB}: ") for line in problems), problems
        for name in ("ledger.jsonl", "alerts.json"):
            assert any(f"{state}/{name}" in line and f"uid {mallory}" in line for line in problems), problems
        assert "Traceback" not in fooled.stderr
        watchdog_remote.check_late(relay, web, "h1", None, client=th.host("h1").ip)  # none of it believed
        again = run_watchdog(th, "h1", "app", "/home/app")  # the incident is told: nothing more
        assert again.returncode == 1 and watchdog_remote.events(relay, web) == (["late"], ["late"]), again
        kept = on(th, "h1", ["stat", "-c", "%U %a", f"{state}/alerts.json", f"{home}/state/watchdog.json"]).stdout.split()
        assert kept == ["app", "600", "app", "640"], kept  # app's own again, written by its watchdog
        seen = watchdog_remote.record(on(th, "h1", ["cat", f"{home}/state/watchdog.json"]).stdout)
        assert seen["late"] is True and sorted(d["channel"] for d in seen["sent"]["deliveries"]) == ["oncall", "team"]

        # app puts its folder right, and a run tells the recovery; the next round tells nothing.
        on(th, "h1", ["sh", "-c", f"rm -f {state}/ledger.jsonl && chmod 0750 {state}"], user="app")
        ran = p.deployer("run", "dev", JOB)
        assert ran.exit_code == 0, ran
        watchdog_remote.check_recovered(relay, web, "h1", client=th.host("h1").ip)
        quiet = run_watchdog(th, "h1", "app", "/home/app")
        assert (quiet.returncode, quiet.stderr) == (0, ""), quiet
        assert watchdog_remote.events(relay, web) == (["late", "recovered"], ["late", "recovered"])
    written = on(th, "h1", ["cat", f"{home}/state/watchdog.json", f"{state}/alerts.json"]).stdout
    assert json.loads(on(th, "h1", ["cat", f"{state}/alerts.json"]).stdout)["incident"] is None
    for secret in [*remote.SECRETS.values(), "hook-7d8e9f"]:
        assert secret not in written


def on_target(th: TestHosts, host: str, argv: list[str], text: str | None = None) -> str:
    """``argv`` run as root on ``host`` (entering its namespaces); its stdout."""
    done = th.exec_on(host, argv, input=text)
    assert done.returncode == 0, f"{argv} on {host}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)
