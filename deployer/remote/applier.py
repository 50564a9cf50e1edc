"""The applier: makes one planned change on a target, in one exec.

Runs on the target (standard library only; bundled with the target modules it imports,
see deployer/core/bundle.py). Order
matters, so that a failure at any point leaves the old state working or the new one
complete, never a mix:

1. take the deploy lock (two applies never interleave);
2. refuse if any crontab differs from what the plan observed (compare-and-swap);
3. write the new release folder under a temporary name and rename it into place
   (the old release is untouched and still the one cron runs);
4. create folders, log and lock files with their owners and modes;
5. back up the crontabs and the current revision;
6. install the crontabs (the switch: lines now point into the new release);
7. point ``current`` at the new release and prune old releases.

``rollback`` is the same steps with no release to write (the old one is still there);
``destroy`` installs crontabs without our block, then removes what we had put there.

Prints one JSON line: what was done, or the error (messages.ApplyAnswer).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Collection

from deployer.remote.messages import ApplyAnswer, ApplyFailure, ApplyRequest, CrontabSpec, DestroySpec, DirSpec, FileSpec, MoveSpec, RecordsSpec, ReleaseSpec
from deployer.remote.safefs import Unsafe, check_file, flock_within, open_dir, read_fd, split, writable_by_others
from deployer.remote.targetlib import crontab_argv, emit, lock_holders_of, open_regular, read_crontab, read_lock_table, user_name


class Refused(Exception):
    """A precondition failed; nothing (more) is written."""

    def __init__(self, kind: ApplyFailure, message: str) -> None:
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message


def _ids(owner: str | None, group: str | None) -> tuple[int, int]:
    uid = gid = -1
    if owner:
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            raise Refused("user", f"user {owner} does not exist on this host") from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise Refused("user", f"group {group} does not exist on this host") from None
    return uid, gid


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes, mode: int, owner: str | None = None) -> None:
    """Atomically replace ``path``: temp file in the same folder, fsync, rename."""
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        uid, gid = _ids(owner, None)
        if uid != -1:
            os.lchown(tmp, uid, gid)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not exc.filename:
            exc.filename = path  # write/fsync errors (ENOSPC) name no file: the error must say where
        raise


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_json(path: str, data: object, mode: int) -> None:
    _write_file(path, json.dumps(data, sort_keys=True).encode("utf-8", "surrogateescape"), mode)


def _makedirs(path: str) -> None:
    """Create missing folders (0755) on the way to ``path``, walked from / without following
    a link someone planted there (safefs)."""
    os.close(open_dir(path, 0o755))


def _move(move: MoveSpec, done: list[str]) -> None:
    """A renamed job's state folder or log: moved once, only if the new place is still free.
    Renamed between the two folders' descriptors: neither can be swapped for a link meanwhile."""
    (src_dir, src), (dst_dir, dst) = split(move["from"]), split(move["to"])
    try:
        sfd = open_dir(src_dir)
    except FileNotFoundError:
        return
    try:
        if not _lexists_at(sfd, src):
            return
        dfd = open_dir(dst_dir, 0o755)
        try:
            if _lexists_at(dfd, dst):
                return
            os.rename(src, dst, src_dir_fd=sfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)
    done.append(f"moved {move['from']} to {move['to']}")


def _lexists_at(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _ensure_dir(spec: DirSpec, done: list[str]) -> None:
    """A folder with its owner and mode, changed on its descriptor: whatever is swapped on the
    way, the folder changed is the one at ``path`` walked without links (safefs)."""
    path = spec["path"]
    parent, name = split(path)
    pfd = open_dir(parent, 0o755)
    try:
        created = not _lexists_at(pfd, name)
        fd = open_dir(name, 0o755, _start=pfd, shown=parent)
    finally:
        os.close(pfd)
    try:
        # A folder that was already there gets only what the declaration says of it (a shared
        # /var/log keeps its owner, mode and sticky bit); one created now gets everything.
        enforce: Collection[str] = spec.get("enforce", ("mode", "owner", "group"))
        if created:
            done.append(f"created folder {path}")
            enforce = ("mode", "owner", "group")
        uid, gid = _ids(spec.get("owner") if "owner" in enforce else None, spec.get("group") if "group" in enforce else None)
        st = os.fstat(fd)
        if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
            os.fchown(fd, uid, gid)
            done.append(f"chown {path}")
        if "mode" in enforce and stat.S_IMODE(st.st_mode) != spec["mode"]:
            os.fchmod(fd, spec["mode"])
            done.append(f"chmod {spec['mode']:04o} {path}")
    finally:
        os.close(fd)


LEDGER = "ledger.jsonl"
LEDGER_KEPT = 64 << 20  # of a ledger taken over, at most its last 64 MB (retention keeps far less)


def _own_records(spec: RecordsSpec, done: list[str]) -> None:
    """A job's run records (its state folder) change hands: to root, whose wrapper starts the
    job from now on (apply, after the crontab switch), or back to the job's user for a release
    whose wrapper runs as that user (rollback to it).

    All on descriptors, the folder first: once it is fchowned, its old owner can no longer add,
    rename or remove a name in it. The ledger, which the proof rests on, is copied into a new
    file rather than chowned: a descriptor its old writer kept open writes into the old file,
    never into the new ledger. Running markers and run logs are chowned one by one (a link or
    anything but a file with one name is removed: a name in a folder we hold, never followed);
    the lock is left to the wrapper, which makes it anew. The job's own files (it may have
    worked in that folder) are left as they are."""
    path = spec["path"]
    try:
        entry = pwd.getpwnam(spec["owner"])
    except KeyError:
        raise Refused("user", f"user {spec['owner']} does not exist on this host") from None
    uid, gid = entry.pw_uid, entry.pw_gid
    try:
        dfd = open_dir(path)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(dfd)
        before = st.st_uid
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.fchown(dfd, uid, gid)
        owners = {before, uid, 0}
        for name in sorted(os.listdir(dfd)):
            if name == LEDGER:
                _copy_ledger(dfd, path, uid, gid, owners)
            elif name == ".ledger.lock":
                os.unlink(name, dir_fd=dfd)
            elif name in ("running", "runs"):
                _own_folder(dfd, name, uid, gid, owners)
    finally:
        os.close(dfd)
    done.append(f"{spec['owner']} keeps the run records in {path}")


def _copy_ledger(dfd: int, path: str, uid: int, gid: int, owners: set[int]) -> None:
    shown = os.path.join(path, LEDGER)
    fd = os.open(LEDGER, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    try:
        st = os.fstat(fd)
        check_file(st, shown, owners)
        if st.st_uid == uid and st.st_gid == gid:
            return  # already the new owner's own file
        start = max(st.st_size - LEDGER_KEPT, 0)
        os.lseek(fd, start, os.SEEK_SET)
        data = read_fd(fd, st.st_size - start)
        if start:
            data = data[data.find(b"\n") + 1:]  # from the first whole line
    finally:
        os.close(fd)
    tmp = f".{LEDGER}.tmp-{os.getpid()}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dfd)
    try:
        os.fchown(out, uid, gid)
        while data:
            data = data[os.write(out, data):]
        os.fsync(out)
    finally:
        os.close(out)
    os.rename(tmp, LEDGER, src_dir_fd=dfd, dst_dir_fd=dfd)


def _own_folder(dfd: int, name: str, uid: int, gid: int, owners: set[int]) -> None:
    try:
        sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        os.unlink(name, dir_fd=dfd)  # a link or a file where our folder belongs
        return
    try:
        os.fchown(sub, uid, gid)
        for child in os.listdir(sub):
            if not _hand_over(sub, child, uid, gid, owners):
                with contextlib.suppress(IsADirectoryError):  # not ours to empty
                    os.unlink(child, dir_fd=sub)
    finally:
        os.close(sub)


def _hand_over(dir_fd: int, name: str, uid: int, gid: int, owners: set[int]) -> bool:
    """A regular file with one name, of one of ``owners``: fchowned to uid:gid. False for
    anything else (a link, a FIFO, a hard link to someone's file): the caller removes it."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_uid in owners:
            os.fchown(fd, uid, gid)
            return True
        return False
    finally:
        os.close(fd)


def _ensure_file(spec: FileSpec, done: list[str]) -> None:
    """A job's log or lock file: exists, regular, right owner and mode; content untouched.

    Its folder may be the job's user's: everything is done on descriptors (safefs). A link, a
    FIFO or a device planted at the path is removed (a name in that folder, never followed) and
    a new file made. A file with other names (a hard link to someone's file) is refused, and so
    is an existing file that root would hand over to a user from a folder others can write (it
    may be a file of root's that the user moved there)."""
    path = spec["path"]
    folder, name = split(path)
    dfd = open_dir(folder, 0o755)
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise Refused("path", f"{path} is a folder where a file belongs")
        if st is not None and not stat.S_ISREG(st.st_mode):
            os.unlink(name, dir_fd=dfd)  # the name only: a link is never followed
            done.append(f"removed {'link' if stat.S_ISLNK(st.st_mode) else 'non-file'} {path}")
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, spec["mode"], dir_fd=dfd)
            created = True
        except FileExistsError:
            try:
                fd = os.open(name, flags, dir_fd=dfd)
            except OSError as exc:
                raise Unsafe(path, f"changed while apply looked at it ({exc.strerror or exc}); apply again") from None
            created = False
        folder_st = os.fstat(dfd)
    finally:
        os.close(dfd)
    try:
        st = os.fstat(fd)
        uid, _ = _ids(spec.get("owner"), None)
        want = uid if uid != -1 else os.geteuid()
        if not created:
            check_file(st, path, {want, os.geteuid()})
            if st.st_uid != want and writable_by_others(folder_st):
                raise Unsafe(path, f"belongs to uid {st.st_uid}, in a folder others can write: deployer will not hand it to "
                             f"uid {want} (it may not be the file it was); remove it and apply again", errno.EPERM)
        if st.st_uid != want:
            os.fchown(fd, want, -1)
            done.append(f"chown {path}")
        if stat.S_IMODE(st.st_mode) != spec["mode"]:
            os.fchmod(fd, spec["mode"])
            done.append(f"chmod {spec['mode']:04o} {path}")
    finally:
        os.close(fd)


def _write_release(params: ApplyRequest, release: ReleaseSpec, revision: str, backup: BackupFolder, done: list[str]) -> None:
    root = os.path.join(params["deploy_home"], "releases")
    final = os.path.join(root, revision)
    _makedirs(root)
    files = release["files"]
    if os.path.isdir(final) and not os.path.islink(final):
        # Repair in place, one atomic file at a time: the folder's name is its content.
        for f in files:
            path = os.path.join(final, f["path"])
            _makedirs(os.path.dirname(path))
            _keep_drifted(backup, revision, f["path"], path, done, secret=f.get("secret", False))
            _write_file(path, base64.b64decode(f["content"]), f["mode"], f.get("owner"))
            done.append(f"repaired {path}")
        for rel in release.get("remove", []):
            path = os.path.join(final, rel)
            if os.path.lexists(path):
                _keep_drifted(backup, revision, rel, path, done)
                os.unlink(path)
                done.append(f"removed {path}")
        return
    tmp = os.path.join(root, f".tmp-{revision}-{os.getpid()}")
    os.mkdir(tmp, 0o755)
    try:
        for f in files:
            path = os.path.join(tmp, f["path"])
            _makedirs(os.path.dirname(path))
            _write_file(path, base64.b64decode(f["content"]), f["mode"], f.get("owner"))
        for dirpath, dirnames, _ in os.walk(tmp):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)  # noqa: S103 -- a release is read by every job's user
            _fsync_dir(dirpath)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    done.append(f"created release {final}")


def _check_crontabs(crontabs: list[CrontabSpec]) -> None:
    for change in crontabs:
        text, error = read_crontab(change["user"])
        if error:
            raise Refused("crontab", f"cannot read the crontab of {change['user']}: {error}")
        if text != change["expected"]:
            raise Refused("conflict", (
                f"the crontab of {change['user']} changed since it was read (edited by hand or by another tool?); "
                "nothing was changed: run plan again to see the new state"))


def _install_crontab(change: CrontabSpec) -> None:
    text = change["text"]
    # our own argv (crontab [-u user] -), no shell, the table on stdin: S603 does not apply
    proc = subprocess.run(crontab_argv(change["user"], "-"), input=text.encode("utf-8", "surrogateescape"),
                          capture_output=True, check=False)
    if proc.returncode != 0:
        raise Refused("crontab", f"crontab refused the new table of {change['user']}: "
                                 f"{proc.stderr.decode('utf-8', 'replace').strip()}")


def _make_cron_notice(change: CrontabSpec) -> None:
    """Debian's cron reloads the spool when its mtime (in whole seconds) changed since its
    last look, once a minute, just after the minute starts. A crontab written in that same
    second after the look keeps the mtime cron recorded and would be missed until the next
    edit. Written in the first seconds of a minute, we write it again a second later."""
    if time.localtime().tm_sec < 3:
        time.sleep(1.05)
        _install_crontab(change)


def _remove_stale_lock(path: str, done: list[str]) -> None:
    """Remove a hand-made lock file if, now too, no process holds it or lives in it.

    Its folder may be anyone's (/tmp, a user's home): it is walked without links and the file
    is judged and removed through descriptors, so a folder swapped for a link into a root-only
    place never makes root remove a file there. Only a regular file with one name is removed."""
    folder, name = split(path)
    try:
        dfd = open_dir(folder)
    except (FileNotFoundError, Unsafe):
        return  # nothing there, or a planted link on the way: never act on it
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
        except OSError:
            return  # gone, a link, or unreadable
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                return  # a FIFO, a device, a hard link to someone's file: never act on it
            if lock_holders_of(st, read_lock_table(), kinds=("FLOCK", "POSIX")):
                return  # locked by someone (flock or lockf): not stale
            words = os.pread(fd, 64, 0).decode("utf-8", "replace").split()
        finally:
            os.close(fd)
        digits = "".join(c for c in words[0] if c.isdigit()) if words else ""
        if digits and os.path.exists(f"/proc/{int(digits)}"):
            return  # its process came back to life (or the pid was reused): leave it
        try:
            now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return  # swapped meanwhile: not the file we judged
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
    done.append(f"removed stale legacy lock {path}")


class BackupFolder:
    """This apply's backup folder, made on first use: ``backups/<UTC time>-<pid>`` (0700)."""

    def __init__(self, deploy_home: str) -> None:
        self.deploy_home = deploy_home
        self._path: str | None = None

    def path(self) -> str:
        if self._path is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
            folder = os.path.join(self.deploy_home, "backups", stamp)
            _makedirs(os.path.dirname(folder))
            os.mkdir(folder, 0o700)
            self._path = folder
        return self._path


KEEP_LIMIT = 1 << 20  # bytes of a hand-edited file kept in the backup; a bigger one is not ours to keep


def _keep_drifted(backup: BackupFolder, revision: str, rel: str, path: str, done: list[str], secret: bool = False) -> None:
    """A file of the release changed by hand is kept in the backup before it is restored.

    At most KEEP_LIMIT bytes: an env file belongs to the job's user, who could make it a
    sparse 5 GB file (nothing on disk) that a copy would write out in full, as root."""
    try:
        fd = open_regular(path)
    except OSError:
        return  # gone, a link, a FIFO...: nothing of ours to keep
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(KEEP_LIMIT + 1) if size <= KEEP_LIMIT else b""
    if size > KEEP_LIMIT or len(data) > KEEP_LIMIT:
        done.append(f"did not keep the hand-edited {path}: {max(size, len(data))} bytes, more than the {KEEP_LIMIT} kept")
        return
    if secret:  # a changed secret lands here too: its old value is copied nowhere
        done.append(f"did not keep the previous {path}: it holds secrets")
        return
    keep = os.path.join(backup.path(), "drift", revision, rel)
    _makedirs(os.path.dirname(keep))
    _write_file(keep, data, 0o600)
    done.append(f"kept the hand-edited {path} in {keep}")


def _backup(params: ApplyRequest, backup: BackupFolder, crontabs: list[CrontabSpec], done: list[str]) -> None:
    """Crontabs as they were and the revision that was live: what ``rollback`` restores.

    ``index.json`` is the machine-readable record; ``crontab.<user>`` copies are there for
    people (``crontab -u USER backups/.../crontab.USER`` restores one by hand)."""
    folder = backup.path()
    for change in crontabs:
        if change["expected"] is not None:
            _write_file(os.path.join(folder, f"crontab.{change['user']}"),
                        change["expected"].encode("utf-8", "surrogateescape"), 0o600)
    previous = params.get("previous_revision") or ""
    _write_file(os.path.join(folder, "revision"), (previous + "\n").encode(), 0o644)
    index = {"kind": params.get("kind", "apply"), "revision": previous or None, "to": params.get("revision"),
             "at": _utc_now(), "crontabs": {c["user"]: c["expected"] for c in crontabs}}
    _write_json(os.path.join(folder, "index.json"), index, 0o600)
    done.append(f"backup {folder}")
    backups = sorted(n for n in os.listdir(os.path.dirname(folder)) if not n.startswith("."))
    for old in backups[:-max(params.get("keep_backups") or params.get("keep_releases", 5) * 2, 1)]:
        shutil.rmtree(os.path.join(os.path.dirname(folder), old), ignore_errors=True)


def _mark_rollback(params: ApplyRequest, revision: str, done: list[str]) -> None:
    """``rollback.json`` says the target is held at an older revision on purpose (verify
    audits it against that revision, plan says apply moves it forward); an apply clears it."""
    path = os.path.join(params["deploy_home"], "rollback.json")
    rollback = params.get("rollback")
    if rollback:
        _write_json(path, {**rollback, "revision": revision, "at": _utc_now()}, 0o644)
        done.append(f"rolled back to {revision}")
    elif os.path.lexists(path):
        os.unlink(path)


def _destroy(home: str, spec: DestroySpec, done: list[str]) -> None:
    """After the crontabs lost our block (nothing of ours starts any more): remove what we put there."""
    for path in spec.get("files", []):
        # through its folder's descriptor: a link is removed, never followed, on the way or there
        folder, name = split(path)
        try:
            dfd = open_dir(folder)
        except (FileNotFoundError, Unsafe):
            continue
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dfd)
                done.append(f"removed {path}")
        except FileNotFoundError:
            pass
        finally:
            os.close(dfd)
    for path in spec.get("trees", []):
        if os.path.islink(path):
            os.unlink(path)
            done.append(f"removed link {path}")
        elif os.path.isdir(path):
            shutil.rmtree(path)
            done.append(f"removed {path}")
    for name in ("current", "rollback.json"):
        path = os.path.join(home, name)
        if os.path.lexists(path):
            os.unlink(path)
            done.append(f"removed {path}")
    releases = os.path.join(home, "releases")
    if os.path.isdir(releases) and not os.path.islink(releases):
        shutil.rmtree(releases)
        done.append(f"removed {releases}")
    if spec.get("purge"):
        _purge_home(home, done)


# What deployer puts in its home: its trees, its files, and the default log and lock folders.
HOME_TREES = ("state", "backups")
HOME_FILES = (".deploy.lock",)
HOME_FOLDERS = ("logs", "locks")


def _purge_home(home: str, done: list[str]) -> None:
    """--purge-logs: remove what deployer put in its home, then the home if nothing else is in
    it. A home that was already there (an operator's folder declared as home) keeps the rest."""
    for name in HOME_TREES:
        path = os.path.join(home, name)
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
            done.append(f"removed {path}")
    for name in HOME_FILES:
        path = os.path.join(home, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.unlink(path)
    mark = os.path.join(home, HOME_MARK)
    ours = os.path.isfile(mark) and not os.path.islink(mark)
    for name in (*HOME_FOLDERS, ""):
        path = os.path.join(home, name) if name else home
        if not name:
            if not ours:  # an operator's folder declared as the home: it stays, even empty
                done.append(f"kept {home}: deployer did not create it")
                break
            os.unlink(mark)
        try:
            os.rmdir(path)  # only when empty: what else is in it is not ours
            done.append(f"removed {path}")
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            done.append(f"kept {path}: it holds files deployer did not put there")


def _set_current(home: str, revision: str, done: list[str]) -> None:
    link = os.path.join(home, "current")
    tmp = link + f".tmp-{os.getpid()}"
    os.symlink(os.path.join("releases", revision), tmp)
    os.rename(tmp, link)
    _fsync_dir(home)
    done.append(f"current -> releases/{revision}")


def _prune(params: ApplyRequest, revision: str, done: list[str]) -> None:
    root = os.path.join(params["deploy_home"], "releases")
    keep = max(params.get("keep_releases", 5), 1)
    entries: list[tuple[float, str]] = []
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(".tmp-"):
            shutil.rmtree(path, ignore_errors=True)  # left by an interrupted apply
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            entries.append((os.lstat(path).st_mtime, name))
    entries.sort(reverse=True)
    for _, name in entries[keep:]:
        if name != revision:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            done.append(f"pruned release {name}")


def _lock(params: ApplyRequest) -> int:
    home = params["deploy_home"]
    _makedirs(home)
    path = os.path.join(home, ".deploy.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        held = flock_within(fd, params.get("lock_wait", 30), pause=0.2)
    except OSError:
        held = False
    if not held:
        holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise Refused("locked", f"another apply is running on this target ({holder}); try again when it ends")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {_utc_now()}".encode(), 0)
    return fd


def _stage(params: ApplyRequest, name: str) -> None:
    """TEST-ONLY fault-injection point (tests/faults/). Does nothing unless the bundle carries
    ``"pause_at": name``, which only engine/remote.py sets, and only from the test-only
    environment variable DEPLOYER_TEST_PAUSE_AT. Then it writes our pid to a marker file and
    waits while the marker exists, so a test can cut the connection or kill us at this exact
    point between two steps; it resumes when the test removes the marker (at most 10 min)."""
    if params.get("pause_at") != name:
        return
    marker = f"/tmp/deployer-pause.{params['project']}-{params['env']}.{name}"  # noqa: S108 -- test-only, named by the test
    with open(marker, "w") as f:
        f.write(f"{os.getpid()}\n")
    deadline = time.time() + 600
    while os.path.exists(marker) and time.time() < deadline:
        time.sleep(0.05)


# deployer's own folders in its home: an existing one (an operator's folder declared as the
# home) keeps its owner and mode, but only if nobody else can write it.
OWN_FOLDERS = ("", "releases", "state")
HOME_MARK = ".created-by-deployer"  # in a home deployer made: destroy --purge-logs may remove it


def _own_folders(params: ApplyRequest) -> set[str]:
    """Which of the home, ``releases`` and ``state`` this apply will make (they are missing):
    those get the declared owner and mode. One that exists is left as it is, and refused
    when someone other than root (or the deploying user) could write it: whoever can add,
    rename or remove entries there could swap a release under cron. Before anything is
    written, the deploy lock included."""
    fresh: set[str] = set()
    me = os.geteuid()
    for name in OWN_FOLDERS:
        path = os.path.join(params["deploy_home"], name) if name else params["deploy_home"]
        try:
            fd = open_dir(path)
        except FileNotFoundError:
            fresh.add(path)
            continue
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_uid not in (0, me) or st.st_mode & 0o022:
            raise Refused("unsafe-home", f"{path} is writable by others than {user_name(me)} (owner {user_name(st.st_uid)}, "
                                         f"mode {stat.S_IMODE(st.st_mode):04o}): deployer keeps its releases and run records "
                                         f"there and writes nothing into it; make it {user_name(me)}'s and not group- or "
                                         "world-writable (chmod go-w), or declare another home")
    return fresh


def _mark_home(home: str, done: list[str]) -> None:
    """A home made by this apply says so: destroy --purge-logs removes only a home it made."""
    fd = open_dir(home)
    try:
        os.close(os.open(HOME_MARK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    done.append(f"created home {home}")


def _revision(params: ApplyRequest) -> str:
    """The revision this bundle writes or makes current ("" when it does neither: destroy).

    Checked before anything is written: a bundle with a release or ``set_current`` and no
    revision is a bug of the controller's, refused rather than failing halfway."""
    revision = params.get("revision") or ""
    if not revision and (params.get("release") or params.get("set_current")):
        raise Refused("bad-request", "the bundle has a release to write or make current, and no revision")
    return revision


def main(params: ApplyRequest) -> None:
    done: list[str] = []
    try:
        revision = _revision(params)
        fresh = _own_folders(params)
        lock = _lock(params)
        if params["deploy_home"] in fresh:
            _mark_home(params["deploy_home"], done)
        _stage(params, "locked")  # test-only, see _stage
        try:
            backup = BackupFolder(params["deploy_home"])
            crontabs = params.get("crontabs", [])
            _check_crontabs(crontabs)
            if release := params.get("release"):
                _write_release(params, release, revision, backup, done)
            _stage(params, "release-written")  # test-only, see _stage
            for move in params.get("moves", []):
                _move(move, done)
            for spec in params.get("dirs", []):
                if spec["path"] in fresh:  # made by this apply (the lock or the release made it first)
                    spec = {**spec, "enforce": ["mode", "owner", "group"]}
                _ensure_dir(spec, done)
            for file in params.get("files", []):
                _ensure_file(file, done)
            for path in params.get("remove_stale_locks", []):
                _remove_stale_lock(path, done)
            if crontabs or params.get("set_current"):
                _backup(params, backup, crontabs, done)
            _check_crontabs(crontabs)  # again, as close to the switch as we can
            for change in crontabs:
                _install_crontab(change)
                done.append(f"installed crontab of {change['user']}")
            if crontabs:
                _make_cron_notice(crontabs[-1])
            _stage(params, "crontab-written")  # test-only, see _stage
            if destroy := params.get("destroy"):
                _destroy(params["deploy_home"], destroy, done)
            else:
                # After the switch: the wrapper now running is the one that writes them.
                for records in params.get("records", []):
                    _own_records(records, done)
                if params.get("set_current"):
                    _set_current(params["deploy_home"], revision, done)
                    _mark_rollback(params, revision, done)
                if params.get("release") or params.get("set_current"):
                    _prune(params, revision, done)
        finally:
            os.close(lock)
    except Refused as exc:
        emit(ApplyAnswer(ok=False, kind=exc.kind, error=exc.message, done=done))
        return
    except Unsafe as exc:
        emit(ApplyAnswer(ok=False, kind="path", error=f"{exc.filename} {exc.strerror}", done=done))
        return
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        kind: ApplyFailure = "disk-full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "io"
        emit(ApplyAnswer(ok=False, kind=kind, error=f"{exc.strerror or exc}{where}", done=done))
        return
    emit(ApplyAnswer(ok=True, done=done))
