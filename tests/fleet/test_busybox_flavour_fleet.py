"""A host whose cron is busybox's crond: the probe says so, and verify, status and explain
read the schedules by busybox's rules (issue 14: the flavour comes from the probe).

The test host's Debian cron is stopped and the real busybox crond (busybox-static, copied
in) started in its place. The schedules are ones where busybox and Debian disagree on the
day rule: busybox's ``*/k`` day-of-month counts from 0 and is ORed with a restricted
day-of-week; Debian's counts from 1 and, starting with ``*``, is ANDed. Which schedule
disagrees depends on the date, so the test picks one for the real clock of the run.

- ``busybox-day`` (``* * DOM * DOW``): busybox runs it every minute today, Debian would
  not run it today. The real busybox crond is seen running it: busybox's rules, as the
  engine reads them, are the ones of the daemon on the host.
- ``missed`` (``M H DOM * DOW``, a minute busybox's rules had it due after the deploy, which
  is dated back to just before that minute, and Debian's did not): nothing ran then
  (busybox crond was not started yet), so verify reports the miss with busybox's rules, and
  says "not due" once the inventory says the host runs Debian's cron.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deployer.config.schedule import ScheduleError, normalize
from deployer.remote import cronengine
from tests.fleet.conftest import make_project

pytestmark = pytest.mark.fleet

HOME = "/var/lib/deployer/demo-dev"
BUSYBOX = "/bin/busybox"  # busybox-static: one static binary, runs in any rootfs

DOMS = [f"*/{k}" for k in range(2, 32)] + [str(d) for d in range(1, 32)]
DOWS = [f"*/{k}" for k in range(2, 7)] + [str(w) for w in range(7)]


def disagreeing(busybox_days: list[date], debian_days: list[date]) -> tuple[str, str] | None:
    """(day-of-month, day-of-week) fields, valid for both crons, that busybox's crond matches
    on each of ``busybox_days`` and Debian's cron on none of ``debian_days``."""
    for dom in DOMS:
        for dow in DOWS:
            schedule = f"0 0 {dom} * {dow}"
            try:
                normalize(schedule, "debian"), normalize(schedule, "busybox")
            except ScheduleError:
                continue
            busybox, debian = cronengine.parse(schedule, "busybox"), cronengine.parse(schedule, "debian")
            if (all(busybox.day_matches(d.day, d.month, d.isoweekday() % 7) for d in busybox_days)
                    and not any(debian.day_matches(d.day, d.month, d.isoweekday() % 7) for d in debian_days)):
                return dom, dow
    return None


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def next_fire(entry: cronengine.Entry, now: datetime) -> str:
    fire = cronengine.next_fire(entry, now, "UTC")
    assert fire is not None
    return fire.isoformat()


def checks_of(report: dict[str, Any], name: str) -> dict[str | None, dict[str, Any]]:
    return {c["job"]: c for c in report["hosts"]["h1"]["checks"] if c["name"] == name}


def test_busybox_host_is_probed_and_read_by_busybox_rules(fleet_factory: Any, tmp_path: Path) -> None:
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is not installed (./install.sh --test installs it)")
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # today's fields, good for the minutes the test may run across (midnight included)
    soon = days(now.date(), (now + timedelta(minutes=3)).date())
    today = disagreeing(soon, soon)
    assert today is not None, f"no day fields busybox and Debian disagree on for {soon}"
    # the missed minute: the latest one at least 10 minutes ago on a day busybox's rules run
    # it and Debian's do not, nor on any day after it until now
    missed_at, past = next((t, f) for n in range(8) if (f := disagreeing(
        [(t := now - timedelta(minutes=10, days=n)).date()], days(t.date(), now.date()))))
    everyday = f"* * {today[0]} * {today[1]}"
    missed = f"{missed_at.minute} {missed_at.hour} {past[0]} * {past[1]}"

    th = fleet_factory(["h1"])
    p = make_project(th, tmp_path)
    p.declare(jobs=(f"  busybox-day:\n    script: tasks/hello.py\n    schedule: '{everyday}'\n"
                    f"  missed:\n    script: tasks/hello.py\n    schedule: '{missed}'\n"))
    p.inventory({"h1": p.host_vars("h1")})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    assert "busybox-day" in p.crontab("h1") and "missed" in p.crontab("h1")
    result, report = p.deployer_json("verify", "dev")  # Debian's cron runs: the probe says so
    assert checks_of(report, "cron-daemon")[None]["detail"] == (
        "cron is running; fire times by the rules of Debian/Ubuntu cron (Vixie cron 3.0pl1), probed"), report

    # Debian's cron stops (its pid file says which process it is); busybox's crond starts and
    # reads the crontabs Debian's crontab command wrote (busybox reads them at startup).
    th.exec_on("h1", ["sh", "-c", "pid=$(cat /run/crond.pid) && kill $pid && rm -f /run/crond.pid && "
                                  "for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"],
               check=True)
    th.exec_on("h1", ["sh", "-c", f"cat > {BUSYBOX}.new && chmod 755 {BUSYBOX}.new && mv {BUSYBOX}.new {BUSYBOX}"],
               input=Path(BUSYBOX).read_bytes(), text=False, check=True)
    th.exec_on("h1", ["sh", "-c", f"setsid {BUSYBOX} crond -f -c /var/spool/cron/crontabs -L /var/log/busybox-crond.log "
                                  "</dev/null >/dev/null 2>&1 &"], check=True)
    # The release went live before the missed minute (the apply was seconds ago: dated back).
    deployed = missed_at - timedelta(minutes=5)
    th.exec_on("h1", ["touch", "-h", "-d", f"@{int(deployed.timestamp())}", f"{HOME}/current"], check=True)

    # The real busybox crond runs busybox-day at the next minute (Debian's cron would not today).
    deadline = time.time() + 100
    while True:
        result, status = p.deployer_json("status", "dev")
        assert result.exit_code == 0, result
        rows = {r["job"]: r for r in status["jobs"]}
        if rows["busybox-day"]["last_run"] or time.time() > deadline:
            break
        time.sleep(3)
    assert rows["busybox-day"]["last_run"], f"busybox crond did not run '{everyday}': " + \
        th.exec_on("h1", ["cat", "/var/log/busybox-crond.log"]).stdout
    assert rows["busybox-day"]["last_run"]["outcome"] == "success", rows
    ledger = th.exec_on("h1", ["cat", f"{HOME}/state/busybox-day/ledger.jsonl"], check=True).stdout
    assert '"trigger": "cron"' in ledger or '"trigger":"cron"' in ledger, ledger

    # status: busybox's next runs (busybox-day within the minute; missed at its next busybox day)
    assert {r["cron_flavour"] for r in rows.values()} == {"busybox"}, rows
    seen = datetime.now(UTC)
    assert datetime.fromisoformat(rows["busybox-day"]["next_run"]) - seen < timedelta(seconds=70), rows
    after = cronengine.parse(missed, "busybox")
    assert rows["missed"]["next_run"] == next_fire(after, seen), rows
    assert rows["missed"]["next_run"] != next_fire(cronengine.parse(missed, "debian"), seen), rows

    # verify: the probe found busybox crond; missed is late by busybox's rules.
    result, report = p.deployer_json("verify", "dev")
    assert result.exit_code == 1, result
    daemon = checks_of(report, "cron-daemon")[None]
    assert (daemon["status"], daemon["detail"]) == ("pass", "busybox is running; fire times by the rules of busybox "
                                                            "crond, probed"), report
    fresh = checks_of(report, "freshness")
    assert fresh["busybox-day"]["status"] == "pass" and fresh["busybox-day"]["detail"].startswith("last run started"), fresh
    due = cronengine.previous_fire(after, datetime.now(UTC) - timedelta(minutes=2), "UTC")
    assert due is not None and due >= missed_at, due
    assert fresh["missed"]["status"] == "fail", fresh
    assert fresh["missed"]["detail"].startswith(f"should have run at {due:%Y-%m-%d %H:%M} UTC since the deploy "), fresh
    assert fresh["missed"]["detail"].endswith(" but has no run"), fresh

    # explain without --tz probes the host: busybox's rules; with --tz no host is contacted: the default
    result, explained = p.deployer_json("explain", "dev", "missed", "--count", "1")
    assert result.exit_code == 0, result
    host = explained["hosts"][0]
    assert (host["flavour"], host["flavour_from"]) == ("busybox", "probe"), host
    assert host["timezone"] in ("UTC", "Etc/UTC"), host  # the times above were computed in UTC
    assert host["jobs"][0]["fires"] == [next_fire(after, datetime.now(UTC))], host
    result, offline = p.deployer_json("explain", "dev", "missed", "--count", "1", "--tz", "UTC")
    assert (offline["hosts"][0]["flavour"], offline["hosts"][0]["flavour_from"]) == ("debian", "default"), offline

    # The operator's word wins: the inventory says Debian's cron, so missed was not due, and
    # verify warns that the running daemon is another cron.
    p.inventory({"h1": p.host_vars("h1", deployer_cron_flavour="debian")})
    result, report = p.deployer_json("verify", "dev")
    assert result.exit_code == 0, result
    daemon = checks_of(report, "cron-daemon")[None]
    assert daemon["status"] == "warn", daemon
    assert daemon["detail"] == ("busybox is running (busybox crond), but fire times follow the rules of Debian/Ubuntu cron "
                                "(Vixie cron 3.0pl1), as deployer_cron_flavour in the inventory says: fix or remove that "
                                "variable"), daemon
    fresh = checks_of(report, "freshness")
    assert fresh["missed"]["status"] == "pass" and fresh["missed"]["detail"].startswith("not due since the deploy"), fresh
    result, explained = p.deployer_json("explain", "dev", "missed", "--count", "1", "--tz", "UTC")
    assert (explained["hosts"][0]["flavour"], explained["hosts"][0]["flavour_from"]) == ("debian", "inventory")

    # validate refuses for that host what busybox's crontab cannot parse once the inventory says busybox
    p.inventory({"h1": p.host_vars("h1", deployer_cron_flavour="busybox")})
    p.declare(jobs="  sunday:\n    script: tasks/hello.py\n    schedule: '0 4 * * 7'\n")
    result = p.deployer("validate")
    assert result.exit_code == 2, result
    assert "jobs.sunday.schedule: busybox crond's crontab refuses '0 4 * * 7': parse error at 7 (host h1: " \
           "deployer_cron_flavour is busybox in inventory inventories/dev)" in result.stderr, result
