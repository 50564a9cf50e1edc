"""Helper process of ``tests/harness/hosts.py`` that lives in the harness's ``ctl`` netns.

Stdlib only; started by :class:`hosts.TestHosts` as::

    ip netns exec <ctl> python3 -I -S ctl_agent.py '<json config>'

with file descriptors inherited from the test process (``pass_fds``):

* one listening TCP socket per host, created and bound to ``127.0.0.1:<free port>`` by the
  test process *in the machine's own (root) network namespace* before the agent was started.
  A socket keeps the network namespace it was created in, so the agent can accept on those
  loopback listeners although the agent itself runs in ``ctl``.  Every accepted connection
  is forwarded to ``<host ip>:22``; the upstream socket is created by the agent and therefore
  lives in ``ctl``, where the host addresses exist.
* one ``AF_UNIX``/``SOCK_SEQPACKET`` control socket.  Each control message carries one
  file descriptor: one end of a fresh private socketpair.  On that private pair the test
  process sends one JSON request (``{"ip": ..., "port": ..., "timeout": ...}`` or
  ``{"ping": true}``); the agent answers with one JSON message and, for a successful
  connect, the file descriptor of a TCP socket connected *inside ctl* (``SCM_RIGHTS``).
  That socket can be used directly by the test process, e.g. as ``paramiko``'s ``sock=``.

The agent exits when the control socket reports end-of-file, i.e. when the test process
closes it or dies, so it never outlives its harness.  Config keys: ``forwards`` (list of
``[listen_fd, ip, port]``), ``control`` (fd), ``connect_timeout`` (seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import sys
import threading
from typing import Any


def _pump(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from ``src`` to ``dst`` until EOF or error, then half-close ``dst``."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _forward(client: socket.socket, ip: str, port: int, timeout: float) -> None:
    """Connect to ``ip:port`` (inside ctl) and relay both directions until both end."""
    try:
        upstream = socket.create_connection((ip, port), timeout=timeout)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    client.settimeout(None)
    for s in (client, upstream):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def _request(private: socket.socket) -> None:
    """Serve one request received on a private socketpair end."""
    try:
        req: dict[str, Any] = json.loads(private.recv(65536) or b"{}")
        if req.get("ping"):
            private.send(json.dumps({"ok": True, "pid": os.getpid()}).encode())
            return
        try:
            conn = socket.create_connection(
                (str(req["ip"]), int(req.get("port", 22))), timeout=float(req.get("timeout", 10))
            )
        except TimeoutError:
            private.send(json.dumps({"ok": False, "errno": None, "error": "timed out"}).encode())
            return
        except OSError as exc:
            private.send(
                json.dumps({"ok": False, "errno": exc.errno, "error": exc.strerror or str(exc)}).encode()
            )
            return
        try:
            conn.settimeout(None)
            socket.send_fds(private, [json.dumps({"ok": True}).encode()], [conn.fileno()])
        finally:
            conn.close()
    except OSError:
        pass
    finally:
        private.close()


def main(argv: list[str]) -> int:
    """Run the agent with the JSON config in ``argv[1]``."""
    config = json.loads(argv[1])
    timeout = float(config.get("connect_timeout", 10.0))
    control = socket.socket(fileno=int(config["control"]))
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ, None)
    for fd, ip, port in config.get("forwards", []):
        listener = socket.socket(fileno=int(fd))
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, (str(ip), int(port)))
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data is None:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(sock, 64, 4)
                except OSError:
                    os._exit(0)
                if not msg and not fds:
                    os._exit(0)  # test process closed the control socket or died
                for fd in fds:
                    private = socket.socket(fileno=fd)
                    threading.Thread(target=_request, args=(private,), daemon=True).start()
                continue
            try:
                client, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            client.setblocking(True)
            ip, port = key.data
            threading.Thread(target=_forward, args=(client, ip, port, timeout), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
