"""pytest fixtures around :class:`TestHosts` (this module needs pytest; hosts.py does not).

Enable in ``tests/conftest.py`` with ``pytest_plugins = ["harness.fixtures"]`` (when ``tests/``
has no ``__init__.py``; otherwise ``"tests.harness.fixtures"``).  Fixtures:

* ``fleet_factory``: ``fleet_factory(n, **TestHosts kwargs) -> TestHosts``; every harness it
  made is torn down after the test (errors in teardown fail the test).
* ``fleet``: 3 hosts h1..h3 with users ``alice`` (passwordless sudo) and ``bob`` (no sudo),
  function scope (start ~0.25 s, stop ~0.05 s).
* ``fleet_module``: the same, shared by all tests of a module (tests must not break hosts
  for each other, or must repair with ``link_up``/``restart``).

Tests are skipped (not failed) when not running as root. A missing rootfs is built on first
use (``build_rootfs.sh``, about 45 s, needs the Debian mirror).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .hosts import TestHosts

FleetFactory = Callable[..., TestHosts]


def _factory() -> tuple[FleetFactory, list[TestHosts]]:
    created: list[TestHosts] = []

    def make(n: Any = 3, **kwargs: Any) -> TestHosts:
        if os.geteuid() != 0:
            pytest.skip("fleet tests need root (network namespaces, overlayfs)")
        kwargs.setdefault("build_rootfs", True)
        th = TestHosts(n, **kwargs)
        created.append(th)
        return th.start()

    return make, created


def _close_all(created: list[TestHosts]) -> None:
    errors: list[BaseException] = []
    for th in reversed(created):
        try:
            th.close()
        except Exception as exc:  # noqa: BLE001 - close every harness, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
def fleet_factory() -> Iterator[FleetFactory]:
    """Make harnesses on demand; all are closed after the test."""
    make, created = _factory()
    yield make
    _close_all(created)


@pytest.fixture
def fleet(fleet_factory: FleetFactory) -> TestHosts:
    """Three hosts (h1..h3), users alice (passwordless sudo) and bob."""
    return fleet_factory(3, users=["alice", "bob"], sudo_users=["alice"])


@pytest.fixture(scope="module")
def fleet_module() -> Iterator[TestHosts]:
    """Like ``fleet`` but shared by the tests of one module."""
    make, created = _factory()
    yield make(3, users=["alice", "bob"], sudo_users=["alice"])
    _close_all(created)
