"""Purge old security data (daily at 02:00).

Deletes security_metrics older than ``--metrics-days``, failed_logins older
than ``--failed-logins-days`` and security_alerts that are resolved and were
raised more than ``--alerts-days`` ago. Unresolved alerts are never deleted,
however old: someone still has to look at them. All three deletions happen in
one transaction, so the tables never disagree about what was purged.

Environment: SHOP_DB.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from datetime import datetime, timedelta

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shopdb  # noqa: E402
from taskcli import add_now_argument, now_or_default, positive_int, require_env, run  # noqa: E402

# (table, what is deleted, condition on the cut-off, argument holding the days)
PURGES = (
    ("security_metrics", "rows", "recorded_at < ?", "metrics_days"),
    ("failed_logins", "rows", "attempted_at < ?", "failed_logins_days"),
    ("security_alerts", "resolved rows", "resolved = 1 AND created_at < ?", "alerts_days"),
)


def purge(conn: sqlite3.Connection, retention: dict[str, int], now: datetime) -> dict[str, int]:
    """Delete expired rows of every table in one transaction; rows deleted per table."""
    deleted = {}
    with conn:  # commits on success, rolls every table back on any error
        for table, _, condition, key in PURGES:
            cutoff = shopdb.timestamp(now - timedelta(days=retention[key]))
            cursor = conn.execute(f"DELETE FROM {table} WHERE {condition}", (cutoff,))
            deleted[table] = cursor.rowcount
    return deleted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics-days", type=positive_int, default=30, help="default 30")
    parser.add_argument("--failed-logins-days", type=positive_int, default=7, help="default 7")
    parser.add_argument("--alerts-days", type=positive_int, default=90, help="default 90")
    add_now_argument(parser)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    now = now_or_default(args.now)
    conn = shopdb.connect(require_env("SHOP_DB"))
    try:
        deleted = purge(conn, vars(args), now)
    finally:
        conn.close()
    for table, what, _, key in PURGES:
        print(f"{table}: deleted {deleted[table]} {what} older than {getattr(args, key)} days")
    print(f"purged {sum(deleted.values())} rows")
    return 0


if __name__ == "__main__":
    run(main)
