"""deployer's Transport over the connection Ansible opened for a task.

Everything deployer does on a target is ``Transport.run(argv, stdin)``; here that is one
``_low_level_execute_command`` of the running action plugin, stdin as ``in_data`` and
``sudoable=True``, so Ansible's own become (sudo, ``ansible_become_user``...) wraps it
exactly as it wraps a module, and whatever the inventory configures for the connection
(ssh options, ``community.general.incus`` remote/project...) applies unchanged.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Any

from deployer.transport.base import Counters, Result


class AnsibleTransport:
    """One target, reached through an action plugin's connection (Ansible owns it)."""

    name = "ansible"

    def __init__(self, action: Any) -> None:
        self.action = action  # an ansible.plugins.action.ActionBase
        # Ansible opens, reuses and closes the connection: only execs are ours to count.
        self.counters = Counters(connections=0)

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        """Run ``argv`` on the target. ``timeout`` is Ansible's business here (``timeout``,
        ``ansible_timeout``); a connection failure propagates as Ansible's own, so the host
        is reported UNREACHABLE like for any module. Ansible returns the output when the
        command ends: ``on_stdout`` gets it all at once."""
        started = time.monotonic()
        try:
            # surrogateescape both ways: the bytes on the target come back unchanged.
            answer = self.action._low_level_execute_command(shlex.join(argv), sudoable=True, in_data=stdin or None,
                                                           encoding_errors="surrogateescape")
        finally:
            self.counters.execs += 1
            self.counters.bytes_sent += len(stdin)
            self.counters.seconds += time.monotonic() - started
        stdout = _bytes(answer.get("stdout", ""))
        stderr = _bytes(answer.get("stderr", ""))
        self.counters.bytes_received += len(stdout) + len(stderr)
        if on_stdout is not None and stdout:
            on_stdout(stdout)
        return Result(tuple(argv), int(answer.get("rc") or 0), stdout, stderr)

    def close(self) -> None:
        pass


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
