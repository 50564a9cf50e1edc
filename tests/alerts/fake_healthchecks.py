"""A FAKE of healthchecks, on the loopback: the subset of its Management API v3 and ping
endpoints that deployer uses, with the same answers.

A fake, not the real thing: healthchecks is a large Django application with a database, not
installable offline on a test machine, and none of its packages is in Debian. What it
follows, read in healthchecks' own source (github.com/healthchecks/healthchecks) and docs
(https://healthchecks.io/docs/api/, https://healthchecks.io/docs/http_api/):

- hc/api/decorators.py ``authorize``/``authorize_read``: the key in ``X-Api-Key``; a key that
  is not 32 characters is 401 ``missing api key``, an unknown one 401 ``wrong api key``.
- hc/api/views.py ``get_checks``: ``GET /api/v3/checks/`` (``?slug=`` filters) lists
  ``{"checks": [...]}``, each as ``Check.to_dict`` (name, slug, tags, desc, grace, uuid,
  ping_url, channels, and ``schedule``/``tz`` for a cron check, ``timeout`` for a simple one).
- ``create_check``/``_lookup``/``_update`` and ``Spec``: ``POST /api/v3/checks/`` with a JSON
  object; ``unique`` only among name, slug, tags, timeout, grace; a match is updated (200,
  only the fields given), else a check is created (201); grace and timeout 60..31536000, slug
  ``[a-z0-9-_]*``, tz a known zone, schedule a cron expression (here: five fields), a field
  of the wrong type 400 ``json validation error: ...``; ``channels: "*"`` assigns every
  integration. ``Spec.check_tz`` stores a legacy zone name as the zone it links to now
  (hc/lib/tz.py ``legacy_timezones``, IANA's backward links): LEGACY_TZ holds the few of
  those renames the tests send, not the whole table.
- ``pause``: ``POST /api/v3/checks/<uuid>/pause`` (200 and the check, 404 for no such check);
  a paused check resumes when pinged (``manual_resume`` false, the default).
- ``single``: ``DELETE /api/v3/checks/<uuid>`` deletes the check (200 and the check as it
  was, 404 for no such check).
- hc/api/urls.py and ``ping_by_slug``: ``/ping/<ping_key>/<slug>`` plus ``/start``, ``/fail``,
  ``/log``, ``/<exit status>``; an uppercase slug 400, no such check 404 ``not found``, two
  checks with the slug 409 ``ambiguous slug``; ``rid`` must be a UUID (400 otherwise);
  GET, HEAD and POST all ping.
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "hcw_" + "k" * 28  # 32 characters, as healthchecks' keys are
PING_KEY = "pk-5e6f7a8b9c0d1e2f3a4b5c"
UNIQUE_FIELDS = {"name", "slug", "tags", "timeout", "grace"}
# A few of healthchecks' renames (hc/lib/tz.py legacy_timezones, applied by Spec.check_tz in
# hc/api/views.py; its test test_create_check.py test_it_converts_legacy_timezone shows the first three).
LEGACY_TZ = {"Europe/Kiev": "Europe/Kyiv", "UCT": "Etc/UTC", "CET": "Europe/Brussels", "US/Eastern": "America/New_York",
             "Asia/Calcutta": "Asia/Kolkata"}
_STRINGS = ("name", "slug", "tags", "desc", "schedule", "tz", "channels", "methods")
_PAUSE_PATH = re.compile(r"/api/v3/checks/(?P<uuid>[0-9a-f-]{36})/pause")
_CHECK_PATH = re.compile(r"/api/v3/checks/(?P<uuid>[0-9a-f-]{36})")
_SLUG_PATH = re.compile(r"/ping/(?P<key>[-a-zA-Z0-9_]+)/(?P<slug>[-a-zA-Z0-9_]+)(?:/(?P<what>start|fail|log|[0-9]+))?/?")


@dataclass
class Ping:
    slug: str
    kind: str  # start, success, fail, log
    exit_status: int | None
    rid: str | None
    method: str
    body: bytes
    client: str = ""  # the address the ping came from: the host that ran the job


@dataclass
class FakeHealthchecks:
    port: int = 0
    address: str = "127.0.0.1"
    scheme: str = "http"
    api_key: str = API_KEY
    ping_key: str = PING_KEY
    checks: list[dict[str, Any]] = field(default_factory=list)
    pings: list[Ping] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every API call
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}"

    def check(self, slug: str) -> dict[str, Any]:
        found = [c for c in self.checks if c["slug"] == slug]
        assert len(found) == 1, (slug, [c["slug"] for c in self.checks])
        return found[0]

    # ------------------------------------------------------------------ the API
    def to_dict(self, check: dict[str, Any]) -> dict[str, Any]:
        shown = {k: check[k] for k in ("name", "slug", "tags", "desc", "grace", "uuid", "channels")}
        shown.update(status=check["status"], n_pings=check["n_pings"], ping_url=f"{self.url}/ping/{check['uuid']}",
                     update_url=f"{self.url}/api/v3/checks/{check['uuid']}")
        if check["kind"] == "cron":
            shown.update(schedule=check["schedule"], tz=check["tz"])
        else:
            shown["timeout"] = check["timeout"]
        return shown

    def authorize(self, headers: Any) -> tuple[int, dict[str, Any]] | None:
        key = headers.get("X-Api-Key", "")
        if len(key) != 32:
            return 401, {"error": "missing api key"}
        if key != self.api_key:
            return 401, {"error": "wrong api key"}
        return None

    def list_checks(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        slug = query.get("slug", [""])[0]
        return 200, {"checks": [self.to_dict(c) for c in self.checks if not slug or c["slug"] == slug]}

    def create_check(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            spec = json.loads(body.decode())
        except ValueError:
            return 400, {"error": "could not parse request body"}
        if not isinstance(spec, dict):
            return 400, {"error": "json validation error: value is not an object"}
        if (problem := _invalid(spec)) is not None:
            return 400, {"error": f"json validation error: {problem}"}
        unique = spec.get("unique") or []
        check = None
        if unique and all(spec.get(f) is not None for f in unique):
            check = next((c for c in self.checks if all(c.get(f) == spec[f] for f in unique)), None)
        created = check is None
        if check is None:
            check = {"uuid": str(uuid.uuid4()), "name": "", "slug": "", "tags": "", "desc": "", "grace": 3600,
                     "timeout": 86400, "schedule": "* * * * *", "tz": "UTC", "kind": "simple", "channels": "",
                     "n_pings": 0, "status": "new"}
            self.checks.append(check)
        for key in ("name", "slug", "tags", "desc", "grace", "tz"):
            if key in spec:
                check[key] = spec[key]
        if "tz" in spec:
            check["tz"] = LEGACY_TZ.get(spec["tz"], spec["tz"])
        if spec.get("schedule"):
            check.update(kind="cron", schedule=spec["schedule"])
        elif spec.get("timeout"):
            check.update(kind="simple", timeout=spec["timeout"])
        if "channels" in spec:
            check["channels"] = "every-integration" if spec["channels"] == "*" else spec["channels"]
        return (201 if created else 200), self.to_dict(check)

    def pause(self, uuid_text: str) -> tuple[int, dict[str, Any]]:
        check = next((c for c in self.checks if c["uuid"] == uuid_text), None)
        if check is None:
            return 404, {"error": "not found"}
        check["status"] = "paused"
        return 200, self.to_dict(check)

    def delete(self, uuid_text: str) -> tuple[int, dict[str, Any]]:
        check = next((c for c in self.checks if c["uuid"] == uuid_text), None)
        if check is None:
            return 404, {"error": "not found"}
        self.checks.remove(check)
        return 200, self.to_dict(check)

    # ------------------------------------------------------------------ pings
    def ping(self, method: str, path: str, query: dict[str, list[str]], body: bytes, client: str = "") -> tuple[int, bytes]:
        match = _SLUG_PATH.fullmatch(path)
        if match is None:
            return 404, b"not found"
        slug, what = match["slug"], match["what"]
        if slug != slug.lower():
            return 400, b"invalid url format"
        found = [c for c in self.checks if c["slug"] == slug] if match["key"] == self.ping_key else []
        if not found:
            return 404, b"not found"
        if len(found) > 1:
            return 409, b"ambiguous slug"
        exit_status = int(what) if what and what.isdigit() else None
        if exit_status is not None and exit_status > 255:
            return 400, b"invalid url format"
        kind = "fail" if exit_status else {"start": "start", "fail": "fail", "log": "log"}.get(what or "", "success")
        rid = query.get("rid", [None])[0]
        if rid is not None:
            try:
                uuid.UUID(rid)
            except ValueError:
                return 400, b"invalid uuid format"
        found[0]["n_pings"] += 1
        if kind in ("success", "fail"):  # Check.ping: a start changes no status; an end resumes a paused check
            found[0]["status"] = "down" if kind == "fail" else "up"
        self.pings.append(Ping(slug, kind, exit_status, rid, method, body, client))
        return 200, b"OK"


def _invalid(spec: dict[str, Any]) -> str | None:
    for key in _STRINGS:
        if key in spec and not isinstance(spec[key], str):
            return f"{key} is not a string"
    for key in ("grace", "timeout"):
        if key in spec:
            if not isinstance(spec[key], int) or isinstance(spec[key], bool):
                return f"{key} is not a number"
            if spec[key] < 60:
                return f"{key} is too small"
            if spec[key] > 31536000:
                return f"{key} is too large"
    unique = spec.get("unique", [])
    if not isinstance(unique, list):
        return "unique is not an array"
    if any(f not in UNIQUE_FIELDS for f in unique):
        return "an item in 'unique' has unexpected value"
    if "slug" in spec and not re.fullmatch(r"[a-z0-9-_]*", spec["slug"]):
        return "slug does not match pattern"
    if len(spec.get("slug", "")) > 100 or len(spec.get("name", "")) > 100:
        return "slug is too long" if len(spec.get("slug", "")) > 100 else "name is too long"
    if "tz" in spec and spec["tz"] not in zoneinfo.available_timezones():
        return "tz is not a valid timezone"
    if "schedule" in spec and len(spec["schedule"].split()) != 5:
        return "schedule is not a valid cron or OnCalendar expression"
    return None


@contextmanager
def fake_healthchecks(address: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> Iterator[FakeHealthchecks]:
    """The fake, serving on ``address`` until the block ends (``url`` names 127.0.0.1 when it is
    every address, 0.0.0.0); over HTTPS with ``tls`` (a certificate and its key: deployer takes
    http for the loopback only)."""
    hc = FakeHealthchecks(address="127.0.0.1" if address == "0.0.0.0" else address,  # noqa: S104 - compared, not bound
                          scheme="https" if tls else "http")

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parts.query)
            with hc.lock:
                if parts.path.startswith("/ping/"):
                    status, text = hc.ping(self.command, parts.path, query, body, self.client_address[0])
                    self._answer(status, text, "text/plain")
                    return
                paused = _PAUSE_PATH.fullmatch(parts.path)
                single = _CHECK_PATH.fullmatch(parts.path)
                if (parts.path != "/api/v3/checks/" or self.command not in ("GET", "POST")) and not (
                        paused and self.command == "POST") and not (single and self.command == "DELETE"):
                    self._answer(404, b"not found", "text/plain")
                    return
                hc.calls.append((self.command, self.path))
                refused = hc.authorize(self.headers)
                if refused is not None:
                    status, answer = refused
                elif paused:
                    status, answer = hc.pause(paused["uuid"])
                elif single:
                    status, answer = hc.delete(single["uuid"])
                elif self.command == "GET":
                    status, answer = hc.list_checks(query)
                else:
                    status, answer = hc.create_check(body)
            self._answer(status, json.dumps(answer).encode(), "application/json")

        do_GET = do_POST = do_HEAD = do_DELETE = _any  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    hc.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hc
    finally:
        server.shutdown()
        server.server_close()
