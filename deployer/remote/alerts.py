"""Telling people about a job's runs: incidents, messages, channels. Runs on the target.

Standard library only (plus deployer.remote's own target modules), like the run wrapper
that calls it. Two halves:

- ``decide(config, state, event)``: the incident state machine, a pure function. Given the
  job's alert config, its alert state before (None: never ran) and what just happened (a
  run's outcome, or ``late`` from the watchdog), it returns the messages to send and the
  state after. One message per incident and channel, opened after ``after`` failed runs in
  a row; at most one new incident told per ``quiet`` period (the next message counts those
  untold); one ``recovered`` message, to the channels that were told, when it ends. Which
  channels took a message is known only once it is sent: ``note_deliveries`` records it (a
  second short turn under the state lock), and a channel still owed the message is tried
  again by a later event of the same kind (``retry_wait``, at most ``RETRY_TRIES`` tries).
- ``send``, ``ping``: the channels. SMTP (STARTTLS, login, a CA file), the target's
  sendmail, a webhook (JSON POST), Apprise's program (any service it knows, its URLs on a
  pipe), healthchecks-compatible pings (``/start`` and
  ``/<exit status>`` with ``?rid=``). Each attempt runs under a hard deadline (a thread
  joined with a timeout: a server that answers one byte a second cannot hold the run), with
  a small retry budget inside it. A dead channel gives back a ``Delivery`` whose ``error``
  says why; nothing here raises into the caller. Error texts never hold a URL (a ping URL
  is its check's secret) nor a password.

The config, one JSON object per job (the release carries it, root's, 0600)::

    {"project": "shop", "env": "prod", "job": "backup",
     "rules": {"when": ["failure", "timeout", "crash", "late", "recovered"], "after": 1, "quiet": 3600},
     "grace": 7320, "timeout": 10, "retries": 2,
     "channels": [
        {"name": "oncall", "type": "mail", "to": ["oncall@example.org"], "sender": null,
         "smtp": {"host": "smtp.example.org", "port": 587, "starttls": true, "user": "u", "password": "...",
                  "ca_file": null}},
        {"name": "box", "type": "mail", "to": ["..."], "sendmail": "/usr/sbin/sendmail"},
        {"name": "team", "type": "webhook", "url": "https://...", "headers": {"Authorization": "..."}}],
     "ping": "https://hc-ping.com/<uuid>" or null,
     "metrics_dir": "/var/lib/prometheus/node-exporter" or null}

An event: ``{"outcome": "success" | "failure" | "timeout" | "crashed" | "skipped-locked" | "late",
"at": end time (epoch seconds), "host", "run_id", "exit_code", "start", "duration",
"output_tail": [lines], "due": the missed fire time (late only)}``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import stat
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployer.remote import metrics, safefs

if TYPE_CHECKING:
    import urllib.request
    from email.message import EmailMessage

# smtplib, ssl, email and urllib.request are imported where a message or ping is sent: they
# cost a run about 50 ms to import, and the wrapper bundles this module for every job, also
# for the jobs (and runs) that send nothing.

EVENTS = ("failure", "timeout", "crash", "late", "recovered")
DEFAULT_TIMEOUT = 10.0  # seconds a channel may take, all its attempts included
DEFAULT_RETRIES = 2  # attempts after the first, inside that time
STATE_LIMIT = 64 * 1024  # an alert state file is a few hundred bytes
STATE_LOCK = ".alerts.lock"  # beside the state, in the job's state folder (root's when root deploys)
LOCK_WAIT = 5.0  # seconds one waits for the other's read-modify-write, which takes milliseconds
# A channel that did not take an incident's message is tried again by the job's next event of
# the same kind (a failing run for a run's incident, the watchdog's round for late), no sooner
# than RETRY_FIRST after the first try, the wait doubling after each try but never longer than
# the job's quiet period (an owed message waits no longer than a new incident would), at most
# RETRY_TRIES tries in all (then given up: the incident's ``tries`` says so). A dead relay
# costs a run its channel budget once per wait, not at every minute's run.
RETRY_FIRST = 300.0
RETRY_TRIES = 10
RUN_KINDS = ("failure", "timeout", "crash")
TAIL_LINES = 20
TAIL_CHARS = 4000
_OUTCOME_EVENT = {"failure": "failure", "timeout": "timeout", "crashed": "crash"}

# safefs is untyped target code: typed names for what is used of it
_read_bytes: Callable[..., bytes] = safefs.read_bytes
_open_dir: Callable[..., int] = safefs.open_dir
_open_file: Callable[..., int] = safefs.open_file
_flock_within: Callable[..., bool] = safefs.flock_within
_split: Callable[[str], tuple[str, str]] = safefs.split
_writable_by_others: Callable[[os.stat_result], bool] = safefs.writable_by_others
_Unsafe: Callable[[str, str], OSError] = safefs.Unsafe


@dataclass(frozen=True)
class Message:
    """One thing to tell the channels of the job's route."""

    event: str  # failure | timeout | crash | late | recovered
    subject: str
    text: str
    body: dict[str, Any]  # the webhook's JSON
    channels: tuple[str, ...] | None = None  # to these channels only (None: every channel of the config)
    opened: float | None = None  # the incident it tells of (its ``opened``), for note_deliveries


@dataclass(frozen=True)
class Delivery:
    """What became of one message (or ping) on one channel."""

    channel: str
    event: str
    ok: bool
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    def record(self) -> dict[str, Any]:
        """For the ledger line."""
        return {"channel": self.channel, "event": self.event, "ok": self.ok, "error": self.error,
                "attempts": self.attempts, "seconds": round(self.seconds, 3)}


@dataclass
class Decision:
    messages: list[Message] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- the state machine


def initial_state() -> dict[str, Any]:
    """A job's alert state before its first run. A state file written before a key existed
    reads as this with the file's keys on top: the missing ones take these values."""
    return {"version": 1, "consecutive_failures": 0, "incident": None, "last_told": None, "untold": 0,
            "last_success": None, "last_run": None, "last_exit_code": None, "last_duration": None,
            "last_alert": None, "deliveries": {}}


DELIVERIES_KEPT = 32  # channels whose last delivery the state keeps (a job routes to a few)


def note_deliveries(state: dict[str, Any], deliveries: Sequence[Delivery], at: float,
                    messages: Sequence[Message] = ()) -> None:
    """Keep in ``state`` what became of the messages sent: the channels that took an
    incident's message (``messages``: the decision's) are told it, if that incident is still
    the open one (a run may have closed it meanwhile); its first delivery starts the quiet
    period. And what ``status`` and ``verify`` show of the job's alerting: the last message
    sent (``last_alert``: when, which event, to which channels, which of them failed) and
    each channel's last delivery (``deliveries``: the ping's too), so a channel that failed
    stays said until a delivery to it works again."""
    for message in messages:
        _note_told(state, message, [d for d in deliveries if d.event == message.event], at)
    sent = [d for d in deliveries if not d.event.startswith("ping-")]
    if sent:
        event = sent[-1].event
        last = [d for d in sent if d.event == event]
        state["last_alert"] = {"at": at, "event": event, "channels": sorted({d.channel for d in last}),
                               "failed": sorted({d.channel for d in last if not d.ok})}
    kept = dict(state.get("deliveries") or {})
    for d in deliveries:
        kept.pop(d.channel, None)  # re-inserted: the newest last
        kept[d.channel] = {"at": at, "event": d.event, "ok": d.ok, "error": d.error}
    state["deliveries"] = dict(list(kept.items())[-DELIVERIES_KEPT:])


def _note_told(state: dict[str, Any], message: Message, deliveries: Sequence[Delivery], at: float) -> None:
    incident = state.get("incident")
    if message.event == "recovered" or message.opened is None or not isinstance(incident, dict) \
            or incident.get("opened") != message.opened or incident.get("event") != message.event:
        return  # a recovery, or an incident closed (and maybe another opened) since it was decided
    took = {d.channel for d in deliveries if d.ok}
    told_to = _told_to(incident, None)
    if took and not told_to:  # its first delivery: the quiet period starts, the untold were said
        state["last_told"] = at
        state["untold"] = 0
    incident["told_to"] = sorted({*told_to, *took})
    incident["owed"] = sorted({*(incident.get("owed") or []), *(d.channel for d in deliveries if not d.ok)} - took
                              - set(incident["told_to"]))
    incident["told"] = bool(incident["told_to"])


def _told_to(incident: Mapping[str, Any], names: Sequence[str] | None) -> list[str]:
    """The channels that took the incident's message. A state written before channels were
    kept says only ``told``: then it went to every channel (``names``), as that version sent it."""
    told_to = incident.get("told_to")
    if isinstance(told_to, list):
        return [str(c) for c in told_to]
    return list(names or []) if incident.get("told") else []


def retry_wait(tries: int, quiet: float) -> float:
    """Seconds from an incident's last try to the next one, after ``tries`` tries."""
    return min(quiet, RETRY_FIRST * float(2 ** max(0, tries - 1)))


def next_try(incident: Mapping[str, Any], quiet: float) -> float | None:
    """From when a channel owed the incident's message may be tried again (None: given up, or
    never tried). A tenth of the wait early is on time: cron's events come seconds before or
    after the minute, and a run's end with its length."""
    tries = int(incident.get("tries") or 0)
    last = incident.get("last_try")
    if tries >= RETRY_TRIES or last is None:
        return None
    return float(last) + 0.9 * retry_wait(tries, quiet)


def retry_due(incident: Mapping[str, Any], quiet: float, now: float) -> bool:
    """Whether a channel owed the incident's message may be tried again at ``now``."""
    if int(incident.get("tries") or 0) >= RETRY_TRIES:
        return False
    due = next_try(incident, quiet)
    return due is None or now >= due


def _names(config: Mapping[str, Any]) -> list[str]:
    return [str(c.get("name", "?")) for c in config.get("channels") or []]


def decide(config: Mapping[str, Any], state: Mapping[str, Any] | None, event: Mapping[str, Any]) -> Decision:
    """The messages ``event`` calls for and the job's alert state after it. Pure: the state
    says an incident was told to a channel only once ``note_deliveries`` saw it delivered."""
    st: dict[str, Any] = initial_state()
    st.update(copy.deepcopy(dict(state or {})))
    rules = config.get("rules") or {}
    when = set(rules.get("when", EVENTS))
    after = max(1, int(rules.get("after", 1)))
    quiet = float(rules.get("quiet", 3600))
    names = _names(config)
    outcome = event.get("outcome")
    now = _at(event)
    decision = Decision(state=st)
    if outcome == "skipped-locked":
        return decision  # the previous run still holds the lock: nothing new about the job's health
    if outcome != "late":
        st["last_run"] = float(event["start"]) if event.get("start") is not None else now
        st["last_exit_code"] = event.get("exit_code")
        st["last_duration"] = event.get("duration")
    if outcome == "success":
        st["consecutive_failures"] = 0
        st["last_success"] = now
        incident = st["incident"]
        st["incident"] = None
        told_to = [c for c in _told_to(incident, names) if c in names] if incident else []
        if incident and told_to and "recovered" in when:  # only to the channels that heard of it
            decision.messages.append(_message(config, "recovered", event, st, incident, to=tuple(told_to)))
        return decision
    if outcome == "late":
        kind = "late"
    elif outcome in _OUTCOME_EVENT:
        kind = _OUTCOME_EVENT[outcome]
        st["consecutive_failures"] = int(st["consecutive_failures"]) + 1
    else:
        return decision  # an outcome this version does not know: recorded by the wrapper, no alert
    incident = st["incident"]
    if incident is None:
        opens = kind in when and (kind == "late" or st["consecutive_failures"] >= after)
        if not opens:
            return decision
        incident = {"opened": now, "event": kind, "told": False, "counted": False, "run_id": event.get("run_id"),
                    "told_to": [], "owed": [], "tries": 0, "last_try": None,
                    "failures_at_open": st["consecutive_failures"], "due": event.get("due")}
        st["incident"] = incident
    told_to = _told_to(incident, names)
    tries = int(incident.get("tries") if incident.get("tries") is not None else (1 if told_to else 0))
    owed = [c for c in names if c not in told_to]
    if tries:  # tried before: a channel still owed it is tried again, bounded, by an event like the one that opened it
        same_kind = (kind == "late") == (incident.get("event") == "late")
        if not owed or not same_kind or not retry_due({**incident, "tries": tries}, quiet, now):
            return decision
        # a first delivery says the incidents the quiet period held, as the first try would have
        others = int(st["untold"]) - (1 if incident.get("counted") else 0) if not told_to else 0
        decision.messages.append(_message(config, str(incident["event"]), event, st, incident, untold=max(0, others),
                                          to=tuple(owed), attempt=tries + 1))
        incident.update({"told_to": told_to, "owed": owed, "tries": tries + 1, "last_try": now})
        return decision
    last_told = st.get("last_told")
    if last_told is not None and now - float(last_told) < quiet:
        if not incident.get("counted"):
            incident["counted"] = True
            st["untold"] = int(st["untold"]) + 1
        return decision
    if not owed:
        return decision  # no channel on the route: nobody to tell
    others = int(st["untold"]) - (1 if incident.get("counted") else 0)
    decision.messages.append(_message(config, kind, event, st, incident, untold=max(0, others), to=tuple(owed)))
    incident.update({"told_to": told_to, "owed": owed, "tries": 1, "last_try": now})
    return decision


def _at(event: Mapping[str, Any]) -> float:
    at = event.get("at")
    return float(at) if at is not None else time.time()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    return " ".join(p for p in parts if p)


def _message(config: Mapping[str, Any], kind: str, event: Mapping[str, Any], st: Mapping[str, Any],
             incident: Mapping[str, Any], untold: int = 0, to: tuple[str, ...] | None = None,
             attempt: int = 1) -> Message:
    """The message of ``kind`` about ``incident``, for the channels ``to``; ``attempt`` > 1: the
    same incident told again to channels its earlier tries did not reach."""
    project, env, job = config.get("project", "?"), config.get("env", "?"), config.get("job", "?")
    hostname = str(event.get("host") or "?")  # the target's own name
    host = str(config.get("host") or hostname)  # the inventory's, as status, verify and verify --notify name it
    code = event.get("exit_code")
    now = _at(event)
    due = event.get("due", incident.get("due"))
    what = {
        "failure": f"failed on {host} (exit {code})",
        "timeout": f"timed out on {host} (killed after {event.get('duration')}s)",
        "crash": f"crashed on {host} (its run ended without a record)",
        "late": f"is late on {host} (due {_iso(due)}, no start since)",
        "recovered": f"recovered on {host} (down {_span(now - float(incident.get('opened', now)))})",
    }[kind]
    at_open = incident.get("failures_at_open")
    failures = int(st.get("consecutive_failures") or 0)
    since = f"{max(0, failures - int(at_open))} failed run{'' if failures - int(at_open) == 1 else 's'} since" \
        if at_open is not None else f"{failures} failed runs in a row"
    if attempt > 1:
        what += f" (repeated: incident since {_iso(incident.get('opened'))}" + (f", {since})" if kind != "late" else ")")
    subject = _one_line(f"[{project}/{env}] {job} {what}")
    tail = [_printable(line) for line in (event.get("output_tail") or [])][-TAIL_LINES:]
    body: dict[str, Any] = {
        "version": 1, "event": kind, "project": project, "env": env, "job": job, "host": host, "hostname": hostname,
        "run_id": event.get("run_id"), "outcome": event.get("outcome"), "exit_code": code,
        "started_at": _iso(event.get("start")), "ended_at": _iso(now) if kind != "late" else None,
        "duration_seconds": event.get("duration"), "consecutive_failures": st.get("consecutive_failures"),
        "incident_started_at": _iso(incident.get("opened")), "untold_incidents": untold,
        "output_tail": tail, "text": subject, "attempt": attempt,
    }
    lines = [subject, "", f"Job:     {job} (project {project}, environment {env})", f"Host:    {host}" + (f" (hostname {hostname})" if hostname != host else ""),
             f"Event:   {kind}"]
    if kind != "late":
        lines += [f"Outcome: {event.get('outcome')}, exit code {code}",
                  f"Run:     {event.get('run_id')}, started {_iso(event.get('start'))}, {event.get('duration')}s"]
    else:
        lines += [f"Due:     {_iso(due)}, grace {config.get('grace')}s"]
    lines += [f"Consecutive failed runs: {st.get('consecutive_failures')}",
              f"Incident since: {_iso(incident.get('opened'))}"]
    if attempt > 1:
        lines += [f"Repeated: this incident opened {_iso(incident.get('opened'))} and its message did not reach "
                  f"this channel then (try {attempt} of at most {RETRY_TRIES}); {since}."]
    if untold:
        lines.append(f"Incidents not told during the quiet period before this one: {untold}")
    if tail:
        lines += ["", "Last lines of output:", *("  " + line for line in tail)]
    opened = float(incident["opened"]) if incident.get("opened") is not None else None
    return Message(kind, subject, "\n".join(lines) + "\n", body, to, opened)


def _one_line(text: str) -> str:
    return " ".join(_printable(text).split())


def _printable(text: str) -> str:
    """What the job printed is its user's: no control character reaches a mail or a terminal."""
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                   for c in text)


def tail(data: bytes, secrets: Sequence[str] = (), lines: int = TAIL_LINES) -> list[str]:
    """The last lines of a run's output, bounded, with every secret value masked."""
    text = data[-TAIL_CHARS * 4:].decode("utf-8", errors="replace")
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        for part in [secret, *secret.splitlines()]:
            if len(part) >= 4:
                text = text.replace(part, "***")
    kept = text.splitlines()[-lines:]
    return [line[-TAIL_CHARS // lines:] for line in kept]


# ----------------------------------------------------------------------------- state on disk


def read_state(path: str) -> tuple[dict[str, Any], str | None]:
    """The job's alert state (root's file, read without following links) and a problem, if any:
    a missing file is a first run; an unreadable or garbled one starts afresh and says so."""
    try:
        data = _read_bytes(path, STATE_LIMIT + 1, owners={0, os.geteuid()})
    except FileNotFoundError:
        return initial_state(), None
    except OSError as exc:
        return initial_state(), f"alert state {path} cannot be read: {exc.strerror or exc}; starting afresh"
    try:
        loaded = json.loads(data.decode("utf-8")) if len(data) <= STATE_LIMIT else None
    except ValueError:
        loaded = None
    if not isinstance(loaded, dict) or loaded.get("version") != 1:
        return initial_state(), f"alert state {path} is not an alert state; starting afresh"
    state = initial_state()
    state.update(loaded)
    return state, None


@contextlib.contextmanager
def state_lock(state_dir: str, wait: float = LOCK_WAIT) -> Iterator[str | None]:
    """Hold the job's alert state lock (flock on ``STATE_LOCK``, opened without following a
    link, ours or root's only) around one read-modify-write of the state: the run wrapper and
    the watchdog both write it. Yields None when held, else the problem: the caller chooses to
    go on without it (a run) or to leave the job for the next round (the watchdog). Both hold
    it only to read, decide and write, never while a message is sent."""
    try:
        fd = _open_file(os.path.join(state_dir, STATE_LOCK), os.O_RDWR | os.O_CREAT, 0o600, owners={0, os.geteuid()})
    except OSError as exc:
        yield f"alert state lock in {state_dir} cannot be opened: {exc.strerror or exc}"
        return
    try:
        try:
            held = _flock_within(fd, wait, 0.02)
        except OSError:
            held = False
        if not held:
            yield f"alert state lock in {state_dir} not had within {wait:.0f}s"
            return
        yield None
    finally:
        os.close(fd)  # drops the flock


def write_state(path: str, state: Mapping[str, Any]) -> str | None:
    """Write the state atomically (0600); the problem as text, never an exception."""
    try:
        metrics.write_atomic(path, (json.dumps(state, sort_keys=True) + "\n").encode(), 0o600)
    except OSError as exc:
        return f"alert state {path} cannot be written: {exc.strerror or exc}"
    return None


# ----------------------------------------------------------------------------- channels


class _Refused(Exception):
    """A failure that another attempt would not fix (a 4xx, a refused login)."""


def _bounded(fn: Callable[[float], None], seconds: float) -> str | None:
    """Run ``fn(seconds)`` in a thread and wait at most ``seconds``: None when it returned,
    else the error. A thread still running is abandoned (daemon: it dies with the process)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn(seconds)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - every failure of a channel becomes an error value, in its own thread
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    error = outcome[0] if outcome else TimeoutError()
    if isinstance(error, (TimeoutError, subprocess.TimeoutExpired)):
        # the deadline passed here, or a socket's or a program's own timeout (the same seconds)
        # fired first: one cause, said one way
        raise TimeoutError(f"no answer within {seconds:.1f}s")
    if error is not None:
        raise error
    return None


def _attempts(name: str, event: str, config: Mapping[str, Any], once: Callable[[float], None]) -> Delivery:
    budget = float(config.get("timeout") or DEFAULT_TIMEOUT)
    retries = int(config.get("retries", DEFAULT_RETRIES))
    started = time.monotonic()
    deadline = started + budget
    attempts, error = 0, "not tried"
    while True:
        attempts += 1
        left = deadline - time.monotonic()
        try:
            _bounded(once, left)
            return Delivery(name, event, True, None, attempts, time.monotonic() - started)
        except _Refused as exc:
            return Delivery(name, event, False, str(exc), attempts, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - a dead channel is a value, never an exception
            error = _describe(exc)
        pause = 0.5 * attempts
        if attempts > retries or deadline - time.monotonic() < pause + 0.5:
            return Delivery(name, event, False, error, attempts, time.monotonic() - started)
        time.sleep(pause)


def _describe(exc: BaseException) -> str:
    import smtplib
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return _describe(reason) if isinstance(reason, BaseException) else str(reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (TimeoutError, smtplib.SMTPException)) else f"{type(exc).__name__}: {text}"


_OPENERS: list[urllib.request.OpenerDirector] = []


def _opener() -> urllib.request.OpenerDirector:
    import urllib.request

    class NoRedirects(urllib.request.HTTPRedirectHandler):
        # A redirect could lead root's request to ftp:// or elsewhere: the declared URL is the one used.
        def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                             newurl: str) -> urllib.request.Request | None:
            raise _Refused(f"HTTP {code}: the server redirects; deployer does not follow redirects (declare the final URL)")

    if not _OPENERS:
        _OPENERS.append(urllib.request.build_opener(NoRedirects()))
    return _OPENERS[0]


def _post(url: str, data: bytes, headers: Mapping[str, str]) -> Callable[[float], None]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise _Refused("not an http or https URL")

    def once(seconds: float) -> None:
        import urllib.error
        import urllib.request

        # http(s) only, checked above
        request = urllib.request.Request(url, data=data, method="POST", headers={"User-Agent": "deployer", **headers})  # noqa: S310
        try:
            with _opener().open(request, timeout=max(seconds, 0.1)) as response:
                response.read(64 * 1024)
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise _Refused(f"HTTP {exc.code} {exc.reason}") from None
            raise

    return once


def _mail(channel: Mapping[str, Any], message: Message, host: str) -> Callable[[float], None]:
    import smtplib
    import ssl
    from email import policy
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    # Header lines up to RFC 5322's hard limit (998), not its advised 78: at 78, Python's email
    # folds some subjects right after "Subject:", the whole text on a continuation line, which
    # a reader (Python's own parser too) then shows with a leading space. A subject is one line.
    mail = EmailMessage(policy=policy.default.clone(max_line_length=998))
    mail["From"] = channel.get("sender") or f"deployer@{host}"
    mail["To"] = ", ".join(channel["to"])
    mail["Subject"] = message.subject
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain=host or None)
    mail["X-Deployer-Event"] = message.event
    mail.set_content(message.text)
    sendmail = channel.get("sendmail")
    if sendmail:
        return _sendmail(sendmail, mail)
    smtp = channel["smtp"]

    def once(seconds: float) -> None:
        timeout = max(seconds, 0.1)
        context = ssl.create_default_context(cafile=smtp.get("ca_file") or None)
        port = int(smtp.get("port") or 587)
        client: smtplib.SMTP = (smtplib.SMTP_SSL(smtp["host"], port, timeout=timeout, context=context) if port == 465
                                else smtplib.SMTP(smtp["host"], port, timeout=timeout))
        with client:
            client.ehlo()
            if smtp.get("starttls", True) and port != 465:
                client.starttls(context=context)
                client.ehlo()
            if smtp.get("user"):
                try:
                    client.login(smtp["user"], smtp.get("password") or "")
                except smtplib.SMTPAuthenticationError as exc:
                    raise _Refused(f"the relay refused the login ({exc.smtp_code})") from None
            try:
                client.send_message(mail)
            except smtplib.SMTPRecipientsRefused:
                raise _Refused("the relay refused every recipient") from None

    return once


def _sendmail(program: str, mail: EmailMessage) -> Callable[[float], None]:
    def once(seconds: float) -> None:
        trusted_program(program)
        # a program only root can change, checked just above
        done = subprocess.run([program, "-t", "-oi"], input=mail.as_bytes(), capture_output=True,
                              timeout=max(seconds, 0.1), check=False, cwd="/", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OSError(0, f"{program} exited {done.returncode}" + (f": {_one_line(said[-1])[:200]}" if said else ""))

    return once


_APPRISE_TYPE = {"recovered": "success", "late": "warning"}  # the rest: failure


def _apprise(channel: Mapping[str, Any], message: Message) -> Callable[[float], None]:
    """Apprise's own program, the service URLs on a pipe (``--config /dev/fd/N``): a URL holds
    its service's token, and argv is world-readable in /proc."""
    program = str(channel.get("program") or "/usr/bin/apprise")
    urls = [str(u) for u in channel.get("urls") or []]

    def once(seconds: float) -> None:
        if not os.path.lexists(program):
            raise _Refused(f"{program} is not installed here (Debian: apt-get install apprise)")
        trusted_program(program)
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, "".join(u + "\n" for u in urls).encode())  # a few URLs: far below a pipe's buffer
        finally:
            os.close(write_end)
        try:
            # a program only root can change, checked just above; title and type are not secret
            done = subprocess.run([program, "--config", f"/dev/fd/{read_end}", "--title", message.subject,
                                   "--notification-type", _APPRISE_TYPE.get(message.event, "failure")],
                                  input=message.text.encode(), capture_output=True, timeout=max(seconds, 0.1),
                                  check=False, cwd="/", pass_fds=(read_end,), env=_APPRISE_ENV)
        finally:
            os.close(read_end)
        if done.returncode != 0:
            said = _mask(done.stderr.decode("utf-8", "replace") + done.stdout.decode("utf-8", "replace"), urls)
            last = [line for line in said.strip().splitlines() if line.strip()]
            raise OSError(0, f"apprise exited {done.returncode}" + (f": {_one_line(last[-1])[:200]}" if last else ""))

    return once


# Its own home: no operator's ~/.apprise configuration or plugins are read by root's run.
_APPRISE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent", "LANG": "C.UTF-8"}


def _mask(text: str, secrets: Sequence[str]) -> str:
    """An error text without any URL of the channel (each holds a token), nor a part of one."""
    for secret in sorted(secrets, key=len, reverse=True):
        parts = [secret, *urllib.parse.urlsplit(secret)[1:3], *secret.split("/")]
        for part in sorted({p for p in parts if len(p) >= 4}, key=len, reverse=True):
            text = text.replace(part, "***")
    return text


def trusted_program(path: str) -> None:
    """Refuse (safefs.Unsafe) a program root must not run: one reached through a link that is
    not the system's, or that someone other than root owns or may write. The body of a mail
    holds what the job printed; a planted program would read it as root."""
    folder, name = _split(path)
    dfd = _open_dir(folder)
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        folder_st = os.fstat(dfd)
        if stat.S_ISLNK(st.st_mode):
            # Debian's /usr/sbin/sendmail is often a link (to exim4, ...): root's, in a folder only root writes
            if st.st_uid != 0 or _writable_by_others(folder_st):
                raise _Unsafe(path, "is a link that root did not make; deployer will not run it")
            target = os.readlink(name, dir_fd=dfd)
            trusted_program(target if target.startswith("/") else os.path.join(folder, target))
            return
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022 or _writable_by_others(folder_st):
            raise _Unsafe(path, "is not a program only root can change; deployer will not run it as root")
    finally:
        os.close(dfd)


def send(config: Mapping[str, Any], messages: Sequence[Message], host: str) -> list[Delivery]:
    """Every message to every channel of the config it is for, channels at once, each within
    its time budget. Never raises: a failure is a Delivery with an error."""
    jobs: list[tuple[int, str, str, Callable[[float], None] | str]] = []
    for message in messages:
        for channel in config.get("channels") or []:
            name = str(channel.get("name", "?"))
            if message.channels is not None and name not in message.channels:
                continue
            try:
                if channel.get("type") == "mail":
                    jobs.append((len(jobs), name, message.event, _mail(channel, message, host)))
                elif channel.get("type") == "apprise":
                    jobs.append((len(jobs), name, message.event, _apprise(channel, message)))
                elif channel.get("type") == "webhook":
                    data = json.dumps(message.body, sort_keys=True).encode()
                    headers = {"Content-Type": "application/json", **dict(channel.get("headers") or {})}
                    jobs.append((len(jobs), name, message.event, _post(str(channel["url"]), data, headers)))
                else:
                    jobs.append((len(jobs), name, message.event, f"unknown channel type {channel.get('type')!r}"))
            except Exception as exc:  # noqa: BLE001 - a bad channel config is an error value too
                jobs.append((len(jobs), name, message.event, _describe(exc)))
    return _all_at_once(config, jobs)


def _all_at_once(config: Mapping[str, Any], jobs: Sequence[tuple[int, str, str, Callable[[float], None] | str]]) -> list[Delivery]:
    results: dict[int, Delivery] = {}

    def deliver(i: int, name: str, event: str, once: Callable[[float], None]) -> None:
        results[i] = _attempts(name, event, config, once)

    threads = []
    for i, name, event, once in jobs:
        if isinstance(once, str):
            results[i] = Delivery(name, event, False, once, 0)
            continue
        thread = threading.Thread(target=deliver, args=(i, name, event, once), daemon=True)
        thread.start()
        threads.append(thread)
    budget = float(config.get("timeout") or DEFAULT_TIMEOUT)
    deadline = time.monotonic() + budget + 1
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [results.get(i) or Delivery(name, event, False, f"no answer within {budget:.1f}s", 0, budget)
            for i, name, event, _ in jobs]


# ----------------------------------------------------------------------------- healthchecks pings


def run_uuid(run_id: str) -> str:
    """healthchecks' ``rid`` is a UUID; the ledger's run id is not one: the same id always gives the same UUID."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "deployer-run:" + run_id))


def ping_url(base: str, what: str, run_id: str) -> str:
    """``<base>/<what>?rid=<uuid>``, what being ``start`` or an exit status 0-255."""
    parts = urllib.parse.urlsplit(base)
    query = [*urllib.parse.parse_qsl(parts.query, keep_blank_values=True), ("rid", run_uuid(run_id))]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + what,
                                    urllib.parse.urlencode(query), ""))


def ping(config: Mapping[str, Any], what: str | int, run_id: str, body: bytes = b"") -> Delivery | None:
    """Tell the job's healthchecks-compatible check that a run started (``"start"``) or ended
    (its exit status). None when the job has no ping URL; never raises."""
    base = config.get("ping")
    if not base:
        return None
    if isinstance(what, int):
        what = str(min(max(what, 0), 255))
    event = "ping-" + what
    try:
        once = _post(ping_url(str(base), what, run_id), body[-100_000:], {"Content-Type": "text/plain; charset=utf-8"})
    except Exception as exc:  # noqa: BLE001 - a bad URL is an error value too
        return Delivery("ping", event, False, _describe(exc), 0)
    return _attempts("ping", event, config, once)
