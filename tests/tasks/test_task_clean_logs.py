"""clean_logs.py: old *.log files go, everything else stays, links are never followed."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.tasks.conftest import RunTask

NOW = datetime(2025, 2, 1, 3, 0, tzinfo=UTC)


def make(path: Path, days_old: float, text: str = "line\n") -> Path:
    """Create ``path`` with a modification time ``days_old`` days before NOW."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    when = (NOW - timedelta(days=days_old)).timestamp()
    os.utime(path, (when, when))
    return path


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_deletes_old_logs_only(run_task: RunTask, shop_env: dict[str, str]) -> None:
    root = Path(shop_env["SHOP_LOG_ROOT"])
    make(root / "app.log", 1)
    make(root / "old.log", 11, "12345")
    make(root / "edge.log", 9.99)
    make(root / "sub" / "deeper" / "old.log", 30, "123")
    make(root / "sub" / "new.log", 2)
    make(root / "old.txt", 100)          # not a .log
    make(root / "old.log.gz", 100)       # not a .log either
    make(root / "events" / "old.log", 100)  # under events/

    result = run_task("clean_logs", "--now", NOW.isoformat())

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "deleted old.log",
        "deleted sub/deeper/old.log",
        "deleted 2 log files older than 10 days (8 bytes)",
    ]
    assert files(root) == [
        "app.log", "edge.log", "events/old.log", "old.log.gz", "old.txt", "sub/new.log",
    ]


def test_days_argument(run_task: RunTask, shop_env: dict[str, str]) -> None:
    root = Path(shop_env["SHOP_LOG_ROOT"])
    make(root / "a.log", 3)
    make(root / "b.log", 1)

    result = run_task("clean_logs", "--days", "2", "--now", NOW.isoformat())

    assert result.returncode == 0, result.stderr
    assert files(root) == ["b.log"]


def test_symlinks_are_neither_followed_nor_deleted(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    root = Path(shop_env["SHOP_LOG_ROOT"])
    outside = tmp_path / "outside"
    target = make(outside / "precious.log", 100)
    make(outside / "dir" / "precious.log", 100)
    (root / "x.log").symlink_to(target)
    (root / "linked-dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / "dangling.log").symlink_to(tmp_path / "missing.log")
    old_link_time = (NOW - timedelta(days=100)).timestamp()
    os.utime(root / "x.log", (old_link_time, old_link_time), follow_symlinks=False)

    result = run_task("clean_logs", "--now", NOW.isoformat())

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["deleted 0 log files older than 10 days (0 bytes)"]
    assert target.exists() and (outside / "dir" / "precious.log").exists()
    assert (root / "x.log").is_symlink() and (root / "dangling.log").is_symlink()


def test_keep_dir_is_repeatable_and_replaces_the_default(run_task: RunTask, shop_env: dict[str, str]) -> None:
    root = Path(shop_env["SHOP_LOG_ROOT"])
    make(root / "events" / "a.log", 100)
    make(root / "archive" / "a.log", 100)
    make(root / "archive" / "inner" / "a.log", 100)
    make(root / "other" / "archive" / "a.log", 100)  # only the top-level archive is kept

    both = run_task("clean_logs", "--keep-dir", "archive", "--keep-dir", "events/", "--now", NOW.isoformat())

    assert both.returncode == 0, both.stderr
    assert files(root) == ["archive/a.log", "archive/inner/a.log", "events/a.log"]

    only_archive = run_task("clean_logs", "--keep-dir", "archive", "--now", NOW.isoformat())

    assert only_archive.stdout.splitlines()[0] == "deleted events/a.log"
    assert files(root) == ["archive/a.log", "archive/inner/a.log"]


def test_keep_dir_must_be_inside_the_root(run_task: RunTask) -> None:
    result = run_task("clean_logs", "--keep-dir", "../elsewhere")

    assert result.returncode == 2
    assert "argument --keep-dir: '../elsewhere' must be a folder inside SHOP_LOG_ROOT" in result.stderr


def test_log_root_must_exist(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    shop_env["SHOP_LOG_ROOT"] = str(tmp_path / "missing")

    result = run_task("clean_logs")

    assert result.returncode == 1
    assert result.stderr == f"error: SHOP_LOG_ROOT: {tmp_path / 'missing'} is not a directory\n"
