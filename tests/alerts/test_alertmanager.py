"""A failing job, end to end through the monitoring people already run: the wrapper writes the
job's metrics file, the real node_exporter serves it, the real Prometheus scrapes it every
second and evaluates the rules `deployer alerts ENV --prometheus-rules` generated, and the
real Alertmanager tells a webhook (the recording HTTP server): one firing ``DeployerJobFailing``
for the job, then, after a successful run, its resolved notification.

Each program is Debian's (`./install.sh --test` installs them), run directly on free loopback
ports with its own data folder, and stopped by the PID it was started with. Prometheus keeps
the scrape job in ``job`` and the file's ``job`` as ``exported_job``, the rules' default label;
with ``honor_labels: true`` the file's ``job`` stays, and ``--job-label job`` matches it.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.servers import Web, alertmanager, node_exporter, prometheus, web_server
from tests.conftest import TEST_USER, Project
from tests.faults.conftest import wait_for

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

TASK = """\
import sys
code = int(open(sys.argv[1]).read())
print("giving up with", code)
sys.exit(code)
"""


def declaration(exit_file: Path, metrics_dir: Path) -> str:
    return f"""\
project: demo
defaults:
  run_as: {TEST_USER}
  timeout: 1m
alerts:
  metrics: {{dir: {metrics_dir}}}
jobs:
  flaky:
    script: tasks/flaky.py
    args: ["{exit_file}"]
    schedule: "0 3 * * *"
environments:
  dev:
    inventory: inventories/dev
"""


def notifications(web: Web) -> list[dict[str, Any]]:
    """Alertmanager's webhook posts so far."""
    return [json.loads(r.body) for r in web.requests if r.path == "/alertmanager"]


def api(prometheus_url: str, path: str) -> Any:
    """The ``data`` of one answer of Prometheus' HTTP API."""
    with urllib.request.urlopen(prometheus_url + "/api/v1/" + path, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())["data"]


def ready(prometheus_url: str) -> bool:
    """Prometheus scrapes node_exporter and knows Alertmanager (its discovery takes a few
    seconds after the start): from then on, the time to a notification is the pipeline's own."""
    targets = api(prometheus_url, "targets")["activeTargets"]
    return bool(targets) and all(t["health"] == "up" for t in targets) and bool(api(prometheus_url, "alertmanagers")["activeAlertmanagers"])


@pytest.mark.parametrize(("job_label", "honor_labels"), [("exported_job", False), ("job", True)])
def test_a_failing_job_fires_through_prometheus_and_alertmanager_then_resolves(project: Project, user_crontab: str,
                                                                                exit_file: Path, tmp_path: Path,
                                                                                job_label: str, honor_labels: bool) -> None:
    began = time.monotonic()
    textfile = tmp_path / "textfile"
    textfile.mkdir(mode=0o755)
    project.write("tasks/flaky.py", TASK)
    project.declare(declaration(exit_file, textfile))
    generated = project.deployer("alerts", "dev", "--prometheus-rules", "--job-label", job_label)
    assert generated.exit_code == 0, generated
    rules = tmp_path / "rules.yml"
    rules.write_text(generated.stdout)
    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied

    with web_server() as web, node_exporter(textfile) as metrics_url, \
            alertmanager(tmp_path / "alertmanager", web.url + "/alertmanager") as am_url, \
            prometheus(tmp_path / "prometheus", urllib.parse.urlsplit(metrics_url).netloc, rules, am_url, honor_labels) as prom_url:
        wait_for(lambda: ready(prom_url), "Prometheus to scrape node_exporter and find Alertmanager", timeout=60, every=0.2)
        started = time.monotonic()
        exit_file.write_text("3")
        assert project.deployer("run", "dev", "flaky").exit_code == 3
        try:
            wait_for(lambda: notifications(web), "Alertmanager's firing notification", timeout=60, every=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; Prometheus' alerts: {api(prom_url, 'alerts')['alerts']}") from None
        fired = time.monotonic() - started
        firing = notifications(web)
        assert len(firing) == 1 and firing[0]["status"] == "firing", firing
        assert len(firing[0]["alerts"]) == 1, firing
        alert = firing[0]["alerts"][0]
        instance = urllib.parse.urlsplit(metrics_url).netloc
        # The scrape job "node" in job, unless the file's own job label is honoured.
        jobs = {"job": "flaky"} if honor_labels else {"exported_job": "flaky", "job": "node"}
        assert alert["labels"] == {"alertname": "DeployerJobFailing", "project": "demo", "env": "dev", "deployer_job": "flaky",
                                   **jobs, "instance": instance, "severity": "critical"}, alert
        assert alert["annotations"]["summary"] == f"flaky (demo/dev) on {instance}: 1 failed run in a row", alert

        exit_file.write_text("0")
        succeeded = time.monotonic()
        assert project.deployer("run", "dev", "flaky").exit_code == 0
        wait_for(lambda: len(notifications(web)) > 1, "Alertmanager's resolved notification", timeout=60, every=0.2)
        resolved_after = time.monotonic() - succeeded
        told = notifications(web)
        assert [n["status"] for n in told] == ["firing", "resolved"], told
        (done,) = told[1]["alerts"]
        assert done["status"] == "resolved" and done["labels"] == alert["labels"], done
        assert done["startsAt"] == alert["startsAt"], done  # the same alert, now ended
        assert datetime.fromisoformat(done["endsAt"]) > datetime.fromisoformat(alert["startsAt"]), done
    print(f"\nPrometheus + Alertmanager end to end ({job_label}): firing {fired:.1f} s after the failed run started, "
          f"resolved {resolved_after:.1f} s after the successful one; {time.monotonic() - began:.1f} s in all")
