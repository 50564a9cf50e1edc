"""The rules `deployer alerts ENV --prometheus-rules` prints, checked and unit-tested by the
real promtool (Debian's `prometheus` package): `promtool check rules`, then `promtool test
rules` with series for a late job, a failing job that recovers, a hung run and missing
metrics, against thresholds derived from the declared schedules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import Project

pytestmark = pytest.mark.alerts

DECLARATION = """\
project: shop
alerts:
  rules: {after: 2}
jobs:
  queue:                        # every 5 minutes, timeout 4m: grace 4m + 2m; late after 2*5m + 6m = 16m
    script: tasks/hello.py
    schedule: "*/5 * * * *"
    timeout: 4m
  backup:                       # daily at 03:00, timeout 2h: grace 2h2m; late after 2*1d + 2h2m
    script: tasks/hello.py
    schedule: "0 3 * * *"
    timeout: 2h
environments:
  prod:
    inventory: inventories/dev
"""


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install prometheus (./install.sh --test does)")
    return found


def _series(metric: str, job: str, values: str) -> dict[str, str]:
    return {"series": f'{metric}{{project="shop",env="prod",exported_job="{job}",instance="web1:9100"}}', "values": values}


def _alert(job: str, severity: str, summary: str, description: str) -> dict[str, object]:
    return {"exp_labels": {"project": "shop", "env": "prod", "exported_job": job, "deployer_job": job,
                           "instance": "web1:9100", "severity": severity},
            "exp_annotations": {"summary": summary, "description": description}}


FAILING = "alerts after 2 failed runs in a row; resolved by the next success"


@pytest.fixture
def rules_file(project: Project) -> Path:
    project.declare(DECLARATION)
    result = project.deployer("alerts", "prod", "--prometheus-rules")
    assert result.exit_code == 0, result
    path = project.root / "rules.yml"
    path.write_text(result.stdout)
    return path


def test_promtool_checks_the_generated_rules(rules_file: Path) -> None:
    done = subprocess.run([_promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout
    rules = yaml.safe_load(rules_file.read_text())["groups"][0]["rules"]
    late = {r["labels"]["deployer_job"]: r["expr"] for r in rules if r["alert"] == "DeployerJobLate"}
    assert late["queue"].endswith(" > 960")  # derived: 2 * 300 + 240 + 120
    assert late["backup"].endswith(f" > {2 * 86400 + 7200 + 120}")


def test_promtool_unit_tests_late_failing_recovered_hung_and_missing(rules_file: Path, tmp_path: Path) -> None:
    minute = 60
    tests = {
        "rule_files": [str(rules_file)],
        "evaluation_interval": "1m",
        "tests": [
            {   # queue succeeded at t=0 and never again: not late at 15m, late at 17m; a success at 18m resolves it
                "interval": "1m",
                "input_series": [
                    _series("deployer_job_last_success_timestamp_seconds", "queue", f"0x17 {18 * minute}x10"),
                    _series("deployer_job_running", "queue", "0x28"),
                    _series("deployer_job_consecutive_failures", "queue", "0x28"),
                    _series("deployer_job_last_exit_code", "queue", "0x28"),
                    _series("deployer_job_last_run_timestamp_seconds", "queue", "0x28"),
                ],
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": "DeployerJobLate", "exp_alerts": []},
                    {"eval_time": "17m", "alertname": "DeployerJobLate", "exp_alerts": [_alert(
                        "queue", "warning", "queue (shop/prod) on web1:9100: no success for more than 16m",
                        "schedule */5 * * * *: at most 5m between runs; late after two of those and a grace of 6m. "
                        "Last success 17m 0s ago.")]},
                    {"eval_time": "20m", "alertname": "DeployerJobLate", "exp_alerts": []},
                    {"eval_time": "20m", "alertname": "DeployerJobMetricsMissing", "exp_alerts": []},
                ],
            },
            {   # backup fails once (after: 2, no alert), twice (alert), then succeeds (resolved)
                "interval": "1m",
                "input_series": [
                    _series("deployer_job_consecutive_failures", "backup", "0 1 2 3 0 0"),
                    _series("deployer_job_last_exit_code", "backup", "0 1 1 1 0 0"),
                    _series("deployer_job_last_success_timestamp_seconds", "backup", "0x5"),
                    _series("deployer_job_running", "backup", "0x5"),
                ],
                "alert_rule_test": [
                    {"eval_time": "1m", "alertname": "DeployerJobFailing", "exp_alerts": []},
                    {"eval_time": "2m", "alertname": "DeployerJobFailing", "exp_alerts": [
                        _alert("backup", "critical", "backup (shop/prod) on web1:9100: 2 failed runs in a row", FAILING)]},
                    {"eval_time": "3m", "alertname": "DeployerJobFailing", "exp_alerts": [
                        _alert("backup", "critical", "backup (shop/prod) on web1:9100: 3 failed runs in a row", FAILING)]},
                    {"eval_time": "4m", "alertname": "DeployerJobFailing", "exp_alerts": []},
                ],
            },
            {   # a queue run started at t=0 and still running: its timeout is 4m, so past 4m + 10s + 1m it is hung
                "interval": "1m",
                "input_series": [
                    _series("deployer_job_running", "queue", "1x10"),
                    _series("deployer_job_last_run_timestamp_seconds", "queue", "0x10"),
                    _series("deployer_job_last_success_timestamp_seconds", "queue", "0x10"),
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "DeployerJobRunningTooLong", "exp_alerts": []},
                    {"eval_time": "6m", "alertname": "DeployerJobRunningTooLong",
                     "exp_alerts": [_alert("queue", "critical", "queue (shop/prod) on web1:9100: running for more than 5m10s",
                                           "its timeout is 4m: the wrapper should have ended it")]},
                ],
            },
            {   # no metrics of queue at all: missing once 'late' has passed (16m)
                "interval": "1m",
                "input_series": [_series("deployer_job_running", "backup", "0x30")],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "DeployerJobMetricsMissing", "exp_alerts": []},
                    {"eval_time": "17m", "alertname": "DeployerJobMetricsMissing", "exp_alerts": [
                        {"exp_labels": {"project": "shop", "env": "prod", "exported_job": "queue", "deployer_job": "queue",
                                        "severity": "warning"},
                         "exp_annotations": {"summary": "queue (shop/prod): no metrics for 16m",
                                             "description": "its metrics file is gone, node_exporter is not scraped, "
                                                            "or it has not run since it was deployed"}}]},
                ],
            },
        ],
    }
    test_file = tmp_path / "rules_test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([_promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
