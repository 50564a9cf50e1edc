"""Prometheus alerting rules generated from the declared jobs. Pure.

One rule per job and kind, each threshold derived from that job's schedule, timeout and
grace, never hand-tuned (Prometheus' guidance for batch jobs: alert on the time since the
last success, after about two missed periods):

- ``DeployerJobLate``: no success for two of the schedule's longest gaps plus the grace;
- ``DeployerJobFailing``: ``alerts.rules.after`` failed runs in a row (the last exit code is
  not 0); it resolves, so Alertmanager sends its "resolved", when a run succeeds;
- ``DeployerJobRunningTooLong``: a run has been going on for longer than the timeout (plus
  the wrapper's kill grace and a minute): the wrapper could not end it;
- ``DeployerJobMetricsMissing``: no metrics of the job for as long as "late" (its file
  deleted, node_exporter not scraped, or the job never ran since the deploy), and one rule
  for node_exporter failing to read a textfile.

The metrics' ``job`` label is the deployer job. Prometheus keeps ``job`` for the scrape job
and, unless the scrape config says ``honor_labels: true``, stores the file's as
``exported_job``: the rules match that label by default (``job_label`` changes it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import yaml

from deployer.config.project import EnvironmentConfig, Project
from deployer.core.alerting import grace_seconds, longest_gap

JOB_LABEL = "exported_job"
KILL_GRACE = 10  # the wrapper's seconds between SIGTERM and SIGKILL at the timeout
SLACK = 60


def _duration(seconds: int) -> str:
    """Prometheus' duration syntax (``2d2h2m``), which people read too."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _selector(project: str, env: str, job: str, job_label: str) -> str:
    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"{{project={quoted(project)},env={quoted(env)},{job_label}={quoted(job)}}}"


def rules(project: Project, env: EnvironmentConfig, now: datetime, job_label: str = JOB_LABEL) -> dict[str, Any]:
    """The rules file (as data) for one environment's enabled jobs."""
    out: list[dict[str, Any]] = []
    for job in env.jobs:
        if not job.enabled:
            continue
        sel = _selector(project.name, env.name, job.id, job_label)
        labels = {"project": project.name, "env": env.name, "deployer_job": job.id}
        where = f"{job.id} ({project.name}/{env.name}) on {{{{ $labels.instance }}}}"
        gap = longest_gap(job.schedule, now)
        grace = grace_seconds(job, now)
        if gap is not None:
            late = 2 * gap + grace
            out.append({
                "alert": "DeployerJobLate",
                "expr": f"time() - deployer_job_last_success_timestamp_seconds{sel} > {late}",
                "labels": {**labels, "severity": "warning"},
                "annotations": {
                    "summary": f"{where}: no success for more than {_duration(late)}",
                    "description": (f"schedule {job.schedule}: at most {_duration(gap)} between runs; late after two "
                                    f"of those and a grace of {_duration(grace)}. Last success "
                                    "{{ $value | humanizeDuration }} ago."),
                },
            })
            out.append({
                "alert": "DeployerJobMetricsMissing",
                "expr": f"absent(deployer_job_running{sel})",
                "for": _duration(late),
                "labels": {**labels, "severity": "warning"},
                "annotations": {"summary": f"{job.id} ({project.name}/{env.name}): no metrics for {_duration(late)}",
                                "description": "its metrics file is gone, node_exporter is not scraped, or it has not "
                                               "run since it was deployed"},
            })
        after = job.alerts.rules.after
        out.append({
            "alert": "DeployerJobFailing",
            "expr": f"deployer_job_consecutive_failures{sel} >= {after} and deployer_job_last_exit_code{sel} != 0",
            "labels": {**labels, "severity": "critical"},
            # $value is a float: "1 failed run", "2 failed runs"
            "annotations": {"summary": f"{where}: {{{{ $value }}}} failed run{{{{ if ne $value 1.0 }}}}s{{{{ end }}}} in a row",
                            "description": f"alerts after {after} failed run{'s' if after > 1 else ''} in a row; "
                                           "resolved by the next success"},
        })
        too_long = job.timeout + KILL_GRACE + SLACK
        out.append({
            "alert": "DeployerJobRunningTooLong",
            "expr": (f"deployer_job_running{sel} == 1 and "
                     f"time() - deployer_job_last_run_timestamp_seconds{sel} > {too_long}"),
            "labels": {**labels, "severity": "critical"},
            "annotations": {"summary": f"{where}: running for more than {_duration(too_long)}",
                            "description": f"its timeout is {_duration(job.timeout)}: the wrapper should have ended it"},
        })
    out.append({
        "alert": "DeployerMetricsUnreadable",
        "expr": "node_textfile_scrape_error == 1",
        "for": "15m",
        "labels": {"project": project.name, "env": env.name, "severity": "warning"},
        "annotations": {"summary": "node_exporter on {{ $labels.instance }} cannot read a textfile (deployer's metrics)"},
    })
    return {"groups": [{"name": f"deployer-{project.name}-{env.name}", "rules": out}]}


def rules_yaml(project: Project, env: EnvironmentConfig, now: datetime, job_label: str = JOB_LABEL) -> str:
    head = (f"# Prometheus alerting rules for {project.name}/{env.name}, generated by `deployer alerts {env.name} "
            "--prometheus-rules`\n# from the schedules in the declaration: regenerate them, do not edit.\n")
    return head + yaml.safe_dump(rules(project, env, now, job_label), sort_keys=False, width=200)
