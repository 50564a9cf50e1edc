"""Root acting on paths that other users may control, without being led astray.

Runs on the target (standard library only). It travels bundled with the probe, the applier
and the run wrapper of every release (see deployer/core/bundle.py).

A path such as /home/www-data/logs/a/job.log is not one object but a chain of folders, any
of which the job's user may swap for a symlink between the moment root looks and the moment
root acts. So root never acts on a path by name: each folder is opened from the one before,
starting at ``/`` (root's), with O_NOFOLLOW|O_DIRECTORY, and every change is made on the
open descriptor (fchown, fchmod, openat/unlinkat with ``dir_fd``). A link is followed only
when the system put it there (owned by root, in a folder only root can write: Debian's
/var/lock -> /run/lock; deploying as a user, also that user's own). A file that has other
names (st_nlink > 1: a hard link the user made to a file of someone else's), or that
belongs to someone unexpected, is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 16  # system links followed on one path (as the kernel's own limit, roughly)


class Unsafe(OSError):
    """A path root must not act through: a planted link, a hard link, a foreign owner.
    An OSError (with the offending path as ``filename``) so callers that report OSErrors
    say what and where."""

    def __init__(self, path: str, why: str, code: int = errno.ELOOP) -> None:
        OSError.__init__(self, code, why, path)


def _system_link(parent_fd: int, name: str) -> bool:
    """A link only root (or we) could have made and only root (or we) can replace: it may be
    followed. As root, that is root's own links (Debian's /var/lock); deploying as a user,
    also that user's own (a ~/.local/share moved elsewhere): the boundary is then that user."""
    trusted = (0, os.geteuid())
    try:
        link = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        folder = os.fstat(parent_fd)
    except OSError:
        return False
    return (stat.S_ISLNK(link.st_mode) and link.st_uid in trusted and folder.st_uid in trusted
            and not folder.st_mode & 0o022)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_dir(path: str, create: int | None = None, _hops: list[int] | None = None, _start: int | None = None,
             shown: str | None = None) -> int:
    """A descriptor of the folder ``path`` (absolute), walked from ``/`` without following a
    link that is not the system's. ``create``: the mode of missing folders, made on the way
    (owned by us); None raises FileNotFoundError for a missing one. The caller closes it.
    (``_start``: walk a relative ``path`` from that folder's descriptor instead, ``shown``
    being that folder's path, for messages.)"""
    if _start is None and not path.startswith("/"):
        raise Unsafe(path, "not an absolute path", errno.EINVAL)
    hops = _hops if _hops is not None else [0]
    fd = os.open("/", _DIR_FLAGS) if _start is None else os.dup(_start)
    walked = "" if _start is None else (shown.rstrip("/") if shown is not None else None)
    try:
        for name in _parts(path):
            here = (walked + "/" + name) if walked is not None else path
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    raise FileNotFoundError(errno.ENOENT, "No such file or directory", here) from None
                with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: opened (and checked) below
                    os.mkdir(name, create, dir_fd=fd)
                nxt = _open_or_refuse(fd, name, here)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                nxt = _follow_system_link(fd, name, here, create, hops)
            os.close(fd)
            fd = nxt
            if walked is not None:
                walked = here
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_or_refuse(parent_fd: int, name: str, here: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Unsafe(here, "is not a folder (a link or a file was put there); deployer will not follow it") from exc
        raise


def _follow_system_link(parent_fd: int, name: str, here: str, create: int | None, hops: list[int]) -> int:
    if not _system_link(parent_fd, name):
        try:
            is_link = stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = False
        if is_link:
            raise Unsafe(here, "is a symlink that root did not make (or in a folder others can write); "
                               "deployer will not follow it: put a real folder there")
        raise Unsafe(here, "is not a folder", errno.ENOTDIR)
    hops[0] += 1
    if hops[0] > _MAX_LINKS:
        raise Unsafe(here, "too many links on the way")
    target = os.readlink(name, dir_fd=parent_fd)
    if target.startswith("/"):
        return open_dir(target, create, hops)
    # relative: from the link's folder; ".." is walked as the kernel does (on descriptors)
    return open_dir(target, create, hops, _start=parent_fd, shown=os.path.dirname(here))


def split(path: str) -> tuple[str, str]:
    folder, name = os.path.split(path.rstrip("/") or "/")
    if not name or name in (".", ".."):
        raise Unsafe(path, "names no file", errno.EINVAL)
    return folder or "/", name


def check_file(st: os.stat_result, path: str, owners: set[int] | None = None) -> None:
    """Refuse what root must not act on: not a regular file, a file with other names (a hard
    link), or (with ``owners``, a set of uids) a file of someone else's."""
    if not stat.S_ISREG(st.st_mode):
        raise Unsafe(path, f"is a {_kind(st.st_mode)}, not a regular file", errno.EINVAL)
    if st.st_nlink > 1:
        raise Unsafe(path, f"has {st.st_nlink} names (a hard link to another file); deployer will not use it: remove it",
                     errno.EMLINK)
    if owners is not None and st.st_uid not in owners:
        raise Unsafe(path, f"belongs to uid {st.st_uid}, not to the user it is for; deployer will not use it: remove it",
                     errno.EPERM)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "folder"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def open_file(path: str, flags: int, mode: int = 0o600, owners: set[int] | None = None, create_dirs: int | None = None) -> int:
    """Open a file by walking its folders safely; never through a link, never blocking on a
    FIFO (O_NONBLOCK at open, then cleared), and only a regular file with one name (and, with
    ``owners``, one of theirs). ``create_dirs``: see ``open_dir``'s ``create``."""
    folder, name = split(path)
    dfd = open_dir(folder, create_dirs)
    try:
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Unsafe(path, "is a symlink; refusing to follow it") from exc
            if exc.errno in (errno.ENXIO, errno.EWOULDBLOCK):  # a FIFO nobody reads, opened for writing
                raise Unsafe(path, "is not a regular file (a FIFO was put there); deployer will not use it",
                             errno.EINVAL) from exc
            exc.filename = path
            raise
    finally:
        os.close(dfd)
    try:
        check_file(os.fstat(fd), path, owners)
        fl = os.get_blocking(fd)
        if not fl:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: str, limit: int, owners: set[int] | None = None) -> bytes:
    """At most ``limit`` bytes of a regular file, opened safely (see ``open_file``)."""
    fd = open_file(path, os.O_RDONLY, owners=owners)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def read_fd(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from where ``fd`` stands, in chunks (a file may be huge)."""
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def list_dir(path: str) -> list[str]:
    """The names in a folder walked safely; [] when it is missing or not a folder we may enter."""
    try:
        fd = open_dir(path)
    except OSError:
        return []
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def unlink_file(path: str, owners: set[int] | None = None) -> bool:
    """Remove a regular file with one name, through its folder's descriptor: the folder cannot
    be swapped between the look and the removal, and a link there is removed, not followed.
    Returns False when nothing is there."""
    folder, name = split(path)
    try:
        dfd = open_dir(folder)
    except FileNotFoundError:
        return False
    try:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        check_file(st, path, owners)
        os.unlink(name, dir_fd=dfd)
        return True
    finally:
        os.close(dfd)


def writable_by_others(st: os.stat_result) -> bool:
    """A folder someone other than root may add, rename or remove entries in."""
    return st.st_uid != 0 or bool(st.st_mode & 0o022)


def flock_within(fd: int, seconds: float, pause: float = 0.05) -> bool:
    """Take an exclusive flock on ``fd``, waiting at most ``seconds``: False when another
    holder kept it that long. Any other failure is raised (OSError)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
