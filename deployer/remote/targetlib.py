"""Helpers shared by the code that runs ON a target (probe and applier).

Standard library only. This file is not imported on the target: its source is sent in
front of the probe's or the applier's, over stdin to ``python3 -`` (see
``deployer.engine.remote``), so targets need nothing but python3 and cron.
"""

import base64
import grp
import hashlib
import json
import os
import pwd
import stat
import subprocess
import sys

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


def sha256_file(path):
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            words = f.read(64).decode("utf-8", "replace").split()
    except OSError:
        return None
    digits = "".join(c for c in words[0] if c.isdigit()) if words else ""
    return int(digits) if digits else None


def emit(result):
    """The one JSON line the controller reads (the last line of stdout)."""
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def decode_params(text):
    return json.loads(base64.b64decode(text).decode("utf-8"))
