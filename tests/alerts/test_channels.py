"""deployer/remote/alerts.py's channels against real servers on the loopback: an SMTP relay
that requires STARTTLS and a login (aiosmtpd), an HTTP server recording webhook posts and
healthchecks pings; a closed port and a server slower than the timeout cost at most the
bounded time and come back as error values."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.remote import alerts
from tests.alerts.servers import Relay, free_port, smtp_relay, web_server

pytestmark = pytest.mark.alerts

TAIL = ["connecting to db", "pg_dump: error: connection to server failed"]


def _config(channels: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"project": "shop", "env": "prod", "job": "backup", "grace": 300, "timeout": 5, "retries": 2,
            "rules": {"when": list(alerts.EVENTS), "after": 1, "quiet": 3600}, "channels": channels, **extra}


def _mail_channel(relay: Relay) -> dict[str, Any]:
    return {"name": "oncall", "type": "mail", "to": ["oncall@example.org"], "sender": "cron@example.org",
            "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": True, "user": relay.user,
                     "password": relay.password, "ca_file": str(relay.ca_file)}}


def _event(outcome: str, at: float, code: int) -> dict[str, Any]:
    return {"outcome": outcome, "at": at, "start": at - 3, "duration": 3.0, "exit_code": code, "host": "db1",
            "run_id": f"r{int(at)}", "output_tail": TAIL}


def _play(config: dict[str, Any], events: list[dict[str, Any]]) -> list[alerts.Delivery]:
    """What the wrapper does after each run: decide, send what was decided, note what was delivered."""
    state: dict[str, Any] | None = None
    deliveries: list[alerts.Delivery] = []
    for event in events:
        decision = alerts.decide(config, state, event)
        sent = alerts.send(config, decision.messages, host="db1")
        alerts.note_deliveries(decision.state, sent, event["at"], decision.messages)
        deliveries += sent
        state = decision.state
    return deliveries


def test_mail_through_a_starttls_relay_once_per_incident_and_once_recovered(tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay:
        config = _config([_mail_channel(relay)])
        events = [_event("failure", 1000 + 60 * i, 2) for i in range(5)] + [_event("success", 1400, 0)]
        deliveries = _play(config, events)
    assert [(d.channel, d.event, d.ok, d.error) for d in deliveries] == [("oncall", "failure", True, None),
                                                                          ("oncall", "recovered", True, None)]
    assert relay.logins == ["alerts:ok", "alerts:ok"]
    failed, recovered = relay.messages
    assert failed["Subject"] == "[shop/prod] backup failed on db1 (exit 2)"
    assert failed["To"] == "oncall@example.org" and failed["From"] == "cron@example.org"
    text = failed.get_body().get_content()  # type: ignore[union-attr]
    for expected in ("Job:     backup (project shop, environment prod)", "Host:    db1", "Outcome: failure, exit code 2",
                     "Last lines of output:", "  pg_dump: error: connection to server failed"):
        assert expected in text, text
    assert recovered["Subject"] == "[shop/prod] backup recovered on db1 (down 6m)"


def test_a_long_subject_arrives_as_one_line_without_a_leading_space(tmp_path: Path) -> None:
    # Short enough for a line of its own, too long with "Subject: " before it: at 78 columns
    # Python's email folded it right after "Subject:" and the reader got a leading space.
    subject = "[demo/dev] hello is late on h2 (due 2026-12-03T15:00:00Z, no start since)"
    message = alerts.Message("late", subject, "late", {"event": "late"})
    with smtp_relay(tmp_path) as relay:
        sent = alerts.send(_config([_mail_channel(relay)]), [message], host="h2")
    assert [(d.ok, d.error) for d in sent] == [(True, None)]
    (mail,) = relay.messages
    assert mail["Subject"] == subject, repr(mail["Subject"])


def test_the_quiet_period_is_honoured_by_what_the_relay_receives(tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay:
        config = _config([_mail_channel(relay)], rules={"when": list(alerts.EVENTS), "after": 1, "quiet": 1800})
        # flapping every minute for an hour: fail, succeed, fail...
        _play(config, [_event("failure" if i % 2 == 0 else "success", 60 * i, 0 if i % 2 else 1) for i in range(60)])
    subjects = [m["Subject"] for m in relay.messages]
    assert subjects == ["[shop/prod] backup failed on db1 (exit 1)", "[shop/prod] backup recovered on db1 (down 1m)",
                        "[shop/prod] backup failed on db1 (exit 1)", "[shop/prod] backup recovered on db1 (down 1m)"]
    assert "Incidents not told during the quiet period before this one: 14" in relay.messages[2].get_body().get_content()  # type: ignore[union-attr]


def test_a_refused_login_is_an_error_value_without_retries(tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay:
        channel = _mail_channel(relay)
        channel["smtp"]["password"] = "wrong"
        deliveries = _play(_config([channel]), [_event("failure", 10, 1)])
    assert [(d.ok, d.error, d.attempts) for d in deliveries] == [(False, "the relay refused the login (535)", 1)]
    assert relay.messages == [] and "wrong" not in json.dumps([d.record() for d in deliveries])


def test_a_relay_whose_certificate_is_not_trusted_is_not_given_the_password(tmp_path: Path) -> None:
    with smtp_relay(tmp_path) as relay:
        channel = _mail_channel(relay)
        channel["smtp"]["ca_file"] = None  # the system's CAs do not know the relay's certificate
        deliveries = _play(_config([channel], retries=0), [_event("failure", 10, 1)])
    assert not deliveries[0].ok and "CERTIFICATE_VERIFY_FAILED" in (deliveries[0].error or "")
    assert relay.logins == [] and relay.messages == []


def test_webhook_posts_the_documented_json_with_its_secret_header() -> None:
    with web_server() as web:
        channel = {"name": "team", "type": "webhook", "url": web.url + "/hooks/cron", "headers": {"Authorization": "Bearer t0ken"}}
        deliveries = _play(_config([channel]), [_event("timeout", 100, 124), _event("success", 200, 0)])
    assert [(d.event, d.ok) for d in deliveries] == [("timeout", True), ("recovered", True)]
    first = web.requests[0]
    assert (first.method, first.path) == ("POST", "/hooks/cron")
    assert first.headers["authorization"] == "Bearer t0ken" and first.headers["content-type"] == "application/json"
    body = json.loads(first.body)
    assert body == {
        "version": 1, "event": "timeout", "project": "shop", "env": "prod", "job": "backup", "host": "db1",
        "hostname": "db1", "run_id": "r100", "outcome": "timeout", "exit_code": 124, "started_at": "1970-01-01T00:01:37.000Z",
        "ended_at": "1970-01-01T00:01:40.000Z", "duration_seconds": 3.0, "consecutive_failures": 1,
        "incident_started_at": "1970-01-01T00:01:40.000Z", "untold_incidents": 0, "output_tail": TAIL,
        "text": "[shop/prod] backup timed out on db1 (killed after 3.0s)", "attempt": 1}
    assert json.loads(web.requests[1].body)["event"] == "recovered"


def test_healthchecks_pings_pair_start_and_finish_by_run_id() -> None:
    with web_server() as web:
        config = _config([], ping=web.url + "/ping/5bd8bf6e-aaaa")
        start = alerts.ping(config, "start", "3f9c0d1e2a4b5c6d")
        end = alerts.ping(config, 3, "3f9c0d1e2a4b5c6d", body=b"last lines\n")
        other = alerts.ping(config, 0, "0000aaaa0000bbbb")
    assert start is not None and start.ok and end is not None and end.ok and other is not None and other.ok
    rid = alerts.run_uuid("3f9c0d1e2a4b5c6d")
    assert [(r.method, r.path) for r in web.requests] == [
        ("POST", f"/ping/5bd8bf6e-aaaa/start?rid={rid}"), ("POST", f"/ping/5bd8bf6e-aaaa/3?rid={rid}"),
        ("POST", f"/ping/5bd8bf6e-aaaa/0?rid={alerts.run_uuid('0000aaaa0000bbbb')}")]
    assert web.requests[1].body == b"last lines\n"


def test_an_unreachable_endpoint_costs_at_most_the_timeout_and_returns_an_error() -> None:
    closed = free_port()  # nothing listens there
    config = _config([{"name": "team", "type": "webhook", "url": f"http://127.0.0.1:{closed}/hook"}],
                     ping=f"http://127.0.0.1:{closed}/ping/x", timeout=2, retries=2)
    started = time.monotonic()
    deliveries = _play(config, [_event("failure", 10, 1)])
    ping = alerts.ping(config, "start", "r1")
    took = time.monotonic() - started
    assert [(d.ok, d.error) for d in deliveries] == [(False, "Connection refused")] and deliveries[0].attempts >= 2  # retried within its time
    assert ping is not None and (ping.ok, ping.error) == (False, "Connection refused")
    assert took < 2 * 2 + 1  # two channels' budgets, at most
    assert str(closed) not in json.dumps([d.record() for d in [*deliveries, ping]])  # no URL in what the ledger keeps


def test_a_slow_endpoint_costs_at_most_the_timeout_and_returns_an_error() -> None:
    with web_server() as web:
        web.delay = 10  # answers after ten seconds
        config = _config([{"name": "team", "type": "webhook", "url": web.url + "/hook"}], ping=web.url + "/ping/x",
                         timeout=1.5, retries=2)
        started = time.monotonic()
        deliveries = _play(config, [_event("failure", 10, 1)])
        ping = alerts.ping(config, 0, "r1")
        took = time.monotonic() - started
    assert len(deliveries) == 1 and not deliveries[0].ok and "1.5s" in (deliveries[0].error or "")
    assert ping is not None and not ping.ok
    assert took < 2 * 1.5 + 1.5, took


def test_a_server_error_is_retried_a_client_error_is_not() -> None:
    with web_server() as web:
        config = _config([{"name": "t", "type": "webhook", "url": web.url}], timeout=5, retries=2)
        message = alerts.decide(config, None, _event("failure", 1, 1)).messages[0]
        web.status = 503
        d503 = alerts.send(config, [message], host="db1")
        web.status = 404
        d404 = alerts.send(config, [message], host="db1")
    assert [(d.ok, d.error, d.attempts) for d in d503] == [(False, "HTTP 503 Service Unavailable", 3)]
    assert [(d.ok, d.error, d.attempts) for d in d404] == [(False, "HTTP 404 Not Found", 1)]


def test_sendmail_runs_only_a_program_root_alone_can_change(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the sendmail channel runs as root in the wrapper; this proves its check as root")
    # The machine has no MTA: a root-owned program standing in for sendmail keeps what it is given.
    # (A stand-in for the MTA, not for the code under test: the subprocess, the check and the message are real.)
    folder = tmp_path / "sbin"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    kept = tmp_path / "kept.eml"
    sendmail = folder / "sendmail"
    sendmail.write_text(f"#!/bin/sh\ncat > {kept}\n")
    sendmail.chmod(0o755)
    channel = {"name": "box", "type": "mail", "to": ["root@localhost"], "sendmail": str(sendmail)}
    deliveries = _play(_config([channel]), [_event("failure", 10, 1)])
    assert [(d.ok, d.error) for d in deliveries] == [(True, None)]
    assert "Subject: [shop/prod] backup failed on db1 (exit 1)" in kept.read_text()

    os.chown(sendmail, 65534, 65534)  # now another user's: that user could make it anything
    kept.unlink()
    deliveries = _play(_config([channel]), [_event("failure", 10, 1)])
    assert not deliveries[0].ok and "deployer will not run it as root" in (deliveries[0].error or "")
    assert not kept.exists()
    os.chown(sendmail, 0, 0)
    sendmail.chmod(0o757)  # root's, but anyone may rewrite it
    assert not _play(_config([channel]), [_event("failure", 10, 1)])[0].ok
    sendmail.chmod(0o755)
    link = folder / "sendmail-link"
    os.symlink(sendmail, link)
    os.lchown(link, 65534, 65534)
    deliveries = _play(_config([{**channel, "sendmail": str(link)}]), [_event("failure", 10, 1)])
    assert not deliveries[0].ok and "link that root did not make" in (deliveries[0].error or "")
    assert stat.S_ISLNK(os.lstat(link).st_mode)


APPRISE = "/usr/bin/apprise"  # Debian's apprise package (./install.sh --test installs it)


# Apprise's program loads every service it knows when it starts: 0.25 s here warm, 1.6 s
# cold, more on a slow pristine system. These tests are about what it sends, not how fast.
APPRISE_TIME = 60


def _apprise_channel(*urls: str, program: str = APPRISE) -> dict[str, Any]:
    return {"name": "chat", "type": "apprise", "urls": list(urls), "program": program}


def test_apprise_sends_through_the_real_program_with_its_urls_on_a_pipe() -> None:
    # apprise's json:// service POSTs {title, message, type} to the URL; its "+X-Token" becomes a header
    with web_server() as web:
        url = f"json://127.0.0.1:{web.port}/chat/room-17?+X-Token=apprise-t0ken-9"
        deliveries = _play(_config([_apprise_channel(url)], timeout=APPRISE_TIME),
                           [_event("failure", 100, 2), _event("success", 200, 0)])
    assert [(d.channel, d.event, d.ok, d.error) for d in deliveries] == [("chat", "failure", True, None),
                                                                          ("chat", "recovered", True, None)]
    failed, recovered = web.requests
    assert (failed.method, failed.path, failed.headers["x-token"]) == ("POST", "/chat/room-17", "apprise-t0ken-9")
    body = json.loads(failed.body)
    assert (body["title"], body["type"]) == ("[shop/prod] backup failed on db1 (exit 2)", "failure")
    assert "Outcome: failure, exit code 2" in body["message"] and "pg_dump: error: connection to server failed" in body["message"]
    assert (json.loads(recovered.body)["type"], json.loads(recovered.body)["title"]) == (
        "success", "[shop/prod] backup recovered on db1 (down 1m)")


def test_an_apprise_url_never_reaches_argv_nor_an_error_text(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a program root alone can change: the test makes one, as root")
    # A root-owned program that keeps its argv and what it reads from its --config, then fails as
    # apprise does when a service refuses, printing the URL it used (apprise's -v output does).
    folder = tmp_path / "bin"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    kept = tmp_path / "kept"
    program = folder / "apprise"
    program.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > ' + f'{kept}.argv\nurl=$(cat "$2")\n'
                       f'printf "%s\\n" "$url" > {kept}.config\n' + 'echo "Failed to send to $url" >&2\nexit 1\n')
    program.chmod(0o755)
    secret = "tgram://123456789:AAF-s3cret-b0t-t0ken/-100200300"
    deliveries = _play(_config([_apprise_channel(secret, program=str(program))]), [_event("failure", 100, 2)])
    assert [(d.ok, d.attempts) for d in deliveries] == [(False, 3)]  # a failure another attempt may fix: retried
    error = deliveries[0].error or ""
    assert error.startswith("apprise exited 1: Failed to send to ") and "s3cret" not in error and "123456789" not in error
    argv = Path(f"{kept}.argv").read_text()
    assert "s3cret" not in argv and argv.startswith("--config\n/dev/fd/")
    assert Path(f"{kept}.config").read_text() == secret + "\n"


def test_apprise_missing_or_not_roots_is_an_error_value(tmp_path: Path) -> None:
    missing = _play(_config([_apprise_channel("json://127.0.0.1:9/x", program=str(tmp_path / "apprise"))]),
                    [_event("failure", 100, 2)])
    assert [(d.ok, d.attempts, d.error) for d in missing] == [
        (False, 1, f"{tmp_path}/apprise is not installed here (Debian: apt-get install apprise)")]
    if os.geteuid() != 0:
        pytest.skip("the ownership check: as root, as the wrapper runs it")
    os.chmod(tmp_path, 0o755)
    planted = tmp_path / "apprise"
    planted.write_text("#!/bin/sh\ntouch " + str(tmp_path / "ran") + "\n")
    planted.chmod(0o755)
    os.chown(planted, 65534, 65534)  # the job's user's program: root must not run it
    refused = _play(_config([_apprise_channel("json://127.0.0.1:9/x", program=str(planted))]), [_event("failure", 100, 2)])
    assert not refused[0].ok and "deployer will not run it as root" in (refused[0].error or "")
    assert not (tmp_path / "ran").exists()
