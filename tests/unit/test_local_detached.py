"""The local transport starts every command detached from the operator's terminal and folder
(issue 12, class 1), and still passes on a Ctrl-C the terminal no longer delivers to it.

Real processes, no fakes: the command reports its own session and folder; the interrupt is
a real SIGINT sent to a real deployer-side process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.engine.remote import isolated
from deployer.transport.local import LocalTransport

REPORT = "import os; print(os.getsid(0) == os.getpid(), os.getcwd(), os.readlink('/proc/self/fd/0'))"


def test_commands_run_in_a_session_of_their_own_from_the_root_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the operator stands
    leader, folder, stdin = LocalTransport().run([sys.executable, "-c", REPORT]).stdout.decode().split()
    assert (leader, folder) == ("True", "/") and stdin.startswith("pipe:")
    streamed: list[bytes] = []
    result = LocalTransport().run([sys.executable, "-c", REPORT], on_stdout=streamed.append)
    assert b"".join(streamed).decode().split() == ["True", "/", "/dev/null"]  # nothing to send: /dev/null
    assert result.exit_code == 0


def test_target_side_python_is_isolated() -> None:
    assert isolated("python3") == ["python3", "-I", "-"]
    assert isolated("/usr/bin/python3", "/srv/run", "job") == ["/usr/bin/python3", "-I", "/srv/run", "job"]


DEPLOYER_SIDE = """
import sys
from deployer.transport.local import LocalTransport
command = ["sh", "-c", "trap 'echo interrupted > {flag}; exit 3' INT; echo ready; while :; do sleep 0.1; done"]
try:
    LocalTransport().run(command, on_stdout=lambda chunk: (sys.stdout.buffer.write(chunk), sys.stdout.flush()))
except KeyboardInterrupt:
    print("deployer interrupted", flush=True)
"""


def test_ctrl_c_still_reaches_the_command(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    # As from a terminal: SIGINT at its default. A suite started in the background (`cmd &`, CI
    # runners) inherits it ignored, and then neither Python nor sh would take it.
    side = subprocess.Popen([sys.executable, "-c", DEPLOYER_SIDE.format(flag=flag)], stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert side.stdout is not None
    assert side.stdout.readline() == b"ready\n"
    side.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C does to deployer; the command no longer gets it
    assert side.stdout.readline() == b"deployer interrupted\n"
    side.wait(timeout=20)
    deadline = time.monotonic() + 5
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.read_text() == "interrupted\n"
