"""purge_events.py: age from the name in calendar months, mtime otherwise."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import purge_events
import pytest

if TYPE_CHECKING:
    from tests.tasks.conftest import RunTask


def events_dir(shop_env: dict[str, str]) -> Path:
    folder = Path(shop_env["SHOP_LOG_ROOT"]) / "events"
    folder.mkdir(exist_ok=True)
    return folder


def touch(path: Path, modified: str | None = None) -> Path:
    """Create ``path``; ``modified`` is an ISO date for its mtime (default: now)."""
    path.write_text('{"type": "demo"}\n')
    if modified:
        when = datetime.fromisoformat(modified).replace(tzinfo=UTC).timestamp()
        os.utime(path, (when, when))
    return path


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("today", "months", "cutoff"),
    [
        (date(2025, 2, 1), 15, date(2023, 11, 1)),   # across a year boundary
        (date(2025, 1, 15), 1, date(2024, 12, 15)),
        (date(2025, 1, 15), 12, date(2024, 1, 15)),
        (date(2025, 12, 1), 11, date(2025, 1, 1)),
        (date(2025, 12, 1), 12, date(2024, 12, 1)),
        (date(2025, 3, 31), 1, date(2025, 2, 28)),   # clamped to the month's end
        (date(2024, 3, 31), 1, date(2024, 2, 29)),   # leap year
        (date(2025, 1, 1), 25, date(2022, 12, 1)),
    ],
)
def test_months_before(today: date, months: int, cutoff: date) -> None:
    assert purge_events.months_before(today, months) == cutoff


def test_default_fifteen_months_across_year_boundary(run_task: RunTask, shop_env: dict[str, str]) -> None:
    folder = events_dir(shop_env)
    for month in ("2023-09", "2023-10", "2023-11", "2023-12", "2024-01", "2025-01"):
        touch(folder / f"events-{month}.jsonl")

    result = run_task("purge_events", "--now", "2025-02-01")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "deleted events/events-2023-09.jsonl (month 2023-09)",
        "deleted events/events-2023-10.jsonl (month 2023-10)",
        "deleted 2 event files older than 15 months (before 2023-11-01)",
    ]
    assert names(folder) == [
        "events-2023-11.jsonl", "events-2023-12.jsonl", "events-2024-01.jsonl", "events-2025-01.jsonl",
    ]


def test_daily_files_and_month_granularity(run_task: RunTask, shop_env: dict[str, str]) -> None:
    folder = events_dir(shop_env)
    for name in ("events-2024-11.jsonl", "events-2024-12.jsonl",
                 "events-2024-12-14.jsonl", "events-2024-12-15.jsonl", "events-2025-01-02.jsonl"):
        touch(folder / name)

    result = run_task("purge_events", "--months", "1", "--now", "2025-01-15")

    assert result.returncode == 0, result.stderr
    # December's month file still holds days after the cut-off: it stays.
    assert names(folder) == ["events-2024-12-15.jsonl", "events-2024-12.jsonl", "events-2025-01-02.jsonl"]
    assert "deleted events/events-2024-12-14.jsonl (day 2024-12-14)" in result.stdout.splitlines()


def test_other_names_fall_back_to_modification_time(run_task: RunTask, shop_env: dict[str, str]) -> None:
    folder = events_dir(shop_env)
    touch(folder / "audit.jsonl", "2023-01-01")
    touch(folder / "events-2024-13.jsonl", "2023-01-01")   # not a real month
    touch(folder / "recent.jsonl", "2025-01-01")
    touch(folder / "events-2020-01.jsonl", "2025-01-20")   # the name wins over mtime
    touch(folder / "old-notes.txt", "2020-01-01")          # not *.jsonl

    result = run_task("purge_events", "--now", "2025-02-01")

    assert result.returncode == 0, result.stderr
    assert names(folder) == ["old-notes.txt", "recent.jsonl"]
    assert "deleted events/audit.jsonl (modified 2023-01-01)" in result.stdout.splitlines()


def test_links_and_folders_are_left_alone(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    folder = events_dir(shop_env)
    outside = touch(tmp_path / "events-2020-01.jsonl")
    (folder / "events-2020-02.jsonl").symlink_to(outside)
    (folder / "events-2020-03.jsonl").mkdir()

    result = run_task("purge_events", "--now", "2025-02-01")

    assert result.returncode == 0, result.stderr
    assert outside.exists()
    assert names(folder) == ["events-2020-02.jsonl", "events-2020-03.jsonl"]


def test_no_events_folder(run_task: RunTask, shop_env: dict[str, str]) -> None:
    result = run_task("purge_events", "--now", "2025-02-01")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"no events folder under {shop_env['SHOP_LOG_ROOT']}: nothing to purge",
        "deleted 0 event files older than 15 months (before 2023-11-01)",
    ]


def test_events_folder_that_is_a_link_is_refused(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    old = touch(elsewhere / "events-2020-01.jsonl")
    (Path(shop_env["SHOP_LOG_ROOT"]) / "events").symlink_to(elsewhere)

    result = run_task("purge_events", "--now", "2025-02-01")

    assert result.returncode == 1
    assert "is not a real folder (a link or a file); not touching it" in result.stderr
    assert old.exists()


@pytest.mark.parametrize("now", ["2025-02-30", "yesterday", ""])
def test_bad_now_is_a_usage_error(run_task: RunTask, now: str) -> None:
    result = run_task("purge_events", "--now", now)

    assert result.returncode == 2
    assert "argument --now:" in result.stderr
