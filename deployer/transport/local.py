"""The local machine as a target: subprocess, no connection at all.

Every command starts in a session of its own (``setsid``: no controlling terminal) from
``/``: run from an operator's root shell, a job or anything a job's user planted in its
Python could otherwise open ``/dev/tty`` and type into that shell (TIOCSTI). Over SSH and
``incus exec -T`` no terminal is given either.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from deployer.errors import Unreachable
from deployer.transport.base import Become, Counters, Result

# No controlling terminal, not the operator's folder.
DETACHED: dict[str, Any] = {"start_new_session": True, "cwd": "/"}


class LocalTransport:
    name = "local"

    def __init__(self, become: Become | None = None) -> None:
        self.become = become
        self.counters = Counters(connections=0)

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        full = self.become.wrap(argv) if self.become and self.become.user != _me() else argv
        started = time.monotonic()
        try:
            proc = _streamed(full, stdin, timeout, on_stdout) if on_stdout is not None else _collected(full, stdin, timeout)
        except FileNotFoundError:
            raise Unreachable(f"'{full[0]}' is not installed on this machine") from None
        except subprocess.TimeoutExpired:
            raise Unreachable(f"'{' '.join(full[:3])}' did not finish within {timeout:.0f}s") from None
        finally:
            self.counters.execs += 1
            self.counters.bytes_sent += len(stdin)
            self.counters.seconds += time.monotonic() - started
        self.counters.bytes_received += len(proc.stdout) + len(proc.stderr)
        return Result(tuple(full), proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        pass


def _collected(full: list[str], stdin: bytes, timeout: float | None) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, detached from our terminal."""
    proc = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **DETACHED)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    except KeyboardInterrupt:
        _pass_interrupt(proc)
        raise
    return subprocess.CompletedProcess(full, proc.returncode, out, err)


def _pass_interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C reached only us (the command has no terminal): give it to the command's group,
    as the terminal would have, and let it stop (the run wrapper records the run as crashed)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()


def _streamed(full: list[str], stdin: bytes, timeout: float | None,
              on_stdout: Callable[[bytes], None]) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, but stdout goes to ``on_stdout`` chunk by chunk as it is written."""
    proc = subprocess.Popen(full, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **DETACHED)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    reader.start()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire) if timeout else None
    if timer is not None:
        timer.start()
    out: list[bytes] = []
    try:
        assert proc.stdout is not None
        if proc.stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the command did not read its input; its exit code says why
        try:
            # A pipe of Popen's default buffering (bufsize=-1) is a BufferedReader; typeshed says IO.
            while chunk := cast("io.BufferedReader", proc.stdout).read1(65536):
                out.append(chunk)
                on_stdout(chunk)
        except KeyboardInterrupt:
            _pass_interrupt(proc)
            raise
        proc.wait()
        reader.join()
    finally:
        if timer is not None:
            timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(full, timeout or 0)
    return subprocess.CompletedProcess(full, proc.returncode, b"".join(out), b"".join(err))


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
