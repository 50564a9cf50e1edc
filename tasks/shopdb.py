"""The shop application's SQLite database: its schema and how the tasks open it.

Timestamps are stored as UTC text ``YYYY-MM-DD HH:MM:SS`` (SQLite's own
``datetime()`` format), so they sort and compare as plain strings and every
cut-off is computed in Python from the task's ``--now``, never from SQLite's
clock.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone

from taskcli import TaskError

SCHEMA = """
CREATE TABLE IF NOT EXISTS email_queue (
    id          INTEGER PRIMARY KEY,
    recipient   TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'sent', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  TEXT    NOT NULL,
    sent_at     TEXT
);
CREATE INDEX IF NOT EXISTS email_queue_pending ON email_queue (status, created_at);

CREATE TABLE IF NOT EXISTS security_metrics (
    id          INTEGER PRIMARY KEY,
    metric      TEXT    NOT NULL,
    value       REAL    NOT NULL,
    recorded_at TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS security_metrics_age ON security_metrics (recorded_at);

CREATE TABLE IF NOT EXISTS failed_logins (
    id           INTEGER PRIMARY KEY,
    username     TEXT    NOT NULL,
    ip           TEXT    NOT NULL,
    attempted_at TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS failed_logins_age ON failed_logins (attempted_at);

CREATE TABLE IF NOT EXISTS security_alerts (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    message     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    resolved    INTEGER NOT NULL DEFAULT 0 CHECK (resolved IN (0, 1)),
    resolved_at TEXT
);
CREATE INDEX IF NOT EXISTS security_alerts_age ON security_alerts (created_at);
"""

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


def connect(path: str) -> sqlite3.Connection:
    """Open the database at ``path``, creating it with the schema if missing.

    The parent folder must exist: a mistyped ``SHOP_DB`` should fail loudly
    rather than quietly start a second, empty database somewhere else.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise TaskError(f"SHOP_DB: folder {folder} does not exist")
    try:
        conn = sqlite3.connect(path)
        conn.row_factory = sqlite3.Row
        # A web request may hold the database briefly; wait rather than fail.
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.executescript(SCHEMA)
    except sqlite3.Error as exc:
        raise TaskError(f"SHOP_DB: cannot open {path}: {exc}") from exc
    return conn


def timestamp(moment: datetime) -> str:
    """Format an aware datetime as the database's UTC text timestamp."""
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)
