"""The lateness watchdog on a remote target (tests/fleet over SSH, tests/incus in a container):
what the tiers deploy, how they run the watchdog's crontab line as cron runs it, and what the
servers must show of a late job.

The line's command is taken from the target's real crontab (the managed block) and run with
``/bin/sh -c`` from the crontab owner's home, in nothing but the environment Debian cron gives
a job (entry.c, do_command.c: SHELL, HOME, LOGNAME, PATH), through the target's own transport
(ssh, incus exec): the same bytes the target's cron daemon would run.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tests.alerts.remote import CA_FILE
from tests.alerts.servers import Relay, Web, channels_yaml

JOB = "tick"
SCHEDULE = "*/5 * * * *"  # the watchdog's (core/release.WATCHDOG_SCHEDULE)


def declaration(run_as: str, smtp_host: str, smtp_port: int, hook_url: str, schedule: str, grace: str) -> str:
    """A job that tells ``late`` (and its recovery) to both channels, nothing else."""
    return f"""\
project: demo
defaults:
  run_as: {run_as}
  timeout: 1m
alerts:
{channels_yaml(smtp_host, smtp_port, CA_FILE, hook_url)}
  rules: {{when: [late, recovered]}}
jobs:
  {JOB}:
    script: tasks/hello.py
    schedule: "{schedule}"
    alerts: {{grace: {grace}}}
environments:
  dev:
    inventory: inventories/dev
"""


def a_minute_half_an_hour_away() -> int:
    """A minute of the hour about 30 minutes from now (the targets' zone is UTC): its last fire
    is long past any grace, and its next comes after the test, so the target's cron daemon
    never starts the job meanwhile."""
    return (datetime.now(UTC).minute + 30) % 60


def watchdog_command(crontab: str) -> str:
    """The command of the one watchdog line of ``crontab``, its schedule checked."""
    lines = [line for line in crontab.splitlines() if "/watchdog" in line and not line.startswith("#")]
    assert len(lines) == 1, crontab
    fields = lines[0].split(" ", 5)
    assert " ".join(fields[:5]) == SCHEDULE, lines[0]
    return fields[5]


def as_cron(command: str, user: str, home: str) -> list[str]:
    """argv that runs a crontab line's ``command`` as Debian cron runs it for ``user``."""
    return ["env", "-i", "-C", home, "PATH=/usr/bin:/bin", f"HOME={home}", f"LOGNAME={user}", "SHELL=/bin/sh",
            "/bin/sh", "-c", command]


def iso(t: float) -> str:
    """A fire time as the alerts write it (remote/alerts._iso)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def events(relay: Relay, web: Web) -> tuple[list[str], list[str]]:
    mails = [str(m["X-Deployer-Event"]) for m in relay.messages]
    hooks = [json.loads(r.body)["event"] for r in web.requests if r.path == "/hook"]
    return mails, hooks


def check_late(relay: Relay, web: Web, host: str, due: float | None, client: str | None) -> None:
    """One ``late`` mail and one ``late`` webhook, naming ``host`` and the job (and the fire it
    missed, when the test knows it); ``client``: the address they came from, when the tier
    shows it (not through an Incus proxy)."""
    assert events(relay, web) == (["late"], ["late"]), [m["Subject"] for m in relay.messages]
    [mail] = relay.messages
    subject = f"[demo/dev] {JOB} is late on {host} (due " + (f"{iso(due)}, no start since)" if due is not None else "")
    assert str(mail["Subject"]).startswith(subject), mail["Subject"]
    text = mail.get_content()
    assert f"Host:    {host}" in text and f"Job:     {JOB} (project demo, environment dev)" in text, text
    [hook] = [r for r in web.requests if r.path == "/hook"]
    body = json.loads(hook.body)
    assert (body["event"], body["job"], body["host"]) == ("late", JOB, host), body
    assert hook.headers["authorization"] == "Bearer hook-7d8e9f"
    if client is not None:
        assert relay.peers == [client] and hook.client == client, (relay.peers, hook.client)


def check_recovered(relay: Relay, web: Web, host: str, client: str | None) -> None:
    """After the late message, one ``recovered`` by mail and webhook, from the same host."""
    assert events(relay, web) == (["late", "recovered"], ["late", "recovered"]), [m["Subject"] for m in relay.messages]
    assert str(relay.messages[1]["Subject"]).startswith(f"[demo/dev] {JOB} recovered on {host} "), relay.messages[1]["Subject"]
    hook = [r for r in web.requests if r.path == "/hook"][1]
    assert (json.loads(hook.body)["event"], json.loads(hook.body)["host"]) == ("recovered", host)
    if client is not None:
        assert set(relay.peers) == {client} and {r.client for r in web.requests} == {client}, (relay.peers, web.requests)


def record(text: str) -> dict[str, Any]:
    """The job's entry of ``state/watchdog.json`` (the watchdog's last round)."""
    data: dict[str, Any] = json.loads(text)
    job: dict[str, Any] = data["jobs"][JOB]
    return job
