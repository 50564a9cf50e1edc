"""The probe: everything deployer needs to know about a target, in one exec.

Runs on the target (standard library only; bundled with the target modules it imports,
see deployer/core/bundle.py). Reads,
never writes. Prints one JSON line of facts.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from deployer.remote.hostzone import target_timezone
from deployer.remote.messages import (
    AlertState,
    BackupRecord,
    CronDaemon,
    CronFlavour,
    CrontabRead,
    Drift,
    JobRuntime,
    LegacyLock,
    PathInfo,
    ProbeAnswer,
    ProbeJob,
    ProbeRequest,
    ReleaseInfo,
    ReleaseJob,
    RollbackMark,
    RunFound,
    RunLog,
    RunLogRequest,
    SpaceInfo,
    UserInfo,
)
from deployer.remote.safefs import list_dir, open_dir, open_file, read_bytes
from deployer.remote.targetlib import (
    ALERT_STATE_LIMIT,
    _why,
    alert_state,
    describe_path,
    emit,
    expand,
    file_kind,
    group_name,
    lock_holders,
    lock_holders_of,
    lstat_at,
    my_home,
    open_regular,
    parse_run_lines,
    path_kind,
    read_crontab,
    read_json_file,
    read_lock_table,
    read_problem,
    run_record,
    sha256_file,
    tail_lines,
    user_name,
)


def _releases(deploy_home: str, with_jobs: bool = False) -> dict[str, ReleaseInfo]:
    releases: dict[str, ReleaseInfo] = {}
    root = os.path.join(deploy_home, "releases")
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return releases
    for name in names:
        if name.startswith("."):
            continue  # an unfinished release folder of an interrupted apply
        base = os.path.join(root, name)
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        files: dict[str, PathInfo | None] = {}
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                rel = os.path.relpath(full, base)
                info = describe_path(full)
                if info and info["type"] == "file":
                    try:
                        info["sha256"] = sha256_file(full, HASH_LIMIT)
                    except OSError as exc:
                        info["error"] = exc.strerror
                files[rel] = info
        releases[name] = {"files": files, "mtime": os.lstat(base).st_mtime, "drift": _drift(base, files),
                          "crontab_blocks": _manifest_blocks(base)}
        if with_jobs:
            releases[name]["jobs"] = _release_jobs(base, files)
    return releases


_SLUG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _release_jobs(base: str, files: dict[str, PathInfo | None]) -> dict[str, ReleaseJob]:
    """What a kept release runs, job by job (its job specs; the grace and ping of its alert
    configs), each value kept only when of its type: these files are read back, not trusted."""
    jobs: dict[str, ReleaseJob] = {}
    for rel in sorted(files):
        job_id = rel.removeprefix("jobs/").removesuffix(".json")
        if not (rel.startswith("jobs/") and rel.endswith(".json")) or "/" in job_id:
            continue
        spec, _problem = read_json_file(os.path.join(base, rel))
        spec = spec if isinstance(spec, dict) else {}
        alerts: object = None
        if f"alerts/{job_id}.json" in files:
            alerts, _problem = read_json_file(os.path.join(base, "alerts", f"{job_id}.json"))
        alerts = alerts if isinstance(alerts, dict) else {}
        ping = alerts.get("ping")
        slug = ping.rstrip("/").rsplit("/", 1)[-1] if isinstance(ping, str) else ""
        prefix = f"{spec.get('project')}-{spec.get('env')}-"
        jobs[job_id] = {
            "schedule": _typed(spec.get("schedule"), str),
            "timeout": _typed(spec.get("timeout"), int),
            "description": _typed(spec.get("description"), str),
            "grace": _typed(alerts.get("grace"), int),
            # Only a slug of deployer's form goes back: a URL of the operator's own (whose last segment may be its secret) never does.
            "ping_slug": slug if slug.startswith(prefix) and len(slug) <= 100 and set(slug) <= _SLUG_CHARS else None,
        }
    return jobs


def _typed(value: object, kind: type) -> Any:
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


# A release file bigger than this is not one deployer wrote (an env file its user made a
# sparse 5 GB file): said to differ without reading it all.
HASH_LIMIT = 64 << 20


def _manifest_blocks(base: str) -> dict[str, str]:
    """The crontab blocks the release's manifest says it installs ({} for older releases)."""
    try:
        blocks = json.loads(read_bytes(os.path.join(base, "manifest.json"), 16 << 20).decode("utf-8")).get("crontab_blocks")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(blocks, dict):
        return {}
    return {u: b for u, b in blocks.items() if isinstance(u, str) and isinstance(b, str)}


DRIFT_SHOWN = 64 * 1024  # a hand-edited file up to this size travels back, for plan's diff


def _drift(base: str, files: dict[str, PathInfo | None]) -> dict[str, Drift]:
    """Files of a release that differ from the release's own manifest (edited by hand)."""
    whole, _problem = read_json_file(os.path.join(base, "manifest.json"))
    manifest = whole.get("files") if isinstance(whole, dict) else None
    if not isinstance(manifest, dict) or not all(isinstance(w, dict) for w in manifest.values()):
        return {"manifest.json": {"why": "the manifest is missing or unreadable"}}
    out: dict[str, Drift] = {}
    for rel, want in sorted(manifest.items()):
        seen = files.get(rel)
        if seen is None:
            out[rel] = {"why": "missing"}
        elif want.get("sha256") is not None and seen.get("sha256") != want.get("sha256"):  # None: a file of secrets
            out[rel] = {"why": "modified"}
            path = os.path.join(base, rel)
            # env files hold secrets: their content never leaves the target
            if not rel.startswith("env/"):
                try:
                    with os.fdopen(open_regular(path), "rb") as f:
                        content = f.read(DRIFT_SHOWN + 1)
                    if len(content) <= DRIFT_SHOWN:
                        out[rel]["content"] = base64.b64encode(content).decode()
                except OSError:
                    pass
        elif isinstance(want.get("mode"), str) and f"{seen.get('mode', 0):04o}" != want["mode"]:
            out[rel] = {"why": f"mode {seen.get('mode', 0):04o}, not {want['mode']}"}
    for rel in files:
        if rel not in manifest and rel != "manifest.json":
            out[rel] = {"why": "not in the manifest"}
    return out


def _backups(deploy_home: str, problems: list[str]) -> list[BackupRecord]:
    """What each apply kept (``backups/*/index.json``), oldest first: rollback's history."""
    # A backup without an index is an older one, or one holding only hand-edited files.
    out: list[BackupRecord] = []
    for name, record in _json_records(os.path.join(deploy_home, "backups"), problems, "index.json"):
        if isinstance(record, dict):
            record["name"] = name
            out.append(record)  # type: ignore[arg-type]  # what index.json holds: BackupRecord when well-formed
    return out


def _json_records(folder: str, problems: list[str], inside: str = "") -> Iterator[tuple[str, object]]:
    """(name, parsed JSON) of each entry of ``folder`` (of ``entry/inside`` when given), in
    name order; entries that are missing are skipped, those that cannot be read said in
    ``problems``."""
    # safefs: a folder of a job's user may be a link to one of root's: not listed, not read
    for name in sorted(list_dir(folder)):
        data, problem = read_json_file(os.path.join(folder, name, inside) if inside else os.path.join(folder, name))
        if problem:
            problems.append(problem)
        elif data is not None:
            yield name, data


def _rollback_mark(deploy_home: str, problems: list[str]) -> RollbackMark | None:
    data, problem = read_json_file(os.path.join(deploy_home, "rollback.json"))
    if problem:
        problems.append(problem)
    return data if isinstance(data, dict) else None  # type: ignore[return-value]  # well-formed: a RollbackMark


def _current(deploy_home: str) -> str | None:
    try:
        target = os.readlink(os.path.join(deploy_home, "current"))
    except OSError:
        return None
    return os.path.basename(target.rstrip("/"))


def _same_namespaces(pid: str) -> bool:
    """A cron in a container on this host (another PID or mount namespace) runs that
    container's crontabs, not ours. When we may not look (not root), assume it is ours."""
    for ns in ("pid", "mnt"):
        try:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                return False
        except OSError:
            continue
    return True


CRON_NAMES = ("cron", "crond", "cronie", "fcron", "dcron", "busybox")
CRON_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin")


def _cron_binary(pid: str) -> str | None:
    """Why the program process ``pid`` runs is not this system's cron binary, or None when it
    is: a file of root's, not writable by others, in a system folder, named as a cron."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return None  # not root: we may not look; the owner (root) was checked already
    except OSError:
        return "its program cannot be read"
    if exe.endswith(" (deleted)"):  # upgraded under a running daemon: the old binary was root's too
        exe = exe[:-len(" (deleted)")]
    if os.path.dirname(exe) not in CRON_DIRS or os.path.basename(exe) not in CRON_NAMES:
        return f"it runs {exe}, not a cron binary of this system"
    try:
        st = os.stat(exe)
    except OSError:
        return None  # deleted by an upgrade: it was in a system folder
    if st.st_uid != 0 or st.st_mode & 0o022:
        return f"its program {exe} is not root's alone"
    return None


def _cron_daemon() -> CronDaemon:
    """Find the cron daemon of this system: a process named as a cron that runs as root (a
    user can name any process ``cron``), is not a zombie (exited, not reaped), runs a cron
    binary of this system, and lives in our PID and mount namespaces (not a container's).
    The processes named as a cron that do not count are listed with why."""
    ignored: list[str] = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat_line = f.read(4096).decode("utf-8", "replace")
            comm = stat_line[stat_line.index("(") + 1:stat_line.rindex(")")]
            if comm not in CRON_NAMES:
                continue
            if comm == "busybox":
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"crond" not in f.read(4096):
                        continue
            state = stat_line[stat_line.rindex(")") + 1:].split()[0]
            owner = os.stat(f"/proc/{pid}").st_uid
        except (OSError, ValueError, IndexError):
            continue
        why: str | None
        if state == "Z":
            why = "a zombie (exited, not reaped)"
        elif owner != 0:
            why = f"runs as {user_name(owner)}, not root"
        elif not _same_namespaces(pid):
            why = "in another PID or mount namespace (a container's)"
        else:
            why = _cron_binary(pid)
        if why is None:
            return {"running": True, "process": comm, "pid": int(pid), "flavour": _cron_flavour(pid, comm),
                    "ignored": ignored}
        ignored.append(f"pid {pid} '{comm}': {why}")
    return {"running": False, "process": None, "pid": None, "flavour": None, "ignored": ignored[:10]}


# The program of a cron daemon -> which cron it is (the names deployer's cron engine knows).
# Debian/Ubuntu's cron package installs /usr/sbin/cron; cronie's daemon is crond; busybox's
# crond is busybox itself (``busybox crond``, or a link named crond to it, as on Alpine).
# fcron is not known: None, and the controller uses the inventory or its default. The name is
# all we read for the others: dcron's daemon, also called crond, reads as cronie, and a cronie
# installed as cron reads as debian; deployer_cron_flavour in the inventory says otherwise.
FLAVOUR_OF_PROGRAM: dict[str, CronFlavour] = {"cron": "debian", "crond": "cronie", "cronie": "cronie", "busybox": "busybox"}
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox", "/sbin/busybox", "/usr/sbin/busybox")


def _cron_flavour(pid: str, comm: str, busybox_paths: tuple[str, ...] = BUSYBOX_PATHS) -> CronFlavour | None:
    """Which cron the daemon ``pid`` is, from the program it runs: /proc/PID/exe (links
    resolved by the kernel, so a crond that is busybox says busybox), else (not root: we may
    not read exe) the real path of its argv[0], else its process name."""
    try:
        program: str | None = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        program = None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read(4096).split(b"\0")[0].decode("utf-8", "replace")
            if argv0.startswith("/"):
                program = os.path.realpath(argv0)
        except OSError:
            pass
    if program is None:
        return FLAVOUR_OF_PROGRAM.get(comm)
    if program.endswith(" (deleted)"):
        program = program[:-len(" (deleted)")]
    for busybox in busybox_paths:  # a hard link named crond to busybox (no link for the kernel to resolve)
        try:
            if os.path.samefile(program, busybox):
                return "busybox"
        except OSError:
            continue
    return FLAVOUR_OF_PROGRAM.get(os.path.basename(program))


def _text_lines(path: str, count: int, problems: list[str], max_bytes: int = 4 << 20) -> list[str]:
    """The last ``count`` lines of a text file (a log), undecodable bytes replaced."""
    lines, problem = tail_lines(path, count, max_bytes)
    if problem:
        problems.append(problem)
    return [line.decode("utf-8", "replace") for line in lines]


def _run_lines(path: str, count: int, problems: list[str], max_bytes: int = 4 << 20) -> list[RunFound]:
    """The runs among the last ``count`` lines of a ledger: lines that are not run records
    (cut by a full disk, or written by someone else) are skipped and said once."""
    lines, problem = tail_lines(path, count, max_bytes)
    if problem:
        problems.append(problem)
    records, bad = parse_run_lines(lines)
    if bad:
        problems.append(f"{path}: {bad[0]} of its last {len(lines)} lines {'is' if bad[0] == 1 else 'are'} not run records, "
                        f"skipped (the first: {bad[1]!r}, {bad[2]})")
    return records


def _ledger(path: str, count: int, problems: list[str]) -> tuple[list[RunFound], RunFound | None]:
    """(last ``count`` runs, last success) from a ledger."""
    entries = _run_lines(path, count, problems)
    last_success = None
    for entry in reversed(entries):
        if entry.get("outcome") == "success":
            last_success = entry
            break
    if last_success is None and len(entries) >= count:
        for entry in reversed(_run_lines(path, 20000, [])):  # bad lines were said once, above
            if entry.get("outcome") == "success":
                last_success = entry
                break
    return entries, last_success


_LOCKS: list[list[str]] = []  # /proc/locks, read once per probe


def _flock_holders(path: str) -> list[int]:
    """PIDs holding a flock on ``path``; /proc/locks is read once per probe."""
    if not _LOCKS:
        _LOCKS.append(read_lock_table())
    return lock_holders(path, _LOCKS[0])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError, ValueError):
        return False


def _running(state_dir: str, problems: list[str]) -> list[RunFound]:
    """The running markers of a job's runs that started and have not ended."""
    runs: list[RunFound] = []
    folder = os.path.join(state_dir, "running")
    for name, data in _json_records(folder, problems):
        run, why = run_record(data, ledger=False)
        if run is None:
            problems.append(f"{os.path.join(folder, name)}: not a running marker ({why}): skipped")
            continue
        pid = run.get("pid")
        run["alive"] = _alive(pid) if pid else False
        runs.append(run)
    return runs


def _legacy_lock(path: str) -> LegacyLock | None:
    """A lock file of a hand-made setup: who it names, and whether that process lives.

    Its folder may be the job's user's: it is walked by safefs and the file opened without
    following a link or blocking on a FIFO; what is said of it (owner, mode, age, holders,
    pid) comes from that one descriptor, never from a second look by name."""
    try:
        fd = open_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        try:
            there = lstat_at(path)
        except FileNotFoundError:
            return None
        except OSError:
            return {"type": "error", "error": _why(path, exc)}
        if path_kind(there.st_mode) == "file":  # a hard link, or swapped meanwhile
            return {"type": "error", "error": _why(path, exc)}
        kind = path_kind(there.st_mode)  # a link or a FIFO planted there: what it is, nothing behind it
        return {"type": file_kind(there.st_mode) if kind == "other" else kind}
    try:
        st: os.stat_result | None = os.fstat(fd)
        data = os.read(fd, 64)
    except OSError:
        st, data = None, b""
    finally:
        os.close(fd)
    if st is None:
        return None
    info: LegacyLock = {"type": "file", "mode": st.st_mode & 0o7777, "owner": user_name(st.st_uid), "group": group_name(st.st_gid)}
    words = data.decode("utf-8", "replace").split()
    digits = "".join(c for c in words[0] if c.isdigit()) if words else ""
    pid = int(digits) if digits else None
    info["pid"] = pid
    info["alive"] = _alive(pid) if pid else False
    if not _LOCKS:
        _LOCKS.append(read_lock_table())
    info["held"] = bool(lock_holders_of(st, _LOCKS[0]))
    info["age"] = time.time() - st.st_mtime
    return info


NOT_SUCCESS = ("failure", "timeout", "crashed")


def _run_log(state_dir: str, selector: str, count: int) -> RunLog:
    """One run's own log file (retention.run_logs): the run named by ``selector`` -- ``last``,
    ``failed`` (the last run that did not succeed) or the start of a run id -- among the
    ledger and the runs going on, with the last ``count`` lines of its file."""
    problems: list[str] = []  # said by the job's own reads already
    runs = _run_lines(os.path.join(state_dir, "ledger.jsonl"), 10 ** 7, problems, max_bytes=64 << 20)
    runs += sorted(_running(state_dir, problems), key=lambda r: r["start"])
    runs = [r for r in runs if r.get("log")]
    if selector == "last":
        found = runs[-1:]
    elif selector == "failed":
        found = [r for r in runs if r.get("outcome") in NOT_SUCCESS][-1:]
    else:
        found = [r for r in runs if str(r.get("run_id", "")).startswith(selector)]
    if not found:
        return {"error": f"no kept run log matches '{selector}' ({len(runs)} kept)"}
    if len(found) > 1:
        return {"error": f"'{selector}' names {len(found)} runs; give more of the run id"}
    run = found[0]
    folder, _, name = str(run["log"]).partition("/")
    if folder != "runs" or not name or "/" in name or name.startswith("."):
        return {"error": f"run {run.get('run_id')} names an odd log file ({run['log']!r}); not read"}
    path = os.path.join(state_dir, folder, name)
    try:
        os.close(open_file(path, os.O_RDONLY))
    except FileNotFoundError:
        return {"run": run, "error": f"its log file is gone ({path}): older than the run_logs kept"}
    except OSError as exc:  # safefs refused it: a link planted on the way or there, a FIFO...
        return {"run": run, "error": f"its log file {exc.filename or path} is not read: {exc.strerror or exc}"}
    return {"run": run, "path": path, "lines": _text_lines(path, count, [])}


def _job_runtime(job: ProbeJob, home: str, log_tail: int, ledger_all: bool, run_log: RunLogRequest | None,
                 problems: list[str]) -> JobRuntime:
    state = expand(job["state_dir"], home)
    ledger = os.path.join(state, "ledger.jsonl")
    entries, last_success = _ledger(ledger, 50, problems)
    lock = expand(job["lock_file"], home)
    info: JobRuntime = {"runs": entries, "last_success": last_success, "running": _running(state, problems),
            "lock": {"holders": [p for p in _flock_holders(lock) if p != os.getpid()],
                     "content": "".join(_text_lines(lock, 1, problems, max_bytes=4096))},
            "problems": problems, "legacy_locks": {}}
    info["legacy_locks"] = {expand(p, home): _legacy_lock(expand(p, home)) for p in job.get("legacy_locks", [])}
    if log_tail:
        info["log_tail"] = _text_lines(expand(job["log_file"], home), log_tail, problems)
    if ledger_all:
        info["ledger"] = _run_lines(ledger, 10 ** 7, [], max_bytes=1 << 30)
    if run_log and run_log.get("job") == job["id"]:
        info["run_log"] = _run_log(state, run_log["run"], run_log.get("lines", 50))
    alerts = _alert_state(os.path.join(state, "alerts.json"), problems)
    if alerts is not None:
        info["alerts"] = alerts
    return info


def _alert_state(path: str, problems: list[str]) -> AlertState | None:
    """The job's alert state (None: it has none). The wrapper that writes it runs as root, or
    as the deploying user: a file of anyone else's, a link, a FIFO, a hard link, one too big or
    not an alert state is not read, and said."""
    try:
        data = read_bytes(path, ALERT_STATE_LIMIT + 1, owners={0, os.geteuid()})
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(read_problem(path, exc))
        return None
    if len(data) > ALERT_STATE_LIMIT:
        problems.append(f"{path} is larger than {ALERT_STATE_LIMIT} bytes: not read")
        return None
    try:
        found, why = alert_state(json.loads(data.decode("utf-8")))
    except (ValueError, RecursionError):
        found, why = None, "not JSON"
    if found is None:
        problems.append(f"{path}: {why}: not read")
    return found


def _jobs_runtime(jobs: list[ProbeJob], home: str, log_tail: int, ledger_all: bool,
                  run_log: RunLogRequest | None = None) -> dict[str, JobRuntime]:
    out: dict[str, JobRuntime] = {}
    for job in jobs:
        problems: list[str] = []
        try:
            out[job["id"]] = _job_runtime(job, home, log_tail, ledger_all, run_log, problems)
        except Exception as exc:  # noqa: BLE001 - what a user wrote never fails the probe: said, not raised
            problems.append(f"reading the runs of {job['id']} failed: {type(exc).__name__}: {exc}")
            out[job["id"]] = {"runs": [], "last_success": None, "running": [], "lock": {"holders": [], "content": ""},
                              "legacy_locks": {}, "problems": problems}
    return out





def _space(paths: list[str], problems: list[str]) -> dict[str, SpaceInfo]:
    """Free space and inodes where the jobs write: of the folder itself, or of the nearest one
    above it that exists, walked by safefs and measured on its descriptor (a log folder the
    job's user swapped for a link is not measured through the link: said in ``problems``)."""
    out: dict[str, SpaceInfo] = {}
    for path in paths:
        probe_path = path
        while True:
            try:
                fd: int | None = open_dir(probe_path or "/")
                break
            except FileNotFoundError:
                if probe_path in ("", "/"):
                    fd = None
                    break
                probe_path = os.path.dirname(probe_path)
            except OSError as exc:
                problems.append(f"{path}: free space not measured: {_why(probe_path, exc)}")
                fd = None
                break
        if fd is None:
            continue
        try:
            st = os.fstatvfs(fd)
        except OSError:
            continue
        finally:
            os.close(fd)
        out[path] = {"free_bytes": st.f_bavail * st.f_frsize, "total_bytes": st.f_blocks * st.f_frsize,
                     "free_inodes": st.f_favail, "total_inodes": st.f_files}
    return out


def main(params: ProbeRequest) -> None:
    home = my_home()
    deploy_home = expand(params["deploy_home"], home)
    users: dict[str, UserInfo | None] = {}
    for name in params.get("users", []):
        try:
            pw = pwd.getpwnam(name)
            users[name] = {"uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir}
        except KeyError:
            users[name] = None
    me = user_name(os.getuid())
    current = _current(deploy_home)
    crontab_users = set(params.get("crontab_users", [])) | {me}
    problems: list[str] = []  # files of the target that could not be read: said by verify
    if current:
        manifest, _problem = read_json_file(os.path.join(deploy_home, "releases", current, "manifest.json"))
        listed = manifest.get("crontab_users") if isinstance(manifest, dict) else None
        if isinstance(listed, list):
            crontab_users |= {u for u in listed if isinstance(u, str)}
    crontabs: dict[str, CrontabRead] = {}
    for user in sorted(crontab_users):
        if user != me and users.get(user, True) is None:
            crontabs[user] = {"text": None, "error": "no such user"}
            continue
        text, error = read_crontab(user)
        crontabs[user] = {"text": text, "error": error}
    paths: dict[str, PathInfo | None] = {}
    for path in params.get("paths", []):
        full = expand(path, home)
        paths[full] = describe_path(full)
    try:
        deployed_at: float | None = os.lstat(os.path.join(deploy_home, "current")).st_mtime
    except OSError:
        deployed_at = None
    answer: ProbeAnswer = {
        "ok": True,
        "hostname": socket.gethostname(),
        "user": me,
        "uid": os.getuid(),
        "home": home,
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "deploy_home": deploy_home,
        "users": users,
        "crontabs": crontabs,
        "paths": paths,
        "releases": _releases(deploy_home, bool(params.get("release_jobs"))),
        "current": current,
        "cron": _cron_daemon(),
        "now": time.time(),
        "timezone": target_timezone(),
        "deployed_at": deployed_at,
        "jobs": _jobs_runtime(params.get("jobs", []), home, params.get("log_tail", 0), params.get("ledger_all", False),
                              params.get("run_log")),
        "space": _space([expand(p, home) for p in params.get("space", [])], problems),
        "rollback": _rollback_mark(deploy_home, problems),
        "backups": _backups(deploy_home, problems) if params.get("backups") else [],
        "problems": problems,
    }
    emit(answer)
