"""The Management API client (engine/healthchecks.py) against the fake of healthchecks on the
loopback (tests/alerts/fake_healthchecks.py): the answers deployer cannot cause through a real
deploy (two checks with one slug, a field the API refuses, a redirect, a slow server)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from deployer.config.project import Job
from deployer.core.healthchecks import CheckSpec, check_spec
from deployer.engine.healthchecks import Api, sync
from tests.alerts.fake_healthchecks import API_KEY, fake_healthchecks

pytestmark = [pytest.mark.alerts]

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def spec(job: str = "backup", host: str = "db1", tz: str = "UTC", schedule: str = "0 3 * * *") -> CheckSpec:
    return check_spec("shop", "prod", Job(id=job, schedule=schedule), host, tz, NOW)


def test_create_then_nothing_then_update() -> None:
    with fake_healthchecks() as hc:
        api = Api(hc.url, API_KEY)
        first = sync(api, [spec(), spec(host="db2")], apply=True)
        assert [r.action for r in first.results] == ["created", "created"] and first.error is None
        assert [r.action for r in sync(api, [spec(), spec(host="db2")], apply=True).results] == ["unchanged"] * 2
        moved = sync(api, [spec(schedule="0 4 * * *"), spec(host="db2")], apply=False)
        assert [(r.action, r.changed) for r in moved.results] == [("update", ("schedule",)), ("unchanged", ())]
        assert hc.check("shop-prod-backup-db1")["schedule"] == "0 3 * * *"  # plan wrote nothing
        assert [r.action for r in sync(api, [spec(schedule="0 4 * * *")], apply=True).results] == ["updated"]
        assert len(hc.checks) == 2 and [m for m, _ in hc.calls].count("POST") == 3


def test_a_legacy_zone_the_api_renamed_is_not_updated_again() -> None:
    with fake_healthchecks() as hc:
        api = Api(hc.url, API_KEY)
        assert [r.action for r in sync(api, [spec(tz="Europe/Kiev")], apply=True).results] == ["created"]
        assert hc.check("shop-prod-backup-db1")["tz"] == "Europe/Kyiv"  # as healthchecks stores it
        again = sync(api, [spec(tz="Europe/Kiev")], apply=True)
        assert [r.action for r in again.results] == ["unchanged"] and [m for m, _ in hc.calls].count("POST") == 1
        moved = sync(api, [spec(tz="Europe/Paris")], apply=True)
        assert [(r.action, r.changed) for r in moved.results] == [("updated", ("tz",))]


def test_checks_no_longer_declared_are_paused_and_only_ours() -> None:
    tags = "deployer shop prod"
    with fake_healthchecks() as hc:
        api = Api(hc.url, API_KEY)
        sync(api, [spec(), spec(host="db2")], apply=True)
        hc.checks.append({**hc.checks[0], "uuid": "00000000-0000-0000-0000-000000000001", "slug": "mine", "tags": "other"})
        declared = frozenset({"shop-prod-backup-db1"})
        planned = sync(api, [spec()], apply=False, stale_tags=tags, declared=declared)
        assert [(r.spec.slug, r.action) for r in planned.results] == [("shop-prod-backup-db1", "unchanged"),
                                                                      ("shop-prod-backup-db2", "pause")]
        assert all(c["status"] == "new" for c in hc.checks)  # plan paused nothing
        applied = sync(api, [spec()], apply=True, stale_tags=tags, declared=declared)
        assert [(r.spec.slug, r.action, r.detail) for r in applied.results][1] == ("shop-prod-backup-db2", "paused",
                                                                                   "no longer declared")
        assert [c["status"] for c in hc.checks] == ["new", "paused", "new"]  # the project's other check is not ours
        again = sync(api, [spec()], apply=True, stale_tags=tags, declared=declared)
        assert [r.action for r in again.results] == ["unchanged"]  # paused once


def test_two_checks_with_one_slug_stop_the_sync() -> None:
    with fake_healthchecks() as hc:
        api = Api(hc.url, API_KEY)
        sync(api, [spec()], apply=True)
        hc.checks.append({**hc.checks[0], "uuid": "another"})  # made by hand in the dashboard, say
        report = sync(api, [spec(), spec(host="db2")], apply=True)
        assert report.error == "2 checks of the healthchecks project have the slug shop-prod-backup-db1"
        assert report.hint == "delete all but one of them in healthchecks, then apply again"
        assert [r.action for r in report.results] == ["skipped", "skipped"] and len(hc.checks) == 2


def test_hosts_whose_slugs_collide_are_refused() -> None:
    with fake_healthchecks() as hc:
        report = sync(Api(hc.url, API_KEY), [spec(host="db.1"), spec(host="db-1")], apply=True)
        assert report.error == "hosts db.1 and db-1 give their checks the same slug" and hc.checks == []


def test_a_field_the_api_refuses_is_named() -> None:
    with fake_healthchecks() as hc:
        report = sync(Api(hc.url, API_KEY), [spec(tz="Mars/Olympus"), spec(host="db2")], apply=True)
        assert report.error == (f"check shop-prod-backup-db1: the healthchecks API at {hc.url} refused a check "
                                "(400 (json validation error: tz is not a valid timezone))")
        assert [r.action for r in report.results] == ["skipped", "skipped"]


@contextmanager
def answering(status: int, headers: dict[str, str], delay: float = 0.0) -> Iterator[str]:
    """A server that answers every request alike: a redirect or a hang, which the fake does not do."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up: what the slow case is about

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_not_followed_with_the_key() -> None:
    with fake_healthchecks() as hc, answering(302, {"Location": f"{hc.url}/api/v3/checks/"}) as moved:
        report = sync(Api(moved, API_KEY), [spec()], apply=True)
        assert report.error == f"the healthchecks API at {moved} answered HTTP 302"
        assert hc.calls == []  # the key never went where the redirect pointed


def test_a_slow_api_costs_at_most_the_timeout() -> None:
    with answering(200, {}, delay=5) as slow:
        started = time.monotonic()
        report = sync(Api(slow, API_KEY, timeout=1.0), [spec()], apply=True)
        assert time.monotonic() - started < 3
        assert report.error is not None and report.error.startswith(f"cannot reach the healthchecks API at {slow} (")


def test_a_server_that_is_no_healthchecks_is_named() -> None:
    with answering(200, {}) as other:
        report = sync(Api(other, API_KEY), [spec()], apply=True)
        assert report.error == f"{other} answered GET /api/v3/checks/ with something that is not JSON"
        assert report.hint == "alerts.healthchecks.api must be the healthchecks site (e.g. https://healthchecks.io)"
        assert [r.action for r in report.results] == ["skipped"]
