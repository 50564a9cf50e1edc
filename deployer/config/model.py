"""The typed model of ``deployer.yml``.

Validation happens here (types, unknown keys, ranges, names); resolving environments,
scripts and secrets happens in ``load``. Every model forbids unknown keys: a typo such as
``shedule:`` must be an error, not a job that silently runs at the default time.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from deployer.config.chars import LINE_BREAKS, control_character
from deployer.config.schedule import ScheduleError, normalize

# A job id appears in file names, crontab lines and log prefixes: keep it to a safe slug.
# Every pattern is used with fullmatch: Python's `$` also matches before a final newline,
# and "report\n" must not pass for "report".
JOB_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
# The interpreter starts every crontab line of ours: one program, a path or a name.
PROGRAM = re.compile(r"[A-Za-z0-9_.+/-]+")
_DURATION = re.compile(r"(?P<n>[0-9]+)\s*(?P<unit>s|sec|m|min|h|d)?")
_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def parse_duration(value: Any) -> int:
    """``90`` / ``"90s"`` / ``"5m"`` / ``"2h"`` / ``"1d"`` -> seconds (> 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 2h or a number of seconds")
    if isinstance(value, int):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        seconds = int(match.group("n")) * _UNITS[match.group("unit")]
    else:
        raise ValueError(f"'{value}' is not a duration (use e.g. 30s, 5m, 2h, 1d or a number of seconds)")
    if seconds <= 0:
        raise ValueError("must be longer than 0 seconds")
    return seconds


def parse_mode(value: Any) -> int:
    """File modes are written as octal strings ('0750'); a bare YAML int is ambiguous."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} is a number, not a file mode: write it as a quoted octal string such as '0750'")
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value.strip()):
        mode = int(value.strip(), 8)
        if mode > 0o7777:
            raise ValueError(f"'{value}' is not a file mode")
        return mode
    raise ValueError(f"'{value}' is not a file mode: write it as a quoted octal string such as '0750'")


def _one_line(value: str) -> str:
    found = control_character(value)
    if found:
        raise ValueError(f"contains the control character {found}; a name, a path or a program cannot hold one")
    return value


def _no_nul(value: str) -> str:
    # Values that become argv or environment values may hold any character but NUL (which
    # no argv or environment can carry) and lone surrogates (which no UTF-8 can encode).
    if "\x00" in value:
        raise ValueError("cannot contain a NUL byte")
    if any(unicodedata.category(c) == "Cs" for c in value):
        raise ValueError("contains a lone surrogate (an invalid \\u escape), which is not text")
    return value


def _stringish(value: Any) -> Any:
    # YAML turns `- 50` into an int; an argument is a string, and saying so in every
    # declaration would be noise. Booleans stay an error: `yes` meaning True is a trap.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


Duration = Annotated[int, BeforeValidator(parse_duration)]
Mode = Annotated[int, BeforeValidator(parse_mode)]
Arg = Annotated[str, BeforeValidator(_stringish)]
# A string that names something (path, user, program, host): one line, no control character.
Line = Annotated[str, AfterValidator(_one_line)]
# A value that becomes an argv word or an environment value: anything but NUL.
Value = Annotated[str, BeforeValidator(_stringish), AfterValidator(_no_nul)]


class SecretSource(Strict):
    """Where a secret comes from, read on the controller at deploy time."""

    env: Line | None = Field(default=None, description="name of an environment variable on the controller")
    file: Line | None = Field(default=None, description="file holding the value, or a YAML/KEY=VALUE file with `key`")
    key: Line | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("a secret needs exactly one of 'env' or 'file'")
        if self.key is not None and self.file is None:
            raise ValueError("'key' only goes with 'file'")
        return self


class SecretRef(Strict):
    secret: SecretSource


def _env_value_kind(value: Any) -> str:
    return "secret-ref" if isinstance(value, dict) else "plain-value"


# A tagged union, so that a wrong value gets one error from the branch it was meant for
# (the tags contain '-', which no variable name can, so error paths can drop them).
EnvValue = Annotated[
    Annotated[Value, Tag("plain-value")] | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_env_value_kind),
]


_SIZE = re.compile(r"(?P<n>[0-9]+)\s*(?P<unit>[KMG]i?B?|B)?", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """``1048576`` / ``"512K"`` / ``"10M"`` / ``"1G"`` -> bytes (> 0)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and (match := _SIZE.fullmatch(value.strip())):
        unit = (match.group("unit") or "B").upper()[0]
        size = int(match.group("n")) * {"B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[unit]
        if size > 0:
            return size
    raise ValueError(f"'{value}' is not a size (use e.g. 512K, 10M, 1G or a number of bytes)")


Size = Annotated[int, BeforeValidator(parse_size)]


class Retention(Strict):
    """How much history a job keeps on the target, so nothing grows without bound."""

    runs: Annotated[int, Field(ge=1)] | None = None  # ledger lines kept
    days: Annotated[int, Field(ge=1)] | None = None  # ledger lines younger than this kept
    log_size: Size | None = None  # the log is rotated past this size
    log_files: Annotated[int, Field(ge=1, le=100)] | None = None  # rotated logs kept
    # Each run's output also in a file of its own, the last N kept (0: off, the default);
    # `deployer logs ENV JOB --run last|failed|RUN_ID` shows one.
    run_logs: Annotated[int, Field(ge=0, le=10000)] | None = None


class Logs(Strict):
    dir: Line | None = None
    mode: Mode | None = None
    owner: Line | None = None
    group: Line | None = None

    @field_validator("owner", "group")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        if value is not None and not USER_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid user or group name")
        return value


class Locks(Strict):
    dir: Line | None = None
    mode: Mode | None = None


# ----------------------------------------------------------------------------- alerts

ALERT_EVENTS = ("failure", "timeout", "crash", "late", "recovered")
CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# An address that becomes a mail header: one address, no spaces, no display name.
MAIL_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110's token


def _http_url(value: str) -> str:
    # Root sends to it: file://, ftp:// or a bare path would make urllib read or reach
    # something else than a web server.
    if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", value):
        raise ValueError(f"'{value}' is not an http:// or https:// URL")
    return value


def _secret_only(value: Any) -> Any:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        raise ValueError("is a secret: write where deployer reads it, {secret: {env: NAME}} or {secret: {file: PATH}}, "
                         "never the value itself (the declaration is no place for it)")
    return value


HttpUrl = Annotated[str, AfterValidator(_one_line), AfterValidator(_http_url)]
SecretOnly = Annotated[SecretRef, BeforeValidator(_secret_only)]


def _url_kind(value: Any) -> str:
    return "secret-ref" if isinstance(value, dict) else "plain-value"


# A URL that may itself be the secret (a healthchecks ping URL holds its check's key).
UrlValue = Annotated[
    Annotated[HttpUrl, Tag("plain-value")] | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_url_kind),
]


def _header_value(value: str) -> str:
    found = control_character(value)
    if found:
        raise ValueError(f"contains the control character {found}; a header value is one line")
    return value


HeaderValue = Annotated[
    Annotated[Annotated[str, AfterValidator(_header_value)], Tag("plain-value")] | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_env_value_kind),
]


class SmtpRelay(Strict):
    """An SMTP relay the target's wrapper hands its mail to."""

    host: Line
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    starttls: bool = True
    user: Line | None = None
    password: SecretOnly | None = None
    # A CA bundle on the target, for a relay whose certificate a private CA signed.
    ca_file: Line | None = None

    @model_validator(mode="after")
    def _login(self) -> SmtpRelay:
        if (self.user is None) != (self.password is None):
            raise ValueError("'user' and 'password' go together: the relay's login needs both")
        if self.user is not None and not self.starttls:
            raise ValueError("a login without 'starttls: true' would send the password in clear text; "
                             "turn starttls on (the relay must offer it)")
        if self.ca_file is not None and not self.ca_file.startswith("/"):
            raise ValueError(f"ca_file '{self.ca_file}' must be an absolute path on the target")
        return self


class MailChannel(Strict):
    """Mail: through an SMTP relay, or the target's own sendmail."""

    to: list[Line]
    sender: Line | None = None  # default: deployer@<host>
    smtp: SmtpRelay | None = None
    sendmail: Line | None = None  # e.g. /usr/sbin/sendmail

    @field_validator("to")
    @classmethod
    def _to(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one address")
        for address in value:
            if not MAIL_ADDRESS.fullmatch(address):
                raise ValueError(f"'{address}' is not a mail address (one address such as oncall@example.org)")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not MAIL_ADDRESS.fullmatch(value):
            raise ValueError(f"'{value}' is not a mail address (one address such as cron@example.org)")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> MailChannel:
        if (self.smtp is None) == (self.sendmail is None):
            raise ValueError("a mail channel needs exactly one of 'smtp' (a relay: host, port, ...) or 'sendmail' "
                             "(the target's sendmail program, e.g. /usr/sbin/sendmail)")
        if self.sendmail is not None and not self.sendmail.startswith("/"):
            raise ValueError(f"sendmail '{self.sendmail}' must be an absolute path on the target (e.g. /usr/sbin/sendmail)")
        return self


class WebhookChannel(Strict):
    """A JSON POST to a URL (the body is documented in the README)."""

    url: HttpUrl
    headers: dict[str, HeaderValue] | None = None

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name in value or {}:
            if not HEADER_NAME.fullmatch(name) or name.lower() in {"content-type", "content-length", "host"}:
                raise ValueError(f"'{name}' is not a header deployer can set (letters, digits and -; "
                                 "not Content-Type, Content-Length or Host)")
        return value


# An Apprise URL: a scheme (slack, mailto, json, tgram, ...) and what follows, on one line.
APPRISE_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+")


def _apprise_url(value: str) -> str:
    if not APPRISE_URL.fullmatch(value):
        raise ValueError("is not an Apprise URL (scheme://..., one line, e.g. slack://TokenA/TokenB/TokenC/#channel)")
    return value


AppriseUrl = Annotated[
    Annotated[Annotated[str, AfterValidator(_one_line), AfterValidator(_apprise_url)], Tag("plain-value")]
    | Annotated[SecretRef, Tag("secret-ref")],
    Discriminator(_url_kind),
]


class AppriseChannel(Strict):
    """Any service Apprise supports (Slack, Teams, Matrix, Telegram, ntfy, ...), through the
    ``apprise`` program where the message is sent (Debian's ``apprise`` package)."""

    urls: list[AppriseUrl]
    program: Line = "/usr/bin/apprise"

    @field_validator("urls")
    @classmethod
    def _some(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("name at least one Apprise URL")
        return value

    @field_validator("program")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"program '{value}' must be an absolute path on the target (e.g. /usr/bin/apprise)")
        return value


class Channel(Strict):
    mail: MailChannel | None = None
    webhook: WebhookChannel | None = None
    apprise: AppriseChannel | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Channel:
        if sum(kind is not None for kind in (self.mail, self.webhook, self.apprise)) != 1:
            raise ValueError("a channel needs exactly one of 'mail', 'webhook' or 'apprise'")
        return self


class Metrics(Strict):
    """node_exporter's textfile collector folder on the target."""

    dir: Line

    @field_validator("dir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"'{value}' must be an absolute path on the target (e.g. /var/lib/prometheus/node-exporter)")
        return value


_LOOPBACK_HOSTS = re.compile(r"(localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]+)?")


def _key_url(value: str) -> str:
    # The API key travels in a header and the ping key in the URL's path: https only, but for
    # a server on this machine (a self-hosted instance behind a local proxy, the tests).
    _http_url(value)
    scheme, _, rest = value.partition("://")
    host = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if scheme != "https" and not _LOOPBACK_HOSTS.fullmatch(host.rsplit("@", 1)[-1]):
        raise ValueError(f"'{value}' must be an https:// URL (http:// only for a server on the loopback): "
                         "a key goes with every request")
    if re.search(r"[?#]", value):
        raise ValueError(f"'{value}' cannot hold a query or a fragment: deployer adds the paths it calls")
    return value


KeyUrl = Annotated[str, AfterValidator(_one_line), AfterValidator(_key_url)]


class Healthchecks(Strict):
    """A healthchecks.io (or self-hosted) project whose checks apply creates, one per job and host."""

    api: KeyUrl  # the site, e.g. https://healthchecks.io: its Management API is <api>/api/v3/
    api_key: SecretOnly  # the project's read-write API key
    ping_url: KeyUrl  # the ping endpoint, e.g. https://hc-ping.com (self-hosted: <site>/ping)
    ping_key: SecretOnly  # the project's ping key: pings go to <ping_url>/<ping_key>/<slug>


class AlertRules(Strict):
    """When a message goes out, and how often at most."""

    # Which events send a message (`on:` would be YAML's boolean true); `recovered` sends one when an incident that was told ends.
    when: list[Literal["failure", "timeout", "crash", "late", "recovered"]] | None = None
    after: Annotated[int, Field(ge=1, le=10000)] | None = None  # consecutive failed runs before an incident opens
    quiet: Duration | None = None  # after a message, no new incident is told before this has passed


class JobAlerts(Strict):
    """A job's alerts: where they go, when, and its healthchecks ping URL."""

    route: list[Line] | None = None  # channel names; [] for none
    rules: AlertRules | None = None
    grace: Duration | None = None  # late: no start this long after a scheduled time
    ping: UrlValue | None = None  # a healthchecks-compatible check's ping URL


class Alerts(JobAlerts):
    """The ``alerts:`` section at the top and in an environment: channels, plus what jobs inherit."""

    channels: dict[str, Channel] | None = None
    metrics: Metrics | None = None
    healthchecks: Healthchecks | None = None

    @field_validator("ping")
    @classmethod
    def _ping_is_per_job(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("a ping URL belongs to one check, so to one job: set it under jobs.<id>.alerts.ping")
        return value


class JobFields(Strict):
    """Fields of a job; every one optional so that environments can override any of them."""

    description: str | None = None
    script: Line | None = None
    command: str | None = None  # load.py says what a command must be (one program, no shell line)
    args: list[Arg] | None = None
    schedule: str | None = None  # normalized: the canonical text is what reaches the crontab
    run_as: Line | None = None
    log_file: Line | None = None
    timeout: Duration | None = None
    concurrency: Literal["forbid", "allow"] | None = None
    env: dict[str, EnvValue] | None = None
    enabled: bool | None = None
    environments: list[Line] | None = None
    hosts: list[Line] | None = None
    workdir: Line | None = None
    # Lock files of the hand-made setup this job replaces (e.g. /tmp/email_queue.lock):
    # verify reports them when stale, apply removes them when their process is gone.
    legacy_locks: list[Line] | None = None
    # Scripts of the hand-made setup this job replaces (absolute paths): a crontab line that
    # runs one of them is the job's own, which apply --adopt removes.
    legacy_scripts: list[Line] | None = None
    # Ids this job had before a rename: its run history and log move to the new id.
    previous_ids: list[Line] | None = None
    retention: Retention | None = None
    alerts: JobAlerts | None = None

    @field_validator("previous_ids")
    @classmethod
    def _previous_ids(cls, value: list[str] | None) -> list[str] | None:
        for old in value or []:
            if not JOB_ID.fullmatch(old):
                raise ValueError(f"'{old}' is not a valid job id (lowercase letters, digits, '-' and '_')")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None:  # only an explicit `schedule:` with nothing after it gets here
            raise ValueError("is empty; write a cron schedule such as '*/5 * * * *' or an alias such as @daily")
        try:
            return normalize(value)
        except ScheduleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, value: str | None) -> str | None:
        if value is not None and not USER_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid user name")
        return value

    @field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        # The description becomes a comment line in the crontab: one line only, and nothing
        # that any reader of the crontab (cron, Python's splitlines, a terminal) takes for more.
        if value is None:
            return value
        if any(c in LINE_BREAKS for c in value):
            raise ValueError("must be a single line (it becomes a comment in the crontab)")
        found = control_character(value)
        if found:
            raise ValueError(f"contains the control character {found}; it becomes a comment in the crontab: write plain text")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: list[str] | None) -> list[str] | None:
        for arg in value or []:
            if "\x00" in arg:
                raise ValueError("an argument cannot contain a NUL byte")
            _no_nul(arg)
        return value


class Defaults(Strict):
    """Values every job and target starts from."""

    home: Line | None = None
    run_as: Line | None = None
    timeout: Duration | None = None
    concurrency: Literal["forbid", "allow"] | None = None
    env: dict[str, EnvValue] | None = None
    logs: Logs | None = None
    locks: Locks | None = None
    keep_releases: Annotated[int, Field(ge=1, le=100)] | None = None
    python: Line | None = None
    retention: Retention | None = None

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, value: str | None) -> str | None:
        if value is not None and not USER_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid user name")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        # It starts every crontab line of ours, as written: anything but one program would
        # be crontab text outside any job (a newline and a schedule, a second command...).
        if value is not None and not PROGRAM.fullmatch(value):
            raise ValueError(f"'{value}' is not one program: write the interpreter's name or path "
                             "(python3, /usr/bin/python3.11), without arguments or spaces")
        return value


def _var_value_kind(value: Any) -> str:
    return "var-boolean" if isinstance(value, bool) else "var-text"


# Tagged like EnvValue, so a bad value gets the one error of the branch it was meant for.
VarValue = Annotated[Annotated[Value, Tag("var-text")] | Annotated[bool, Tag("var-boolean")], Discriminator(_var_value_kind)]


class Environment(Strict):
    inventory: Line
    vars: dict[str, VarValue] | None = None
    defaults: Defaults | None = None
    jobs: dict[str, JobFields] | None = None
    alerts: Alerts | None = None


class Declaration(Strict):
    """The whole of ``deployer.yml`` as written (before environments are applied)."""

    project: str
    vars: dict[str, VarValue] = {}
    defaults: Defaults = Defaults()
    files: list[Line] = []
    jobs: dict[str, JobFields]
    environments: dict[str, Environment]
    alerts: Alerts | None = None

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not ENVIRONMENT_NAME.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid project name (lowercase letters, digits, - and _)")
        return value

    @field_validator("environments")
    @classmethod
    def _some_environment(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        if not value:
            raise ValueError("declare at least one environment")
        return value
