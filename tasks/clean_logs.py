"""Delete old ``*.log`` files under the application's log folder (daily at 03:00).

A file goes when its modification time is more than ``--days`` days old.
Folders named by ``--keep-dir`` (relative to the root, default ``events``) are
left alone entirely. Only regular files are deleted: symbolic links are
neither followed nor removed, so a link named ``x.log`` that points outside
the root can never cause a deletion there.

Environment: SHOP_LOG_ROOT.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from datetime import timedelta
from typing import Iterator, NamedTuple

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from taskcli import (  # noqa: E402
    add_now_argument,
    existing_dir,
    now_or_default,
    positive_int,
    run,
)


class OldLog(NamedTuple):
    """An expired log file, named by its folder's descriptor and its name."""

    relpath: str
    dir_fd: int
    name: str
    size: int


def expired_logs(root: str, keep: set[str], cutoff: float, errors: list[str]) -> Iterator[OldLog]:
    """Yield regular ``*.log`` files under ``root`` modified before ``cutoff``.

    ``os.fwalk`` hands out a descriptor per folder and never follows links;
    stat and unlink relative to that descriptor, so a folder swapped for a
    symlink mid-walk cannot redirect a deletion outside the root.
    """

    def on_error(exc: OSError) -> None:
        errors.append(f"cannot read {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames, dir_fd in os.fwalk(root, onerror=on_error):
        here = os.path.relpath(dirpath, root)
        # Sorted, so the log lists files in the same order on every filesystem.
        dirnames[:] = sorted(
            d for d in dirnames if os.path.normpath(os.path.join(here, d)) not in keep
        )
        for name in sorted(filenames):
            if not name.endswith(".log"):
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed by someone else meanwhile: nothing left to do
            if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                yield OldLog(os.path.normpath(os.path.join(here, name)), dir_fd, name, info.st_size)


def keep_dir(text: str) -> str:
    """argparse type: a folder relative to the log root, inside it."""
    path = os.path.normpath(text)
    if os.path.isabs(path) or path == "." or path.split(os.sep)[0] == "..":
        raise argparse.ArgumentTypeError(f"{text!r} must be a folder inside SHOP_LOG_ROOT")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=positive_int, default=10, help="default 10")
    parser.add_argument(
        "--keep-dir",
        type=keep_dir,
        action="append",
        help="folder under the root to leave alone, repeatable (default: events)",
    )
    add_now_argument(parser)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    root = existing_dir("SHOP_LOG_ROOT")
    keep = set(args.keep_dir or ["events"])
    cutoff = (now_or_default(args.now) - timedelta(days=args.days)).timestamp()
    errors: list[str] = []
    count = size = 0
    for log in expired_logs(root, keep, cutoff, errors):
        try:
            os.unlink(log.name, dir_fd=log.dir_fd)
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors.append(f"cannot delete {log.relpath}: {exc.strerror}")
            continue
        count += 1
        size += log.size
        print(f"deleted {log.relpath}")
    print(f"deleted {count} log files older than {args.days} days ({size} bytes)")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    # One unreadable folder should not spare the others, but the run is not a success.
    return 1 if errors else 0


if __name__ == "__main__":
    run(main)
