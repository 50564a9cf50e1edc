"""Helpers shared by the code that runs ON a target (probe and applier).

Standard library only. This file is not imported on the target: its source is sent in
front of the probe's or the applier's, over stdin to ``python3 -`` (see
``deployer.engine.remote``), so targets need nothing but python3 and cron.
"""

import base64
import errno
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys

if "open_file" not in globals():  # imported as a module (unit tests), not sent after safefs's source
    from deployer.remote.safefs import open_file

HOME_MARK = "\x00~\x00"
DATA_MARK = "\x00data\x00"


def my_home():
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.environ.get("HOME", "/")


def expand(path, home):
    """The same expansion as deployer.core.desired.expand_home, on the target."""
    data = "/var/lib" if os.getuid() == 0 else (home.rstrip("/") or "") + "/.local/share"
    return path.replace(DATA_MARK, data).replace(HOME_MARK, home.rstrip("/") or "/")


def user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def is_self(user):
    return user is None or user == "" or user == user_name(os.getuid())


def crontab_argv(user, *rest):
    if is_self(user):
        return ["crontab"] + list(rest)
    return ["crontab", "-u", user] + list(rest)


def read_crontab(user):
    """(text or None when the user has no crontab, error or None)."""
    try:
        proc = subprocess.run(crontab_argv(user, "-l"), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    except FileNotFoundError:
        return None, "the crontab command is not installed (install cron)"
    err = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode == 0:
        return proc.stdout.decode("utf-8", "surrogateescape"), None
    if err.startswith("no crontab for"):
        return None, None
    return None, err or "crontab -l exited with %d" % proc.returncode


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, limit=None):
    """The file's SHA-256; past ``limit`` bytes, a mark that equals no digest (such a file is
    not one we wrote, which is all a caller needs to know) without reading it."""
    digest = hashlib.sha256()
    fd = open_regular(path)
    if limit is not None and os.fstat(fd).st_size > limit:
        os.close(fd)
        return "larger-than-%d-bytes" % limit
    with os.fdopen(fd, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_path(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return {"type": "error", "error": exc.strerror}
    if stat.S_ISLNK(st.st_mode):
        kind = "link"
    elif stat.S_ISDIR(st.st_mode):
        kind = "dir"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        kind = "other"
    return {"type": kind, "mode": st.st_mode & 0o7777, "owner": user_name(st.st_uid), "group": group_name(st.st_gid)}


def read_lock_table():
    """/proc/locks: every file lock of the system (looking never takes a lock)."""
    try:
        with open("/proc/locks") as f:
            return f.read().splitlines()
    except OSError:
        return []


def lock_holders(path, table, kinds=("FLOCK",)):
    """PIDs holding a lock of ``kinds`` on ``path`` (not following a link), per ``table``."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return []
    return lock_holders_of(st, table, kinds)


def lock_holders_of(st, table, kinds=("FLOCK",)):
    """PIDs holding a lock of ``kinds`` on the file of ``st`` (an os.stat result), per ``table``."""
    wanted = "%02x:%02x:%d" % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    holders = []
    for row in table:
        parts = row.split()
        if "->" in parts:
            continue  # a waiter, not a holder
        if len(parts) >= 6 and parts[1] in kinds and parts[5] == wanted:
            try:
                holders.append(int(parts[4]))
            except ValueError:
                pass
    return holders


def pid_in_file(path):
    """The pid a hand-made lock file names (its first word's digits), or None."""
    try:
        fd = open_regular(path)
        with os.fdopen(fd, "rb") as f:
            words = f.read(64).decode("utf-8", "replace").split()
    except OSError:
        return None
    digits = "".join(c for c in words[0] if c.isdigit()) if words else ""
    return int(digits) if digits else None


# ---------------------------------------------------------------------------- hostile input
# Everything read on a target may have been written by the job's user (or be damaged): read
# regular files only, without blocking (a FIFO) or following a final link, bounded, from the
# end in linear time, and parse it field by field. A bad line is skipped and said, once.

JSON_LIMIT = 8 << 20  # a marker, an index, a manifest: far more than deployer ever writes


def open_regular(path):
    """A read descriptor on the regular file at ``path``; OSError for anything else (a link,
    there or on the way; a FIFO, a device, a folder; a hard link), without ever waiting on it.
    The folders are walked from / by safefs (sent before this file)."""
    fd = open_file(path, os.O_RDONLY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "is a %s, not a regular file" % file_kind(mode), path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_kind(mode):
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def read_problem(path, exc):
    """One line saying why a file was not read."""
    if exc.errno == errno.ELOOP:
        return "%s is a symlink: not followed, not read" % path
    return "%s: %s: not read" % (path, exc.strerror or exc)


def read_json_file(path, limit=JSON_LIMIT):
    """(parsed JSON or None, problem or None); a missing file is (None, None)."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, read_problem(path, exc)
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        return None, "%s is larger than %d bytes: not read" % (path, limit)
    try:
        return json.loads(data.decode("utf-8")), None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None, "%s is not JSON: not read" % path


def tail_lines(path, count, max_bytes=4 << 20):
    """(the last ``count`` lines of a file as bytes, problem or None), reading at most
    ``max_bytes`` back from its end: each byte read once (a 350 MB ledger costs what its
    last lines cost). A line cut by ``max_bytes`` is left out; a missing file has none."""
    if count <= 0:
        return [], None
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], read_problem(path, exc)
    chunks = []
    newlines = taken = 0
    try:
        start = os.fstat(fd).st_size
        while start > 0 and newlines <= count and taken < max_bytes:
            step = min(65536, start, max_bytes - taken)
            start -= step
            chunk = os.pread(fd, step, start)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
            taken += len(chunk)
    except OSError as exc:
        return [], read_problem(path, exc)
    finally:
        os.close(fd)
    data = b"".join(reversed(chunks))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline
    if start > 0 and lines:
        lines.pop(0)  # begins before what we read
    return lines[-count:], None


# A ledger line (one per run, written by the wrapper) and a running marker: their fields and
# the types each may have. Unknown fields are dropped; None is allowed where the wrapper writes it.
RUN_FIELDS = {
    "run_id": (str,), "job": (str,), "project": (str,), "env": (str,), "start": (str,), "end": (str,),
    "duration": (int, float), "exit_code": (int,), "outcome": (str,), "host": (str,), "pid": (int,),
    "wrapper_pid": (int,), "user": (str,), "revision": (str,), "trigger": (str,), "log": (str,),
    "lock_holder": (str,), "signal": (int,), "error": (str,),
}
OUTCOMES = ("success", "failure", "timeout", "skipped-locked", "crashed")
TEXT_LIMIT = 4096  # characters of one field


def run_record(data, ledger=True):
    """(the typed fields of a ledger line or running marker, None) or (None, why it is not one)."""
    if not isinstance(data, dict):
        return None, "not a JSON object"
    out = {}
    for name, value in data.items():
        kinds = RUN_FIELDS.get(name)
        if kinds is None:
            continue
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)
                                  or (isinstance(value, str) and len(value) > TEXT_LIMIT)):
            return None, "field %s is %s" % (name, _shown_type(value))
        if isinstance(value, float) and value != value:
            return None, "field %s is NaN" % name
        out[name] = value
    for name in ("run_id", "start") + (("outcome",) if ledger else ()):
        if not isinstance(out.get(name), str):
            return None, "no %s" % name
    if ledger and out["outcome"] not in OUTCOMES:
        return None, "unknown outcome"
    return out, None


def _shown_type(value):
    if isinstance(value, str):
        return "a string of %d characters" % len(value)
    return "a JSON %s" % {bool: "boolean", int: "number", float: "number", list: "array", dict: "object",
                          str: "string"}.get(type(value), type(value).__name__)


def parse_run_lines(lines):
    """(records, (count of bad lines, the first one's excerpt and why) or None) of ledger lines."""
    records = []
    bad, first = 0, None
    for line in lines:
        try:
            record, why = run_record(json.loads(line.decode("utf-8")))
        except UnicodeDecodeError:
            record, why = None, "not UTF-8"
        except (ValueError, RecursionError):
            record, why = None, "not JSON"
        if record is None:
            bad += 1
            first = first or (line[:80].decode("utf-8", "backslashreplace"), why)
        else:
            records.append(record)
    return records, ((bad,) + first if bad else None)


def emit(result):
    """The one JSON line the controller reads (the last line of stdout)."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def decode_params(text):
    return json.loads(base64.b64decode(text).decode("utf-8"))
