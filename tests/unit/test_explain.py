"""deployer explain: next fire times as the host's cron runs them, with --tz (no host contacted)."""

from __future__ import annotations

import json

from tests.conftest import Project

DECLARATION = """\
project: demo
jobs:
  nightly: {command: /bin/true, schedule: "30 2 * * *"}
  quarter: {command: /bin/true, schedule: "*/15 2 * * *"}
  mondays: {command: /bin/true, schedule: "0 0 */2 * 1"}
environments:
  dev: {inventory: inventories/dev}
"""


def explain_json(project: Project, *args: str) -> dict[str, list[str]]:
    result = project.deployer("explain", "dev", *args, "--json")
    assert result.exit_code == 0, result
    data = json.loads(result.stdout)
    return {j["job"]: j["fires"] for j in data["hosts"][0]["jobs"]}


def test_spring_night_in_paris(project: Project) -> None:
    project.declare(DECLARATION)
    fires = explain_json(project, "--tz", "Europe/Paris", "--from", "2026-03-29T00:00", "-n", "2")
    # 02:30 does not exist: the fixed-time job runs at the jump; the wildcard one skips the hour
    assert fires["nightly"] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    assert fires["quarter"] == ["2026-03-30T02:00:00+02:00", "2026-03-30T02:15:00+02:00"]
    # a leading '*' in day-of-month: ANDed with Monday (odd days that are Mondays)
    assert fires["mondays"] == ["2026-04-13T00:00:00+02:00", "2026-04-27T00:00:00+02:00"]


def test_autumn_night_in_paris_in_words(project: Project) -> None:
    project.declare(DECLARATION)
    result = project.deployer("explain", "dev", "--tz", "Europe/Paris", "--from", "2026-10-25T02:50+02:00", "-n", "3")
    assert result.exit_code == 0, result
    assert "── localhost (Europe/Paris, Debian/Ubuntu cron (Vixie cron 3.0pl1)) after 2026-10-25T02:50:00+02:00" in result.stdout
    assert ("      2026-10-25T02:00:00+01:00  clocks went back: this hour comes twice, cron runs wildcard jobs again"
            in result.stdout)
    assert "      on days matching BOTH the day-of-month and the day-of-week (one of them starts with '*')" in result.stdout
    # the fixed-time job is not run again in the repeated hour; the wildcard one is
    fires = explain_json(project, "--tz", "Europe/Paris", "--from", "2026-10-25T02:50+02:00", "-n", "3")
    assert fires["nightly"] == ["2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00", "2026-10-28T02:30:00+01:00"]
    assert fires["quarter"] == ["2026-10-25T02:00:00+01:00", "2026-10-25T02:15:00+01:00", "2026-10-25T02:30:00+01:00"]


def test_the_inventory_says_which_cron(project: Project) -> None:
    project.declare(DECLARATION)
    project.write("inventories/dev/hosts.yml", """\
        all:
          hosts:
            localhost:
              ansible_connection: local
              deployer_cron_flavour: busybox
        """)
    fires = explain_json(project, "--tz", "Europe/Paris", "--from", "2026-03-29T00:00", "-n", "1")
    assert fires["nightly"] == ["2026-03-30T02:30:00+02:00"]  # busybox crond has no catch-up: the night is skipped


def test_bad_flavour_zone_and_time_are_a_persons_errors(project: Project) -> None:
    project.declare(DECLARATION)
    result = project.deployer("explain", "dev", "--tz", "Mars/Olympus")
    assert result.exit_code == 2
    assert "error: --tz: 'Mars/Olympus' is not a zone of this machine's tz database; write one such as Europe/Paris or UTC" \
        in result.stderr
    result = project.deployer("explain", "dev", "--tz", "UTC", "--from", "tomorrow")
    assert result.exit_code == 2
    assert "error: --from: 'tomorrow' is not a time; write ISO 8601" in result.stderr
    project.write("inventories/dev/hosts.yml", """\
        all:
          hosts:
            localhost:
              ansible_connection: local
              deployer_cron_flavour: systemd
        """)
    result = project.deployer("explain", "dev", "--tz", "UTC")
    assert result.exit_code == 2, result
    assert "localhost.deployer_cron_flavour: 'systemd' is not a cron deployer knows; write one of debian, cronie, busybox" \
        in result.stderr
    assert "Traceback" not in result.stderr
