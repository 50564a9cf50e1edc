"""Fixtures the alerts tier's files share."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def exit_file() -> Iterator[Path]:
    """The exit code a test's job ends with, in a file the test user can read (0 until the test writes another)."""
    fd, name = tempfile.mkstemp(prefix="deployer-alerts-")
    os.close(fd)
    os.chmod(name, 0o644)
    Path(name).write_text("0")
    yield Path(name)
    os.unlink(name)
