"""The one primitive every transport gives: run an argv on the target, bytes on stdin.

Everything else (probe, apply, verify, run) is built on ``Transport.run``. Counters let
``--json`` show how many connections and execs a command cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Result:
    """What one command did on a target."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def stderr_tail(self, lines: int = 5) -> str:
        text = self.stderr.decode("utf-8", "replace").strip()
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Counters:
    connections: int = 0
    execs: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"connections": self.connections, "execs": self.execs, "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received, "seconds": round(self.seconds, 3)}


class Transport(Protocol):
    """A way to run commands on one target."""

    name: str
    counters: Counters

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        """Run ``argv`` on the target; raise Unreachable if the target cannot be reached.

        ``on_stdout`` gets the output as it arrives (``deployer run`` streams a job's output);
        the Result still holds all of it."""
        ...

    def close(self) -> None:
        ...


@dataclass
class Become:
    """Run as another user on the target (``ansible_become``); sudo never prompts."""

    user: str = "root"
    method: str = "sudo"

    def wrap(self, argv: list[str]) -> list[str]:
        if self.method == "sudo":
            return ["sudo", "-n", "-H", "-u", self.user, "--", *argv]
        if self.method == "su":
            raise ValueError("become method 'su' needs a password prompt; use sudo with NOPASSWD")
        raise ValueError(f"unknown become method '{self.method}'")


@dataclass
class TransportInfo:
    """How a target is reached, for messages."""

    kind: str
    description: str
    extra: dict[str, str] = field(default_factory=dict)
