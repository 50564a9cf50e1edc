"""The oracle tier: deployer's cron engine against Debian cron's own code, built here."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.oracle import debian_cron


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "oracle: compares the cron engine with Debian cron's own code (apt-get source cron, gcc)")


@pytest.fixture(scope="session")
def oracle() -> ModuleType:
    try:
        debian_cron.harness()
    except debian_cron.OracleUnavailable as exc:
        pytest.fail(f"the oracle could not be built: {exc}")  # a failure, never a skip counted as a pass
    return debian_cron
