"""The wrapper's alerts on a remote target (tests/fleet over SSH, tests/incus in a container):
what both tiers deploy, and what the servers and the target must show afterwards.

The job fails twice, then succeeds, each time by `deployer run`. The relay and the HTTP
server run in the test process, where the target reaches them (each tier says how); the
metrics file and the alert state are read through the target itself (ssh, incus exec).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable

from tests.alerts.servers import Relay, Web, channels_yaml

HOME = "/var/lib/deployer/demo-dev"
STATE = HOME + "/state/flaky"
EXIT_FILE = "/tmp/deployer-alerts-exit"  # the job's exit code, written by the test on the target
CA_FILE = "/etc/deployer-test-relay.pem"  # the relay's certificate, root's on the target
METRICS_DIR = "/var/lib/prometheus/node-exporter"  # node_exporter's textfile folder, as Debian's package makes it
SECRETS = {"SMTP_PASSWORD": "relay-password-1", "HOOK_TOKEN": "Bearer hook-7d8e9f"}
TASK = """\
import sys
print("step one done")
code = int(open(sys.argv[1]).read())
print("giving up with", code)
sys.exit(code)
"""

# What runs a command on the target and gives its stdout (an assertion error if it fails).
OnTarget = Callable[[list[str]], str]


def declaration(run_as: str, smtp_host: str, smtp_port: int, hook_url: str) -> str:
    return f"""\
project: demo
defaults:
  run_as: {run_as}
  timeout: 1m
alerts:
{channels_yaml(smtp_host, smtp_port, CA_FILE, hook_url)}
  metrics: {{dir: {METRICS_DIR}}}
jobs:
  flaky:
    script: tasks/flaky.py
    args: ["{EXIT_FILE}"]
    schedule: "0 3 * * *"
    alerts:
      ping: {{secret: {{env: PING_URL}}}}
environments:
  dev:
    inventory: inventories/dev
"""


def prepare_target(on_target: Callable[[list[str], str], str], ca_pem: str) -> None:
    """What an operator's target has before the deploy: the relay's CA and node_exporter's folder."""
    on_target(["sh", "-c", f"umask 022 && cat > {CA_FILE} && mkdir -p {METRICS_DIR}"], ca_pem)


def check_servers(relay: Relay, web: Web, host: str, client: str | None) -> None:
    """One failure and one recovery, by mail and webhook, naming ``host``; the healthchecks
    pings of three runs, each start and finish with the same rid. ``client``: the address the
    target's connections come from, when the tier shows it (not through an Incus proxy)."""
    assert [m["X-Deployer-Event"] for m in relay.messages] == ["failure", "recovered"], [m["Subject"] for m in relay.messages]
    failure, recovered = relay.messages
    assert failure["Subject"] == f"[demo/dev] flaky failed on {host} (exit 3)"
    text = failure.get_content()
    assert f"Host:    {host}" in text and "Outcome: failure, exit code 3" in text, text
    assert "  step one done" in text and "  giving up with 3" in text, text
    assert recovered["Subject"].startswith(f"[demo/dev] flaky recovered on {host}"), recovered["Subject"]

    hooks = [r for r in web.requests if r.path == "/hook"]
    bodies = [json.loads(r.body) for r in hooks]
    assert [(b["event"], b["host"], b["exit_code"]) for b in bodies] == [("failure", host, 3), ("recovered", host, 0)], bodies
    assert all(r.headers["authorization"] == SECRETS["HOOK_TOKEN"] for r in hooks)

    pings = [urllib.parse.urlsplit(r.path) for r in web.requests if r.path.startswith("/ping/")]
    assert [p.path for p in pings] == ["/ping/check-1/start", "/ping/check-1/3"] * 2 + ["/ping/check-1/start", "/ping/check-1/0"]
    rids = [urllib.parse.parse_qs(p.query)["rid"][0] for p in pings]
    assert rids[0] == rids[1] and rids[2] == rids[3] and rids[4] == rids[5] and len(set(rids)) == 3, rids
    if client is not None:
        assert set(relay.peers) == {client} and {r.client for r in web.requests} == {client}, (relay.peers, web.requests)


def check_target(on_target: OnTarget, started: float, ended: float) -> None:
    """The metrics file and the alert state, read on the target after the three runs, which
    ran between ``started`` and ``ended`` (epoch seconds, this machine's clock: the same kernel's)."""
    prom = on_target(["cat", f"{METRICS_DIR}/deployer_demo_dev_flaky.prom"])
    values = {line.split("{")[0]: (line.split("{")[1].split("}")[0], float(line.rsplit(" ", 1)[1]))
              for line in prom.splitlines() if line and not line.startswith("#")}
    assert {labels for labels, _ in values.values()} == {'project="demo",env="dev",job="flaky"'}, prom
    value = {name: v for name, (_, v) in values.items()}
    assert value["deployer_job_last_exit_code"] == 0 and value["deployer_job_consecutive_failures"] == 0, prom
    assert started <= value["deployer_job_last_success_timestamp_seconds"] <= ended, prom
    assert value["deployer_job_running"] == 0 and value["deployer_job_next_run_timestamp_seconds"] > ended, prom
    assert on_target(["stat", "-c", "%U %a", f"{METRICS_DIR}/deployer_demo_dev_flaky.prom"]).split() == ["root", "644"]

    assert on_target(["stat", "-c", "%U %a", f"{STATE}/alerts.json"]).split() == ["root", "600"]
    state = json.loads(on_target(["cat", f"{STATE}/alerts.json"]))
    assert state["consecutive_failures"] == 0 and state["incident"] is None and state["last_exit_code"] == 0, state
    assert started <= state["last_told"] <= ended and state["untold"] == 0, state  # the failure's message
    assert round(state["last_success"], 3) == value["deployer_job_last_success_timestamp_seconds"], (state, prom)  # the file: 3 decimals

    lines = [json.loads(line) for line in on_target(["cat", f"{STATE}/ledger.jsonl"]).splitlines()]
    assert [line["exit_code"] for line in lines] == [3, 3, 0]
    told = [sorted((a["channel"], a["event"], a["ok"]) for a in line["alerts"]) for line in lines]
    assert told == [[("oncall", "failure", True), ("ping", "ping-3", True), ("ping", "ping-start", True), ("team", "failure", True)],
                    [("ping", "ping-3", True), ("ping", "ping-start", True)],
                    [("oncall", "recovered", True), ("ping", "ping-0", True), ("ping", "ping-start", True),
                     ("team", "recovered", True)]], told
    records = prom + json.dumps(lines)
    for secret in [*SECRETS.values(), "hook-7d8e9f", "/ping/"]:
        assert secret not in records
