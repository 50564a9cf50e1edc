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
- appends one JSON line per run to the job's ledger (``state/JOB_ID/ledger.jsonl``).

Started by root for a job that runs as another user (root deployed it: the entry is in
root's crontab), it keeps the run records (state folder: ledger, running markers, run logs)
in root's folder, opens the job's log and lock as that user (with its ids: root never acts
through that user's folders), and runs the job as that user with its groups, in the
environment cron gives that user's jobs. The job's user can then no longer forge the proof.

Exit code: the job's own (so ``deployer run`` and cron's mail see it), 124 on timeout.
"""

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

from deployer.remote.safefs import Unsafe, open_dir, open_file, split, unlink_file

OUTCOME_SUCCESS = "success"
OUTCOME_FAILURE = "failure"
OUTCOME_TIMEOUT = "timeout"
OUTCOME_LOCKED = "skipped-locked"
OUTCOME_CRASHED = "crashed"
KILL_GRACE = 10  # seconds between SIGTERM and SIGKILL of a job that outlived its timeout
RUN_LOGS = "runs"  # per-run logs, in the job's state folder


def now_iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)


def load_env_file(path):
    env = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            name, _, value = line.partition("=")
            env[name] = json.loads(value)
    return env


def open_no_follow(path, flags, mode):
    """Open a log, lock or ledger file by walking its folders from / without following a link
    (safefs): never through a symlink planted in its place or on the way, never blocking on a
    FIFO, never a hard link to another file, never a file of a third user (only ours or root's)."""
    return open_file(path, flags, mode, owners={os.geteuid(), 0})


class AsUser:
    """Open files with the job user's ids (effective uid, gid, groups), then back to root's:
    whatever that user planted on the way, root's rights are not used to follow it. While
    they are changed, the process stays root's (real and saved uid 0): that user can neither
    signal nor trace it."""

    def __init__(self, entry):
        self.entry = entry

    def __enter__(self):
        self.groups = os.getgroups()
        os.setgroups(os.getgrouplist(self.entry.pw_name, self.entry.pw_gid))
        os.setegid(self.entry.pw_gid)
        os.seteuid(self.entry.pw_uid)
        return self

    def __exit__(self, *exc):
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(self.groups)


# What a job gets of the wrapper's environment when root starts it for another user: the
# locale and zone, never root's own variables (a root crontab's VAR= lines may be secrets).
PASSED_ON = ("LANG", "LANGUAGE", "TZ")


def cron_environment(entry):
    """The environment Debian cron gives a job of that user, plus the system's locale."""
    env = {name: value for name, value in os.environ.items() if name in PASSED_ON or name.startswith("LC_")}
    env.update(PATH="/usr/bin:/bin", SHELL="/bin/sh", HOME=entry.pw_dir, LOGNAME=entry.pw_name, USER=entry.pw_name)
    return env


def job_user(spec):
    """The account a root-started wrapper runs the job as; None when it runs it as itself."""
    name = spec.get("run_as")
    if os.geteuid() != 0 or not name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise Unsafe(name, "is not a user of this host (the job runs as that user)", errno.ENOENT)
    return entry if entry.pw_uid != 0 else None


class NotKept(Exception):
    """The run records are not root's yet: refused before the job starts."""


def make_dirs(path, mode=0o755):
    """``os.makedirs`` without following a link planted on the way."""
    os.close(open_dir(path, mode))


class Run:
    def __init__(self, release, job_id, trigger):
        self.release = release
        self.revision = os.path.basename(release)
        with open(os.path.join(release, "jobs", job_id + ".json"), encoding="utf-8") as f:
            self.spec = json.load(f)
        self.trigger = trigger
        self.as_user = job_user(self.spec)  # root started us for a job of another user
        self.user = self.as_user.pw_name if self.as_user else _user()
        self.run_id = uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        self.start = time.time()
        self.log_fd = None
        self.run_log_fd = None  # this run's own log (retention.run_logs), or None

    def argv(self):
        spec = self.spec
        if spec.get("script"):
            return [sys.executable, os.path.join(self.release, "scripts", spec["script"])] + spec["args"]
        return [spec["command"]] + spec["args"]

    def environment(self):
        env = cron_environment(self.as_user) if self.as_user else dict(os.environ)
        if self.spec.get("env_file"):
            env.update(load_env_file(os.path.join(self.release, self.spec["env_file"])))
        env["DEPLOYER_JOB"] = self.spec["id"]
        env["DEPLOYER_RUN_ID"] = self.run_id
        env["DEPLOYER_REVISION"] = self.revision
        return env

    def log(self, text):
        line = ("[%s] %s\n" % (now_iso(time.time()), text)).encode("utf-8", "replace")
        for fd in (self.log_fd, self.run_log_fd):
            if fd is not None:
                os.write(fd, line)

    def open_run_log(self):
        """This run's own log file, new (O_EXCL: never an existing file or a planted link).
        Returns its name relative to the state folder, for the ledger."""
        folder = os.path.join(self.spec["state_dir"], RUN_LOGS)
        make_dirs(folder, 0o750)
        # Names sort as the runs started (to the microsecond: runs can start within one second).
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.start)) + ".%06dZ" % int((self.start % 1) * 1e6)
        name = "%s-%s.log" % (stamp, self.run_id)
        self.run_log_fd = open_no_follow(os.path.join(folder, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        return RUN_LOGS + "/" + name

    def close_run_log(self, keep):
        """Done with this run's own log: close it, and keep only the newest ``keep``."""
        os.close(self.run_log_fd)
        self.run_log_fd = None
        prune_run_logs(self.spec["state_dir"], keep)

    def record(self, outcome, exit_code, pid, extra=None):
        end = time.time()
        entry = {
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
        }
        if extra:
            entry.update(extra)
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
        return entry

    def user_side(self):
        """Where the job's user's files (log, lock) are opened: with that user's ids when root
        started us for another user, else as we are."""
        return AsUser(self.as_user) if self.as_user else contextlib.nullcontext()

    def check_records_kept(self):
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
            raise NotKept("the run records in %s still belong to uid %d, not root: run `deployer apply` "
                          "(root keeps them for a job it starts as %s)" % (state, owner, self.user))

    def running_marker(self, pid, extra):
        folder = os.path.join(self.spec["state_dir"], "running")
        make_dirs(folder)
        path = os.path.join(folder, self.run_id + ".json")
        fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(extra, run_id=self.run_id, start=now_iso(self.start), pid=pid, wrapper_pid=os.getpid(),
                           host=self.host, revision=self.revision, trigger=self.trigger), f)
        return path


def trim_ledger(path, retention, now):
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
    kept = []
    for line in lines[-keep_runs:]:
        start = _start_of(line)
        if start is not None and start >= cutoff:
            kept.append(line)
    if len(kept) == len(lines):
        return
    folder, name = split(path)
    dfd = open_dir(folder)
    try:
        tmp = ".%s.tmp-%d" % (name, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dfd)
        with os.fdopen(fd, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(dfd)


def _start_of(line):
    """The start of a ledger line's run; None for a line that is not a run record (cut by a
    full disk, or written by someone else: ``1``, ``[]``, ``{"start": 5}`` never stop a run)."""
    try:
        entry = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    start = entry.get("start") if isinstance(entry, dict) else None
    return start if isinstance(start, str) else None


def rotate_log(path, retention):
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
                older = "%s.%d" % (name, n)
                if _exists_at(dfd, older):
                    os.rename(older, "%s.%d" % (name, n + 1), src_dir_fd=dfd, dst_dir_fd=dfd)
            if _exists_at(dfd, "%s.%d" % (name, keep + 1)):
                os.unlink("%s.%d" % (name, keep + 1), dir_fd=dfd)
            os.rename(name, name + ".1", src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            return "could not rotate the log (%s); it keeps growing" % (exc.strerror or exc)
    finally:
        os.close(dfd)
    return "rotated the log at %d bytes" % st.st_size


def _exists_at(dir_fd, name):
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def prune_run_logs(state_dir, keep):
    """Keep the newest ``keep`` per-run logs (their names start with the run's UTC start)."""
    try:
        dfd = open_dir(os.path.join(state_dir, RUN_LOGS))
    except OSError:
        return
    try:
        names = sorted(n for n in os.listdir(dfd) if n.endswith(".log"))
        for name in names[:len(names) - keep]:
            try:
                os.unlink(name, dir_fd=dfd)  # unlink never follows a link
            except OSError:
                pass
    finally:
        os.close(dfd)


def _user():
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def main(argv, script):
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

    with run.user_side():
        lock_fd = open_no_follow(spec["lock_file"], os.O_RDWR | os.O_CREAT, 0o600)
    if spec.get("concurrency", "forbid") == "forbid":
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(lock_fd, 100, 0).decode("utf-8", "replace").strip()
            with run.user_side():
                run.log_fd = open_no_follow(spec["log_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            run.log("run %s skipped: the previous run still holds the lock (%s)" % (run.run_id, holder or "?"))
            run.record(OUTCOME_LOCKED, None, None, {"lock_holder": holder})
            return 0
        os.ftruncate(lock_fd, 0)
        os.pwrite(lock_fd, ("pid %d run %s since %s" % (os.getpid(), run.run_id, now_iso(run.start))).encode(), 0)

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
    extra = {}
    if keep_run_logs:
        extra["log"] = run.open_run_log()
    run.log("run %s start: job %s, revision %s, trigger %s" % (run.run_id, spec["id"], run.revision, trigger))
    # Straight into the log file, unless the output must also go elsewhere (to `deployer run`,
    # to the run's own log): then through a pipe that we copy. Through the pipe, a job that
    # outlives a killed wrapper gets EPIPE on its next write instead of writing on unseen.
    piped = tee or run.run_log_fd is not None
    try:
        # The child keeps the lock fd: if this wrapper dies, the lock lasts as long as the job.
        out = subprocess.PIPE if piped else run.log_fd
        env = run.environment()
        if tee:
            env["PYTHONUNBUFFERED"] = "1"  # `deployer run` shows a Python task's lines as they are printed
        drop = {}
        if run.as_user:  # the job's user, with its groups, as cron sets them (initgroups)
            drop = {"user": run.as_user.pw_uid, "group": run.as_user.pw_gid,
                    "extra_groups": os.getgrouplist(run.as_user.pw_name, run.as_user.pw_gid)}
        proc = subprocess.Popen(run.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT if piped else run.log_fd,
                                cwd=workdir, env=env, start_new_session=True, pass_fds=(lock_fd,), **drop)
    except OSError as exc:
        run.log("run %s could not start: %s" % (run.run_id, exc))
        run.record(OUTCOME_FAILURE, 127, None, dict(extra, error=str(exc)))
        if keep_run_logs:
            run.close_run_log(keep_run_logs)
        return 127
    marker = run.running_marker(proc.pid, extra)
    copier = None
    if piped:
        import threading

        def copy():
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                os.write(run.log_fd, chunk)
                if run.run_log_fd is not None:
                    os.write(run.run_log_fd, chunk)
                if tee:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.flush()

        copier = threading.Thread(target=copy, daemon=True)
        copier.start()

    stopped_by = []

    def on_signal(signum, frame):
        stopped_by.append(signum)
        _kill_group(proc.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    timed_out = False
    try:
        code = proc.wait(timeout=spec["timeout"])
    except subprocess.TimeoutExpired:
        timed_out = True
        run.log("run %s exceeded its timeout of %ss: stopping its process group" % (run.run_id, spec["timeout"]))
        _kill_group(proc.pid, signal.SIGTERM)
        try:
            code = proc.wait(timeout=KILL_GRACE)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid, signal.SIGKILL)
            code = proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)  # leftovers of the job's group never outlive the run
    if copier is not None:
        copier.join(timeout=5)

    if timed_out:
        outcome, exit_code = OUTCOME_TIMEOUT, 124
    elif stopped_by:
        outcome, exit_code = OUTCOME_CRASHED, 128 + stopped_by[0]
        extra["signal"] = stopped_by[0]
    elif code < 0:
        outcome, exit_code = OUTCOME_CRASHED, 128 - code
        extra["signal"] = -code
    else:
        outcome, exit_code = (OUTCOME_SUCCESS if code == 0 else OUTCOME_FAILURE), code
    entry = run.record(outcome, exit_code, proc.pid, extra)
    run.log("run %s end: %s (exit %s, %.1fs)" % (run.run_id, outcome, exit_code, entry["duration"]))
    if keep_run_logs:
        run.close_run_log(keep_run_logs)
    try:
        unlink_file(marker)
    except OSError:
        pass
    return exit_code


def entry(argv, script):
    """Run one job; ``script`` is the release's ``run`` file that was started (it names the release)."""
    try:
        return main(argv, script)
    except NotKept as exc:
        sys.stderr.write("deployer run: %s\n" % exc)
        return 1
    except OSError as exc:
        # Cron mails this line to the crontab's owner: say what and where, not a traceback.
        if exc.errno == errno.ELOOP and not isinstance(exc, Unsafe) or (
                isinstance(exc, Unsafe) and exc.strerror.startswith("is a symlink; refusing")):
            sys.stderr.write("deployer run: %s is a symlink; refusing to follow it (remove it, then run "
                             "`deployer apply` to recreate the file)\n" % exc.filename)
        elif isinstance(exc, Unsafe):
            sys.stderr.write("deployer run: %s %s\n" % (exc.filename, exc.strerror))
        else:
            sys.stderr.write("deployer run: %s%s\n" % (exc.strerror or exc, " (%s)" % exc.filename if exc.filename else ""))
        return 1


if __name__ == "__main__":
    sys.exit(entry(sys.argv[1:], __file__))
