"""``verify --notify``'s edges, for both fronts (the CLI's ``verify --notify``, the Ansible
``deployer_verify`` task's ``notify``): the incident state file and the sending. The incident logic
itself is pure (core/notify.py); the channels are the wrapper's own (remote/alerts.py
``send``: the same SMTP and webhook code, time budgets and error values).

The state file is the user's choice (``--notify-state``; default
``$XDG_STATE_HOME/deployer/notify.json``, else ``~/.local/state/deployer/notify.json``):
written atomically (a temporary file in the same folder, fsync, rename), 0600, and held
under an flock on ``<file>.lock`` for the whole run, so two ``verify --notify`` at once
(two CI jobs overlapping) cannot both tell one incident: the second waits for the first.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from deployer.core import notify
from deployer.core.alertconfig import environment_channels
from deployer.engine.outcome import UNREACHABLE
from deployer.engine.session import Session
from deployer.errors import InvalidInput, Problem
from deployer.remote import alerts, metrics, runalerts
from deployer.remote.safefs import flock_within


class NotifySent(TypedDict):
    """One message of ``verify --notify`` to one channel (no address, URL or secret)."""

    host: str
    incident: str  # unreachable | cron-stopped | drift | late | failure
    job: str | None
    event: str  # the incident's kind, or recovered
    channel: str
    ok: bool
    error: str | None


class NotifyReport(TypedDict):
    """``verify --notify``: what it sent; a channel that failed is tried again next run."""

    state_file: str
    channels: list[str]  # the environment's route
    sent: list[NotifySent]
    open: list[str]  # incidents still open after this run: "host kind[ job]"
    warnings: list[str]


STATE_LIMIT = 4 * 1024 * 1024  # a state file is a few kilobytes: anything bigger is not ours
LOCK_WAIT = 120.0  # seconds a second verify --notify waits for the first one to finish
SENDING_AT_ONCE = 16  # messages sent at the same time (each to its channels at once)


def default_state_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if base.startswith("/") else Path.home() / ".local" / "state"  # XDG: a relative value is ignored
    return root / "deployer" / "notify.json"


OPTION = "--notify-state"
UNTOUCHED = "; nothing was sent and no host was contacted"  # what every refusal of the state file ends with


def _refuse(path: Path, why: str) -> InvalidInput:
    return InvalidInput([Problem(f"{OPTION} {path}: {why}{UNTOUCHED}")])


@dataclass
class StateFile:
    """The incident state, locked for this run."""

    path: Path
    lock_fd: int
    state: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def save(self, state: dict[str, Any]) -> str | None:
        """Write the state atomically (0600); the problem as text, never an exception."""
        data = (json.dumps(state, sort_keys=True, indent=1) + "\n").encode()
        try:
            metrics.write_atomic(str(self.path), data, 0o600)  # the one atomic write (temp, fsync, rename, folder fsync)
        except OSError as exc:
            return f"the notify state {self.path} could not be written ({exc.strerror or exc}): the next run may tell these incidents again"
        return None


def state_path(given: str | None) -> Path:
    """The state file's path, checked without taking its lock: a path that cannot be a state
    file is a person's error (InvalidInput, exit 2). The Ansible task checks it before its host
    is contacted, then opens it (open_state) only to tell what it found."""
    path = Path(given).expanduser() if given else default_state_path()
    path = path if path.is_absolute() else Path.cwd() / path
    if given is None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    if not path.parent.is_dir():
        raise _refuse(path, f"the folder {path.parent} does not exist (create it, or choose another file)")
    try:
        seen = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        seen = None
    except OSError as exc:
        raise _refuse(path, exc.strerror or str(exc)) from None
    if seen is not None and not stat.S_ISREG(seen.st_mode):
        kind = "a folder" if stat.S_ISDIR(seen.st_mode) else "a link" if stat.S_ISLNK(seen.st_mode) else "not a regular file"
        raise _refuse(path, f"is {kind}; give the path of a file (it is created if missing)")
    return path


@contextlib.contextmanager
def open_state(given: str | None) -> Iterator[StateFile]:
    """The state file, locked; a path that cannot be a state file is a person's error
    (InvalidInput, exit 2) before any host is contacted. A garbled or foreign file starts
    afresh, with a warning."""
    path = state_path(given)
    lock_fd = _lock(path)
    try:
        state, warnings = _read(path)
        handle = StateFile(path, lock_fd, state, warnings)
        if not os.access(path.parent, os.W_OK):
            raise _refuse(path, f"the folder {path.parent} is not writable by this user")
        yield handle
    finally:
        os.close(lock_fd)


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _refuse(path, f"its lock file {lock_path} cannot be opened ({exc.strerror or exc})") from None
    try:
        held = flock_within(fd, LOCK_WAIT, pause=0.2)
    except OSError:
        held = False
    if not held:
        os.close(fd)
        raise _refuse(path, f"another verify --notify is using it (waited {LOCK_WAIT:g}s); try again once it is done")
    return fd


def _read(path: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return notify.empty_state(), []
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _refuse(path, "is not a regular file")
        data = f.read(STATE_LIMIT + 1)
    try:
        loaded = json.loads(data.decode("utf-8")) if len(data) <= STATE_LIMIT else None
    except ValueError:
        loaded = None
    if not notify.is_state(loaded):
        return notify.empty_state(), [f"{path} is not a notify state deployer wrote (damaged, or edited by hand): "
                                      "starting afresh, so open incidents may be told once more"]
    assert isinstance(loaded, dict)
    return loaded, []


# ----------------------------------------------------------------------------- one run


def prepare(session: Session, secrets: set[str], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The channel config of the environment's route, secrets resolved (a secret that cannot
    be read is invalid input, exit 2, before any host is contacted) and added to ``secrets``,
    the values masked in all output."""
    channels, problems = environment_channels(session.env, session.project, environ)
    if problems:
        raise InvalidInput(problems)
    config: dict[str, Any] = {"timeout": alerts.DEFAULT_TIMEOUT, "retries": alerts.DEFAULT_RETRIES, "channels": channels}
    # the channels' own secrets (password, headers, Apprise URLs), as the wrapper masks them, never in any output
    secrets.update(runalerts.secret_values({}, config))  # type: ignore[arg-type]  # the channels part of a config
    return config


def run(session: Session, clean: Callable[[str], str], handle: StateFile, config: dict[str, Any]) -> NotifyReport:
    """Findings -> incidents -> messages sent -> state written; what became of each delivery.
    ``clean`` masks the secrets in the texts that go out. Incidents of hosts not in the session
    stay as they were (``--limit``, or the one host of an Ansible task)."""
    env, project = session.env, session.project
    # Jobs the target tells nobody of (their route reaches no channel): verify tells their lateness and failures.
    named = {c.name for c in env.channels}
    unalerted = {j.id: tuple(e for e in (notify.LATE, notify.FAILURE) if e in j.alerts.rules.when)
                 for j in env.jobs if not set(j.alerts.route) & named}
    reports = [notify.host_report(s.name, unreachable=s.status == UNREACHABLE, error=s.error, checks=s.checks, facts=s.facts,
                                  project=project.name, env=env.name, unalerted=unalerted, clean=clean)
               for s in session.states]
    names = [str(c["name"]) for c in config["channels"]]
    rules = {"when": list(env.alerts.rules.when), "quiet": env.alerts.rules.quiet}
    now = time.time()
    step = notify.step(handle.state, project.name, env.name, reports, names, rules, now)
    here = socket.gethostname()
    sent: list[tuple[notify.Outgoing, list[tuple[str, bool]]]] = []
    report: NotifyReport = {"state_file": str(handle.path), "channels": names, "sent": [], "open": [],
                            "warnings": list(handle.warnings)}

    def deliver(outgoing: notify.Outgoing) -> list[alerts.Delivery]:
        chosen = {**config, "channels": [c for c in config["channels"] if c["name"] in outgoing.channels]}
        return alerts.send(chosen, [outgoing.message], here)

    # Every message at once (send() bounds each channel by its time budget): ten hosts down
    # behind a dead channel cost one budget, not ten.
    with ThreadPoolExecutor(max_workers=SENDING_AT_ONCE) as pool:
        results = list(pool.map(deliver, step.outgoing))
    for outgoing, deliveries in zip(step.outgoing, results, strict=True):
        sent.append((outgoing, [(d.channel, d.ok) for d in deliveries]))
        body = outgoing.message.body
        for d in deliveries:
            item: NotifySent = {"host": str(body["host"]), "incident": str(body["incident"]), "job": body.get("job"),
                                "event": d.event, "channel": d.channel, "ok": d.ok, "error": d.error}
            report["sent"].append(item)
    state = notify.record(step.state, project.name, env.name, sent, now)
    problem = handle.save(state)
    if problem:
        report["warnings"].append(problem)
    keys = state["environments"].get(f"{project.name}/{env.name}", {})
    report["open"] = sorted(k for k, r in keys.items() if r.get("incident") is not None)
    return report
