"""Copy new rows of one table from the shop database to a replica.

Incremental by id: rows whose id is above the replica's highest id are copied,
in one transaction. Rows changed after being copied are not copied again, so
this suits append-only tables; the default, security_metrics, is one. The
replica file and table are created on first use, from the source's own
``CREATE TABLE`` statement.

Environment: SHOP_DB, SHOP_REPLICA_DB.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shopdb  # noqa: E402
from taskcli import TaskError, require_env, run  # noqa: E402


def quote(identifier: str) -> str:
    """An SQL identifier, quoted (names come from the command line)."""
    return '"' + identifier.replace('"', '""') + '"'


def table_columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    rows = conn.execute(f"PRAGMA {schema}.table_info({quote(table)})").fetchall()
    return [row["name"] for row in rows]


def ensure_replica_table(conn: sqlite3.Connection, table: str) -> list[str]:
    """Create the table in the replica if needed; return the columns to copy."""
    row = conn.execute(
        "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if row is None:
        raise TaskError(f"table {table} does not exist in SHOP_DB")
    columns = table_columns(conn, "main", table)
    if "id" not in columns:
        raise TaskError(f"table {table} has no id column to sync by")
    if not table_columns(conn, "replica", table):
        # Reuse the source's column definitions, but create the table in the replica.
        definition = row["sql"][row["sql"].index("("):]
        conn.execute(f"CREATE TABLE replica.{quote(table)} {definition}")
    missing = set(columns) - set(table_columns(conn, "replica", table))
    if missing:
        raise TaskError(f"replica table {table} lacks columns {', '.join(sorted(missing))}")
    return columns


def sync(conn: sqlite3.Connection, table: str) -> int:
    """Copy rows newer than the replica's highest id; return how many."""
    with conn:
        columns = ", ".join(quote(c) for c in ensure_replica_table(conn, table))
        (last_id,) = conn.execute(
            f"SELECT COALESCE(MAX(id), 0) FROM replica.{quote(table)}"
        ).fetchone()
        cursor = conn.execute(
            f"INSERT INTO replica.{quote(table)} ({columns})"
            f" SELECT {columns} FROM main.{quote(table)} WHERE id > ? ORDER BY id",
            (last_id,),
        )
        return cursor.rowcount


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table", default="security_metrics", help="table to copy (default security_metrics)"
    )
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    source = require_env("SHOP_DB")
    replica = require_env("SHOP_REPLICA_DB")
    if not os.path.isdir(os.path.dirname(os.path.abspath(replica))):
        raise TaskError(f"SHOP_REPLICA_DB: folder of {replica} does not exist")
    conn = shopdb.connect(source)
    try:
        conn.execute("ATTACH DATABASE ? AS replica", (replica,))
        copied = sync(conn, args.table)
    finally:
        conn.close()
    print(f"{args.table}: copied {copied} new rows to {replica}")
    return 0


if __name__ == "__main__":
    run(main)
