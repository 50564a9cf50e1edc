"""The ``alerts:`` section: layers (top, environment, job, environment's job), routes,
rules, secrets kept as references, and grace derived from schedule and timeout. The bad
inputs are in tests/bad_inputs/188-194."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from deployer.config.alerting import alert_secrets
from deployer.config.load import load_project
from deployer.config.project import ALERT_EVENTS, Secret
from deployer.core.alerting import CRON_SLACK, grace_seconds, longest_gap

SKELETON = Path(__file__).resolve().parents[1] / "bad_inputs" / "skeleton"

DECLARATION = """\
project: shop
alerts:
  channels:
    oncall:
      mail:
        to: [oncall@example.org]
        sender: cron@example.org
        smtp: {host: smtp.example.org, user: alerts, password: {secret: {env: SHOP_SMTP_PASSWORD}}}
    team:
      webhook:
        url: https://hooks.example.org/cron
        headers: {Authorization: {secret: {env: HOOK_TOKEN}}, X-Team: shop}
  rules: {after: 2, quiet: 30m}
  metrics: {dir: /var/lib/prometheus/node-exporter}
jobs:
  backup:
    script: tasks/hello.py
    schedule: "0 3 * * *"
    timeout: 2h
    alerts:
      ping: {secret: {env: BACKUP_PING_URL}}
      rules: {when: [failure, recovered]}
  queue:
    script: tasks/hello.py
    schedule: "*/5 * * * *"
    timeout: 4m
environments:
  recette:
    inventory: inventories/dev
    alerts: {route: [team]}
  prod:
    inventory: inventories/dev
    alerts:
      channels:
        team:
          mail: {to: [team@example.org], sendmail: /usr/sbin/sendmail}
      rules: {quiet: 2h}
    jobs:
      queue:
        alerts: {route: [oncall], grace: 10m, ping: "https://hc.example.org/ping/queue"}
"""


def _project(tmp_path: Path, text: str = DECLARATION):  # type: ignore[no-untyped-def]
    shutil.copytree(SKELETON, tmp_path, dirs_exist_ok=True)
    (tmp_path / "deployer.yml").write_text(text)
    return load_project(tmp_path / "deployer.yml")


def test_layers_merge_route_rules_and_channels(tmp_path: Path) -> None:
    project = _project(tmp_path)
    recette, prod = project.environment("recette"), project.environment("prod")
    assert [c.name for c in recette.channels] == ["oncall", "team"]
    assert recette.channel("team").kind == "webhook"
    assert prod.channel("team").kind == "mail"  # the environment's channel replaces the top level's of that name
    assert prod.channel("team").mail.sendmail == "/usr/sbin/sendmail"
    assert recette.metrics_dir == prod.metrics_dir == "/var/lib/prometheus/node-exporter"

    backup = {j.id: j for j in recette.jobs}["backup"].alerts
    assert backup.route == ("team",)  # the environment's route
    assert backup.rules.when == ("failure", "recovered")  # the job's, key by key over the top level's
    assert (backup.rules.after, backup.rules.quiet) == (2, 1800)
    assert backup.ping == Secret(env="BACKUP_PING_URL")

    queue = {j.id: j for j in prod.jobs}["queue"].alerts
    assert queue.route == ("oncall",)
    assert queue.rules.when == ALERT_EVENTS
    assert (queue.rules.after, queue.rules.quiet) == (2, 7200)  # prod's quiet over the top level's
    assert queue.grace == 600
    assert queue.ping == "https://hc.example.org/ping/queue"
    assert {j.id: j for j in prod.jobs}["backup"].alerts.route == ("oncall", "team")  # default: every channel


def test_secrets_stay_references_and_are_listed_with_where_they_are(tmp_path: Path) -> None:
    project = _project(tmp_path)
    recette = project.environment("recette")
    backup = {j.id: j for j in recette.jobs}["backup"]
    found = alert_secrets(recette.channels, backup.alerts)
    assert [(s, path, what) for s, path, what in found] == [
        (Secret(env="HOOK_TOKEN"), ("alerts", "channels", "team", "webhook", "headers", "Authorization"),
         "header Authorization of alert channel 'team'"),
        (Secret(env="BACKUP_PING_URL"), ("jobs", "backup", "alerts", "ping"), "ping URL"),
    ]
    assert recette.channel("team").webhook.headers == (
        ("Authorization", Secret(env="HOOK_TOKEN")), ("X-Team", "shop"))


def test_no_alerts_declared_means_none_active(tmp_path: Path) -> None:
    project = _project(tmp_path, "project: demo\njobs:\n  hello:\n    script: tasks/hello.py\n    schedule: '@daily'\n"
                                 "environments:\n  dev:\n    inventory: inventories/dev\n")
    job = project.environment("dev").jobs[0]
    assert not job.alerts.active and project.environment("dev").channels == ()


def test_grace_is_derived_from_timeout_and_the_longest_gap(tmp_path: Path) -> None:
    project = _project(tmp_path)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    jobs = {j.id: j for j in project.environment("recette").jobs}
    assert grace_seconds(jobs["backup"], now) == 7200 + CRON_SLACK  # timeout shorter than a day
    assert grace_seconds(jobs["queue"], now) == 240 + CRON_SLACK
    prod_queue = {j.id: j for j in project.environment("prod").jobs}["queue"]
    assert grace_seconds(prod_queue, now) == 600  # declared
    assert longest_gap("0 9 * * 1-5", now) == 3 * 86400  # Friday to Monday, not a day
    assert longest_gap("@reboot", now) is None


APPRISE = """\
project: shop
alerts:
  channels:
    chat:
      apprise:
        urls:
          - {secret: {env: SLACK_URL}}
          - ntfy://ntfy.example.org/shop-cron
jobs:
  backup:
    script: tasks/hello.py
    schedule: "0 3 * * *"
environments:
  prod:
    inventory: inventories/dev
"""


def test_an_apprise_channel_keeps_every_url_secret_where_the_file_is_shown(tmp_path: Path) -> None:
    import json

    from deployer.core.alertconfig import render_alerts

    project = _project(tmp_path, APPRISE)
    prod = project.environment("prod")
    backup = prod.jobs[0]
    assert prod.channel("chat").kind == "apprise"
    assert [(s, path) for s, path, _ in alert_secrets(prod.channels, backup.alerts)] == [
        (Secret(env="SLACK_URL"), ("alerts", "channels", "chat", "apprise", "urls", 0))]
    slack = "slack://T1/B2/s3cretT0ken/#ops"
    rendered, problems = render_alerts(backup, prod, project, {"SLACK_URL": slack}, frozenset())
    assert problems == [] and rendered is not None
    channel = json.loads(rendered.text)["channels"][0]
    assert channel == {"name": "chat", "type": "apprise", "urls": [slack, "ntfy://ntfy.example.org/shop-cron"],
                       "program": "/usr/bin/apprise"}
    # a plain URL is a service's address and token as much as a declared secret is
    assert json.loads(rendered.public)["channels"][0]["urls"] == ["<secret>", "<secret>"]
    assert rendered.secrets == {slack, "ntfy://ntfy.example.org/shop-cron"}
