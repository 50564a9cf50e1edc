"""db_sync.py: new rows by id go to the replica, once."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.tasks.conftest import RunTask


@pytest.fixture
def replica_env(shop_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    shop_env["SHOP_REPLICA_DB"] = str(tmp_path / "replica.sqlite")
    return shop_env


def add_metrics(conn: sqlite3.Connection, *ids: int) -> None:
    conn.executemany(
        "INSERT INTO security_metrics (id, metric, value, recorded_at)"
        " VALUES (?, 'blocked_ips', ?, '2025-01-01 00:00:00')",
        [(i, i * 10) for i in ids],
    )
    conn.commit()


def replica_rows(env: dict[str, str], table: str = "security_metrics") -> list[tuple[Any, ...]]:
    with sqlite3.connect(env["SHOP_REPLICA_DB"]) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_copies_new_rows_incrementally(run_task: RunTask, db: sqlite3.Connection, replica_env: dict[str, str]) -> None:
    add_metrics(db, 1, 2)

    first = run_task("db_sync")
    again = run_task("db_sync")
    add_metrics(db, 3, 7)
    later = run_task("db_sync")

    replica = replica_env["SHOP_REPLICA_DB"]
    assert [r.returncode for r in (first, again, later)] == [0, 0, 0], first.stderr
    assert first.stdout == f"security_metrics: copied 2 new rows to {replica}\n"
    assert again.stdout == f"security_metrics: copied 0 new rows to {replica}\n"
    assert later.stdout == f"security_metrics: copied 2 new rows to {replica}\n"
    assert replica_rows(replica_env) == [
        (i, "blocked_ips", i * 10.0, "2025-01-01 00:00:00") for i in (1, 2, 3, 7)
    ]


def test_other_table(run_task: RunTask, db: sqlite3.Connection, replica_env: dict[str, str]) -> None:
    db.execute(
        "INSERT INTO failed_logins (id, username, ip, attempted_at)"
        " VALUES (5, 'admin', '192.0.2.1', '2025-01-01 00:00:00')"
    )
    db.commit()

    result = run_task("db_sync", "--table", "failed_logins")

    assert result.returncode == 0, result.stderr
    assert replica_rows(replica_env, "failed_logins") == [(5, "admin", "192.0.2.1", "2025-01-01 00:00:00")]


def test_unknown_table(run_task: RunTask, replica_env: dict[str, str]) -> None:
    result = run_task("db_sync", "--table", 'x"; DROP TABLE email_queue; --')

    assert result.returncode == 1
    assert result.stderr == 'error: table x"; DROP TABLE email_queue; -- does not exist in SHOP_DB\n'


def test_replica_required(run_task: RunTask) -> None:
    result = run_task("db_sync")

    assert result.returncode == 1
    assert result.stderr == "error: environment variable SHOP_REPLICA_DB is required but not set\n"
