"""process_email_queue.py: batching, retries, the outbox, and real SMTP
against a small SMTP server started by the test on 127.0.0.1."""

from __future__ import annotations

import base64
import email
import email.policy
import shutil
import socket
import socketserver
import sqlite3
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import process_email_queue
import pytest

if TYPE_CHECKING:
    from tests.tasks.conftest import RunTask

NOW = "2025-02-01T02:00:00"
PASSWORD = "s3cret-Pa55word"


def queue(conn: sqlite3.Connection, *emails: tuple[Any, ...]) -> None:
    """Insert emails as (id, recipient, created_at[, attempts[, subject]])."""
    for id_, recipient, created_at, *rest in emails:
        attempts = rest[0] if rest else 0
        subject = rest[1] if len(rest) > 1 else f"subject {id_}"
        conn.execute(
            "INSERT INTO email_queue (id, recipient, subject, body, attempts, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (id_, recipient, subject, f"body of {id_}\n", attempts, created_at),
        )
    conn.commit()


def rows(conn: sqlite3.Connection) -> dict[int, tuple[Any, ...]]:
    """id -> (status, attempts, last_error, sent_at)."""
    return {
        r["id"]: (r["status"], r["attempts"], r["last_error"], r["sent_at"])
        for r in conn.execute("SELECT * FROM email_queue")
    }


# --- outbox (no SMTP_HOST) ---------------------------------------------------------


def test_sends_oldest_first_up_to_max_into_outbox(run_task: RunTask, db: sqlite3.Connection, shop_env: dict[str, str]) -> None:
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"),
          (2, "b@example.com", "2025-01-01 09:00:00"),
          (3, "c@example.com", "2025-01-01 11:00:00"))

    result = run_task("process_email_queue", "--max", "2", "--now", NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sent #2 to b@example.com into the outbox",
        "sent #1 to a@example.com into the outbox",
        "sent 2, failed 0, retry 0, remaining 1",
    ]
    state = rows(db)
    assert state[1] == ("sent", 0, None, "2025-02-01 02:00:00")
    assert state[2][0] == "sent"
    assert state[3] == ("queued", 0, None, None)
    outbox = Path(shop_env["SHOP_OUTBOX"])
    assert sorted(p.name for p in outbox.iterdir()) == ["email-1.eml", "email-2.eml"]
    message = email.message_from_bytes((outbox / "email-1.eml").read_bytes(), policy=email.policy.default)
    assert message["To"] == "a@example.com"
    assert message["Subject"] == "subject 1"
    assert message.get_content() == "body of 1\n"


def test_emails_at_max_attempts_are_not_taken(run_task: RunTask, db: sqlite3.Connection) -> None:
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00", 3),
          (2, "b@example.com", "2025-01-01 11:00:00", 2))

    result = run_task("process_email_queue", "--attempts", "3", "--now", NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "sent #2 to b@example.com into the outbox",
        "sent 1, failed 0, retry 0, remaining 0",
    ]
    assert rows(db)[1] == ("queued", 3, None, None)


def test_bad_recipient_is_retried_then_failed_after_attempts(run_task: RunTask, db: sqlite3.Connection) -> None:
    queue(db, (1, "not-an-address", "2025-01-01 10:00:00"))

    outputs = [run_task("process_email_queue", "--attempts", "3", "--now", NOW) for _ in range(4)]

    assert [r.returncode for r in outputs] == [0, 0, 0, 0]
    assert outputs[0].stdout.splitlines() == [
        "retry #1 to not-an-address: attempt 1 of 3 failed: invalid recipient 'not-an-address'",
        "sent 0, failed 0, retry 1, remaining 1",
    ]
    assert outputs[1].stdout.splitlines()[-1] == "sent 0, failed 0, retry 1, remaining 1"
    assert outputs[2].stdout.splitlines() == [
        "failed #1 to not-an-address after 3 attempts: invalid recipient 'not-an-address'",
        "sent 0, failed 1, retry 0, remaining 0",
    ]
    # A failed email is never taken again.
    assert outputs[3].stdout.splitlines() == ["sent 0, failed 0, retry 0, remaining 0"]
    assert rows(db)[1] == ("failed", 3, "invalid recipient 'not-an-address'", None)


def test_one_bad_email_does_not_stop_the_batch(run_task: RunTask, db: sqlite3.Connection) -> None:
    # A line break in a header would let a row inject headers: refused, not sent.
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00", 0, "hi\nBcc: everyone@example.com"),
          (2, "b@example.com", "2025-01-01 11:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "sent 1, failed 0, retry 1, remaining 1"
    state = rows(db)
    assert state[1][:2] == ("queued", 1)
    assert "invalid header" in state[1][2]
    assert state[2][0] == "sent"


def test_attempts_one_fails_on_first_error(run_task: RunTask, db: sqlite3.Connection) -> None:
    queue(db, (1, "bad address@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue", "--attempts", "1", "--now", NOW)

    assert result.stdout.splitlines()[-1] == "sent 0, failed 1, retry 0, remaining 0"
    assert rows(db)[1][:2] == ("failed", 1)


def test_empty_queue_creates_the_database(run_task: RunTask, shop_env: dict[str, str]) -> None:
    result = run_task("process_email_queue")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "sent 0, failed 0, retry 0, remaining 0\n"
    assert Path(shop_env["SHOP_DB"]).is_file()


def test_outbox_required_without_smtp_host(run_task: RunTask, shop_env: dict[str, str]) -> None:
    del shop_env["SHOP_OUTBOX"]

    result = run_task("process_email_queue")

    assert result.returncode == 1
    assert result.stderr == "error: environment variable SHOP_OUTBOX is required but not set\n"


@pytest.mark.parametrize(
    ("port", "message"),
    [("smtp", "error: SMTP_PORT: 'smtp' is not a port number\n"),
     ("70000", "error: SMTP_PORT: 70000 is not a port number\n")],
)
def test_bad_smtp_port(run_task: RunTask, shop_env: dict[str, str], port: str, message: str) -> None:
    shop_env.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port)

    result = run_task("process_email_queue")

    assert (result.returncode, result.stderr) == (1, message)


def test_smtp_user_without_password(run_task: RunTask, shop_env: dict[str, str]) -> None:
    shop_env.update(SMTP_HOST="127.0.0.1", SMTP_USER="shop")

    result = run_task("process_email_queue")

    assert (result.returncode, result.stderr) == (1, "error: SMTP_USER is set but SMTP_PASSWORD is not\n")


def test_bad_sender_stops_before_any_email(run_task: RunTask, db: sqlite3.Connection, shop_env: dict[str, str]) -> None:
    shop_env["SMTP_FROM"] = "shop\nBcc: x@example.com"
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue")

    assert (result.returncode, result.stderr) == (
        1, "error: SMTP_FROM: 'shop\\nBcc: x@example.com' is not an email address\n"
    )
    assert rows(db)[1] == ("queued", 0, None, None)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
     ("smtp.example.com", False), ("192.0.2.10", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert process_email_queue.is_loopback(host) is loopback


# --- real SMTP -------------------------------------------------------------------


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, QUIT."""

    server: SmtpServer

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")

    def start_tls(self, context: ssl.SSLContext) -> None:
        """Switch this connection to TLS, as STARTTLS asks."""
        self.reply("220 2.0.0 ready to start TLS")
        self.request = context.wrap_socket(self.request, server_side=True)
        self.rfile = self.request.makefile("rb")
        self.wfile = self.request.makefile("wb", buffering=0)
        self.encrypted = True

    def handle(self) -> None:
        self.encrypted = False
        self.reply("220 test.local ESMTP")
        sender: str | None = None
        recipients: list[str] = []
        while raw := self.rfile.readline():
            line = raw.decode().rstrip("\r\n")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                offers_tls = self.server.tls_context is not None and not self.encrypted
                self.reply("250-test.local\r\n" + ("250-STARTTLS\r\n" if offers_tls else "")
                           + "250-AUTH PLAIN\r\n250 8BITMIME")
            elif verb == "STARTTLS" and self.server.tls_context is not None:
                try:
                    self.start_tls(self.server.tls_context)
                except ssl.SSLError:
                    return  # the client refused our certificate
            elif verb == "AUTH":
                _, _, blob = arg.partition(" ")
                _, user, password = base64.b64decode(blob).decode().split("\0")
                self.server.logins.append((user, password, self.encrypted))
                if (user, password) == self.server.credentials:
                    self.reply("235 2.7.0 authenticated")
                else:
                    self.reply("535 5.7.8 bad credentials")
            elif verb == "MAIL":
                sender, recipients = arg.split(":", 1)[1].strip("<> "), []
                self.reply("250 ok")
            elif verb == "RCPT":
                recipient = arg.split(":", 1)[1].strip("<> ")
                if recipient in self.server.refused:
                    self.reply("550 5.1.1 no such user")
                else:
                    recipients.append(recipient)
                    self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 end with .")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                # Store as the message is written: without SMTP's CRLF line ends.
                self.server.messages.append((sender, recipients, data.replace(b"\r\n", b"\n")))
                self.reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                sender, recipients = None, []
                self.reply("250 ok")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("502 not implemented")


class SmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), SmtpHandler)
        self.tls_context: ssl.SSLContext | None = None  # set to offer STARTTLS
        self.credentials = ("shop", PASSWORD)
        self.refused: set[str] = set()
        self.logins: list[tuple[str, str, bool]] = []  # user, password, over TLS
        self.messages: list[tuple[str | None, list[str], bytes]] = []  # sender: None for DATA before MAIL


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def smtp_env(shop_env: dict[str, str], smtp_server: SmtpServer) -> dict[str, str]:
    del shop_env["SHOP_OUTBOX"]  # not needed when sending for real
    shop_env.update(
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp_server.server_address[1]),
        SMTP_USER="shop",
        SMTP_PASSWORD=PASSWORD,
        SMTP_FROM="shop@example.com",
    )
    return shop_env


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    assert PASSWORD not in result.stdout
    assert PASSWORD not in result.stderr
    assert base64.b64encode(f"\0shop\0{PASSWORD}".encode()).decode() not in result.stdout + result.stderr


def test_smtp_sends_with_login(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str], smtp_server: SmtpServer) -> None:
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"),
          (2, "b@example.com", "2025-01-01 11:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 0, result.stderr
    port = smtp_env["SMTP_PORT"]
    assert result.stdout.splitlines() == [
        f"sent #1 to a@example.com via 127.0.0.1:{port}",
        f"sent #2 to b@example.com via 127.0.0.1:{port}",
        "sent 2, failed 0, retry 0, remaining 0",
    ]
    assert_no_secret(result)
    # One connection, one login; in clear only because 127.0.0.1 never leaves the machine.
    assert smtp_server.logins == [("shop", PASSWORD, False)]
    assert [(s, r) for s, r, _ in smtp_server.messages] == [
        ("shop@example.com", ["a@example.com"]),
        ("shop@example.com", ["b@example.com"]),
    ]
    message = email.message_from_bytes(smtp_server.messages[0][2], policy=email.policy.default)
    assert (message["From"], message["To"], message["Subject"]) == ("shop@example.com", "a@example.com", "subject 1")
    assert message.get_content() == "body of 1\n"
    assert {r[0] for r in rows(db).values()} == {"sent"}


def test_smtp_refused_recipient_is_retried_then_failed(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str], smtp_server: SmtpServer) -> None:
    smtp_server.refused.add("gone@example.com")
    queue(db, (1, "gone@example.com", "2025-01-01 10:00:00", 1),
          (2, "b@example.com", "2025-01-01 11:00:00"))

    first = run_task("process_email_queue", "--attempts", "3", "--now", NOW)
    second = run_task("process_email_queue", "--attempts", "3", "--now", NOW)

    assert first.returncode == second.returncode == 0
    error = "recipient refused: gone@example.com: 550 5.1.1 no such user"
    assert first.stdout.splitlines()[0] == f"retry #1 to gone@example.com: attempt 2 of 3 failed: {error}"
    assert first.stdout.splitlines()[-1] == "sent 1, failed 0, retry 1, remaining 1"
    assert second.stdout.splitlines() == [
        f"failed #1 to gone@example.com after 3 attempts: {error}",
        "sent 0, failed 1, retry 0, remaining 0",
    ]
    assert rows(db)[1] == ("failed", 3, error, None)
    assert [r for _, r, _ in smtp_server.messages] == [["b@example.com"]]


def test_smtp_login_refused_leaves_queue_untouched(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str], smtp_server: SmtpServer) -> None:
    smtp_server.credentials = ("shop", "another password")
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 1
    port = smtp_env["SMTP_PORT"]
    assert result.stderr == f"error: SMTP 127.0.0.1:{port}: login as shop refused: 535 5.7.8 bad credentials\n"
    assert result.stdout == "sent 0, failed 0, retry 0, remaining 1\n"
    assert "Traceback" not in result.stderr
    assert_no_secret(result)
    assert rows(db)[1] == ("queued", 0, None, None)


def test_smtp_unreachable_leaves_queue_untouched(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp_env["SMTP_PORT"] = str(port)
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 1
    assert result.stderr.startswith(f"error: SMTP 127.0.0.1:{port}: cannot connect: ")
    assert "Traceback" not in result.stderr
    assert_no_secret(result)
    assert rows(db)[1] == ("queued", 0, None, None)


def test_smtp_not_contacted_when_queue_empty(run_task: RunTask, smtp_env: dict[str, str], smtp_server: SmtpServer) -> None:
    result = run_task("process_email_queue")

    assert result.returncode == 0, result.stderr
    assert smtp_server.logins == []


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate (and key, same file) for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    pem = tmp_path / "smtp.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(pem), "-out", str(pem)],
        check=True, capture_output=True,
    )
    return pem


@pytest.fixture
def tls_server(smtp_server: SmtpServer, certificate: Path) -> SmtpServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate)
    smtp_server.tls_context = context
    return smtp_server


def test_smtp_starttls_when_offered(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str], tls_server: SmtpServer, certificate: Path) -> None:
    smtp_env["SSL_CERT_FILE"] = str(certificate)  # trust our test certificate only
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "sent 1, failed 0, retry 0, remaining 0"
    assert tls_server.logins == [("shop", PASSWORD, True)]
    assert [r for _, r, _ in tls_server.messages] == [["a@example.com"]]
    assert_no_secret(result)


def test_smtp_untrusted_certificate_gets_no_password(run_task: RunTask, db: sqlite3.Connection, smtp_env: dict[str, str],
                                                     tls_server: SmtpServer, tmp_path: Path) -> None:
    empty = tmp_path / "no-ca.pem"
    empty.write_text("")
    smtp_env["SSL_CERT_FILE"] = str(empty)  # trust nothing: our certificate is unknown
    smtp_env["SSL_CERT_DIR"] = str(tmp_path)
    queue(db, (1, "a@example.com", "2025-01-01 10:00:00"))

    result = run_task("process_email_queue", "--now", NOW)

    assert result.returncode == 1
    assert "cannot connect: " in result.stderr and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert "Traceback" not in result.stderr
    assert tls_server.logins == []
    assert rows(db)[1] == ("queued", 0, None, None)
