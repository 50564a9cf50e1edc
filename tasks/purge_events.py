"""Delete event files older than ``--months`` months (monthly, on the 1st).

Event files live in ``SHOP_LOG_ROOT/events``. Their age comes from the date in
their name: ``events-YYYY-MM.jsonl`` holds a whole month and goes once that
whole month is before the cut-off; ``events-YYYY-MM-DD.jsonl`` goes once its
day is. Other ``*.jsonl`` names fall back to their modification time. The
cut-off is ``--now`` minus whole calendar months (2025-02-01 minus 15 months is
2023-11-01), so it is right across year boundaries and month lengths.

Environment: SHOP_LOG_ROOT.
"""

from __future__ import annotations

import argparse
import calendar
import errno
import os
import re
import sys
from datetime import date, datetime, timezone

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from taskcli import (  # noqa: E402
    TaskError,
    add_now_argument,
    existing_dir,
    now_or_default,
    positive_int,
    run,
)

EVENTS_DIR = "events"
DATED_NAME = re.compile(r"events-(\d{4})-(\d{2})(?:-(\d{2}))?\.jsonl")


def months_before(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier, clamped to the month's end."""
    index = day.year * 12 + day.month - 1 - months
    year, month = index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def expiry_reason(name: str, mtime: float, cutoff: date) -> str | None:
    """Why the file ``name`` is older than ``cutoff``, or None to keep it."""
    match = DATED_NAME.fullmatch(name)
    if match:
        year, month, day = (int(g) if g else None for g in match.groups())
        try:
            if day is None:
                date(year, month, 1)  # validates the month
                # The file covers its whole month: it goes when all of it is too old.
                if (year, month) < (cutoff.year, cutoff.month):
                    return f"month {year:04d}-{month:02d}"
                return None
            if date(year, month, day) < cutoff:
                return f"day {year:04d}-{month:02d}-{day:02d}"
            return None
        except ValueError:
            pass  # a name like events-2024-13.jsonl: trust the clock instead
    modified = datetime.fromtimestamp(mtime, timezone.utc).date()
    return f"modified {modified.isoformat()}" if modified < cutoff else None


def open_events_dir(root: str) -> int | None:
    """A descriptor on ``root/events`` without following a link; None if absent."""
    path = os.path.join(root, EVENTS_DIR)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TaskError(
                f"{path} is not a real folder (a link or a file); not touching it"
            ) from None
        raise TaskError(f"cannot open {path}: {exc.strerror}") from None


def purge(dir_fd: int, cutoff: date) -> int:
    """Delete expired ``*.jsonl`` regular files in the folder; return how many."""
    deleted = 0
    with os.scandir(dir_fd) as entries:
        candidates = sorted(
            (entry.name, entry.stat(follow_symlinks=False))
            for entry in entries
            if entry.name.endswith(".jsonl") and entry.is_file(follow_symlinks=False)
        )
    for name, info in candidates:
        reason = expiry_reason(name, info.st_mtime, cutoff)
        if reason is None:
            continue
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise TaskError(f"cannot delete {EVENTS_DIR}/{name}: {exc.strerror}") from None
        deleted += 1
        print(f"deleted {EVENTS_DIR}/{name} ({reason})")
    return deleted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--months", type=positive_int, default=15, help="default 15")
    add_now_argument(parser)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    root = existing_dir("SHOP_LOG_ROOT")
    cutoff = months_before(now_or_default(args.now).date(), args.months)
    dir_fd = open_events_dir(root)
    if dir_fd is None:
        print(f"no {EVENTS_DIR} folder under {root}: nothing to purge")
        deleted = 0
    else:
        try:
            deleted = purge(dir_fd, cutoff)
        finally:
            os.close(dir_fd)
    print(
        f"deleted {deleted} event files older than {args.months} months"
        f" (before {cutoff.isoformat()})"
    )
    return 0


if __name__ == "__main__":
    run(main)
