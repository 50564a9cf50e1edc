"""The probe: everything deployer needs to know about a target, in one exec.

Runs on the target (standard library only; targetlib's source is sent before it). Reads,
never writes. Prints one JSON line of facts.
"""

import os
import platform
import socket
import sys

# <targetlib>


def _releases(deploy_home):
    releases = {}
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
        files = {}
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for filename in sorted(filenames):
                full = os.path.join(dirpath, filename)
                rel = os.path.relpath(full, base)
                info = describe_path(full)
                if info and info["type"] == "file":
                    try:
                        info["sha256"] = sha256_file(full)
                    except OSError as exc:
                        info["error"] = exc.strerror
                files[rel] = info
        releases[name] = {"files": files, "mtime": os.lstat(base).st_mtime}
    return releases


def _current(deploy_home):
    try:
        target = os.readlink(os.path.join(deploy_home, "current"))
    except OSError:
        return None
    return os.path.basename(target.rstrip("/"))


def _same_namespaces(pid):
    """A cron in a container on this host (another PID or mount namespace) runs that
    container's crontabs, not ours. When we may not look (not root), assume it is ours."""
    for ns in ("pid", "mnt"):
        try:
            if os.readlink("/proc/%s/ns/%s" % (pid, ns)) != os.readlink("/proc/self/ns/%s" % ns):
                return False
        except OSError:
            continue
    return True


def _cron_daemon():
    """Look for a cron daemon among the processes of this system (not of its containers)."""
    names = {"cron", "crond", "cronie", "fcron", "dcron", "busybox"}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                comm = f.read().strip()
            if comm not in names:
                continue
            if comm == "busybox":
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    if b"crond" not in f.read():
                        continue
            if not _same_namespaces(pid):
                continue
            return {"running": True, "process": comm, "pid": int(pid)}
        except OSError:
            continue
    return {"running": False, "process": None, "pid": None}


def main(params):
    home = my_home()
    deploy_home = expand(params["deploy_home"], home)
    users = {}
    for name in params.get("users", []):
        try:
            pw = pwd.getpwnam(name)
            users[name] = {"uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir}
        except KeyError:
            users[name] = None
    me = user_name(os.getuid())
    current = _current(deploy_home)
    crontab_users = set(params.get("crontab_users", [])) | {me}
    if current:
        try:
            with open(os.path.join(deploy_home, "releases", current, "manifest.json")) as f:
                crontab_users |= set(json.load(f).get("crontab_users", []))
        except (OSError, ValueError):
            pass
    crontabs = {}
    for user in sorted(crontab_users):
        if user != me and users.get(user, True) is None:
            crontabs[user] = {"text": None, "error": "no such user"}
            continue
        text, error = read_crontab(user)
        crontabs[user] = {"text": text, "error": error}
    paths = {}
    for path in params.get("paths", []):
        full = expand(path, home)
        paths[full] = describe_path(full)
    emit({
        "ok": True,
        "hostname": socket.gethostname(),
        "user": me,
        "uid": os.getuid(),
        "home": home,
        "python": sys.executable,
        "python_version": platform.python_version(),
        "deploy_home": deploy_home,
        "users": users,
        "crontabs": crontabs,
        "paths": paths,
        "releases": _releases(deploy_home),
        "current": current,
        "cron": _cron_daemon(),
    })
