"""The local machine as a target: subprocess, no connection at all."""

from __future__ import annotations

import os
import subprocess
import time

from deployer.errors import Unreachable
from deployer.transport.base import Become, Counters, Result


class LocalTransport:
    name = "local"

    def __init__(self, become: Become | None = None) -> None:
        self.become = become
        self.counters = Counters(connections=0)

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None) -> Result:
        full = self.become.wrap(argv) if self.become and self.become.user != _me() else argv
        started = time.monotonic()
        try:
            proc = subprocess.run(full, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
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


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
