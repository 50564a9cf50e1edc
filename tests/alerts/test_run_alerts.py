"""The run wrapper's alerts, end to end: root deploys a job (run as the test user) whose
release carries ``alerts/<job>.json``; `deployer run` runs it through the real wrapper, which
tells a real SMTP relay and HTTP server on the loopback and writes the metrics file."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.servers import channels_yaml, free_port, smtp_relay, web_server
from tests.conftest import TEST_USER, Project

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

HOME = Path("/var/lib/deployer/demo-dev")
STATE = HOME / "state" / "flaky"
SECRETS = {"DEMO_TOKEN": "tok-5e6f7a8b9c", "SMTP_PASSWORD": "relay-password-1", "HOOK_TOKEN": "Bearer hook-7d8e9f"}
TASK = """\
import os, sys
print("step one done")
print("token is", os.environ["TOKEN"])
code = int(open(sys.argv[1]).read())
print("giving up with", code)
sys.exit(code)
"""


def declaration(exit_file: Path, smtp_port: int, ca_file: Path, hook_url: str, metrics_dir: Path) -> str:
    return f"""\
project: demo
defaults:
  run_as: {TEST_USER}
  timeout: 1m
alerts:
{channels_yaml("127.0.0.1", smtp_port, ca_file, hook_url)}
  metrics: {{dir: {metrics_dir}}}
jobs:
  flaky:
    script: tasks/flaky.py
    args: ["{exit_file}"]
    schedule: "0 3 * * *"
    env: {{TOKEN: {{secret: {{env: DEMO_TOKEN}}}}}}
    alerts:
      ping: {{secret: {{env: PING_URL}}}}
environments:
  dev:
    inventory: inventories/dev
"""


def deploy(project: Project, exit_file: Path, smtp_port: int, ca_file: Path, web_url: str, metrics_dir: Path) -> dict[str, str]:
    project.write("tasks/flaky.py", TASK)
    project.declare(declaration(exit_file, smtp_port, ca_file, web_url + "/hook", metrics_dir))
    env = {**SECRETS, "PING_URL": web_url + "/ping/check-1"}
    result = project.deployer("apply", "dev", "--yes", env=env)
    assert result.exit_code == 0, result
    return env


def run(project: Project, exit_file: Path, code: int, env: dict[str, str]) -> int:
    exit_file.write_text(str(code))
    return project.deployer("run", "dev", "flaky", env=env).exit_code


def ledger() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (STATE / "ledger.jsonl").read_text().splitlines()]


def metric_values(path: Path) -> dict[str, float]:
    return {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in path.read_text().splitlines()
            if line and not line.startswith("#")}


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "textfile"
    folder.mkdir(mode=0o755)
    return folder


def test_a_failing_job_tells_once_then_its_recovery(project: Project, user_crontab: str, exit_file: Path,
                                                    metrics_dir: Path, tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay, web_server() as web:
        env = deploy(project, exit_file, relay.port, relay.ca_file, web.url, metrics_dir)
        release = (HOME / "current").resolve()
        config = release / "alerts" / "flaky.json"
        assert (config.stat().st_mode & 0o777, config.stat().st_uid) == (0o600, 0)
        manifest = json.loads((release / "manifest.json").read_text())
        assert manifest["files"]["alerts/flaky.json"]["sha256"] is None

        assert run(project, exit_file, 3, env) == 3
        assert run(project, exit_file, 3, env) == 3
        assert len(relay.messages) == 1
        mail = relay.messages[0]
        host = "localhost"  # the inventory's name for it, as status and verify say; the hostname in the text
        assert mail["Subject"] == f"[demo/dev] flaky failed on {host} (exit 3)"
        text = mail.get_content()
        assert f"Host:    localhost (hostname {socket.gethostname()})" in text and "Outcome: failure, exit code 3" in text
        assert "  step one done" in text and "  giving up with 3" in text
        assert "  token is ***" in text and SECRETS["DEMO_TOKEN"] not in text
        assert metric_values(metrics_dir / "deployer_demo_dev_flaky.prom")["deployer_job_consecutive_failures"] == 2

        assert run(project, exit_file, 0, env) == 0
        assert [m["X-Deployer-Event"] for m in relay.messages] == ["failure", "recovered"]
        assert relay.messages[1]["Subject"].startswith(f"[demo/dev] flaky recovered on {host}")

        hooks = [r for r in web.requests if r.path == "/hook"]
        assert [json.loads(r.body)["event"] for r in hooks] == ["failure", "recovered"]
        assert hooks[0].headers["authorization"] == SECRETS["HOOK_TOKEN"]
        assert json.loads(hooks[0].body)["exit_code"] == 3
        pings = [urllib.parse.urlsplit(r.path) for r in web.requests if r.path.startswith("/ping/")]
        assert [p.path for p in pings] == ["/ping/check-1/start", "/ping/check-1/3"] * 2 + ["/ping/check-1/start", "/ping/check-1/0"]
        rids = [urllib.parse.parse_qs(p.query)["rid"][0] for p in pings]
        assert rids[0] == rids[1] and rids[2] == rids[3] and rids[4] == rids[5] and len(set(rids)) == 3

    lines = ledger()
    assert [line["exit_code"] for line in lines] == [3, 3, 0]
    told = [[(a["channel"], a["event"], a["ok"]) for a in line["alerts"]] for line in lines]
    assert sorted(told[0]) == [("oncall", "failure", True), ("ping", "ping-3", True), ("ping", "ping-start", True),
                               ("team", "failure", True)]
    assert sorted(told[1]) == [("ping", "ping-3", True), ("ping", "ping-start", True)]
    assert sorted(told[2]) == [("oncall", "recovered", True), ("ping", "ping-0", True), ("ping", "ping-start", True),
                               ("team", "recovered", True)]
    values = metric_values(metrics_dir / "deployer_demo_dev_flaky.prom")
    assert values["deployer_job_last_exit_code"] == 0 and values["deployer_job_consecutive_failures"] == 0
    assert abs(values["deployer_job_last_success_timestamp_seconds"] - time.time()) < 120
    assert values["deployer_job_next_run_timestamp_seconds"] > time.time()
    records = (STATE / "ledger.jsonl").read_text() + (metrics_dir / "deployer_demo_dev_flaky.prom").read_text()
    for secret in [*SECRETS.values(), "hook-7d8e9f", "/ping/", "127.0.0.1"]:
        assert secret not in records
    state = STATE / "alerts.json"
    assert (state.stat().st_uid, state.stat().st_mode & 0o777) == (0, 0o600)


def test_a_dead_channel_changes_nothing_of_the_run_and_is_recorded(project: Project, user_crontab: str, exit_file: Path,
                                                                  metrics_dir: Path, tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there
    ca_file = tmp_path / "none.pem"
    ca_file.write_text("")
    env = deploy(project, exit_file, closed, ca_file, f"http://127.0.0.1:{closed}", metrics_dir)
    assert project.deployer("plan", "dev", "--detailed-exitcode", env=env).exit_code == 0  # the alerts file is in place
    changed = project.deployer("plan", "dev", env={**env, "HOOK_TOKEN": "Bearer rotated-1a2b3c"})
    assert "alerts/flaky.json" in changed.stdout, changed  # a changed secret is a change, its value never shown
    assert "rotated-1a2b3c" not in changed.stdout + changed.stderr and SECRETS["HOOK_TOKEN"] not in changed.stdout
    started = time.monotonic()
    assert run(project, exit_file, 5, env) == 5
    assert time.monotonic() - started < 60  # each channel within its 10 s budget, all at once
    line = ledger()[-1]
    assert line["outcome"] == "failure" and line["exit_code"] == 5
    alerts = {(a["channel"], a["event"]): a for a in line["alerts"]}
    assert set(alerts) == {("ping", "ping-start"), ("ping", "ping-5"), ("oncall", "failure"), ("team", "failure")}
    for delivery in alerts.values():
        assert delivery["ok"] is False and delivery["error"], delivery
    assert "refused" in str(alerts[("team", "failure")]["error"]).lower()
    assert str(closed) not in json.dumps(line)  # the error names no URL

