"""Fixtures for the example task scripts: a private shop (database, log
folder, outbox) under tmp_path, and a runner that starts a script the way the
run wrapper does: ``python3 tasks/<script>.py args...`` with its configuration
in the environment."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TASKS_DIR = Path(__file__).resolve().parents[2] / "tasks"

# The scripts' pure functions are importable by the tests too. Like the scripts
# themselves, leave no __pycache__ in tasks/: it is deployed as it is.
sys.dont_write_bytecode = True
if str(TASKS_DIR) not in sys.path:
    sys.path.append(str(TASKS_DIR))

import shopdb  # noqa: E402

RunTask = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def shop_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a task: only this test's shop, no SMTP unless asked."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SHOP_", "SMTP_"))
    }
    (tmp_path / "logs").mkdir()
    env.update(
        SHOP_DB=str(tmp_path / "shop.sqlite"),
        SHOP_LOG_ROOT=str(tmp_path / "logs"),
        SHOP_OUTBOX=str(tmp_path / "outbox"),
    )
    return env


@pytest.fixture
def run_task(shop_env: dict[str, str]) -> RunTask:
    """Run ``tasks/<script>.py *args``; ``env=`` replaces the shop environment."""

    def run(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(TASKS_DIR / f"{script}.py"), *args],
            env=shop_env if env is None else env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


@pytest.fixture
def db(shop_env: dict[str, str]) -> Iterator[sqlite3.Connection]:
    """A connection to the test's shop database, created with the real schema."""
    conn = shopdb.connect(shop_env["SHOP_DB"])
    yield conn
    conn.close()
