"""What every task script promises the run wrapper: exit 1 and one clear line
for missing configuration, exit 2 for a bad command line, never a traceback."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from tests.tasks.conftest import RunTask

# script -> the environment variables it cannot run without
REQUIRED = {
    "process_email_queue": ["SHOP_DB", "SHOP_OUTBOX"],
    "purge_security_data": ["SHOP_DB"],
    "clean_logs": ["SHOP_LOG_ROOT"],
    "purge_events": ["SHOP_LOG_ROOT"],
    "db_sync": ["SHOP_DB", "SHOP_REPLICA_DB"],
    "seed_demo_data": ["SHOP_DB", "SHOP_LOG_ROOT"],
}


@pytest.mark.parametrize(
    ("script", "variable"),
    [(script, var) for script, variables in REQUIRED.items() for var in variables],
)
def test_missing_variable_exits_1_with_message(run_task: RunTask, shop_env: dict[str, str], tmp_path: Path, script: str, variable: str) -> None:
    shop_env["SHOP_REPLICA_DB"] = str(tmp_path / "replica.sqlite")
    del shop_env[variable]

    result = run_task(script)

    assert result.returncode == 1
    assert result.stderr == f"error: environment variable {variable} is required but not set\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("script", "args", "complaint"),
    [
        ("process_email_queue", ["--max", "0"], "argument --max: 0 is not >= 1"),
        ("process_email_queue", ["--attempts", "x"], "argument --attempts: 'x' is not an integer"),
        ("purge_security_data", ["--metrics-days", "-1"], "argument --metrics-days: -1 is not >= 1"),
        ("purge_security_data", ["--now", "tomorrow"], "argument --now: 'tomorrow' is not an ISO date"),
        ("clean_logs", ["--days"], "argument --days: expected one argument"),
        ("purge_events", ["--months", "1.5"], "argument --months: '1.5' is not an integer"),
        ("db_sync", ["--bogus"], "unrecognized arguments: --bogus"),
        ("seed_demo_data", ["extra"], "unrecognized arguments: extra"),
    ],
)
def test_bad_argument_exits_2(run_task: RunTask, script: str, args: list[str], complaint: str) -> None:
    result = run_task(script, *args)

    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", sorted(REQUIRED))
def test_help(run_task: RunTask, script: str) -> None:
    result = run_task(script, "--help")

    assert result.returncode == 0
    assert result.stdout.startswith("usage: ")
