"""Adoption: hand-made crontab lines that already run a declared job. Pure text work.

Teams moving from hand-kept crontabs have lines like
``*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php >> .../email_queue.log 2>&1``.
Once deployer installs the same job, both would run. A foreign line "runs a declared job"
when its command names the job's script (same file name, or the same name with another
extension: ``process_email_queue.php`` for ``process_email_queue.py``) or contains the
job's command. Lines are read with python-crontab (one line at a time, so we know exactly
which line it was) and removed byte-exactly; nothing else of the crontab moves.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from crontab import CronTab

from deployer.core.desired import JobSpec

_BLOCK_BEGIN = "# BEGIN deployer "
_BLOCK_END = "# END deployer "


@dataclass(frozen=True)
class HandMade:
    """A foreign crontab line that runs a declared job."""

    user: str
    line_number: int  # 1-based, in the crontab as it is now
    line: str  # without its newline
    job: str


def _command(line: str) -> str | None:
    """The command of an active cron entry, or None (comment, VAR=, blank, invalid)."""
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    items = [item for item in CronTab(tab=line) if item.is_valid() and item.enabled]
    return items[0].command if items else None


def _names(command: str) -> set[str]:
    """File names the command mentions (``/srv/x/process.php`` -> ``process.php``)."""
    return {posixpath.basename(token) for token in re.split(r"[\s;&|<>()'\"=]+", command) if token}


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name.strip(".") else name


def runs_job(command: str, job: JobSpec) -> bool:
    if job.script:
        script = posixpath.basename(job.script)
        for name in _names(command):
            if name == script or (_stem(name) == _stem(script) and "." in name and len(_stem(script)) >= 4):
                return True
        return False
    return bool(job.command) and job.command in command


def hand_made(user: str, text: str | None, jobs: tuple[JobSpec, ...]) -> list[HandMade]:
    """Lines outside every deployer block whose command runs one of ``jobs``."""
    found: list[HandMade] = []
    inside = False
    for number, line in enumerate((text or "").splitlines(), start=1):
        if line.startswith(_BLOCK_BEGIN):
            inside = True
        if not inside and (command := _command(line)) is not None:
            for job in jobs:
                if runs_job(command, job):
                    found.append(HandMade(user, number, line, job.id))
                    break
        if line.startswith(_BLOCK_END):
            inside = False
    return found


def without_lines(text: str, numbers: set[int]) -> str:
    """``text`` without those lines (1-based); every other byte stays."""
    return "".join(line for n, line in enumerate(text.splitlines(keepends=True), start=1) if n not in numbers)
