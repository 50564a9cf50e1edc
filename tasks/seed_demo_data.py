"""Give the example something to do: demo rows in the shop database and demo
log and event files, old and recent, relative to ``--now``.

Idempotent: rows have fixed ids and are inserted only when absent, files are
created only when absent, so a second run adds nothing and never overwrites
what the other tasks (or a person) changed.

Environment: SHOP_DB, SHOP_LOG_ROOT (both created if missing).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from datetime import datetime, timedelta

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shopdb  # noqa: E402
from taskcli import TaskError, add_now_argument, now_or_default, require_env, run  # noqa: E402

EVENT_MONTHS = 20


def demo_rows(now: datetime) -> dict[str, list[dict[str, object]]]:
    """The demo rows per table, with ages chosen around the default limits."""

    def ago(**delta: float) -> str:
        return shopdb.timestamp(now - timedelta(**delta))

    return {
        "email_queue": [
            dict(id=1, recipient="alice@example.com", subject="Your order #1001 has shipped",
                 body="Hello Alice,\n\nyour parcel is on its way.\n", status="queued",
                 attempts=0, last_error=None, created_at=ago(hours=3), sent_at=None),
            dict(id=2, recipient="bob@example.com", subject="Reset your password",
                 body="Hello Bob,\n\nfollow the link to choose a new password.\n",
                 status="queued", attempts=0, last_error=None, created_at=ago(hours=2),
                 sent_at=None),
            # Two failed tries already: one more success or failure settles it.
            dict(id=3, recipient="carol@example.com", subject="Invoice 2024-118",
                 body="Hello Carol,\n\nplease find your invoice below.\n", status="queued",
                 attempts=2, last_error="451 4.7.1 greylisted, try again later",
                 created_at=ago(hours=5), sent_at=None),
            # A broken address: its third and last try fails, and it becomes failed.
            dict(id=4, recipient="not-an-address", subject="Welcome to the shop",
                 body="Welcome!\n", status="queued", attempts=2,
                 last_error="invalid recipient 'not-an-address'", created_at=ago(hours=6),
                 sent_at=None),
            dict(id=5, recipient="dave@example.com", subject="Newsletter",
                 body="This month in the shop.\n", status="sent", attempts=0, last_error=None,
                 created_at=ago(days=2), sent_at=ago(days=2)),
            dict(id=6, recipient="erin@example.invalid", subject="Order cancelled",
                 body="Your order was cancelled.\n", status="failed", attempts=3,
                 last_error="550 5.1.1 mailbox unavailable", created_at=ago(days=3),
                 sent_at=None),
        ],
        "security_metrics": [
            dict(id=1, metric="login_failures_per_hour", value=42, recorded_at=ago(days=45)),
            dict(id=2, metric="login_failures_per_hour", value=17, recorded_at=ago(days=31)),
            dict(id=3, metric="login_failures_per_hour", value=9, recorded_at=ago(days=29)),
            dict(id=4, metric="blocked_ips", value=3, recorded_at=ago(days=1)),
        ],
        "failed_logins": [
            dict(id=1, username="admin", ip="203.0.113.7", attempted_at=ago(days=12)),
            dict(id=2, username="admin", ip="203.0.113.7", attempted_at=ago(days=8)),
            dict(id=3, username="alice", ip="198.51.100.23", attempted_at=ago(days=6)),
            dict(id=4, username="root", ip="192.0.2.99", attempted_at=ago(hours=4)),
        ],
        "security_alerts": [
            dict(id=1, kind="brute_force", message="50 failed logins for admin",
                 created_at=ago(days=120), resolved=1, resolved_at=ago(days=119)),
            dict(id=2, kind="brute_force", message="30 failed logins for alice",
                 created_at=ago(days=30), resolved=1, resolved_at=ago(days=29)),
            # Old but never resolved: the purge must keep it.
            dict(id=3, kind="file_changed", message="index.php modified outside a deploy",
                 created_at=ago(days=200), resolved=0, resolved_at=None),
            dict(id=4, kind="new_admin", message="admin account created: ops2",
                 created_at=ago(days=1), resolved=0, resolved_at=None),
        ],
    }


def demo_logs() -> list[tuple[str, float]]:
    """Log files (relative path, age in days): some past the 10-day limit."""
    return [
        ("app.log", 0.5),
        ("php-error.log", 20),
        ("access.log", 2),
        ("archive/app-2.log", 40),
        ("archive/app-1.log", 3),
        ("archive/notes.txt", 60),  # not a .log: clean_logs leaves it
        ("events/debug.log", 30),  # under events/: clean_logs leaves it
    ]


def seed_rows(conn: sqlite3.Connection, now: datetime) -> int:
    """Insert the demo rows that are absent; return how many were inserted."""
    inserted = 0
    with conn:
        for table, rows in demo_rows(now).items():
            added = 0
            for row in rows:
                columns = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                cursor = conn.execute(
                    f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})",
                    tuple(row.values()),
                )
                added += cursor.rowcount
            print(f"{table}: inserted {added} of {len(rows)} demo rows")
            inserted += added
    return inserted


def create_file(root: str, relpath: str, content: str, mtime: datetime) -> bool:
    """Create ``root/relpath`` with ``content`` and ``mtime`` unless it exists."""
    path = os.path.join(root, relpath)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path, "x", encoding="utf-8") as out:
            out.write(content)
    except FileExistsError:
        return False
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    print(f"created {relpath} ({mtime:%Y-%m-%d})")
    return True


def month_start(now: datetime, months_back: int) -> datetime:
    """Midnight on the 1st of the month ``months_back`` months before ``now``."""
    index = now.year * 12 + now.month - 1 - months_back
    return now.replace(year=index // 12, month=index % 12 + 1, day=1,
                       hour=0, minute=0, second=0, microsecond=0)


def seed_files(root: str, now: datetime) -> int:
    """Create the demo log and event files that are absent; return how many."""
    created = 0
    for relpath, days in demo_logs():
        mtime = now - timedelta(days=days)
        created += create_file(root, relpath, f"{mtime:%Y-%m-%d %H:%M:%S} demo line\n", mtime)
    for back in range(EVENT_MONTHS):
        start = month_start(now, back)
        # A month's file was last written near the end of that month (or now).
        mtime = min(start + timedelta(days=27), now)
        lines = [
            {"ts": (start + timedelta(days=day)).isoformat(), "type": kind, "demo": True}
            for day, kind in ((0, "order.created"), (9, "user.login"))
        ]
        content = "".join(json.dumps(line) + "\n" for line in lines)
        created += create_file(root, f"events/events-{start:%Y-%m}.jsonl", content, mtime)
    return created


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_now_argument(parser)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    now = now_or_default(args.now)
    db_path = require_env("SHOP_DB")
    log_root = require_env("SHOP_LOG_ROOT")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        conn = shopdb.connect(db_path)
        try:
            rows = seed_rows(conn, now)
        finally:
            conn.close()
        files = seed_files(log_root, now)
    except OSError as exc:
        raise TaskError(f"cannot create demo data: {exc}") from None
    print(f"seeded {rows} rows and {files} files")
    return 0


if __name__ == "__main__":
    run(main)
