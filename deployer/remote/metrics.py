"""A job's metrics for node_exporter's textfile collector. Runs on the target.

Standard library only (plus deployer.remote's own target modules). One file per job and
host, ``deployer_<project>_<env>_<job>.prom`` in the declared folder, written as Prometheus
advises for batch jobs: timestamps, not ages ("the key metric of a batch job is the last
time it succeeded"), and atomically (a temp file in the same folder, fsync, rename), so the
collector never reads half a file. node_exporter reads only names ending in ``.prom``: the
temp file's name does not.

Root writes there: the folder is walked from ``/`` without following a link that is not the
system's, and every file is created with O_EXCL|O_NOFOLLOW on the folder's descriptor.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from deployer.remote import cronengine, safefs

PREFIX = "deployer_job_"
_open_dir: Callable[..., int] = safefs.open_dir
_split: Callable[[str], tuple[str, str]] = safefs.split


@dataclass(frozen=True)
class JobMetrics:
    """What one file says of one job on one host; None: not known yet (the sample is left out)."""

    project: str
    env: str
    job: str
    last_run: float | None = None  # start of the last run, epoch seconds
    last_success: float | None = None  # end of the last successful run
    last_duration: float | None = None
    last_exit_code: int | None = None
    consecutive_failures: int = 0
    next_run: float | None = None
    running: bool = False


_HELP = (
    ("last_success_timestamp_seconds", "last_success", "When the job last ended successfully (Unix time)."),
    ("last_run_timestamp_seconds", "last_run", "When the job's last run started (Unix time)."),
    ("last_duration_seconds", "last_duration", "How long the job's last run took."),
    ("last_exit_code", "last_exit_code", "The exit code of the job's last run (124: killed at its timeout)."),
    ("consecutive_failures", "consecutive_failures", "Failed runs since the last success."),
    ("next_run_timestamp_seconds", "next_run", "When cron starts the job next (Unix time)."),
    ("running", "running", "1 while a run of the job is going on."),
)


def escape_label(value: str) -> str:
    """A label value in the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return "NaN"
    return repr(round(float(value), 3))


def render(m: JobMetrics) -> str:
    """The text exposition format of ``m``, HELP and TYPE lines included."""
    labels = f'project="{escape_label(m.project)}",env="{escape_label(m.env)}",job="{escape_label(m.job)}"'
    lines: list[str] = []
    for name, attribute, help_text in _HELP:
        value = getattr(m, attribute)
        lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge"]
        if value is not None:
            lines.append(f"{PREFIX}{name}{{{labels}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def file_name(project: str, env: str, job: str) -> str:
    return f"deployer_{project}_{env}_{job}.prom"


def next_run(schedule: str, tz: str, after: float, flavour: str = cronengine.DEFAULT_FLAVOUR) -> float | None:
    """When cron next starts ``schedule`` after ``after`` (epoch seconds) in zone ``tz``; None
    for @reboot or a schedule that does not parse."""
    try:
        entry = cronengine.parse(schedule, flavour)
        fire = cronengine.next_fire(entry, datetime.fromtimestamp(after, timezone.utc), tz)  # noqa: UP017 - targets may run Python < 3.11
    except (ValueError, KeyError, OSError):
        return None
    return fire.timestamp() if fire is not None else None


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` at once: temp file in the same folder (O_EXCL, no link
    followed), fsync, rename on the folder's descriptor, fsync of the folder. Raises OSError."""
    folder, name = _split(path)
    dfd = _open_dir(folder)
    try:
        temp = f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
        try:
            try:
                os.fchmod(fd, mode)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write(directory: str, m: JobMetrics) -> str | None:
    """Write the job's file into node_exporter's folder; the problem as text, never an exception."""
    path = directory.rstrip("/") + "/" + file_name(m.project, m.env, m.job)
    try:
        write_atomic(path, render(m).encode())
    except OSError as exc:
        return f"metrics file {path} cannot be written: {exc.strerror or exc}"
    return None
