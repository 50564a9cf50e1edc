"""What a job's alerting has done and will do next, for ``status`` and ``verify``. Pure.

In: the job's declared alerts (the release's masked ``alerts/<id>.json``, for the quiet
period) and the alert state the probe read back (messages.AlertState, kept by the run wrapper
in ``state/<job>/alerts.json``). Out: a view for ``--json`` and the table (open incident, last
alert sent, silenced until, consecutive failures, channel errors), and verify's ``alerts``
checks: a channel whose last delivery failed is a warning (the job itself may be fine), an
open incident is said, told or not, with the channels still owed its message (tried again
by the job's next event of its kind, remote/alerts.py ``retry_due``) or given up on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TypedDict

from deployer.core.check import PASS, WARN, Check
from deployer.core.desired import JobSpec
from deployer.core.health import ago
from deployer.remote import alerts
from deployer.remote.messages import AlertState, JobRuntime

DEFAULT_QUIET = 3600  # remote/alerts.py decide()'s, for a config without one


class IncidentView(TypedDict):
    event: str  # failure | timeout | crash | late
    since: str  # UTC, ISO 8601
    told: bool  # a channel took its message
    told_to: list[str]  # the channels that took it (empty for a state kept before they were)
    owed: list[str]  # the channels its last try did not reach
    tries: int  # times its message was sent
    next_try: str | None  # owed: from when the job's next event of its kind tries them again (None: given up, or now)
    gave_up: bool  # owed, and no try is left (alerts.RETRY_TRIES)


class LastAlertView(TypedDict):
    at: str
    event: str
    channels: list[str]
    failed: list[str]  # of those channels, the ones whose delivery failed


class ChannelError(TypedDict):
    channel: str  # or "ping": the job's healthchecks check
    event: str
    error: str | None
    at: str


class AlertView(TypedDict):
    """One job's alert state on one host, as ``status --json`` and ``verify --json`` give it."""

    incident: IncidentView | None  # the open incident
    last_alert: LastAlertView | None  # the last message sent
    silenced_until: str | None  # a new incident is not told before this (the quiet period); None: it would be now
    consecutive_failures: int
    untold: int  # incidents held by the quiet period since the last one told
    channel_errors: list[ChannelError]  # channels whose last delivery failed


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quiet(job: JobSpec) -> float:
    """The job's declared quiet period (seconds), from the masked alert config it was deployed with."""
    try:
        rules = json.loads(job.alerts_public or "{}").get("rules") or {}
        return float(rules.get("quiet", DEFAULT_QUIET))
    except (ValueError, AttributeError, TypeError):
        return DEFAULT_QUIET


def alert_view(job: JobSpec, info: JobRuntime, now: float) -> AlertView | None:
    """The job's alert state on a host whose clock says ``now``; None for a job without alerts."""
    if job.alerts_public is None:
        return None
    state: AlertState | None = info.get("alerts")
    if state is None:  # no run kept one yet
        return {"incident": None, "last_alert": None, "silenced_until": None, "consecutive_failures": 0, "untold": 0,
                "channel_errors": []}
    incident = state["incident"]
    last = state["last_alert"]
    told = state["last_told"]
    quiet = _quiet(job)
    until = told + quiet if told is not None else None
    view: IncidentView | None = None
    if incident:
        gave_up = bool(incident["owed"]) and incident["tries"] >= alerts.RETRY_TRIES
        retry = alerts.next_try(dict(incident), quiet) if incident["owed"] else None
        view = {"event": incident["event"], "since": iso(incident["opened"]), "told": incident["told"],
                "told_to": incident["told_to"], "owed": incident["owed"], "tries": incident["tries"],
                "next_try": iso(retry) if retry is not None and retry > now else None, "gave_up": gave_up}
    return {
        "incident": view,
        "last_alert": {"at": iso(last["at"]), "event": last["event"], "channels": last["channels"], "failed": last["failed"]}
        if last else None,
        "silenced_until": iso(until) if until is not None and until > now else None,
        "consecutive_failures": state["consecutive_failures"],
        "untold": state["untold"],
        "channel_errors": [{"channel": name, "event": d["event"], "error": d["error"], "at": iso(d["at"])}
                           for name, d in sorted(state["deliveries"].items()) if not d["ok"]],
    }


def _when(text: str, now: datetime) -> str:
    return ago(datetime.fromisoformat(text), now)


def _until(text: str, now: datetime) -> str:
    return f"{text[11:16]} UTC, in {ago(now, datetime.fromisoformat(text)).removesuffix(' ago')}"


def _last_alert(last: LastAlertView, now: datetime) -> str:
    to = ", ".join(last["channels"]) or "no channel"
    failed = f" (failed: {', '.join(last['failed'])})" if last["failed"] else ""
    return f"{last['event']} {_when(last['at'], now)} to {to}{failed}"


def alert_checks(job: JobSpec, info: JobRuntime, now: float) -> list[Check]:
    """verify's ``alerts`` lines of one job with alerts ([] without): the open incident (told or
    held by the quiet period), each channel whose last delivery failed, else a pass that says
    what was told last."""
    view = alert_view(job, info, now)
    if view is None:
        return []
    at = datetime.fromtimestamp(now, UTC)
    out: list[Check] = []
    incident = view["incident"]
    if incident:
        if incident["told"]:
            last = view["last_alert"]
            how = f"told: {_last_alert(last, at)}" if last and last["event"] == incident["event"] else "told"
            how += f"; {_owed(incident, at)}" if incident["owed"] else ""
        elif incident["tries"]:
            how = (f"not told: its message reached no channel ({incident['tries']} "
                   f"tr{'y' if incident['tries'] == 1 else 'ies'}); {_owed(incident, at)}")
        else:
            quiet = view["silenced_until"]
            how = f"not told: the quiet period holds it until {_until(quiet, at)}" if quiet else "not told yet"
        failed = view["consecutive_failures"]
        out.append(Check("alerts", WARN, f"open incident: {incident['event']} since {_when(incident['since'], at)} "
                                         f"({failed} failed run{'' if failed == 1 else 's'} in a row), {how}", job.id))
    for error in view["channel_errors"]:
        out.append(Check("alerts", WARN, f"the last delivery to {error['channel']} failed {_when(error['at'], at)} "
                                         f"({error['event']}): {error['error'] or 'unknown error'}", job.id))
    if not out:
        last = view["last_alert"]
        said = f"last alert: {_last_alert(last, at)}" if last else "nothing told yet"
        quiet = f"; quiet until {_until(view['silenced_until'], at)}" if view["silenced_until"] else ""
        out.append(Check("alerts", PASS, f"no open incident; {said}{quiet}", job.id))
    return out


def _owed(incident: IncidentView, now: datetime) -> str:
    """Which channels are still owed the incident's message, and when they are tried again."""
    owed = ", ".join(incident["owed"])
    if incident["gave_up"]:
        return f"{owed} never got it: given up after {incident['tries']} tries"
    by = "the watchdog's next round" if incident["event"] == "late" else "the job's next failing run"
    after = f" after {_until(incident['next_try'], now)}" if incident["next_try"] else ""
    return f"owed to {owed}: tried again by {by}{after}"


def alert_summary(view: AlertView | None, now: datetime) -> str:
    """``status``'s alerts cell: the incident or ``ok``, the last alert, the quiet period, failed channels."""
    if view is None:
        return "-"
    incident = view["incident"]
    parts = [f"{incident['event']} since {_when(incident['since'], now)}, {'told' if incident['told'] else 'not told'}"
             if incident else "ok"]
    if incident and incident["owed"]:
        parts.append(_owed(incident, now))
    if view["last_alert"]:
        parts.append(f"last {_last_alert(view['last_alert'], now)}")
    if view["silenced_until"]:
        parts.append(f"quiet until {_until(view['silenced_until'], now)}")
    parts += [f"{e['channel']} failed: {e['error'] or '?'}" for e in view["channel_errors"]]
    return "; ".join(parts)
