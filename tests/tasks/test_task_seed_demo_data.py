"""seed_demo_data.py: idempotent, and it really gives every task work to do."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.tasks.conftest import RunTask

NOW = "2025-02-01T02:00:00"
TABLES = ("email_queue", "security_metrics", "failed_logins", "security_alerts")


def counts(db_path: str) -> dict[str, int]:
    with sqlite3.connect(db_path) as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in TABLES}


def tree(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*") if p.is_file()}


def test_seed_is_idempotent(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    # Folders that do not exist yet are created.
    shop_env["SHOP_DB"] = str(tmp_path / "data" / "shop.sqlite")
    shop_env["SHOP_LOG_ROOT"] = str(tmp_path / "var" / "log" / "shop")
    root = Path(shop_env["SHOP_LOG_ROOT"])

    first = run_task("seed_demo_data", "--now", NOW)
    rows, files = counts(shop_env["SHOP_DB"]), tree(root)
    second = run_task("seed_demo_data", "--now", NOW)

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.splitlines()[-1] == "seeded 18 rows and 27 files"
    assert second.stdout.splitlines()[-1] == "seeded 0 rows and 0 files"
    assert counts(shop_env["SHOP_DB"]) == rows == {
        "email_queue": 6, "security_metrics": 4, "failed_logins": 4, "security_alerts": 4,
    }
    assert tree(root) == files


def test_seed_covers_twenty_months_of_events(run_task: RunTask, shop_env: dict[str, str]) -> None:
    run_task("seed_demo_data", "--now", NOW)

    events = sorted(p.name for p in (Path(shop_env["SHOP_LOG_ROOT"]) / "events").glob("*.jsonl"))
    assert len(events) == 20
    assert (events[0], events[-1]) == ("events-2023-07.jsonl", "events-2025-02.jsonl")
    log = Path(shop_env["SHOP_LOG_ROOT"]) / "archive" / "app-2.log"
    modified = datetime.fromtimestamp(log.stat().st_mtime, UTC)
    assert modified == datetime(2024, 12, 23, 2, 0, tzinfo=UTC)  # 40 days before NOW


def test_every_task_has_work_after_seeding(run_task: RunTask, shop_env: dict[str, str]) -> None:
    """The bundled example end to end, as its cron jobs would run it."""
    run_task("seed_demo_data", "--now", NOW)

    outputs = {
        script: run_task(script, "--now", NOW)
        for script in ("process_email_queue", "purge_security_data", "clean_logs", "purge_events")
    }

    for script, result in outputs.items():
        assert result.returncode == 0, f"{script}: {result.stderr}"
    assert outputs["process_email_queue"].stdout.splitlines()[-1] == "sent 3, failed 1, retry 0, remaining 0"
    assert outputs["purge_security_data"].stdout.splitlines()[-1] == "purged 5 rows"
    assert outputs["clean_logs"].stdout.splitlines() == [
        "deleted php-error.log",
        "deleted archive/app-2.log",
        "deleted 2 log files older than 10 days (60 bytes)",
    ]
    assert outputs["purge_events"].stdout.splitlines()[-1] == (
        "deleted 4 event files older than 15 months (before 2023-11-01)"
    )
    with sqlite3.connect(shop_env["SHOP_DB"]) as conn:
        unresolved = conn.execute("SELECT id FROM security_alerts WHERE resolved = 0").fetchall()
    assert unresolved == [(3,), (4,)]
