"""``verify --notify``, the dead-man: what verify found -> incidents -> messages. Pure.

When a host or its cron daemon is down, nothing on it can speak: the run wrapper runs only
when cron starts it, and the on-target watchdog is a cron entry too. ``verify --notify``,
run from a CI schedule or a monitoring host, tells what the target cannot, once per
incident, with one recovery message when it clears. Who owns which incident, so that no
incident is told twice from two places:

- ``unreachable`` (the host, its SSH or its transport cannot be reached) and ``cron-stopped``
  (no cron daemon of the system runs; the message names the jobs already late because of
  it): only verify can see these;
- ``drift``: our block in a crontab is not, byte for byte, the one the live release
  installs (removed, or edited by hand): its jobs are silently not scheduled as deployed,
  and nothing on the target looks. A declaration changed but not applied yet is not drift;
- ``late`` and ``failure`` of one job: the target's wrapper (failures) and watchdog
  (lateness) tell them for every job whose route reaches a channel. A job whose route
  reaches none (``route: []``, e.g. its hosts cannot reach the relay) has nobody on the
  target to tell: verify tells its lateness and its failures (3 failed runs in a row,
  verify's own threshold) to the environment's route, if its ``rules.when`` has them.
  While cron is stopped or our block is missing, a job's lateness is that incident's, not
  one of its own.

An incident's key is (host, kind[, job]) within project/env. Its messages go to the
channels of the environment's route (``alerts.route`` at the top level or in the
environment); each channel is told once, and a channel whose delivery failed is tried
again by the next ``verify --notify`` (unlike the wrapper, which runs once, verify runs
again): the incident is "told" to a channel only when that channel took it. The recovery
goes to the channels that were told. ``rules.quiet`` of the environment bounds flapping
as ``remote/alerts.decide`` does for a job: after a message, a new incident of the same
key is not told for that long, and the next message says how many were not told.
``rules.when`` without ``recovered`` sends no recovery messages.

The state (one JSON object, kept by the caller in the file the user chose)::

    {"version": 1, "environments": {"shop/prod": {"h1 cron-stopped": {
        "incident": {"kind", "host", "job", "opened", "detail", "late", "told": [channels]} | null,
        "recovery": {..., "closed", "to": [channels], "done": [channels]} | null,
        "last_told": epoch | null, "untold": int}}}}
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from deployer.core import crontab
from deployer.core.check import FAIL, Check
from deployer.core.facts import Facts
from deployer.remote.alerts import Message, _iso, _one_line, _span

UNREACHABLE = "unreachable"
CRON_STOPPED = "cron-stopped"
DRIFT = "drift"
LATE = "late"
FAILURE = "failure"
RECOVERED = "recovered"
HOST_KINDS = (UNREACHABLE, CRON_STOPPED, DRIFT)
STATE_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """Something wrong on a host that verify --notify owns."""

    host: str
    kind: str
    detail: str
    job: str | None = None
    late: tuple[str, ...] = ()  # cron-stopped, drift: the jobs already late because of it

    @property
    def key(self) -> str:
        return incident_key(self.host, self.kind, self.job)


@dataclass(frozen=True)
class HostReport:
    """What verify made of one host, as far as notifying goes. ``examined``: the kinds whose
    absence this run could see (an unreachable host says nothing of its cron)."""

    host: str
    findings: tuple[Finding, ...]
    examined: frozenset[str]


@dataclass(frozen=True)
class Outgoing:
    """One message to send now, to these channels, for the incident of ``key``."""

    key: str
    message: Message
    channels: tuple[str, ...]


@dataclass
class Step:
    outgoing: list[Outgoing] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def incident_key(host: str, kind: str, job: str | None = None) -> str:
    return f"{host} {kind}" + (f" {job}" if job else "")


def empty_state() -> dict[str, Any]:
    return {"version": STATE_VERSION, "environments": {}}


def is_state(data: object) -> bool:
    """Whether ``data`` has the shape of a state this version wrote (a hand-edited or foreign
    file is not used: the caller starts afresh and says so)."""
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION or not isinstance(data.get("environments"), dict):
        return False
    for keys in data["environments"].values():
        if not isinstance(keys, dict):
            return False
        for record in keys.values():
            if not isinstance(record, dict) or not _record_ok(record):
                return False
    return True


def _record_ok(record: Mapping[str, Any]) -> bool:
    for part, lists in (("incident", ("told", "late")), ("recovery", ("to", "done", "late"))):
        value = record.get(part)
        if value is None:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str) or not isinstance(value.get("host"), str):
            return False
        if not _time(value.get("opened")) or not isinstance(value.get("job"), (str, type(None))):
            return False
        if any(not isinstance(value.get(name), list) or not all(isinstance(x, str) for x in value[name]) for name in lists):
            return False
    last = record.get("last_told")
    return (last is None or _time(last)) and isinstance(record.get("untold", 0), int)


def _time(value: object) -> bool:
    # JSON's parser takes NaN and Infinity: no time to subtract from now
    return isinstance(value, (int, float)) and math.isfinite(value)


# ----------------------------------------------------------------------------- findings


def host_report(host: str, *, unreachable: bool, error: str | None, checks: Sequence[Check], facts: Facts | None,
                project: str, env: str, unalerted: Mapping[str, tuple[str, ...]],
                clean: Callable[[str], str] = str) -> HostReport:
    """The findings of one host. ``unalerted``: job id -> the events ("late", "failure") verify
    tells for it (jobs whose route reaches no channel: the target tells nobody of them).
    ``clean`` masks secrets in the texts that go out."""
    if unreachable:
        return HostReport(host, (Finding(host, UNREACHABLE, clean(error or "cannot be reached")),), frozenset({UNREACHABLE}))
    if facts is None:  # reached, but the probe failed there: nothing is known of its cron or crontab
        return HostReport(host, (), frozenset({UNREACHABLE}))
    failing = [c for c in checks if c.status == FAIL]
    late = tuple(sorted({c.job for c in failing if c.name == "freshness" and c.job}))
    found: list[Finding] = []
    if not facts.cron_running:
        detail = next((c.detail for c in failing if c.name == "cron-daemon"), "no cron daemon is running")
        found.append(Finding(host, CRON_STOPPED, clean(detail), late=late))
    found += [Finding(host, DRIFT, clean(text), late=late) for text in _drift(facts, project, env)][:1]
    explained = bool(found)  # a job late because cron or our block is gone is that incident's
    examined = {UNREACHABLE, CRON_STOPPED, DRIFT}
    for job, events in sorted(unalerted.items()):
        examined |= {f"{kind} {job}" for kind in (LATE, FAILURE)}
        for check in failing:
            if check.job != job:
                continue
            if check.name == "freshness" and LATE in events and not explained:
                found.append(Finding(host, LATE, clean(check.detail), job))
            elif check.name == "success" and FAILURE in events:
                found.append(Finding(host, FAILURE, clean(check.detail), job))
    return HostReport(host, tuple(found), frozenset(examined))


def _drift(facts: Facts, project: str, env: str) -> list[str]:
    """Each crontab whose block of ours is not the one the live release installs."""
    if facts.current is None:
        return []  # nothing deployed: nothing can have drifted
    out = []
    for user, block in sorted((facts.release_blocks.get(facts.current) or {}).items()):
        seen = facts.crontabs.get(user)
        if seen is None or seen.error:
            continue  # not read: nothing to say of it
        try:
            now = crontab.block_of(seen.text, project, env)
        except crontab.CrontabConflict as exc:
            out.append(f"the crontab of {user}: {exc}")
            continue
        if now is None:
            out.append(f"the crontab of {user} no longer holds deployer's block of release {facts.current}: "
                       "its jobs are not scheduled (deployer apply puts it back)")
        elif now != block:
            out.append(f"the crontab of {user} holds deployer's block changed by hand, not as release "
                       f"{facts.current} installed it (deployer plan shows the edit, apply restores it)")
    return out


def _examined(report: HostReport, kind: str, job: str | None) -> bool:
    return kind in report.examined if job is None else f"{kind} {job}" in report.examined


# ----------------------------------------------------------------------------- the incidents


def step(state: Mapping[str, Any], project: str, env: str, reports: Iterable[HostReport], channels: Sequence[str],
         rules: Mapping[str, Any], now: float) -> Step:
    """The messages this run calls for and the state once they are all delivered; ``record``
    then keeps what was really delivered. Keys of hosts not in ``reports`` (``--limit``) and
    kinds a report did not examine stay as they were."""
    new = copy.deepcopy(dict(state)) if is_state(state) else empty_state()
    keys: dict[str, Any] = new["environments"].setdefault(f"{project}/{env}", {})
    when = set(rules.get("when", (RECOVERED,)))
    quiet = float(rules.get("quiet", 3600))
    out = Step(state=new)
    for report in reports:
        found = {f.key: f for f in report.findings}
        for key, finding in found.items():
            record = keys.setdefault(key, {"incident": None, "recovery": None, "last_told": None, "untold": 0})
            _open(record, finding, now)
            message = _incident_message(project, env, record, channels, quiet, now)
            if message is not None:
                out.outgoing.append(Outgoing(key, *message))
        for key, record in list(keys.items()):
            part = record.get("incident") or record.get("recovery")
            if key in found or part is None or part["host"] != report.host or not _examined(report, part["kind"], part.get("job")):
                continue
            _close(record, now, RECOVERED in when)
            if record.get("recovery") is not None:
                recovery = _recovery_message(project, env, record, channels, now)
                if recovery is not None:
                    out.outgoing.append(Outgoing(key, *recovery))
    for key, record in list(keys.items()):
        idle = record.get("incident") is None and record.get("recovery") is None and not record.get("untold")
        if idle and (record.get("last_told") is None or now - float(record["last_told"]) >= quiet):
            del keys[key]  # nothing left to remember: no incident, no recovery to tell, no quiet period
    return out


def _open(record: dict[str, Any], finding: Finding, now: float) -> None:
    incident = record.get("incident")
    if incident is None and record.get("recovery") is not None:
        # Back before its recovery reached everyone: the same incident, still known to the channels told.
        # A channel that already heard of the recovery is told again that it is back.
        back = record["recovery"]
        incident = {"opened": back["opened"], "told": [c for c in back["to"] if c not in back["done"]], "counted": False}
        record["recovery"] = None
    if incident is None:
        incident = {"opened": now, "told": [], "counted": False}
    incident.update({"kind": finding.kind, "host": finding.host, "job": finding.job, "detail": finding.detail,
                     "late": list(finding.late)})
    record["incident"] = incident


def _incident_message(project: str, env: str, record: dict[str, Any], channels: Sequence[str], quiet: float,
                      now: float) -> tuple[Message, tuple[str, ...]] | None:
    incident = record["incident"]
    pending = tuple(c for c in channels if c not in incident["told"])
    if not pending:
        return None
    if not incident["told"]:  # a new incident: the quiet period applies (a channel retried is not one)
        last = record.get("last_told")
        if last is not None and now - float(last) < quiet:
            if not incident.get("counted"):
                incident["counted"] = True
                record["untold"] = int(record.get("untold") or 0) + 1
            return None
    others = int(record.get("untold") or 0) - (1 if incident.get("counted") and not incident["told"] else 0)
    return message(project, env, incident["kind"], incident, now, untold=max(0, others)), pending


def _close(record: dict[str, Any], now: float, recover: bool) -> None:
    incident = record.get("incident")
    if incident is None:
        return
    record["incident"] = None
    if incident["told"] and recover:
        record["recovery"] = {**incident, "closed": now, "to": list(incident["told"]), "done": []}


def _recovery_message(project: str, env: str, record: dict[str, Any], channels: Sequence[str],
                      now: float) -> tuple[Message, tuple[str, ...]] | None:
    recovery = record["recovery"]
    pending = tuple(c for c in recovery["to"] if c not in recovery["done"] and c in channels)
    if not pending:
        record["recovery"] = None  # the channels told are no longer on the route: nobody to tell
        return None
    return message(project, env, RECOVERED, recovery, now), pending


def record(state: dict[str, Any], project: str, env: str, sent: Sequence[tuple[Outgoing, Sequence[tuple[str, bool]]]],
           now: float) -> dict[str, Any]:
    """The state after the deliveries: (message, [(channel, ok)]). A channel that failed is not
    told: the next run tries it again."""
    keys = state["environments"].setdefault(f"{project}/{env}", {})
    for outgoing, results in sent:
        entry = keys.get(outgoing.key)
        took = [channel for channel, ok in results if ok]
        if entry is None or not took:
            continue
        if outgoing.message.event == RECOVERED:
            recovery = entry.get("recovery")
            if recovery is not None:
                recovery["done"] = sorted({*recovery["done"], *took})
                if set(recovery["to"]) <= set(recovery["done"]):
                    entry["recovery"] = None
            continue
        incident = entry.get("incident")
        if incident is None:
            continue
        if not incident["told"]:  # its first telling: the quiet period starts, the untold are said
            entry["last_told"] = now
            entry["untold"] = 0
        incident["told"] = sorted({*incident["told"], *took})
    return state


# ----------------------------------------------------------------------------- the messages


def message(project: str, env: str, kind: str, incident: Mapping[str, Any], now: float, untold: int = 0) -> Message:
    """A message shaped like the wrapper's (remote/alerts.py): the same subject prefix, text
    layout and webhook body fields, plus ``incident``, ``detail``, ``late_jobs`` and
    ``source``; a host's incident has ``job`` null."""
    host, job = str(incident["host"]), incident.get("job")
    late = [str(j) for j in incident.get("late") or []]
    of = incident["kind"]
    subject = _one_line(f"[{project}/{env}] " + _what(kind, of, host, job, late, now - float(incident["opened"])))
    detail = _one_line(str(incident.get("detail") or ""))
    body: dict[str, Any] = {
        "version": 1, "event": kind, "project": project, "env": env, "job": job, "host": host,
        "run_id": None, "outcome": None, "exit_code": None, "started_at": None,
        "ended_at": _iso(now) if kind == RECOVERED else None, "duration_seconds": None, "consecutive_failures": None,
        "incident_started_at": _iso(float(incident["opened"])), "untold_incidents": untold, "output_tail": [],
        "text": subject, "incident": of, "detail": detail, "late_jobs": late, "source": "verify",
    }
    lines = [subject, "", f"Job:     {job} (project {project}, environment {env})" if job else
             f"Project: {project}, environment {env}", f"Host:    {host}", f"Event:   {kind}" + (f" ({of})" if kind == RECOVERED else ""),
             f"Found:   {detail}"]
    if late:
        lines.append(f"Late:    {', '.join(late)}")
    lines.append(f"Incident since: {_iso(float(incident['opened']))}")
    if untold:
        lines.append(f"Incidents not told during the quiet period before this one: {untold}")
    lines += ["", "Found by deployer verify --notify (the host cannot say it itself)." if kind != RECOVERED else
              "Found by deployer verify --notify."]
    return Message(kind, subject, "\n".join(lines) + "\n", body)


def _what(kind: str, of: str, host: str, job: str | None, late: list[str], lasted: float) -> str:
    late_text = f": {', '.join(late)} late" if late else ""
    if kind == RECOVERED:
        return {
            UNREACHABLE: f"{host} can be reached again (down {_span(lasted)})",
            CRON_STOPPED: f"cron runs again on {host} (stopped {_span(lasted)})",
            DRIFT: f"the crontab block on {host} is as deployed again (after {_span(lasted)})",
            LATE: f"{job} runs again on {host} (late {_span(lasted)})",
            FAILURE: f"{job} recovered on {host} (failing {_span(lasted)})",
        }.get(of, f"{of} on {host} is over")
    return {
        UNREACHABLE: f"{host} cannot be reached",
        CRON_STOPPED: f"no cron daemon runs on {host}{late_text or ': no job will run'}",
        DRIFT: f"the crontab block on {host} was removed or edited by hand{late_text}",
        LATE: f"{job} is late on {host}",
        FAILURE: f"{job} keeps failing on {host}",
    }[kind]
