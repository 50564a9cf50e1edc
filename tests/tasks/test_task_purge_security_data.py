"""purge_security_data.py: retention per table, unresolved alerts kept, one transaction."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.tasks.conftest import RunTask

NOW = "2025-02-01T02:00:00"


def ids(conn: sqlite3.Connection, table: str) -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT id FROM {table} ORDER BY id")]


def fill(conn: sqlite3.Connection) -> None:
    """Rows just either side of each default limit, relative to NOW."""
    conn.executemany(
        "INSERT INTO security_metrics (id, metric, value, recorded_at) VALUES (?, 'm', 1, ?)",
        [(1, "2024-12-01 00:00:00"),   # 62 days: deleted
         (2, "2025-01-02 01:59:59"),   # 30 days and a second: deleted
         (3, "2025-01-02 02:00:00"),   # exactly 30 days: kept
         (4, "2025-01-31 12:00:00")],  # kept
    )
    conn.executemany(
        "INSERT INTO failed_logins (id, username, ip, attempted_at) VALUES (?, 'u', '192.0.2.1', ?)",
        [(1, "2025-01-20 00:00:00"),   # 12 days: deleted
         (2, "2025-01-25 01:00:00"),   # 7 days and an hour: deleted
         (3, "2025-01-26 00:00:00")],  # 6 days: kept
    )
    conn.executemany(
        "INSERT INTO security_alerts (id, kind, message, created_at, resolved, resolved_at)"
        " VALUES (?, 'k', 'm', ?, ?, ?)",
        [(1, "2024-09-01 00:00:00", 1, "2024-09-02 00:00:00"),  # resolved, 153 days: deleted
         (2, "2024-09-01 00:00:00", 0, None),                   # unresolved, old: kept
         (3, "2023-01-01 00:00:00", 0, None),                   # unresolved, very old: kept
         (4, "2025-01-01 00:00:00", 1, "2025-01-02 00:00:00")],  # resolved, recent: kept
    )
    conn.commit()


def test_purges_each_table_by_its_own_limit(run_task: RunTask, db: sqlite3.Connection) -> None:
    fill(db)

    result = run_task("purge_security_data", "--now", NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "security_metrics: deleted 2 rows older than 30 days",
        "failed_logins: deleted 2 rows older than 7 days",
        "security_alerts: deleted 1 resolved rows older than 90 days",
        "purged 5 rows",
    ]
    assert ids(db, "security_metrics") == [3, 4]
    assert ids(db, "failed_logins") == [3]
    assert ids(db, "security_alerts") == [2, 3, 4]


def test_limits_from_arguments(run_task: RunTask, db: sqlite3.Connection) -> None:
    fill(db)

    result = run_task(
        "purge_security_data", "--metrics-days", "1", "--failed-logins-days", "30",
        "--alerts-days", "1", "--now", NOW,
    )

    assert result.returncode == 0, result.stderr
    assert ids(db, "security_metrics") == [4]
    assert ids(db, "failed_logins") == [1, 2, 3]
    # Unresolved alerts survive any limit.
    assert ids(db, "security_alerts") == [2, 3]


def test_second_run_deletes_nothing(run_task: RunTask, db: sqlite3.Connection) -> None:
    fill(db)
    run_task("purge_security_data", "--now", NOW)

    result = run_task("purge_security_data", "--now", NOW)

    assert result.stdout.splitlines()[-1] == "purged 0 rows"


def test_all_tables_or_none(run_task: RunTask, db: sqlite3.Connection) -> None:
    """A failure on the last table rolls back the deletions already done."""
    fill(db)
    # A real SQLite fault on the third DELETE, injected with a trigger.
    db.execute(
        "CREATE TRIGGER keep_alerts BEFORE DELETE ON security_alerts"
        " BEGIN SELECT RAISE(ABORT, 'alerts are locked'); END"
    )
    db.commit()

    result = run_task("purge_security_data", "--now", NOW)

    assert result.returncode == 1
    assert result.stderr == "error: database: alerts are locked\n"
    assert ids(db, "security_metrics") == [1, 2, 3, 4]
    assert ids(db, "failed_logins") == [1, 2, 3]


def test_missing_database_folder(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    shop_env["SHOP_DB"] = str(tmp_path / "nowhere" / "shop.sqlite")

    result = run_task("purge_security_data")

    assert result.returncode == 1
    assert result.stderr == f"error: SHOP_DB: folder {tmp_path / 'nowhere'} does not exist\n"
