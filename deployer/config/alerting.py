"""The ``alerts:`` section, resolved for one environment and its jobs.

Layers, later winning: the top level's ``alerts:`` <- the environment's ``alerts:`` <- the
job's ``alerts:`` <- the environment's override of the job. Channels are declared at the top
level or in an environment (an environment's channel replaces the top level's of that name);
``route`` names them (default: every channel declared; ``[]``: none); ``rules`` merge key by
key; a ``ping`` URL is one check's, so one job's. Every problem is located (file, key path,
line) like the rest of the declaration's.
"""

from __future__ import annotations

import difflib

from deployer.config import model
from deployer.config.project import (
    ALERT_EVENTS,
    DEFAULT_QUIET,
    AlertChannel,
    AlertRules,
    AppriseChannel,
    HealthchecksSite,
    JobAlerts,
    MailChannel,
    Secret,
    SmtpRelay,
    WebhookChannel,
)
from deployer.config.yamlsource import KeyPath, SourceMap
from deployer.errors import Problem


def _secret(ref: model.SecretRef) -> Secret:
    return Secret(ref.secret.env, ref.secret.file, ref.secret.key)


def _channel(name: str, declared: model.Channel, origin: KeyPath) -> AlertChannel:
    if declared.mail is not None:
        mail = declared.mail
        smtp = None
        if mail.smtp is not None:
            relay = mail.smtp
            smtp = SmtpRelay(relay.host, relay.port, relay.starttls, relay.user,
                             _secret(relay.password) if relay.password is not None else None, relay.ca_file)
        return AlertChannel(name, mail=MailChannel(tuple(mail.to), mail.sender, smtp, mail.sendmail), origin=origin)
    if declared.apprise is not None:
        urls = tuple(_secret(url) if isinstance(url, model.SecretRef) else url for url in declared.apprise.urls)
        return AlertChannel(name, apprise=AppriseChannel(urls, declared.apprise.program), origin=origin)
    hook = declared.webhook
    if hook is None:  # the model's validator allows exactly one of mail, webhook and apprise
        raise ValueError(f"alert channel '{name}' has neither mail, webhook nor apprise")
    headers = tuple((key, _secret(value) if isinstance(value, model.SecretRef) else value)
                    for key, value in sorted((hook.headers or {}).items()))
    return AlertChannel(name, webhook=WebhookChannel(hook.url, headers), origin=origin)


def environment_channels(decl: model.Declaration, env_name: str, env: model.Environment,
                         src: SourceMap) -> tuple[tuple[AlertChannel, ...], str | None, list[Problem]]:
    """The environment's channels and metrics folder, and the problems found in their names."""
    channels: dict[str, AlertChannel] = {}
    problems: list[Problem] = []
    metrics_dir: str | None = None
    layers: list[tuple[KeyPath, model.Alerts | None]] = [(("alerts",), decl.alerts),
                                                          (("environments", env_name, "alerts"), env.alerts)]
    for path, alerts in layers:
        if alerts is None:
            continue
        for name, declared in (alerts.channels or {}).items():
            where = (*path, "channels", name)
            if not model.CHANNEL_NAME.fullmatch(name):
                problems.append(src.problem(where, f"'{name}' is not a valid channel name (lowercase letters, digits, '-' and '_')"))
                continue
            channels[name] = _channel(name, declared, where)
        if alerts.metrics is not None:
            metrics_dir = alerts.metrics.dir
    return tuple(channels.values()), metrics_dir, problems


def environment_healthchecks(decl: model.Declaration, env_name: str, env: model.Environment) -> HealthchecksSite | None:
    """The healthchecks project the environment's checks live in: the environment's, else the top level's."""
    layers: list[tuple[KeyPath, model.Alerts | None]] = [(("environments", env_name, "alerts"), env.alerts),
                                                          (("alerts",), decl.alerts)]
    for path, alerts in layers:
        if alerts is not None and alerts.healthchecks is not None:
            hc = alerts.healthchecks
            return HealthchecksSite(hc.api.rstrip("/"), _secret(hc.api_key), hc.ping_url.rstrip("/"), _secret(hc.ping_key),
                                    origin=(*path, "healthchecks"))
    return None


def job_alerts(decl: model.Declaration, env_name: str, env: model.Environment, job_id: str,
               channels: tuple[AlertChannel, ...], src: SourceMap) -> tuple[JobAlerts, list[Problem]]:
    """One job's alerts in one environment, merged from the four layers."""
    base = decl.jobs[job_id].alerts
    override = (env.jobs or {}).get(job_id)
    layers: list[tuple[KeyPath, model.JobAlerts | None]] = [
        (("alerts",), decl.alerts),
        (("environments", env_name, "alerts"), env.alerts),
        (("jobs", job_id, "alerts"), base),
        (("environments", env_name, "jobs", job_id, "alerts"), override.alerts if override else None),
    ]
    route: tuple[str, ...] | None = None
    on: tuple[str, ...] = ALERT_EVENTS
    after, quiet = 1, DEFAULT_QUIET
    grace: int | None = None
    ping: str | Secret | None = None
    ping_path: KeyPath = ()
    for path, layer in layers:
        if layer is None:
            continue
        if layer.route is not None:
            route = tuple(layer.route)
        if layer.rules is not None:
            rules = layer.rules
            on = tuple(rules.when) if rules.when is not None else on
            after = rules.after if rules.after is not None else after
            quiet = rules.quiet if rules.quiet is not None else quiet
        if layer.grace is not None:
            grace = layer.grace
        if layer.ping is not None:
            ping = _secret(layer.ping) if isinstance(layer.ping, model.SecretRef) else layer.ping
            ping_path = (*path, "ping")
    problems: list[Problem] = []
    known = [c.name for c in channels]
    # Every route written is checked, also one a later layer overrides here: it is a mistake all the same.
    for path, layer in layers:
        if layer is not None and layer.route is not None:
            problems.extend(_check_route(layer.route, (*path, "route"), known, env_name, src))
    if route is None:
        route = tuple(known)
    return JobAlerts(route=route, rules=AlertRules(when=tuple(dict.fromkeys(on)), after=after, quiet=quiet),
                     grace=grace, ping=ping, ping_origin=ping_path), problems


def environment_alerts(decl: model.Declaration, env_name: str, env: model.Environment,
                       channels: tuple[AlertChannel, ...]) -> JobAlerts:
    """The environment's own route and rules (top level <- environment): where what concerns a
    host rather than one job goes (verify --notify). Its routes' names are checked by
    ``job_alerts``, which looks at these layers too."""
    route: tuple[str, ...] | None = None
    on: tuple[str, ...] = ALERT_EVENTS
    after, quiet = 1, DEFAULT_QUIET
    for layer in (decl.alerts, env.alerts):
        if layer is None:
            continue
        if layer.route is not None:
            route = tuple(layer.route)
        if layer.rules is not None:
            on = tuple(layer.rules.when) if layer.rules.when is not None else on
            after = layer.rules.after if layer.rules.after is not None else after
            quiet = layer.rules.quiet if layer.rules.quiet is not None else quiet
    known = [c.name for c in channels]
    chosen = tuple(known) if route is None else tuple(name for name in route if name in known)
    return JobAlerts(route=chosen, rules=AlertRules(when=tuple(dict.fromkeys(on)), after=after, quiet=quiet))


def alert_secrets(channels: tuple[AlertChannel, ...], alerts: JobAlerts) -> list[tuple[Secret, KeyPath, str]]:
    """The secrets one job's alerts need (value, where declared, what for), for resolving at deploy time."""
    found: list[tuple[Secret, KeyPath, str]] = []
    for channel in channels:
        if channel.name not in alerts.route:
            continue
        if channel.mail is not None and channel.mail.smtp is not None and channel.mail.smtp.password is not None:
            found.append((channel.mail.smtp.password, (*channel.origin, "mail", "smtp", "password"),
                          f"password of alert channel '{channel.name}'"))
        if channel.webhook is not None:
            for header, value in channel.webhook.headers:
                if isinstance(value, Secret):
                    found.append((value, (*channel.origin, "webhook", "headers", header),
                                  f"header {header} of alert channel '{channel.name}'"))
        if channel.apprise is not None:
            for i, url in enumerate(channel.apprise.urls):
                if isinstance(url, Secret):
                    found.append((url, (*channel.origin, "apprise", "urls", i), f"URL {i + 1} of alert channel '{channel.name}'"))
    if isinstance(alerts.ping, Secret):
        found.append((alerts.ping, alerts.ping_origin, "ping URL"))
    return found


def _check_route(route: list[str], where: KeyPath, known: list[str], env_name: str, src: SourceMap) -> list[Problem]:
    problems: list[Problem] = []
    for i, name in enumerate(route):
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if not known:
            hint = ": declare it under alerts.channels"
        elif not close:
            hint = f" (declared: {', '.join(known)})"
        problems.append(src.problem((*where, i), f"no alert channel '{name}' in environment {env_name}{hint}"))
    if len(set(route)) != len(route):
        problems.append(src.problem(where, "names a channel twice; each channel gets one message per event"))
    return problems
