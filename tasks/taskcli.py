"""What every task script shares: configuration from the environment,
argument types, the reference time, and the exit-code contract.

Contract with the run wrapper: exit 0 on success; exit 1 with one
``error: ...`` line on stderr for an expected failure (bad configuration, an
unreachable mail server); exit 2 for a bad command line (argparse's own).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from datetime import datetime, timezone
from typing import Callable


class TaskError(Exception):
    """An expected failure, reported as one line on stderr and exit code 1."""


def require_env(name: str) -> str:
    """Return the environment variable ``name``, or fail if unset or empty."""
    value = os.environ.get(name, "")
    if not value:
        raise TaskError(f"environment variable {name} is required but not set")
    return value


def existing_dir(name: str) -> str:
    """Return the folder named by the required environment variable ``name``."""
    path = require_env(name)
    if not os.path.isdir(path):
        raise TaskError(f"{name}: {path} is not a directory")
    return path


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 would mean "purge everything")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


def moment(text: str) -> datetime:
    """argparse type for ``--now``: an ISO date or datetime, naive means UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or datetime (e.g. 2025-01-31T02:00:00)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


def add_now_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--now`` so tests and replays can pin the reference time."""
    parser.add_argument(
        "--now",
        type=moment,
        default=None,
        help="reference time, ISO format, UTC unless an offset is given (default: now)",
    )


def now_or_default(value: datetime | None) -> datetime:
    """The ``--now`` value, or the current time as an aware UTC datetime."""
    return value if value is not None else datetime.now(timezone.utc)


def run(main: Callable[[], int]) -> None:
    """Run a task's ``main`` and turn expected failures into exit code 1."""
    try:
        code = main()
    except TaskError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except sqlite3.Error as exc:
        # A locked or corrupt database is an operational fault, not a bug.
        print(f"error: database: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
