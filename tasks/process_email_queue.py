"""Send queued emails (every 5 minutes).

Takes up to ``--max`` queued emails, oldest first, that have had fewer than
``--attempts`` tries, and sends each one: through SMTP when ``SMTP_HOST`` is
set, otherwise by writing it as an ``.eml`` file into ``SHOP_OUTBOX``.

An email the server refuses (or that cannot be built, e.g. a bad recipient)
gets its attempt counted and its error recorded; at ``--attempts`` it becomes
``failed``. A fault that is not the email's own (server unreachable, login
refused, outbox not writable) stops the run with exit 1 and leaves the
remaining emails untouched, so an outage does not burn their attempts.

Environment: SHOP_DB; SHOP_OUTBOX (when SMTP_HOST is unset); SMTP_HOST,
SMTP_PORT (default 25; 465 means implicit TLS), SMTP_USER, SMTP_PASSWORD,
SMTP_FROM (default noreply@localhost).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import smtplib
import sqlite3
import ssl
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

# The shared helpers sit beside this file. Write no __pycache__ next to them:
# the deployed folder should hold exactly the files that were deployed.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import shopdb  # noqa: E402
from taskcli import (  # noqa: E402
    TaskError,
    add_now_argument,
    now_or_default,
    positive_int,
    require_env,
    run,
)

SMTP_TIMEOUT = 30
IMPLICIT_TLS_PORT = 465
MAX_ERROR_LENGTH = 500


class MessageRejected(Exception):
    """This one email cannot be sent; the next one may well be."""


@dataclass(frozen=True)
class SmtpSettings:
    """Where and as whom to send; ``password`` is never printed."""

    host: str
    port: int
    user: str
    password: str

    def __repr__(self) -> str:  # keep the secret out of any accidental print
        return f"SmtpSettings(host={self.host!r}, port={self.port}, user={self.user!r})"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def smtp_settings_from_env() -> SmtpSettings | None:
    """Read the SMTP_* variables; None means "write to the outbox instead"."""
    host = os.environ.get("SMTP_HOST", "")
    if not host:
        return None
    port_text = os.environ.get("SMTP_PORT", "") or "25"
    try:
        port = int(port_text)
    except ValueError:
        raise TaskError(f"SMTP_PORT: {port_text!r} is not a port number") from None
    if not 0 < port < 65536:
        raise TaskError(f"SMTP_PORT: {port} is not a port number")
    user = os.environ.get("SMTP_USER", "")
    password = os.environ.get("SMTP_PASSWORD", "")
    if user and not password:
        raise TaskError("SMTP_USER is set but SMTP_PASSWORD is not")
    return SmtpSettings(host, port, user, password)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (traffic never leaves the machine)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpRelay:
    """One SMTP connection for the whole batch, opened on first use."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def describe(self) -> str:
        return f"via {self.settings.address}"

    def _fail(self, what: str) -> TaskError:
        return TaskError(f"SMTP {self.settings.address}: {what}")

    def _connect(self) -> smtplib.SMTP:
        """Open the session, turning every way it can fail into one clear TaskError."""
        try:
            return self._open_session()
        except smtplib.SMTPAuthenticationError as exc:
            raise self._fail(f"login as {self.settings.user} refused: {reply_text(exc)}") from None
        except smtplib.SMTPException as exc:
            raise self._fail(str(exc)) from None
        except OSError as exc:  # refused, unreachable, timed out, TLS failure
            raise self._fail(f"cannot connect: {exc}") from None

    def _open_session(self) -> smtplib.SMTP:
        """Connect, encrypt when possible, log in; close the socket on any failure."""
        s = self.settings
        context = ssl.create_default_context()
        if s.port == IMPLICIT_TLS_PORT:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                s.host, s.port, timeout=SMTP_TIMEOUT, context=context
            )
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=SMTP_TIMEOUT)
        try:
            encrypted = s.port == IMPLICIT_TLS_PORT
            if not encrypted:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                    encrypted = True
            if s.user:
                # A password sent in clear over the network is a password given away.
                if not encrypted and not is_loopback(s.host):
                    raise self._fail(
                        "server offers no STARTTLS; refusing to send SMTP_PASSWORD "
                        "unencrypted (use port 465 or a server with STARTTLS)"
                    )
                smtp.login(s.user, s.password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def deliver(self, email_id: int, message: EmailMessage) -> None:
        """Send one message; MessageRejected if the server refuses this one."""
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            self._smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            replies = "; ".join(
                f"{rcpt}: {code} {text.decode(errors='replace')}"
                for rcpt, (code, text) in exc.recipients.items()
            )
            raise MessageRejected(f"recipient refused: {replies}") from None
        except smtplib.SMTPDataError as exc:
            raise MessageRejected(f"message refused: {reply_text(exc)}") from None
        except smtplib.SMTPSenderRefused as exc:
            # Our From address is refused: every other email would fail the same way.
            raise self._fail(f"sender {exc.sender} refused: {reply_text(exc)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise self._fail(f"connection lost: {exc}") from None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass  # everything is already sent; a failed goodbye changes nothing
            self._smtp = None


class Outbox:
    """Writes each message as ``email-<id>.eml``, the stand-in for real sending."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def describe(self) -> str:
        return "into the outbox"

    def deliver(self, email_id: int, message: EmailMessage) -> None:
        """Write the message atomically, so a reader never sees half a file."""
        target = os.path.join(self.folder, f"email-{email_id}.eml")
        try:
            os.makedirs(self.folder, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".email-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(message.as_bytes())
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, target)
            except BaseException:
                os.unlink(temp)
                raise
        except OSError as exc:
            raise TaskError(f"SHOP_OUTBOX: cannot write {target}: {exc}") from None

    def close(self) -> None:
        pass


def reply_text(exc: smtplib.SMTPResponseException) -> str:
    """The server's code and message, as a person would read them."""
    text = exc.smtp_error
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return f"{exc.smtp_code} {text}"


def looks_like_address(recipient: str) -> bool:
    """A plain ``local@domain`` with no spaces: enough to catch broken rows."""
    local, at, domain = recipient.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() for c in recipient)


def build_message(row: sqlite3.Row, sender: str, now: datetime) -> EmailMessage:
    """Turn a queue row into an email; MessageRejected if the row is unusable."""
    recipient = row["recipient"].strip()
    if not looks_like_address(recipient):
        raise MessageRejected(f"invalid recipient {recipient!r}")
    message = EmailMessage()
    try:
        message["From"] = sender
        message["To"] = recipient
        message["Subject"] = row["subject"]
    except ValueError as exc:  # e.g. a line break smuggled into a header
        raise MessageRejected(f"invalid header: {exc}") from None
    message["Date"] = format_datetime(now)
    message["Message-ID"] = make_msgid(
        idstring=f"queue{row['id']}", domain=sender.rpartition("@")[2] or "localhost"
    )
    message.set_content(row["body"])
    return message


@dataclass
class Tally:
    """What one run did, for the summary line."""

    sent: int = 0
    failed: int = 0
    retry: int = 0


def record_sent(conn: sqlite3.Connection, email_id: int, now: datetime) -> None:
    conn.execute(
        "UPDATE email_queue SET status = 'sent', sent_at = ? WHERE id = ?",
        (shopdb.timestamp(now), email_id),
    )
    # Commit each email on its own: a crash later in the batch must not
    # make an already-sent email look unsent and be sent again.
    conn.commit()


def record_failure(
    conn: sqlite3.Connection, email_id: int, attempts: int, max_attempts: int, error: str
) -> str:
    """Count the attempt; return the new status (``failed`` at the limit)."""
    status = "failed" if attempts >= max_attempts else "queued"
    conn.execute(
        "UPDATE email_queue SET attempts = ?, last_error = ?, status = ? WHERE id = ?",
        (attempts, error[:MAX_ERROR_LENGTH], status, email_id),
    )
    conn.commit()
    return status


def pending(conn: sqlite3.Connection, max_attempts: int, limit: int) -> list[sqlite3.Row]:
    """Queued emails still worth trying, oldest first."""
    return conn.execute(
        "SELECT id, recipient, subject, body, attempts FROM email_queue"
        " WHERE status = 'queued' AND attempts < ?"
        " ORDER BY created_at, id LIMIT ?",
        (max_attempts, limit),
    ).fetchall()


def count_remaining(conn: sqlite3.Connection, max_attempts: int) -> int:
    (count,) = conn.execute(
        "SELECT COUNT(*) FROM email_queue WHERE status = 'queued' AND attempts < ?",
        (max_attempts,),
    ).fetchone()
    return count


def process(
    conn: sqlite3.Connection,
    transport: SmtpRelay | Outbox,
    sender: str,
    batch: int,
    max_attempts: int,
    now: datetime,
    tally: Tally,
) -> None:
    """Send one batch, printing one line per email and updating ``tally``."""
    for row in pending(conn, max_attempts, batch):
        email_id, recipient = row["id"], row["recipient"]
        try:
            transport.deliver(email_id, build_message(row, sender, now))
        except MessageRejected as exc:
            attempts = row["attempts"] + 1
            if record_failure(conn, email_id, attempts, max_attempts, str(exc)) == "failed":
                tally.failed += 1
                print(f"failed #{email_id} to {recipient} after {attempts} attempts: {exc}")
            else:
                tally.retry += 1
                print(f"retry #{email_id} to {recipient}: "
                      f"attempt {attempts} of {max_attempts} failed: {exc}")
        else:
            record_sent(conn, email_id, now)
            tally.sent += 1
            print(f"sent #{email_id} to {recipient} {transport.describe()}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max", type=positive_int, default=50, help="emails per run (default 50)")
    parser.add_argument(
        "--attempts", type=positive_int, default=3,
        help="tries before an email becomes failed (default 3)",
    )
    add_now_argument(parser)
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    now = now_or_default(args.now)
    db_path = require_env("SHOP_DB")
    settings = smtp_settings_from_env()
    sender = os.environ.get("SMTP_FROM", "") or "noreply@localhost"
    if not looks_like_address(sender):
        # Checked once here: a bad sender would otherwise fail every email in turn.
        raise TaskError(f"SMTP_FROM: {sender!r} is not an email address")
    transport: SmtpRelay | Outbox = (
        SmtpRelay(settings) if settings else Outbox(require_env("SHOP_OUTBOX"))
    )
    conn = shopdb.connect(db_path)
    tally = Tally()
    try:
        process(conn, transport, sender, args.max, args.attempts, now, tally)
    finally:
        # Even when the run stops early, the log says how far it got.
        transport.close()
        remaining = count_remaining(conn, args.attempts)
        conn.close()
        print(f"sent {tally.sent}, failed {tally.failed}, retry {tally.retry}, "
              f"remaining {remaining}")
    return 0


if __name__ == "__main__":
    run(main)
