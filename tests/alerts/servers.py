"""Real servers on the loopback for the alerts tier: an SMTP relay (aiosmtpd, with STARTTLS
and a login, as a relay has), an HTTP server that records what it is sent (webhook,
healthchecks pings) and can answer slowly or with an error, node_exporter, Prometheus and
Alertmanager (each run directly, without systemd, and stopped by the PID it was started with).

The relay and the HTTP server listen on 127.0.0.1 unless given another ``address``; with
``in_netns`` they are started inside another network namespace (the fleet's ``ctl``, on its
bridge address), where the test hosts reach them."""

from __future__ import annotations

import ctypes
import email
import email.policy
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def in_netns(netns_path: str, start: Callable[[], T]) -> T:
    """``start()`` called in a thread of its own that first entered the network namespace at
    ``netns_path``: the sockets it makes, and the threads it starts (a server's), live there.
    The calling thread's namespace never changes, and that thread ends with ``start``."""
    done: list[T] = []
    failed: list[BaseException] = []

    def enter_and_start() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:  # os.setns is Python 3.12's
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {netns_path}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            done.append(start())
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=enter_and_start, daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def self_signed(folder: Path, address: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``address`` (its own CA) and its key, made by openssl."""
    cert, key = folder / "relay.pem", folder / "relay.key"
    # the test's own openssl
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={address}",
                    "-addext", f"subjectAltName=IP:{address}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class Relay:
    """An SMTP relay that requires STARTTLS and a login, and keeps what it gets (and from
    which address each message came)."""

    port: int
    ca_file: Path
    user: str
    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    listen: Callable[[], Any] | None = field(default=None, repr=False)  # starts a controller (smtp_relay's)
    controller: Any = field(default=None, repr=False)  # the one listening; None: down

    def down(self) -> None:
        """Stop listening, for real: a client's connection is refused until ``up``."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def up(self) -> None:
        """Listen again on the same port, with the same certificate and login (aiosmtpd's
        controller closes its event loop when stopped: a new one is made)."""
        if self.controller is None and self.listen is not None:
            self.controller = self.listen()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.peers.append(str(session.peer[0]))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == self.user and data.password.decode() == self.password
        self.logins.append(f"{data.login.decode()}:{'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@contextmanager
def smtp_relay(folder: Path, user: str = "alerts", password: str = "relay-password-1",  # noqa: S107
               address: str = "127.0.0.1") -> Iterator[Relay]:
    cert, key = self_signed(folder, address)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    relay = Relay(free_port(address), cert, user, password)

    def listen() -> Controller:
        controller = Controller(relay, hostname=address, port=relay.port, tls_context=context, require_starttls=True,
                                authenticator=relay.authenticate, auth_require_tls=True)
        controller.start()
        return controller

    relay.listen = listen
    relay.up()
    try:
        yield relay
    finally:
        relay.down()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client: str = ""  # the address the request came from
    status: int = 200  # what the server answered it


@dataclass
class Web:
    """An HTTP server on 127.0.0.1 recording every request; ``status`` and ``delay`` say how it answers."""

    port: int
    address: str = "127.0.0.1"
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


@contextmanager
def web_server(address: str = "127.0.0.1") -> Iterator[Web]:
    web = Web(0, address)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            web.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                        self.client_address[0], web.status))
            if web.delay:
                time.sleep(web.delay)
            try:
                self.send_response(web.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the slow-server tests): what they are about

        do_GET = do_POST = do_HEAD = _any  # noqa: N815 - http.server's names

        def log_message(self, format: str, *args: Any) -> None:  # the base class's signature
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    server.daemon_threads = True
    web.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield web
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def daemon(argv: list[str], ready_url: str, what: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server program started here, until ``ready_url`` answers (its output kept for the
    error if it never does); stopped, by its own PID, at the end."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below; a pipe nobody drains would stop it once full
    proc = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=1):  # noqa: S310 - the loopback server just started
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    log.seek(0)
                    said = log.read().decode(errors="replace")
                    raise RuntimeError(f"{what} did not answer on {ready_url}: {said[-2000:]}") from None
                time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def program(name: str, package: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if found is None:
        raise RuntimeError(f"{name} is missing: apt-get install {package} (./install.sh --test does)")
    return found


@contextmanager
def node_exporter(textfile_dir: Path) -> Iterator[str]:
    """The real prometheus-node-exporter serving ``textfile_dir`` on a loopback port; yields its /metrics URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with daemon([program("prometheus-node-exporter", "prometheus-node-exporter"), f"--collector.textfile.directory={textfile_dir}",
                 f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults", "--collector.textfile"],
                url, "node_exporter"):
        yield url


@contextmanager
def alertmanager(folder: Path, webhook_url: str) -> Iterator[str]:
    """The real Alertmanager (Debian's prometheus-alertmanager) on a loopback port, data in
    ``folder``, one receiver: ``webhook_url``, resolved notifications included; groups wait
    and repeat 1 s, so a test sees a change within seconds. Yields its base URL."""
    folder.mkdir()
    port = free_port()
    config = folder / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "hook", "group_by": ["alertname", "deployer_job"],
                  "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}],
    }))
    url = f"http://127.0.0.1:{port}"
    # --cluster.listen-address= : one instance, no gossip port of its own
    with daemon([program("prometheus-alertmanager", "prometheus-alertmanager"), f"--config.file={config}",
                 f"--storage.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                url + "/-/ready", "alertmanager"):
        yield url


@contextmanager
def prometheus(folder: Path, scrape_target: str, rules: Path, alertmanager_url: str, honor_labels: bool = False) -> Iterator[str]:
    """The real Prometheus on a loopback port, data in ``folder``: scrapes ``scrape_target``
    (host:port, scrape job ``node``, ``honor_labels`` as given) and evaluates ``rules`` every
    second, alerting to ``alertmanager_url``. Yields its base URL."""
    folder.mkdir()
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "node", "honor_labels": honor_labels, "static_configs": [{"targets": [scrape_target]}]}],
    }))
    url = f"http://127.0.0.1:{port}"
    with daemon([program("prometheus", "prometheus"), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"], url + "/-/ready", "prometheus"):
        yield url


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample node_exporter serves."""
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def channels_yaml(smtp_host: str, smtp_port: int, ca_file: Path | str, hook_url: str) -> str:
    """The alerts tier's two channels, as a declaration's ``alerts:`` holds them (indented for
    it, its last line without a newline): ``oncall``, mail through the relay with its login (SMTP_PASSWORD), and ``team``, a
    webhook with a secret Authorization header (HOOK_TOKEN)."""
    return (f"  channels:\n"
            f"    oncall:\n"
            f"      mail:\n"
            f"        to: [oncall@example.org]\n"
            f"        smtp: {{host: {smtp_host}, port: {smtp_port}, user: alerts, password: {{secret: {{env: SMTP_PASSWORD}}}}, "
            f"ca_file: {ca_file}}}\n"
            f"    team:\n"
            f"      webhook:\n"
            f"        url: {hook_url}\n"
            f"        headers: {{Authorization: {{secret: {{env: HOOK_TOKEN}}}}}}")
