"""One job's alert config for the run wrapper (``alerts/<id>.json``). Pure but for reading secrets.

Secrets (SMTP password, webhook headers, ping URL) are resolved here, on the controller, the
way env secrets are; the file is then root's 0600 in the release and its digest is never
published (core/release.py). A job with no route, no ping and no metrics folder gets none,
so a release without alerts keeps its bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from deployer.config.project import AlertChannel, EnvironmentConfig, Job, Project, Secret
from deployer.config.secrets import resolve_secret
from deployer.core.healthchecks import PING_KEY, check_slug, has_check, ping_url
from deployer.errors import Problem
from deployer.remote.messages import AlertChannelSpec, AlertConfigFile, SmtpSpec

MASK = "<secret>"


@dataclass(frozen=True)
class RenderedAlerts:
    """The file's text, the same with every secret masked (what may be published), and the secrets."""

    text: str
    public: str
    secrets: frozenset[str]


class _Resolver:
    def __init__(self, job: Job | None, project: Project, environ: Mapping[str, str], resolve: bool, mask: bool) -> None:
        self.job, self.project, self.environ, self.resolve, self.mask = job, project, environ, resolve, mask
        self.secrets: set[str] = set()
        self.problems: list[Problem] = []

    def value(self, value: str | Secret, where: tuple[str | int, ...], what: str) -> str:
        if not isinstance(value, Secret):
            return value
        if self.mask:
            return MASK
        if not self.resolve:
            return ""
        try:
            found = resolve_secret(value, self.project, self.environ)
        except ValueError as exc:
            whose = f" of job '{self.job.id}'" if self.job is not None else ""
            self.problems.append(self.project.source.problem(where, f"{what}{whose}: {exc}"))
            return ""
        self.secrets.add(found)
        return found


def _channel(channel: AlertChannel, r: _Resolver) -> AlertChannelSpec:
    if channel.mail is not None:
        mail = channel.mail
        smtp: SmtpSpec | None = None
        if mail.smtp is not None:
            relay = mail.smtp
            password = (r.value(relay.password, (*channel.origin, "mail", "smtp", "password"),
                                f"password of alert channel '{channel.name}'") if relay.password is not None else None)
            smtp = {"host": relay.host, "port": relay.port, "starttls": relay.starttls, "user": relay.user,
                    "password": password, "ca_file": relay.ca_file}
        return {"name": channel.name, "type": "mail", "to": list(mail.to), "sender": mail.sender, "smtp": smtp,
                "sendmail": mail.sendmail}
    if channel.apprise is not None:
        # An Apprise URL holds its service's token: every one is resolved and kept secret.
        # A plain one is masked too where the file is shown, and in any output.
        urls = [MASK if r.mask else r.value(url, (*channel.origin, "apprise", "urls", i), f"URL {i + 1} of alert channel '{channel.name}'")
                for i, url in enumerate(channel.apprise.urls)]
        r.secrets.update(u for u in urls if u and u != MASK)
        return {"name": channel.name, "type": "apprise", "urls": urls, "program": channel.apprise.program}
    assert channel.webhook is not None  # a channel is one of the three (config/alerting.py)
    headers = {key: r.value(value, (*channel.origin, "webhook", "headers", key), f"header {key} of alert channel '{channel.name}'")
               for key, value in channel.webhook.headers}
    return {"name": channel.name, "type": "webhook", "url": channel.webhook.url, "headers": headers}


def _ping(job: Job, env: EnvironmentConfig, project: Project, host: str, r: _Resolver) -> str | None:
    """The job's own ping URL, else its managed check's slug URL on this host (core/healthchecks.py)."""
    alerts = job.alerts
    if alerts.ping is not None:
        return r.value(alerts.ping, alerts.ping_origin, "ping URL")
    site = env.healthchecks
    if site is None or not has_check(job, env):
        return None
    where = (*site.origin, "ping_key")
    key = r.value(site.ping_key, where, "healthchecks ping key")
    if key and key != MASK and not PING_KEY.fullmatch(key):
        # It becomes a segment of the URL's path: a '/' or '?' in it would ping somewhere else.
        r.problems.append(project.source.problem(where, f"the healthchecks ping key (from {site.ping_key.describe()}) "
                                                        "is not a ping key: letters, digits, '-' and '_' only "
                                                        "(Project Settings, API Access, in healthchecks)"))
        return None
    return ping_url(site.ping_url, key, check_slug(project.name, env.name, job.id, host)) if key else None


def _config(job: Job, env: EnvironmentConfig, project: Project, host: str, r: _Resolver,
            secret_env: list[str]) -> AlertConfigFile:
    alerts = job.alerts
    ping = _ping(job, env, project, host, r)
    return {
        "project": project.name, "env": env.name, "job": job.id,
        "host": host,  # the inventory's name: messages say it, as status and verify do (not the target's hostname)
        "rules": {"when": list(alerts.rules.when), "after": alerts.rules.after, "quiet": alerts.rules.quiet},
        "grace": alerts.grace,
        "timeout": 10.0, "retries": 2,  # alerts.py's defaults, written down: the wrapper does what the file says
        "channels": [_channel(c, r) for c in env.channels if c.name in alerts.route],
        "ping": ping or None,
        "metrics_dir": env.metrics_dir,
        "secret_env": secret_env,
    }


def has_alerts(job: Job, env: EnvironmentConfig) -> bool:
    """Whether the job needs an alert config: a route with channels, a ping URL or a metrics folder."""
    routed = any(c.name in job.alerts.route for c in env.channels)
    return routed or job.alerts.ping is not None or env.metrics_dir is not None or has_check(job, env)


def render_alerts(job: Job, env: EnvironmentConfig, project: Project, environ: Mapping[str, str],
                  secret_env: frozenset[str], resolve: bool = True, host: str = "") -> tuple[RenderedAlerts | None, list[Problem]]:
    """The job's ``alerts/<id>.json`` on ``host`` (None: the job has no alerts) and the problems found resolving its secrets."""
    if not has_alerts(job, env):
        return None, []
    real = _Resolver(job, project, environ, resolve, mask=False)
    masked = _Resolver(job, project, environ, resolve, mask=True)
    names = sorted(secret_env)
    text = json.dumps(_config(job, env, project, host, real, names), indent=2, sort_keys=True) + "\n"
    public = json.dumps(_config(job, env, project, host, masked, names), indent=2, sort_keys=True) + "\n"
    return RenderedAlerts(text, public, frozenset(s for s in real.secrets if s)), real.problems


def environment_channels(env: EnvironmentConfig, project: Project, environ: Mapping[str, str]
                         ) -> tuple[list[AlertChannelSpec], list[Problem]]:
    """The channels of the environment's own route, secrets resolved here on the controller
    (verify --notify sends from here, not from a target), and the problems resolving them."""
    r = _Resolver(None, project, environ, resolve=True, mask=False)
    channels = [_channel(c, r) for c in env.channels if c.name in env.alerts.route]
    return channels, r.problems
