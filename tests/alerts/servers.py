"""Real servers on the loopback for the alerts tier: an SMTP relay (aiosmtpd, with STARTTLS
and a login, as a relay has), an HTTP server that records what it is sent (webhook,
healthchecks pings) and can answer slowly or with an error, and node_exporter."""

from __future__ import annotations

import email
import email.policy
import http.server
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key, made by openssl."""
    cert, key = folder / "relay.pem", folder / "relay.key"
    # the test's own openssl
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@dataclass
class Relay:
    """An SMTP relay on 127.0.0.1 that requires STARTTLS and a login, and keeps what it gets."""

    port: int
    ca_file: Path
    user: str
    password: str
    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == self.user and data.password.decode() == self.password
        self.logins.append(f"{data.login.decode()}:{'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


def sockets_in(netns_argv: Callable[[list[str]], list[str]], count: int) -> list[socket.socket]:
    """``count`` TCP sockets created inside another network namespace (``netns_argv`` wraps an
    argv to run there, e.g. the fleet harness's ``ctl_argv``), handed back over a socketpair.
    A socket keeps the namespace it was made in: a server listening on one in the fleet's
    ``ctl`` is on ctl's own loopback, where the deployer the fleet tests run can reach it,
    while this process serves it."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    code = ("import socket, sys\n"
            "made = [socket.socket() for _ in range(int(sys.argv[2]))]\n"
            "socket.send_fds(socket.socket(fileno=int(sys.argv[1])), [b'x'], [s.fileno() for s in made])\n")
    with mine, theirs:
        # the test's own python, in the harness's namespace
        subprocess.run(netns_argv([sys.executable, "-I", "-c", code, str(theirs.fileno()), str(count)]),
                       pass_fds=(theirs.fileno(),), check=True, timeout=60)
        _, fds, _, _ = socket.recv_fds(mine, 16, count)
    return [socket.socket(fileno=fd) for fd in fds]


class _SocketController(Controller):
    """aiosmtpd's controller on a listening socket made elsewhere (sockets_in), and its
    start-up check through a client socket made in the same namespace."""

    def __init__(self, *args: Any, listener: socket.socket, client: socket.socket, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listener, self.client = listener, client

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self.listener, ssl=self.ssl_context)

    def _trigger_server(self) -> None:
        with self.client as s:
            s.settimeout(1.0)
            s.connect(("127.0.0.1", self.port))
            s.recv(1024)


@contextmanager
def smtp_relay(folder: Path, user: str = "alerts", password: str = "relay-password-1",  # noqa: S107
               sockets: Sequence[socket.socket] = ()) -> Iterator[Relay]:
    """The relay; with ``sockets`` (an unbound listener and a client, from sockets_in) in
    that namespace, on its 127.0.0.1."""
    cert, key = self_signed(folder)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    kwargs: dict[str, Any] = dict(tls_context=context, require_starttls=True, authenticator=None, auth_require_tls=True)
    if sockets:
        listener, client = sockets
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        relay = Relay(int(listener.getsockname()[1]), cert, user, password)
        kwargs["authenticator"] = relay.authenticate
        controller: Controller = _SocketController(relay, hostname="127.0.0.1", port=relay.port, listener=listener,
                                                   client=client, **kwargs)
    else:
        relay = Relay(free_port(), cert, user, password)
        kwargs["authenticator"] = relay.authenticate
        controller = Controller(relay, hostname="127.0.0.1", port=relay.port, **kwargs)
    controller.start()
    try:
        yield relay
    finally:
        controller.stop()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Web:
    """An HTTP server on 127.0.0.1 recording every request; ``status`` and ``delay`` say how it answers."""

    port: int
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def web_server(listener: socket.socket | None = None) -> Iterator[Web]:
    """The server; on ``listener`` (an unbound socket from sockets_in) in that namespace's 127.0.0.1."""
    web = Web(0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            web.requests.append(Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=listener is None)
    if listener is not None:
        server.socket.close()
        server.socket = listener
        server.server_bind()
        server.server_activate()
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
def node_exporter(textfile_dir: Path) -> Iterator[str]:
    """The real prometheus-node-exporter serving ``textfile_dir`` on a loopback port; yields its /metrics URL."""
    program = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below; a pipe nobody drains would stop it once full
    proc = subprocess.Popen([program, f"--collector.textfile.directory={textfile_dir}", f"--web.listen-address=127.0.0.1:{port}",
                             "--collector.disable-defaults", "--collector.textfile"],
                            stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1):  # the loopback server just started
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait(10)
                    log.seek(0)
                    said = log.read().decode(errors="replace")
                    raise RuntimeError(f"node_exporter did not answer on {url}: {said[-2000:]}") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


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
