#!/usr/bin/env python3
"""deployer's run wrapper: how every deployed job runs, from cron or by hand.

Installed as ``<release>/run`` on the target and called as ``run JOB_ID [--trigger T]``.
Standard library only. For one run it:

- loads the job's spec (``jobs/JOB_ID.json``) and env file (``env/JOB_ID.env``, 0600),
  so no variable or secret ever sits in the crontab or in argv;
- takes the job's lock with flock: the kernel drops it when the last holder dies, even
  on kill -9, so a lock never goes stale; a second run while one holds it is recorded as
  ``skipped-locked`` and exits 0;
- runs the job in its own process group, its output appended to the job's log, and kills
  the whole group when the timeout passes;
- with ``retention.run_logs: N``, also keeps each run's output in a file of its own
  (``state/JOB_ID/runs/<start>-<run id>.log``, the last N kept), named in its ledger line;
- appends one JSON line per run to the job's ledger (``state/JOB_ID/ledger.jsonl``);
- records as ``crashed``, once, a run whose wrapper died without writing its line (killed
  with -9, by the OOM killer, a reboot): its running marker is left, its wrapper and job gone;
- when the release has ``alerts/JOB_ID.json``, pings the job's check at start and end, tells
  its channels of failures, crashes and recoveries, keeps the alert state
  (``state/JOB_ID/alerts.json``) and writes its metrics, ``running`` 1 before the job starts
  and 0 at its end (runalerts.py); the deliveries go into the ledger line, and no failure of
  theirs changes the run's outcome or exit code.

Started by root for a job that runs as another user (root deployed it: the entry is in
root's crontab), it keeps the run records (state folder: ledger, running markers, run logs)
in root's folder, opens the job's log and lock as that user (with its ids: root never acts
through that user's folders), and runs the job as that user with its groups, in the
environment cron gives that user's jobs. The job's user can then no longer forge the proof.

Exit code: the job's own (so ``deployer run`` and cron's mail see it), 124 on timeout.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import fcntl
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING, Final, NamedTuple, cast

from deployer.remote.safefs import Unsafe, open_dir, open_file, split, unlink_file

if TYPE_CHECKING:  # the types only: a run needs nothing of messages
    import io
    from contextlib import AbstractContextManager
    from types import FrameType

    from deployer.remote import runalerts
    from deployer.remote.messages import JobSpecFile, RetentionSpec, RunExtra, RunningMarker, RunOutcome, RunRecord

    # A job spec's retention, or {} when it has none: each value then its default.
    Retention = RetentionSpec | dict[str, int]

OUTCOME_SUCCESS: Final[RunOutcome] = "success"
OUTCOME_FAILURE: Final[RunOutcome] = "failure"
OUTCOME_TIMEOUT: Final[RunOutcome] = "timeout"
OUTCOME_LOCKED: Final[RunOutcome] = "skipped-locked"
OUTCOME_CRASHED: Final[RunOutcome] = "crashed"
KILL_GRACE = 10  # seconds between SIGTERM and SIGKILL of a job that outlived its timeout
RUN_LOGS = "runs"  # per-run logs, in the job's state folder
TAIL_BYTES = 16 * 1024  # of a run's output kept for its alert's last lines


def now_iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"


def load_env_file(path: str) -> dict[str, str]:
    env: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition("=")
            env[name] = json.loads(value)
    return env


def open_no_follow(path: str, flags: int, mode: int) -> int:
    """Open a log, lock or ledger file by walking its folders from / without following a link
    (safefs): never through a symlink planted in its place or on the way, never blocking on a
    FIFO, never a hard link to another file, never a file of a third user (only ours or root's)."""
    return open_file(path, flags, mode, owners={os.geteuid(), 0})


class AsUser:
    """Open files with the job user's ids (effective uid, gid, groups), then back to root's:
    whatever that user planted on the way, root's rights are not used to follow it. While
    they are changed, the process stays root's (real and saved uid 0): that user can neither
    signal nor trace it."""

    def __init__(self, entry: pwd.struct_passwd) -> None:
        self.entry = entry

    def __enter__(self) -> AsUser:
        self.groups = os.getgroups()
        os.setgroups(os.getgrouplist(self.entry.pw_name, self.entry.pw_gid))
        os.setegid(self.entry.pw_gid)
        os.seteuid(self.entry.pw_uid)
        return self

    def __exit__(self, *exc: object) -> None:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(self.groups)


# What a job gets of the wrapper's environment when root starts it for another user: the
# locale and zone, never root's own variables (a root crontab's VAR= lines may be secrets).
PASSED_ON = ("LANG", "LANGUAGE", "TZ")


def cron_environment(entry: pwd.struct_passwd) -> dict[str, str]:
    """The environment Debian cron gives a job of that user, plus the system's locale."""
    env = {name: value for name, value in os.environ.items() if name in PASSED_ON or name.startswith("LC_")}
    env.update(PATH="/usr/bin:/bin", SHELL="/bin/sh", HOME=entry.pw_dir, LOGNAME=entry.pw_name, USER=entry.pw_name)
    return env


def job_user(spec: JobSpecFile) -> pwd.struct_passwd | None:
    """The account a root-started wrapper runs the job as; None when it runs it as itself."""
    name = spec.get("run_as")
    if os.geteuid() != 0 or not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Unsafe(name, "is not a user of this host (the job runs as that user)", errno.ENOENT) from None
    return entry if entry.pw_uid != 0 else None


class NotKept(Exception):
    """The run records are not root's yet: refused before the job starts."""


def make_dirs(path: str, mode: int = 0o755) -> None:
    """``os.makedirs`` without following a link planted on the way."""
    os.close(open_dir(path, mode))


class Orphan(NamedTuple):
    """A run that started and never recorded its end: its wrapper was killed (kill -9, the
    OOM killer, a reboot) and left its running marker behind."""

    run_id: str
    start: float
    pid: int
    revision: str
    trigger: str


MARKER_LIMIT = 64 * 1024  # a running marker is a few hundred bytes


def claim_orphans(state_dir: str, host: str) -> list[Orphan]:
    """The running markers of this host's runs whose wrapper and job are both gone, each
    claimed by removing it: of two runs that find one, only the one whose unlink succeeds
    records it, so a crashed run is recorded (and told) once. A marker that is not one of
    ours (another owner, a link, a FIFO, not a marker) is left alone: the probe reports it."""
    folder = os.path.join(state_dir, "running")
    owners = {0, os.geteuid()}
    try:
        dfd = open_dir(folder)
    except OSError:
        return []
    try:
        names = sorted(n for n in os.listdir(dfd) if n.endswith(".json"))
    finally:
        os.close(dfd)
    found = []
    for name in names:
        path = os.path.join(folder, name)
        orphan = _read_marker(path, owners)
        if orphan is None or orphan[1] != host or _alive(orphan[2]) or _alive(orphan[0].pid):
            continue
        with contextlib.suppress(OSError):
            if unlink_file(path, owners):
                found.append(orphan[0])
    return found


def _read_marker(path: str, owners: set[int]) -> tuple[Orphan, str, int] | None:
    """(the run, its host, its wrapper's pid) of a running marker written by a wrapper; None
    for anything else."""
    try:
        fd = open_file(path, os.O_RDONLY, owners=owners)
        try:
            data = json.loads(os.read(fd, MARKER_LIMIT + 1)[:MARKER_LIMIT].decode("utf-8"))
        finally:
            os.close(fd)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    run_id, start, pid, wrapper_pid = data.get("run_id"), data.get("start"), data.get("pid"), data.get("wrapper_pid")
    texts = (data.get("host"), data.get("revision"), data.get("trigger"))
    if not (isinstance(run_id, str) and len(run_id) == 16 and all(c in "0123456789abcdef" for c in run_id)
            and os.path.basename(path) == run_id + ".json" and isinstance(start, str)
            and type(pid) is int and type(wrapper_pid) is int and pid > 0 and wrapper_pid > 0
            and all(isinstance(t, str) and len(t) <= 256 for t in texts)):
        return None
    try:
        started = calendar.timegm(time.strptime(start[:19], "%Y-%m-%dT%H:%M:%S")) + float("0" + start[19:23])
    except ValueError:
        return None
    return Orphan(run_id, started, pid, str(texts[1]), str(texts[2])), str(texts[0]), wrapper_pid


def _alive(pid: int) -> bool:
    """A process with that pid lives (a zombie does not: it has ended). A pid reused by another
    process reads as alive: the marker waits for a later run, never recorded wrongly."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read(4096).rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


class Run:
    def __init__(self, release: str, job_id: str, trigger: str) -> None:
        self.release = release
        self.revision = os.path.basename(release)
        with open(os.path.join(release, "jobs", job_id + ".json"), encoding="utf-8") as f:
            self.spec: JobSpecFile = json.load(f)
        self.trigger = trigger
        self.as_user = job_user(self.spec)  # root started us for a job of another user
        self.user = self.as_user.pw_name if self.as_user else _user()
        self.run_id = uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        self.start = time.time()
        self.log_fd: int | None = None
        self.run_log_fd: int | None = None  # this run's own log (retention.run_logs), or None

    def argv(self) -> list[str]:
        spec = self.spec
        script, command = spec.get("script"), spec.get("command")
        if script:
            return [sys.executable, os.path.join(self.release, "scripts", script), *spec["args"]]
        if command is None:  # a job spec of deployer's has one or the other: recorded as could not start
            raise OSError(errno.ENOENT, "the job spec names neither a script nor a command", f"jobs/{spec['id']}.json")
        return [command, *spec["args"]]

    def environment(self) -> dict[str, str]:
        env = cron_environment(self.as_user) if self.as_user else dict(os.environ)
        env_file = self.spec.get("env_file")
        if env_file:
            env.update(load_env_file(os.path.join(self.release, env_file)))
        env["DEPLOYER_JOB"] = self.spec["id"]
        env["DEPLOYER_RUN_ID"] = self.run_id
        env["DEPLOYER_REVISION"] = self.revision
        return env

    def log(self, text: str) -> None:
        line = f"[{now_iso(time.time())}] {text}\n".encode("utf-8", "replace")
        for fd in (self.log_fd, self.run_log_fd):
            if fd is not None:
                os.write(fd, line)

    def open_run_log(self) -> str:
        """This run's own log file, new (O_EXCL: never an existing file or a planted link).
        Returns its name relative to the state folder, for the ledger."""
        folder = os.path.join(self.spec["state_dir"], RUN_LOGS)
        make_dirs(folder, 0o750)
        # Names sort as the runs started (to the microsecond: runs can start within one second).
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.start)) + f".{int((self.start % 1) * 1e6):06d}Z"
        name = f"{stamp}-{self.run_id}.log"
        self.run_log_fd = open_no_follow(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        return RUN_LOGS + "/" + name

    def close_run_log(self, keep: int) -> None:
        """Done with this run's own log: close it, and keep only the newest ``keep``."""
        if self.run_log_fd is not None:
            os.close(self.run_log_fd)
        self.run_log_fd = None
        prune_run_logs(self.spec["state_dir"], keep)

    def record(self, outcome: RunOutcome, exit_code: int | None, pid: int | None, extra: RunExtra | None = None) -> RunRecord:
        end = time.time()
        entry: RunRecord = {
            "run_id": self.run_id,
            "job": self.spec["id"],
            "project": self.spec["project"],
            "env": self.spec["env"],
            "start": now_iso(self.start),
            "end": now_iso(end),
            "duration": round(end - self.start, 3),
            "exit_code": exit_code,
            "outcome": outcome,
            "host": self.host,
            "pid": pid,
            "user": self.user,
            "revision": self.revision,
            "trigger": self.trigger,
            **(extra or {}),
        }
        self.append(entry, end)
        return entry

    def record_crashed(self, orphan: Orphan, extra: RunExtra) -> RunRecord:
        """The ledger line of a run whose wrapper died without writing one (``Orphan``): outcome
        ``crashed``, exit code unknown, its end the moment this run found it."""
        end = time.time()
        entry: RunRecord = {
            "run_id": orphan.run_id, "job": self.spec["id"], "project": self.spec["project"], "env": self.spec["env"],
            "start": now_iso(orphan.start), "end": now_iso(end), "duration": round(max(end - orphan.start, 0.0), 3),
            "exit_code": None, "outcome": OUTCOME_CRASHED, "host": self.host, "pid": orphan.pid, "user": self.user,
            "revision": orphan.revision, "trigger": orphan.trigger,
            **extra,
        }
        self.append(entry, end)
        return entry

    def append(self, entry: RunRecord, end: float) -> None:
        """One line onto the job's ledger (then trimmed to its retention)."""
        state = self.spec["state_dir"]
        make_dirs(state)
        ledger = os.path.join(state, "ledger.jsonl")
        # Appends and trims of the ledger take this lock, so a trim never drops a line
        # appended by a concurrent run (concurrency: allow).
        guard = open_no_follow(os.path.join(state, ".ledger.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            fd = open_no_follow(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, (json.dumps(entry, sort_keys=True) + "\n").encode())  # one write: one whole line
            finally:
                os.close(fd)
            trim_ledger(ledger, self.spec.get("retention") or {}, end)
        finally:
            os.close(guard)

    def user_side(self) -> AbstractContextManager[object]:
        """Where the job's user's files (log, lock) are opened: with that user's ids when root
        started us for another user, else as we are."""
        return AsUser(self.as_user) if self.as_user else contextlib.nullcontext()

    def check_records_kept(self) -> None:
        """Root keeps this job's records: refuse to run while its state folder is still the
        job user's (a release installed by a cut apply; the next apply takes it over)."""
        state = self.spec["state_dir"]
        try:
            fd = open_dir(state)
        except FileNotFoundError:
            return
        try:
            owner = os.fstat(fd).st_uid
        finally:
            os.close(fd)
        if owner != 0:
            raise NotKept(f"the run records in {state} still belong to uid {owner}, not root: run `deployer apply` "
                          f"(root keeps them for a job it starts as {self.user})")

    def running_marker(self, pid: int, extra: RunExtra) -> str:
        folder = os.path.join(self.spec["state_dir"], "running")
        make_dirs(folder)
        path = os.path.join(folder, self.run_id + ".json")
        fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        marker: RunningMarker = {"run_id": self.run_id, "start": now_iso(self.start), "pid": pid, "wrapper_pid": os.getpid(),
                                 "host": self.host, "revision": self.revision, "trigger": self.trigger}
        if "log" in extra:  # what else extra holds comes when the run ends
            marker = {"log": extra["log"], **marker}
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(marker, f)
        return path


def trim_ledger(path: str, retention: Retention, now: float) -> None:
    """Keep the last ``runs`` lines younger than ``days``; rewrite atomically, only when needed.
    The rewrite is made and renamed inside the ledger's folder, held open (safefs)."""
    keep_runs = int(retention.get("runs", 10000))
    keep_days = float(retention.get("days", 400))
    try:
        fd = open_no_follow(path, os.O_RDONLY, 0)
    except OSError:
        return
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        first = f.readline()
        oldest = _start_of(first)
        too_old = oldest is None or oldest < now_iso(now - keep_days * 86400)  # a damaged first line: rewrite without it
        if not too_old and size < keep_runs * 200:  # far fewer lines than allowed: nothing to count
            return
        f.seek(0)
        lines = f.read().splitlines(True)
    cutoff = now_iso(now - keep_days * 86400)
    kept: list[bytes] = []
    for line in lines[-keep_runs:]:
        start = _start_of(line)
        if start is not None and start >= cutoff:
            kept.append(line)
    if len(kept) == len(lines):
        return
    folder, name = split(path)
    dfd = open_dir(folder)
    try:
        tmp = f".{name}.tmp-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dfd)
        with os.fdopen(fd, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _start_of(line: bytes) -> str | None:
    """The start of a ledger line's run; None for a line that is not a run record (cut by a
    full disk, or written by someone else: ``1``, ``[]``, ``{"start": 5}`` never stop a run)."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    start = entry.get("start") if isinstance(entry, dict) else None
    return start if isinstance(start, str) else None


def rotate_log(path: str, retention: Retention) -> str | None:
    """Past ``log_size``, the log becomes log.1 (log.1 becomes log.2, ...), ``log_files`` kept.
    Renamed inside the log's folder, held open: a folder swapped for a link on the way never
    makes us rename someone else's files."""
    limit = int(retention.get("log_size", 10 * 1024 * 1024))
    keep = max(int(retention.get("log_files", 5)), 1)
    folder, name = split(path)
    try:
        dfd = open_dir(folder)
    except OSError:
        return None
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            return None
        if st.st_size < limit:
            return None
        try:
            for n in range(keep - 1, 0, -1):
                older = f"{name}.{n}"
                if _exists_at(dfd, older):
                    os.rename(older, f"{name}.{n + 1}", src_dir_fd=dfd, dst_dir_fd=dfd)
            if _exists_at(dfd, f"{name}.{keep + 1}"):
                os.unlink(f"{name}.{keep + 1}", dir_fd=dfd)
            os.rename(name, name + ".1", src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            return f"could not rotate the log ({exc.strerror or exc}); it keeps growing"
    finally:
        os.close(dfd)
    return f"rotated the log at {st.st_size} bytes"


def _exists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def prune_run_logs(state_dir: str, keep: int) -> None:
    """Keep the newest ``keep`` per-run logs (their names start with the run's UTC start)."""
    try:
        dfd = open_dir(os.path.join(state_dir, RUN_LOGS))
    except OSError:
        return
    try:
        names = sorted(n for n in os.listdir(dfd) if n.endswith(".log"))
        for name in names[:len(names) - keep]:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)  # unlink never follows a link
    finally:
        os.close(dfd)


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def main(argv: list[str], script: str) -> int:
    if len(argv) < 1 or argv[0] in ("-h", "--help"):
        sys.stderr.write("usage: run JOB_ID [--trigger cron|manual] [--tee]\n")
        return 2
    job_id = argv[0]
    trigger = "cron"
    if "--trigger" in argv[1:-1]:
        trigger = argv[argv.index("--trigger") + 1]
    tee = "--tee" in argv[1:]  # `deployer run`: the output goes to the log and to us
    release = os.path.dirname(os.path.realpath(script))  # through the `current` link: the real revision
    run = Run(release, job_id, trigger)
    spec = run.spec
    if run.as_user:
        run.check_records_kept()
    lock_fd = _take_lock(run)
    if lock_fd is None:
        return 0  # skipped: the previous run still holds the lock (recorded)

    with run.user_side():
        rotated = rotate_log(spec["log_file"], spec.get("retention") or {})
        run.log_fd = open_no_follow(spec["log_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    if rotated:
        run.log(rotated)
    make_dirs(spec["state_dir"])  # apply makes it; a hand-cleaned target may not have it
    # Where the job starts: its declared folder; else, started by root for another user,
    # that user's home, as cron does (the state folder is root's); else the state folder.
    workdir = spec.get("workdir") or (run.as_user.pw_dir if run.as_user else spec["state_dir"])
    keep_run_logs = int((spec.get("retention") or {}).get("run_logs", 0))
    extra: RunExtra = {}
    alerting = _alerting(run, release, job_id, extra)
    for orphan in claim_orphans(spec["state_dir"], run.host):
        _record_crash(run, orphan, alerting)
    if keep_run_logs:
        extra["log"] = run.open_run_log()
    run.log(f"run {run.run_id} start: job {spec['id']}, revision {run.revision}, trigger {trigger}")
    # Straight into the log file, unless the output must also go elsewhere (to `deployer run`,
    # to the run's own log): then through a pipe that we copy. Through the pipe, a job that
    # outlives a killed wrapper gets EPIPE on its next write instead of writing on unseen.
    # With alerts, the output's last lines go into the message: piped too.
    piped = tee or run.run_log_fd is not None or alerting is not None
    output_tail = [b""]
    try:
        # The child keeps the lock fd: if this wrapper dies, the lock lasts as long as the job.
        out = subprocess.PIPE if piped else run.log_fd
        env = run.environment()
        if tee:
            env["PYTHONUNBUFFERED"] = "1"  # `deployer run` shows a Python task's lines as they are printed
        if alerting is not None:
            alerting.started()
        # the job's user, with its groups, as cron sets them (initgroups); else as we are
        user = run.as_user
        # The job's own argv, from the release's job spec: no shell, nothing from outside the release.
        proc = subprocess.Popen(run.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if piped else run.log_fd,
                                cwd=workdir, env=env, start_new_session=True, pass_fds=(lock_fd,),
                                user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                                extra_groups=os.getgrouplist(user.pw_name, user.pw_gid) if user else None)
    except OSError as exc:
        run.log(f"run {run.run_id} could not start: {exc}")
        if alerting is not None:
            alerting.ended(OUTCOME_FAILURE, 127, run.start, time.time(), str(exc).encode(), ())
            _alert_extra(extra, alerting)
        run.record(OUTCOME_FAILURE, 127, None, {**extra, "error": str(exc)})
        if keep_run_logs:
            run.close_run_log(keep_run_logs)
        return 127
    marker = run.running_marker(proc.pid, extra)
    copier = None
    if piped:
        import threading

        # Both there when piped: the log was opened above, and stdout=PIPE makes a BufferedReader.
        log_fd, stdout = run.log_fd, cast("io.BufferedReader", proc.stdout)

        def copy() -> None:
            for chunk in iter(lambda: stdout.read1(65536), b""):
                os.write(log_fd, chunk)
                if run.run_log_fd is not None:
                    os.write(run.run_log_fd, chunk)
                if alerting is not None:
                    output_tail[0] = (output_tail[0] + chunk)[-TAIL_BYTES:]
                if tee:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()

        copier = threading.Thread(target=copy, daemon=True)
        copier.start()

    stopped_by: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped_by.append(signum)
        _kill_group(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    code, timed_out = _wait(run, proc)
    if copier is not None:
        copier.join(timeout=5)
    outcome, exit_code = _outcome(code, timed_out, stopped_by, extra)
    if alerting is not None:
        from deployer.remote import runalerts  # imported by _alerting already: only a job with alerts gets here
        alerting.ended(outcome, exit_code, run.start, time.time(), output_tail[0],
                       runalerts.secret_values(env, alerting.config))
        _alert_extra(extra, alerting)
    entry = run.record(outcome, exit_code, proc.pid, extra)
    run.log(f"run {run.run_id} end: {outcome} (exit {exit_code}, {entry['duration']:.1f}s)")
    if keep_run_logs:
        run.close_run_log(keep_run_logs)
    with contextlib.suppress(OSError):
        unlink_file(marker)
    return exit_code


def _take_lock(run: Run) -> int | None:
    """The job's lock file, opened as its user; with ``concurrency: forbid``, taken (flock) and
    marked with who holds it. None when the previous run still holds it: then this run is
    logged and recorded as skipped."""
    spec = run.spec
    with run.user_side():
        lock_fd = open_no_follow(spec["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
    if spec.get("concurrency", "forbid") != "forbid":
        return lock_fd
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        holder = os.pread(lock_fd, 100, 0).decode("utf-8", "replace").strip()
        with run.user_side():
            run.log_fd = open_no_follow(spec["log_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        run.log(f"run {run.run_id} skipped: the previous run still holds the lock ({holder or '?'})")
        run.record(OUTCOME_LOCKED, None, None, {"lock_holder": holder})
        return None
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"pid {os.getpid()} run {run.run_id} since {now_iso(run.start)}".encode(), 0)
    return lock_fd


def _alerting(run: Run, release: str, job_id: str, extra: RunExtra) -> runalerts.RunAlerts | None:
    """The run's alerting, for a job whose release carries an alerts file; a config that cannot
    be read is logged and recorded, and the run goes on without alerts."""
    # Only a job with alerts imports their code (the bundle compiles a module when it is
    # first imported): a run without them costs what it did before alerts existed.
    if not os.path.lexists(os.path.join(release, "alerts", job_id + ".json")):
        return None
    from deployer.remote import runalerts
    config, problem = runalerts.load(release, job_id)
    if problem:
        run.log(f"run {run.run_id}: {problem}; no alerts for this run")
        extra["alert_errors"] = [problem]
    return runalerts.RunAlerts(config, run.spec, run.run_id, run.host) if config is not None else None


def _record_crash(run: Run, orphan: Orphan, alerting: runalerts.RunAlerts | None) -> None:
    """Record (and, with alerts, tell once) a run whose wrapper died before writing its line."""
    run.log(f"run {run.run_id}: run {orphan.run_id}, started {now_iso(orphan.start)}, never recorded its end and its "
            "wrapper is gone: recorded as crashed")
    extra: RunExtra = {"error": f"its wrapper ended without recording the run (killed?); found by run {run.run_id}"}
    if alerting is not None:
        from deployer.remote import runalerts  # imported by _alerting already

        told = runalerts.RunAlerts(alerting.config, run.spec, orphan.run_id, run.host)
        told.ended(OUTCOME_CRASHED, None, orphan.start, time.time(), b"", ())
        _alert_extra(extra, told)
    run.record_crashed(orphan, extra)


def _wait(run: Run, proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
    """The job's exit status, and whether it outlived its timeout (then its process group got
    SIGTERM, and SIGKILL after KILL_GRACE). Leftovers of its group never outlive the run."""
    timeout = run.spec["timeout"]
    timed_out = False
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        run.log(f"run {run.run_id} exceeded its timeout of {timeout}s: stopping its process group")
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)
    return code, timed_out


def _outcome(code: int, timed_out: bool, stopped_by: list[int], extra: RunExtra) -> tuple[RunOutcome, int]:
    """The run's outcome and exit code (124 on timeout, 128+N for a signal, else the job's)."""
    if timed_out:
        return OUTCOME_TIMEOUT, 124
    if stopped_by:
        extra["signal"] = stopped_by[0]
        return OUTCOME_CRASHED, 128 + stopped_by[0]
    if code < 0:
        extra["signal"] = -code
        return OUTCOME_CRASHED, 128 - code
    return (OUTCOME_SUCCESS if code == 0 else OUTCOME_FAILURE), code


def _alert_extra(extra: RunExtra, alerting: runalerts.RunAlerts) -> None:
    """What the run's alerting did, for its ledger line."""
    extra["alerts"] = alerting.deliveries
    errors = [*extra.get("alert_errors", []), *alerting.errors]
    if errors:
        extra["alert_errors"] = errors


def entry(argv: list[str], script: str) -> int:
    """Run one job; ``script`` is the release's ``run`` file that was started (it names the release)."""
    try:
        return main(argv, script)
    except NotKept as exc:
        sys.stderr.write(f"deployer run: {exc}\n")
        return 1
    except OSError as exc:
        # Cron mails this line to the crontab's owner: say what and where, not a traceback.
        if (exc.errno == errno.ELOOP and not isinstance(exc, Unsafe)) or (
                isinstance(exc, Unsafe) and (exc.strerror or "").startswith("is a symlink; refusing")):
            sys.stderr.write(f"deployer run: {exc.filename} is a symlink; refusing to follow it (remove it, then run "
                             "`deployer apply` to recreate the file)\n")
        elif isinstance(exc, Unsafe):
            sys.stderr.write(f"deployer run: {exc.filename} {exc.strerror}\n")
        else:
            where = f" ({exc.filename})" if exc.filename else ""
            sys.stderr.write(f"deployer run: {exc.strerror or exc}{where}\n")
        return 1


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:], __file__))
