"""deployer's watchdog: tells of jobs that did not start when they were due. Runs on the target.

Standard library only (plus deployer.remote's own target modules). Installed as
``<release>/watchdog``, its own bundled file, only in a release with a job whose alerts tell
``late`` to a channel: the run wrapper (``<release>/run``), which every run of every job
starts, neither carries nor compiles it. The release's crontab block starts it every 5
minutes, as the user the block belongs to (root when root deploys). For each such job of its
release it finds, with the project's cron engine in the target's timezone, the latest fire
``due`` whose grace has passed, and judges it (lateness.judge) from the job's records: the
ledger, the alert state and the running markers. A late job goes through the same incident
state machine as the wrapper's events (alerts.decide: one message per incident and channel,
a channel it did not reach tried again by a later round, a ``recovered`` from the next
successful run), under the state lock the wrapper also takes.

What it found and sent is in ``<home>/state/watchdog.json``; a problem is also one line on
stderr (cron mails it to the crontab's owner) and exit code 1. Never a traceback.

Every file read is hostile input: read without following links, bounded, only ours or
root's, parsed field by field; a job whose records are someone else's is not judged.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deployer.remote import alerts, cronengine, lateness, metrics, runalerts, safefs
from deployer.remote.hostzone import target_timezone

if TYPE_CHECKING:
    from deployer.remote.messages import WatchdogJob, WatchdogRecord

USAGE = "usage: watchdog [--flavour debian|cronie|busybox]\n"
RECORD = "watchdog.json"  # in <home>/state
RECORD_LIMIT = 256 * 1024
SPEC_LIMIT = 64 * 1024
LEDGER_TAIL = 64 * 1024  # the end of the ledger: its last runs
MARKER_LIMIT = 4096
MARKERS_LOOKED_AT = 100
JOBS_LOOKED_AT = 1000
LOCK_WAIT = 10.0  # the wrapper holds the state lock for milliseconds; past this, the next round judges
KILL_GRACE = 10  # as the wrapper's: a run outlives its timeout by this much at most
ERRORS_KEPT = 10
ERROR_CHARS = 300

# safefs is untyped target code: typed names for what is used of it
_open_dir: Callable[..., int] = safefs.open_dir
_open_file: Callable[..., int] = safefs.open_file
_read_bytes: Callable[..., bytes] = safefs.read_bytes
_list_dir: Callable[[str], list[str]] = safefs.list_dir


def _owners() -> set[int]:
    return {0, os.geteuid()}


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(text: object) -> float | None:
    """A record's ``2026-03-01T03:00:00.012Z`` as epoch seconds; None for anything else."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


# ----------------------------------------------------------------------------- what it reads


def activated(home: str, release: str) -> tuple[float | None, str | None]:
    """Since when the release has been the current one: the mtime of ``<home>/current``, the
    link the applier makes anew (rename) once the crontab that runs the release is installed.
    None (and why) when ``current`` does not name this release: then this release is not the
    one deployed and its watchdog judges nothing."""
    try:
        dfd = _open_dir(home)
    except OSError as exc:
        return None, f"{home} cannot be opened: {exc.strerror or exc}"
    try:
        st = os.stat("current", dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) or st.st_uid not in _owners():
            return None, f"{home}/current is not a link of deployer's"
        target = os.readlink("current", dir_fd=dfd)
    except OSError as exc:
        return None, f"{home}/current cannot be read: {exc.strerror or exc}"
    finally:
        os.close(dfd)
    if target.rstrip("/") != "releases/" + os.path.basename(release):
        return None, f"{home}/current names {target}, not this release: nothing judged"
    return st.st_mtime, None


def job_spec(release: str, job_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """What the watchdog needs of ``jobs/<id>.json``: schedule, timeout, state folder, checked."""
    path = os.path.join(release, "jobs", job_id + ".json")
    try:
        spec = _json_object(_read_bytes(path, SPEC_LIMIT, owners=_owners()))
    except OSError as exc:
        return None, f"job spec {path} cannot be read: {exc.strerror or exc}"
    if spec is None:
        return None, f"job spec {path} is not a JSON object"
    schedule, timeout, state_dir = spec.get("schedule"), spec.get("timeout"), spec.get("state_dir")
    if not isinstance(schedule, str) or not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0 \
            or not isinstance(state_dir, str) or not state_dir.startswith("/"):
        return None, f"job spec {path} lacks a schedule, a timeout or an absolute state_dir"
    return {"schedule": schedule, "timeout": timeout, "state_dir": state_dir}, None


def last_ledger_start(state_dir: str) -> tuple[float | None, str | None]:
    """The latest start among the ledger's last lines (any outcome: cron started the job),
    and a problem: a ledger that is not ours or root's is not believed (a forged ``success``
    line must not hide a late job); the job is then judged without it."""
    path = os.path.join(state_dir, "ledger.jsonl")
    try:
        fd = _open_file(path, os.O_RDONLY, owners=_owners())
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"ledger {path} not read ({exc.strerror or exc}); judged without it"
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, LEDGER_TAIL, max(0, size - LEDGER_TAIL))
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if size > LEDGER_TAIL:
        lines = lines[1:]  # cut in the middle
    starts = [_epoch(entry.get("start")) for line in lines if line.strip() and (entry := _json_object(line)) is not None]
    found = [s for s in starts if s is not None]
    return (max(found) if found else None), None


def run_going_on(state_dir: str, timeout: int, now: float) -> bool:
    """Whether a run of the job is going on: a running marker (ours or root's) whose wrapper
    is alive and whose start is recent enough for its timeout not to have ended it (a marker
    left by a killed wrapper, its pid since reused, is not a run)."""
    folder = os.path.join(state_dir, "running")
    for name in sorted(n for n in _list_dir(folder) if n.endswith(".json"))[:MARKERS_LOOKED_AT]:
        try:
            marker = _json_object(_read_bytes(os.path.join(folder, name), MARKER_LIMIT, owners=_owners()))
        except OSError:
            continue
        if marker is None:
            continue
        start, pid = _epoch(marker.get("start")), marker.get("wrapper_pid")
        if start is None or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            continue
        if start < now - timeout - KILL_GRACE - lateness.CRON_SLACK:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass  # alive, someone else's
        return True
    return False


def _state_dir_ours(state_dir: str) -> str | None:
    """A problem when the job's state folder is not ours or root's (records its user could forge)."""
    try:
        fd = _open_dir(state_dir)
    except OSError as exc:
        return f"state folder {state_dir} cannot be opened: {exc.strerror or exc}"
    try:
        owner = os.fstat(fd).st_uid
    finally:
        os.close(fd)
    if owner not in _owners():
        return f"state folder {state_dir} belongs to uid {owner}: its records are not believed (run deployer apply)"
    return None


# ----------------------------------------------------------------------------- one job


class Watch:
    """One round of the watchdog over one release."""

    def __init__(self, release: str, flavour: str, now: float, host: str, tz: str) -> None:
        self.release, self.flavour, self.now, self.host, self.tz = release, flavour, now, host, tz

    def jobs(self) -> list[str]:
        """The jobs of the release with an alert config (names checked: they become paths).
        Every job of the release, not only those of this line's block: a release installs one
        block (root's crontab when root deploys; else the deploying user's, and plan refuses
        a job of another user), so one line judges each job once."""
        names = _list_dir(os.path.join(self.release, "alerts"))
        ids = sorted(n[:-5] for n in names if n.endswith(".json"))
        return [i for i in ids if i and len(i) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in i)
                and i[0].isalnum()][:JOBS_LOOKED_AT]

    def check(self, job_id: str, since: float) -> WatchdogJob | None:
        """Judge one job and tell of it; None for a job whose alerts do not tell ``late``."""
        loaded, problem = runalerts.load(self.release, job_id)
        if loaded is None:
            return {"grace": None, "due": None, "late": False, "why": "not judged", "errors": [problem]} if problem else None
        config: dict[str, Any] = dict(loaded)  # deployer wrote it, but each field read is checked
        rules = config.get("rules")
        when = rules.get("when") if isinstance(rules, dict) else None
        if not isinstance(when, list) or "late" not in when or not config.get("channels"):
            return None
        report: WatchdogJob = {"grace": None, "due": None, "late": False, "why": "not judged", "errors": []}
        spec, problem = job_spec(self.release, job_id)
        if spec is None:
            report["errors"].append(str(problem))
            return report
        declared = config.get("grace")
        if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool) or declared < 0):
            report["errors"].append(f"alert config of {job_id}: grace {declared!r} is not a number of seconds")
            return report
        try:
            entry = cronengine.parse(spec["schedule"], self.flavour)
        except ValueError as exc:
            report["errors"].append(f"schedule {spec['schedule']!r} of {job_id}: {exc}")
            return report
        grace = lateness.grace_seconds(declared, entry, spec["timeout"], datetime.fromtimestamp(self.now, UTC))
        report["grace"] = grace
        verdict = lateness.judge(entry, self.tz, self.now, grace, since, None, False)
        if verdict.late:  # a fire is due: only then are the job's records read
            verdict = self._judge_records(job_id, {**config, "grace": grace}, spec, entry, grace, since, report)
        report["due"], report["late"], report["why"] = _iso(verdict.due), verdict.late, verdict.why
        return report

    def _judge_records(self, job_id: str, config: dict[str, Any], spec: dict[str, Any], entry: cronengine.Entry,
                       grace: int, since: float, report: WatchdogJob) -> lateness.Verdict:
        state_dir = spec["state_dir"]
        problem = _state_dir_ours(state_dir)
        if problem:
            report["errors"].append(problem)
            return lateness.Verdict(None, False, "not judged")
        state_path = os.path.join(state_dir, runalerts.STATE_FILE)
        with alerts.state_lock(state_dir, LOCK_WAIT) as problem:
            if problem:  # the next round judges it
                report["errors"].append(problem)
                return lateness.Verdict(None, False, "not judged")
            state, problem = alerts.read_state(state_path)
            if problem:  # a forged or broken state is not believed: judged afresh
                report["errors"].append(problem)
            from_ledger, problem = last_ledger_start(state_dir)
            if problem:
                report["errors"].append(problem)
            starts = [s for s in (from_ledger, state.get("last_run")) if isinstance(s, (int, float)) and not isinstance(s, bool)]
            running = run_going_on(state_dir, spec["timeout"], self.now)
            verdict = lateness.judge(entry, self.tz, self.now, grace, since, max(starts) if starts else None, running)
            if not verdict.late:
                return verdict
            event = {"outcome": "late", "due": verdict.due, "at": self.now, "host": self.host}
            decision = alerts.decide(config, state, event)
            if decision.state != state:  # an incident already told changes nothing: no rewrite every round
                problem = alerts.write_state(state_path, decision.state)
                if problem:
                    report["errors"].append(problem)
        if decision.messages:  # sent once the lock is released: a slow channel never holds up a run
            deliveries = alerts.send(config, decision.messages, self.host)
            report["sent"] = {"at": _iso(self.now) or "", "event": "late", "due": _iso(verdict.due),
                              "deliveries": [d.record() for d in deliveries]}  # type: ignore[misc]  # the same fields
            report["errors"] += [f"{d.event} to {d.channel} failed: {d.error}" for d in deliveries if not d.ok]
            self._note(state_dir, state_path, deliveries, decision.messages, report)
        return verdict


    def _note(self, state_dir: str, state_path: str, deliveries: list[alerts.Delivery], messages: list[alerts.Message],
              report: WatchdogJob) -> None:
        """What became of the late message, in the job's alert state as the wrapper keeps it:
        the channels that took it are told the incident (the others are tried again by a
        later round), and status and verify show the last alert and a channel that failed."""
        with alerts.state_lock(state_dir, LOCK_WAIT) as problem:
            if problem:
                report["errors"].append(problem)
                return
            state, problem = alerts.read_state(state_path)
            if problem:
                report["errors"].append(problem)
                return
            alerts.note_deliveries(state, deliveries, self.now, messages)
            problem = alerts.write_state(state_path, state)
            if problem:
                report["errors"].append(problem)


# ----------------------------------------------------------------------------- the round


def _previous_record(path: str) -> dict[str, Any]:
    try:
        found = _json_object(_read_bytes(path, RECORD_LIMIT, owners=_owners()))
    except OSError:
        return {}
    return found if found is not None and found.get("version") == 1 else {}


def _record(home: str, record: WatchdogRecord) -> str | None:
    """``<home>/state/watchdog.json``: this round, and per job the last message it sent (kept
    from earlier rounds, so an operator sees the last late message long after it went)."""
    path = os.path.join(home, "state", RECORD)
    before = _previous_record(path).get("jobs")
    for job_id, job in record["jobs"].items():
        old = before.get(job_id) if isinstance(before, dict) else None
        if "sent" not in job and isinstance(old, dict) and isinstance(old.get("sent"), dict):
            job["sent"] = old["sent"]
    try:
        metrics.write_atomic(path, (json.dumps(record, indent=1, sort_keys=True) + "\n").encode(), 0o640)
    except OSError as exc:
        return f"{path} cannot be written: {exc.strerror or exc}"
    return None


def main(argv: list[str], script: str) -> int:
    flavour = cronengine.DEFAULT_FLAVOUR
    if argv[:1] == ["--flavour"] and len(argv) == 2 and argv[1] in cronengine.FLAVOURS:
        flavour = argv[1]
    elif argv:
        sys.stderr.write(USAGE)
        return 2
    release = os.path.dirname(os.path.realpath(script))
    home = os.path.dirname(os.path.dirname(release))
    now = time.time()
    watch = Watch(release, flavour, now, socket.gethostname(), target_timezone())
    since, problem = activated(home, release)
    record: WatchdogRecord = {"version": 1, "checked_at": _iso(now) or "", "release": os.path.basename(release),
                              "since": _iso(since), "problem": problem, "jobs": {}}
    if since is not None:
        for job_id in watch.jobs():
            report = watch.check(job_id, since)
            if report is not None:
                report["errors"] = [e[:ERROR_CHARS] for e in report["errors"]][:ERRORS_KEPT]
                record["jobs"][job_id] = report
    errors = [f"{job_id}: {e}" for job_id, job in record["jobs"].items() for e in job["errors"]]
    if (problem := _record(home, record)) is not None:
        errors.append(problem)
    for error in errors:
        sys.stderr.write(f"deployer watchdog: {error}\n")
    return 1 if errors else 0


def entry(argv: list[str], script: str) -> int:
    """One round; ``script`` is the release's ``watchdog`` file that was started (it names the release)."""
    try:
        return main(argv, script)
    except Exception as exc:  # noqa: BLE001 - cron mails stderr: one line, never a traceback
        sys.stderr.write(f"deployer watchdog: stopped by an unexpected {type(exc).__name__}: {exc} (a bug of deployer's)\n")
        return 70
