"""Who hears of what: one declaration, two environments on one host, each routed to its own
channel (recette to the team's webhook, prod to on-call's mail), and a job that adds a
channel in prod. Real runs through the release's wrapper, a real SMTP relay and HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.alerts.servers import Relay, Web, channels_yaml, smtp_relay, web_server
from tests.conftest import TEST_USER, Project

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

SECRETS = {"SMTP_PASSWORD": "relay-password-1", "HOOK_TOKEN": "Bearer hook-route-2718"}
TASK = "import sys\nsys.exit(int(open(sys.argv[1]).read()))\n"


def declaration(relay: Relay, web: Web, exit_file: Path) -> str:
    return f"""\
project: demo
defaults:
  run_as: {TEST_USER}
  timeout: 1m
alerts:
{channels_yaml("127.0.0.1", relay.port, relay.ca_file, web.url + "/hook")}
jobs:
  backup:
    script: tasks/job.py
    args: ["{exit_file}"]
    schedule: "0 3 * * *"
  queue:
    script: tasks/job.py
    args: ["{exit_file}"]
    schedule: "0 4 * * *"
environments:
  recette:
    inventory: inventories/dev
    alerts: {{route: [team]}}
  prod:
    inventory: inventories/dev
    alerts: {{route: [oncall]}}
    jobs:
      queue:
        alerts: {{route: [oncall, team]}}
"""


def told(relay: Relay, web: Web) -> list[tuple[str, str, str]]:
    """(channel, environment/job, event) of every message received so far, in order per channel."""
    mails = [("oncall", str(m["Subject"]).split("]")[0].strip("[") + "/" + str(m["Subject"]).split()[1],
              str(m["X-Deployer-Event"])) for m in relay.messages]
    hooks = [("team", f"{b['project']}/{b['env']}/{b['job']}", b["event"])
             for b in (json.loads(r.body) for r in web.requests if r.path == "/hook")]
    return mails + hooks


def test_each_environment_and_job_reaches_its_own_channels_once(project: Project, user_crontab: str, exit_file: Path,
                                                                tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay, web_server() as web:
        project.write("tasks/job.py", TASK)
        project.declare(declaration(relay, web, exit_file))
        for env in ("recette", "prod"):
            applied = project.deployer("apply", env, "--yes", env=SECRETS)
            assert applied.exit_code == 0, applied

        exit_file.write_text("2")
        for env in ("recette", "prod"):
            for job in ("backup", "queue"):
                for _ in range(2):  # the second failure of each is the same incident: nothing more
                    assert project.deployer("run", env, job, env=SECRETS).exit_code == 2
        assert sorted(told(relay, web)) == sorted([
            ("team", "demo/recette/backup", "failure"), ("team", "demo/recette/queue", "failure"),
            ("oncall", "demo/prod/backup", "failure"),
            ("oncall", "demo/prod/queue", "failure"), ("team", "demo/prod/queue", "failure"),
        ])

        exit_file.write_text("0")
        for env in ("recette", "prod"):
            for job in ("backup", "queue"):
                assert project.deployer("run", env, job, env=SECRETS).exit_code == 0
        recovered = [t for t in told(relay, web) if t[2] == "recovered"]
        assert sorted(recovered) == sorted([
            ("team", "demo/recette/backup", "recovered"), ("team", "demo/recette/queue", "recovered"),
            ("oncall", "demo/prod/backup", "recovered"),
            ("oncall", "demo/prod/queue", "recovered"), ("team", "demo/prod/queue", "recovered"),
        ])
        assert all(r.headers["authorization"] == SECRETS["HOOK_TOKEN"] for r in web.requests if r.path == "/hook")
