"""``deployer alerts ENV``: each job's alerts as declared (channels, route, rules, grace), and
``--prometheus-rules``: an alerting rules file generated from the schedules. Contacts no host."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from deployer.cli.common import Context, env_argument, guarded, json_option
from deployer.config.cached import load_project_cached
from deployer.core.alerting import grace_seconds
from deployer.core.healthchecks import has_check
from deployer.core.prometheus_rules import JOB_LABEL, rules, rules_yaml
from deployer.errors import EXIT_OK


@click.command()
@env_argument
@click.option("--prometheus-rules", "prometheus", is_flag=True,
              help="Print Prometheus alerting rules for the environment's jobs (late, failing, running too long, "
                   "metrics missing), thresholds derived from each job's schedule, timeout and grace.")
@click.option("--job-label", default=JOB_LABEL, show_default=True, metavar="LABEL",
              help="The label the rules match the job on: Prometheus stores the metrics' job label as exported_job "
                   "unless the scrape config has honor_labels: true (then: job).")
@json_option
@click.pass_obj
@guarded
def alerts(ctx: Context, env: str, prometheus: bool, job_label: str) -> int:
    """Each job's alerts in ENV, or (--prometheus-rules) Prometheus rules for them."""
    project = load_project_cached(ctx.file)
    environment = project.environment(env)
    now = datetime.now(UTC)
    if prometheus:
        if ctx.output.json_mode:
            ctx.output.emit_json(rules(project, environment, now, job_label))
        else:
            click.echo(rules_yaml(project, environment, now, job_label), nl=False)
        return EXIT_OK
    jobs: list[dict[str, Any]] = []
    for job in environment.jobs:
        jobs.append({"job": job.id, "route": list(job.alerts.route), "when": list(job.alerts.rules.when),
                     "after": job.alerts.rules.after, "quiet": job.alerts.rules.quiet, "grace": grace_seconds(job, now),
                     "ping": job.alerts.ping is not None or has_check(job, environment)})
    channels = [{"name": c.name, "kind": c.kind} for c in environment.channels]
    if ctx.output.json_mode:
        ctx.output.emit_json({"project": project.name, "env": env, "channels": channels,
                              "metrics_dir": environment.metrics_dir, "jobs": jobs,
                              "healthchecks": environment.healthchecks.api if environment.healthchecks else None})
        return EXIT_OK
    named = ", ".join(f"{c['name']} ({c['kind']})" for c in channels) or "none"
    ctx.output.print(f"channels: {named}")
    if environment.metrics_dir:
        ctx.output.print(f"metrics: {environment.metrics_dir}")
    if environment.healthchecks:
        ctx.output.print(f"healthchecks: {environment.healthchecks.api} (apply keeps one check per job and host)")
    for j in jobs:
        route = ", ".join(j["route"]) or "no channel"
        ctx.output.print(f"   {j['job']}: to {route} on {', '.join(j['when'])}; after {j['after']} failed run(s), "
                         f"quiet {j['quiet']}s, grace {j['grace']}s{', healthchecks ping' if j['ping'] else ''}")
    return EXIT_OK
