"""The loaded declaration: plain frozen data, what every later stage works from.

Kept apart from ``load`` (which needs pydantic) so that a command whose declaration is
unchanged can use the cached result without importing the validation machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deployer.config.yamlsource import KeyPath, SourceMap
from deployer.errors import InvalidInput, Problem
from deployer.remote.messages import Concurrency

DEFAULT_HOME = "{{ data_root }}/deployer/{{ project }}-{{ env }}"
DEFAULT_LOG_DIR = "{{ deploy_home }}/logs"
DEFAULT_LOCK_DIR = "{{ deploy_home }}/locks"
DEFAULT_LOG_MODE = 0o750
DEFAULT_LOCK_MODE = 0o755
DEFAULT_TIMEOUT = 3600
DEFAULT_KEEP_RELEASES = 5


@dataclass(frozen=True)
class Secret:
    """A reference to a secret, resolved on the controller at deploy time."""

    env: str | None = None
    file: str | None = None
    key: str | None = None

    def describe(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"file {self.file}" + (f" (key {self.key})" if self.key else "")


@dataclass(frozen=True)
class RetentionPolicy:
    """History kept per job on the target (ledger lines, rotated logs)."""

    runs: int = 10000
    days: int = 400
    log_size: int = 10 * 1024 * 1024
    log_files: int = 5
    run_logs: int = 0  # per-run log files kept; 0: none


ALERT_EVENTS = ("failure", "timeout", "crash", "late", "recovered")
DEFAULT_QUIET = 3600  # after a message, no new incident of the job is told for an hour


@dataclass(frozen=True)
class SmtpRelay:
    host: str
    port: int = 587
    starttls: bool = True
    user: str | None = None
    password: Secret | None = None
    ca_file: str | None = None  # on the target


@dataclass(frozen=True)
class MailChannel:
    to: tuple[str, ...]
    sender: str | None = None
    smtp: SmtpRelay | None = None
    sendmail: str | None = None  # the target's program, absolute


@dataclass(frozen=True)
class WebhookChannel:
    url: str
    headers: tuple[tuple[str, str | Secret], ...] = ()


@dataclass(frozen=True)
class AppriseChannel:
    urls: tuple[str | Secret, ...]
    program: str = "/usr/bin/apprise"  # where the message is sent, absolute


@dataclass(frozen=True)
class AlertChannel:
    """A named place alerts go (``alerts.channels.<name>``), as one environment has it."""

    name: str
    mail: MailChannel | None = None
    webhook: WebhookChannel | None = None
    apprise: AppriseChannel | None = None
    origin: KeyPath = field(default=(), compare=False, hash=False)

    @property
    def kind(self) -> str:
        return "mail" if self.mail is not None else "webhook" if self.webhook is not None else "apprise"


@dataclass(frozen=True)
class HealthchecksSite:
    """A healthchecks project that holds one check per job and host (``alerts.healthchecks``)."""

    api: str  # the site: the Management API is <api>/api/v3/
    api_key: Secret
    ping_url: str  # the ping endpoint: <ping_url>/<ping_key>/<slug>
    ping_key: Secret
    origin: KeyPath = field(default=(), compare=False, hash=False)


@dataclass(frozen=True)
class AlertRules:
    when: tuple[str, ...] = ALERT_EVENTS
    after: int = 1  # consecutive failed runs before an incident opens
    quiet: int = DEFAULT_QUIET  # seconds


@dataclass(frozen=True)
class JobAlerts:
    """Who hears of one job, and when. ``grace`` None: derived from the schedule and timeout
    (core/alerting.py)."""

    route: tuple[str, ...] = ()
    rules: AlertRules = AlertRules()
    grace: int | None = None
    ping: str | Secret | None = None
    ping_origin: KeyPath = field(default=(), compare=False, hash=False)

    @property
    def active(self) -> bool:
        return bool(self.route or self.ping is not None)


@dataclass(frozen=True)
class Job:
    """One job as it applies in one environment."""

    id: str
    schedule: str
    description: str = ""
    script: str | None = None  # path relative to the project root
    command: str | None = None
    args: tuple[str, ...] = ()
    run_as: str | None = None  # None: the user deployer connects as
    log_file: str | None = None
    timeout: int = DEFAULT_TIMEOUT
    concurrency: Concurrency = "forbid"
    env: tuple[tuple[str, str | Secret], ...] = ()
    enabled: bool = True
    hosts: tuple[str, ...] | None = None
    workdir: str | None = None
    legacy_locks: tuple[str, ...] = ()
    legacy_scripts: tuple[str, ...] = ()
    previous_ids: tuple[str, ...] = ()
    retention: RetentionPolicy = RetentionPolicy()
    alerts: JobAlerts = JobAlerts()
    # Where each field was set, for errors found later (templates, secrets, inventory).
    origin: dict[str, KeyPath] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Settings:
    """Target-level settings of one environment."""

    home: str = DEFAULT_HOME
    log_dir: str = DEFAULT_LOG_DIR
    log_mode: int | None = None  # None: not declared (DEFAULT_LOG_MODE for a folder deployer creates)
    log_owner: str | None = None
    log_group: str | None = None
    lock_dir: str = DEFAULT_LOCK_DIR
    lock_mode: int | None = None  # None: not declared (DEFAULT_LOCK_MODE)
    keep_releases: int = DEFAULT_KEEP_RELEASES
    python: str = "python3"


@dataclass(frozen=True)
class Variable:
    """A declared template variable (``vars:``), with where it was set."""

    name: str
    value: str | bool
    origin: KeyPath


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    inventory: Path
    inventory_shown: str
    settings: Settings
    jobs: tuple[Job, ...]
    vars: tuple[Variable, ...] = ()
    channels: tuple[AlertChannel, ...] = ()  # alerts.channels, the environment's over the top level's
    metrics_dir: str | None = None  # node_exporter's textfile folder on the targets
    healthchecks: HealthchecksSite | None = None  # apply creates each job's check there
    # The environment's own alerts (top level <- environment, no job's): route and rules of
    # what concerns a host rather than a job (verify --notify's dead-man messages).
    alerts: JobAlerts = JobAlerts()

    def channel(self, name: str) -> AlertChannel:
        return next(c for c in self.channels if c.name == name)


@dataclass(frozen=True)
class Project:
    name: str
    root: Path
    file: str  # as shown to the user
    files: tuple[str, ...]  # extra files pushed beside the scripts (relative to root)
    environments: dict[str, EnvironmentConfig]
    source: SourceMap = field(compare=False)

    def environment(self, name: str) -> EnvironmentConfig:
        if name not in self.environments:
            known = ", ".join(self.environments)
            raise InvalidInput([Problem(f"unknown environment '{name}' (declared: {known})", file=self.file, key_path="environments")])
        return self.environments[name]
