"""apply gets-or-creates each job's healthchecks check (one per job and host), against a fake
of healthchecks' Management API and ping endpoints on the loopback (tests/alerts/fake_healthchecks.py
says why a fake and what of healthchecks it follows); root deploys locally, the wrapper's
pings land on the check's slug URL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deployer.config.project import Job, JobAlerts
from deployer.core.alerting import grace_seconds
from deployer.remote.alerts import run_uuid
from deployer.remote.hostzone import target_timezone
from tests.alerts.fake_healthchecks import API_KEY, PING_KEY, fake_healthchecks
from tests.alerts.servers import free_port
from tests.conftest import BLOCK_USER, TEST_USER, CliResult, Project, read_crontab

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

HOME = Path("/var/lib/deployer/demo-dev")
SECRETS = {"HC_API_KEY": API_KEY, "HC_PING_KEY": PING_KEY}
TASK = "import sys\nprint('backing up')\nsys.exit(int(open(sys.argv[1]).read()))\n"
SLUGS = ["demo-dev-backup-localhost", "demo-dev-report-localhost"]


def declaration(api: str, exit_file: Path, backup_schedule: str) -> str:
    return f"""\
project: demo
defaults:
  run_as: {TEST_USER}
  timeout: 1m
alerts:
  healthchecks:
    api: {api}
    api_key: {{secret: {{env: HC_API_KEY}}}}
    ping_url: {api}/ping
    ping_key: {{secret: {{env: HC_PING_KEY}}}}
jobs:
  backup:
    description: Nightly backup
    script: tasks/backup.py
    args: ["{exit_file}"]
    schedule: "{backup_schedule}"
  report:
    script: tasks/backup.py
    args: ["{exit_file}"]
    schedule: "@hourly"
    timeout: 2h
  boot:
    script: tasks/backup.py
    args: ["{exit_file}"]
    schedule: "@reboot"
environments:
  dev:
    inventory: inventories/dev
"""


def declare(project: Project, exit_file: Path, api: str, backup_schedule: str = "0 3 * * *") -> None:
    project.write("tasks/backup.py", TASK)
    project.declare(declaration(api, exit_file, backup_schedule))


def apply(project: Project, env: dict[str, str] | None = None) -> tuple[CliResult, dict[str, Any]]:
    result = project.deployer("apply", "dev", "--yes", "--json", env=env or SECRETS)
    try:
        return result, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not JSON:\n{result}") from None


def root_crontab() -> str:
    return read_crontab(BLOCK_USER) or ""


def actions(data: dict[str, Any]) -> dict[str, str]:
    return {c["slug"]: c["action"] for c in data["healthchecks"]["checks"]}


def no_key_shown(*results: CliResult) -> None:
    for result in results:
        for secret in (API_KEY, PING_KEY):
            assert secret not in result.stdout + result.stderr, result


def expected_grace(schedule: str, timeout: int) -> int:
    return grace_seconds(Job(id="x", schedule=schedule, timeout=timeout, alerts=JobAlerts()), datetime.now(UTC))


def test_apply_creates_one_check_per_job_and_host_then_changes_nothing(project: Project, user_crontab: str,
                                                                       exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        planned = project.deployer("plan", "dev", "--detailed-exitcode", env=SECRETS)
        assert planned.exit_code == 3, planned
        assert "would create  demo-dev-backup-localhost" in planned.stdout, planned
        assert hc.checks == [] and [m for m, _ in hc.calls] == ["GET"]  # plan reads, never creates

        result, data = apply(project)
        assert result.exit_code == 0, result
        assert actions(data) == dict.fromkeys(SLUGS, "created")
        assert data["healthchecks"]["ok"] is True and data["exit_code"] == 0
        assert sorted(c["slug"] for c in hc.checks) == SLUGS  # none for @reboot, which has no time to miss
        tz = target_timezone()
        backup, report = hc.check(SLUGS[0]), hc.check(SLUGS[1])
        assert (backup["kind"], backup["schedule"], backup["tz"], backup["grace"]) == ("cron", "0 3 * * *", tz,
                                                                                        expected_grace("0 3 * * *", 60))
        assert backup["grace"] == 180  # a minute's timeout plus the two minutes cron may start late
        assert (report["schedule"], report["tz"], report["grace"]) == ("0 * * * *", tz, 3600 + 120)
        assert backup["tags"] == "deployer demo dev" and backup["name"] == "demo/dev backup on localhost"
        assert backup["desc"].startswith("Nightly backup\n") and backup["channels"] == "every-integration"
        assert [m for m, _ in hc.calls] == ["GET", "GET", "POST", "POST"], hc.calls
        # The release's ping URL is the slug URL with the ping key, written without asking the API.
        config = json.loads((HOME / "current" / "alerts" / "backup.json").read_text())
        assert config["ping"] == f"{hc.url}/ping/{PING_KEY}/{SLUGS[0]}"

        listed = project.deployer("alerts", "dev")
        assert f"healthchecks: {hc.url} (apply keeps one check per job and host)" in listed.stdout, listed
        assert [line.endswith("healthchecks ping") for line in listed.stdout.splitlines() if line.startswith("   ")] == [
            True, True, False]  # backup, report; boot (@reboot) has none

        again, data = apply(project)
        assert again.exit_code == 0, again
        assert actions(data) == dict.fromkeys(SLUGS, "unchanged")
        assert [m for m, _ in hc.calls[4:]] == ["GET"]  # get-or-create: a check that matches gets no call
        text = project.deployer("apply", "dev", "--yes", env=SECRETS)
        assert text.exit_code == 0 and "2 unchanged" in text.stdout, text
        assert len(hc.checks) == 2
        no_key_shown(planned, result, again, text)

        # The wrapper's pings land on the check's slug URL, start and end with the run's id.
        exit_file.write_text("4")
        run = project.deployer("run", "dev", "backup", env=SECRETS)
        assert run.exit_code == 4, run
        pings = [(p.slug, p.kind, p.exit_status) for p in hc.pings]
        assert pings == [(SLUGS[0], "start", None), (SLUGS[0], "fail", 4)]
        ledger = [json.loads(line) for line in (HOME / "state" / "backup" / "ledger.jsonl").read_text().splitlines()]
        assert hc.pings[0].rid == hc.pings[1].rid == run_uuid(ledger[-1]["run_id"])
        assert b"backing up" in hc.pings[1].body
        assert PING_KEY not in json.dumps(ledger)


def test_a_changed_schedule_updates_the_same_check(project: Project, user_crontab: str, exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        assert apply(project)[0].exit_code == 0
        uuid_before = hc.check(SLUGS[0])["uuid"]
        declare(project, exit_file, hc.url, backup_schedule="30 4 * * 1-5")
        planned = project.deployer("plan", "dev", env=SECRETS)
        assert "would update  demo-dev-backup-localhost" in planned.stdout and "changed: schedule" in planned.stdout, planned
        result, data = apply(project)
        assert result.exit_code == 0, result
        assert actions(data) == {SLUGS[0]: "updated", SLUGS[1]: "unchanged"}
        assert next(c for c in data["healthchecks"]["checks"] if c["slug"] == SLUGS[0])["changed"] == ["schedule"]
        assert len(hc.checks) == 2 and hc.check(SLUGS[0])["uuid"] == uuid_before
        assert hc.check(SLUGS[0])["schedule"] == "30 4 * * 1-5"
        assert hc.check(SLUGS[0])["channels"] == "every-integration"  # an update leaves integrations alone

        # A job no longer declared: its check would go down and tell; apply pauses it (a ping resumes it).
        project.declare(declaration(hc.url, exit_file, "30 4 * * 1-5").replace("  report:\n", "  report:\n    enabled: false\n"))
        limited = project.deployer("apply", "dev", "--yes", "--json", "--limit", "localhost", env=SECRETS)
        assert "paused" not in limited.stdout and hc.check(SLUGS[1])["status"] == "new", limited  # --limit: not all known
        result, data = apply(project)
        assert result.exit_code == 0, result
        assert actions(data) == {SLUGS[0]: "unchanged", SLUGS[1]: "paused"}
        assert hc.check(SLUGS[1])["status"] == "paused" and len(hc.checks) == 2


def test_a_wrong_api_key_is_a_persons_error_and_the_hosts_stay_applied(project: Project, user_crontab: str,
                                                                       exit_file: Path) -> None:
    wrong = "hcw_" + "w" * 28
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        result = project.deployer("apply", "dev", "--yes", env={**SECRETS, "HC_API_KEY": wrong})
        assert result.exit_code == 1, result
        assert "Traceback" not in result.stderr
        assert (f"error: healthchecks: the healthchecks API at {hc.url} refused the API key (401 (wrong api key))"
                in result.stderr), result
        assert "set alerts.healthchecks.api_key to the project's read-write API key" in result.stderr
        assert wrong not in result.stdout + result.stderr
        no_key_shown(result)
        assert hc.checks == []
        # The hosts were applied all the same: the next plan has nothing for them, only the checks to create.
        planned = project.deployer("plan", "dev", "--json", env=SECRETS)
        data = json.loads(planned.stdout)
        assert all(h["status"] == "ok" for h in data["hosts"].values()), planned
        assert actions(data) == dict.fromkeys(SLUGS, "create")


def test_an_unreachable_api_fails_the_apply_then_the_next_apply_converges(project: Project, user_crontab: str,
                                                                           exit_file: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    declare(project, exit_file, closed)
    result, data = apply(project)
    assert result.exit_code == 1, result
    assert data["exit_code"] == 1 and data["healthchecks"]["ok"] is False
    assert data["healthchecks"]["error"].startswith(f"cannot reach the healthchecks API at {closed} (")
    assert set(actions(data).values()) == {"skipped"}
    assert all(h["status"] == "changed" for h in data["hosts"].values())
    assert (HOME / "current" / "alerts" / "backup.json").exists()
    no_key_shown(result)
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)  # the API answers now (at another port: the ping URLs move with it)
        again, data = apply(project)
        assert again.exit_code == 0, again
        assert actions(data) == dict.fromkeys(SLUGS, "created")
        assert project.deployer("plan", "dev", "--detailed-exitcode", env=SECRETS).exit_code == 0


def test_a_missing_api_key_touches_nothing(project: Project, user_crontab: str, exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        result = project.deployer("apply", "dev", "--yes", env={"HC_PING_KEY": PING_KEY})
        assert result.exit_code == 2, result
        assert ("alerts.healthchecks.api_key: the healthchecks API key: environment variable HC_API_KEY is not set "
                "on this machine; export it before running deployer") in result.stderr, result
        assert not (HOME / "current").exists() and hc.calls == []



def destroy(project: Project, *args: str, env: dict[str, str] | None = None) -> tuple[CliResult, dict[str, Any]]:
    result = project.deployer("destroy", "dev", "--json", *args, env=env or SECRETS)
    try:
        return result, json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not JSON:\n{result}") from None


def test_destroy_pauses_the_checks_and_a_refused_destroy_touches_none(project: Project, user_crontab: str,
                                                                      exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        assert apply(project)[0].exit_code == 0
        calls = len(hc.calls)
        refused = project.deployer("destroy", "dev", env=SECRETS)  # no terminal, no --yes: nothing is destroyed
        assert refused.exit_code == 2, refused
        assert len(hc.calls) == calls and all(c["status"] == "new" for c in hc.checks)

        result, data = destroy(project, "--yes")
        assert result.exit_code == 0, result
        assert actions(data) == dict.fromkeys(SLUGS, "paused") and data["exit_code"] == 0
        assert [c["status"] for c in hc.checks] == ["paused", "paused"] and len(hc.checks) == 2
        assert [m for m, _ in hc.calls[calls:]] == ["GET", "POST", "POST"]
        assert all(path.endswith("/pause") for _, path in hc.calls[calls + 1:])
        assert "demo-dev" not in root_crontab(), root_crontab()
        no_key_shown(refused, result)

        # Destroyed already: the checks are paused once; a second destroy only lists them.
        again, data = destroy(project, "--yes")
        assert again.exit_code == 0, again
        assert actions(data) == dict.fromkeys(SLUGS, "unchanged") and [m for m, _ in hc.calls[calls + 3:]] == ["GET"]


def test_destroy_delete_checks_deletes_them(project: Project, user_crontab: str, exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        assert apply(project)[0].exit_code == 0
        hc.checks.append({**hc.checks[0], "uuid": "00000000-0000-0000-0000-000000000001", "slug": "theirs", "tags": "ops"})
        text = project.deployer("destroy", "dev", "--yes", "--delete-checks", env=SECRETS)
        assert text.exit_code == 0, text
        assert "healthchecks checks at" in text.stdout and "2 deleted" in text.stdout, text
        assert "deleted       demo-dev-backup-localhost (destroyed)" in text.stdout, text
        assert [c["slug"] for c in hc.checks] == ["theirs"]  # a check of the project that is not ours stays
        assert [m for m, _ in hc.calls].count("DELETE") == 2


def test_destroy_with_a_dead_api_destroys_the_hosts_and_exits_1(project: Project, user_crontab: str,
                                                                 exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        declare(project, exit_file, hc.url)
        assert apply(project)[0].exit_code == 0
    # The API is gone (its port closed): the jobs are taken away all the same.
    result = project.deployer("destroy", "dev", "--yes", env=SECRETS)
    assert result.exit_code == 1, result
    assert "Traceback" not in result.stderr
    assert f"error: healthchecks: cannot reach the healthchecks API at {hc.url} (" in result.stderr, result
    assert "pause or delete their checks in healthchecks" in result.stderr, result
    assert "demo-dev" not in root_crontab() and not (HOME / "current").exists()
    no_key_shown(result)


EXTRA_JOB = """\
  extra:
    script: tasks/backup.py
    args: ["{exit_file}"]
    schedule: "*/10 * * * *"
"""


def test_rollback_gives_the_checks_the_schedule_and_grace_of_the_release_it_goes_back_to(
        project: Project, user_crontab: str, exit_file: Path) -> None:
    with fake_healthchecks() as hc:
        # Release A: backup at 3:00 with a declared grace of 15 minutes.
        project.write("tasks/backup.py", TASK)
        text_a = declaration(hc.url, exit_file, "0 3 * * *").replace(
            '    schedule: "0 3 * * *"\n', '    schedule: "0 3 * * *"\n    alerts: {grace: 15m}\n')
        project.declare(text_a)
        assert apply(project)[0].exit_code == 0
        assert (hc.check(SLUGS[0])["schedule"], hc.check(SLUGS[0])["grace"]) == ("0 3 * * *", 900)
        # Release B: another schedule, the derived grace, one more job.
        text_b = declaration(hc.url, exit_file, "30 4 * * 1-5").replace("  boot:\n", EXTRA_JOB.format(exit_file=exit_file) + "  boot:\n")
        project.declare(text_b)
        result, data = apply(project)
        assert result.exit_code == 0, result
        assert actions(data)["demo-dev-extra-localhost"] == "created"
        assert (hc.check(SLUGS[0])["schedule"], hc.check(SLUGS[0])["grace"]) == ("30 4 * * 1-5", 180)
        uuid_before = hc.check(SLUGS[0])["uuid"]

        # The declaration stays B's: rollback takes the checks from release A's own files on the host.
        rolled = project.deployer("rollback", "dev", "--yes", "--json", env=SECRETS)
        assert rolled.exit_code == 0, rolled
        data = json.loads(rolled.stdout)
        assert actions(data) == {SLUGS[0]: "updated", SLUGS[1]: "unchanged", "demo-dev-extra-localhost": "paused"}, data
        backup = hc.check(SLUGS[0])
        assert (backup["schedule"], backup["grace"], backup["tz"], backup["uuid"]) == ("0 3 * * *", 900, target_timezone(),
                                                                                        uuid_before)
        assert hc.check("demo-dev-extra-localhost")["status"] == "paused"
        no_key_shown(rolled)

        # apply moves the checks forward again with the hosts.
        result, data = apply(project)
        assert result.exit_code == 0, result
        assert actions(data)[SLUGS[0]] == "updated" and hc.check(SLUGS[0])["schedule"] == "30 4 * * 1-5"
