"""verify's cron-daemon check counts only the real daemon, on a namespaced host over SSH
(issue 12, class 5: the proof cannot lie).

Any user can name a process ``cron``; a daemon that exited and was not reaped is still a
``cron`` in /proc. With the host's real cron stopped, each of those is started for real and
verify must still fail, naming why each one does not count; once the real cron runs again,
verify passes with the impostors still there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import flat, make_project

pytestmark = pytest.mark.fleet

# A root process that starts the real cron binary, kills it and never reaps it: a zombie cron.
ZOMBIE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen(["/usr/sbin/cron", "-f", "-n"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)
os.kill(child.pid, signal.SIGKILL)
open("/run/zombie-cron.pid", "w").write(str(child.pid))
time.sleep(900)
"""


def test_only_the_real_cron_daemon_counts(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(["h1"], users=["alice"])
    p = make_project(th, tmp_path)
    p.declare(jobs="  hello:\n    script: tasks/hello.py\n    schedule: '*/5 * * * *'\n")
    p.inventory({"h1": p.host_vars("h1")})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    assert "pass cron-daemon cron is running" in flat(p.deployer("verify", "dev").stdout)

    # The real daemon stops (its own pid file says which process it is).
    th.exec_on("h1", ["sh", "-c", "pid=$(cat /run/crond.pid) && kill $pid && rm -f /run/crond.pid && "
                                  "for i in $(seq 100); do kill -0 $pid 2>/dev/null || exit 0; sleep 0.1; done; exit 1"],
               check=True)
    # The job's user runs a program of its own named cron.
    th.exec_on("h1", ["sh", "-c", "cp /bin/sleep $HOME/cron && setsid $HOME/cron 900 </dev/null >/dev/null 2>&1 &"],
               user="alice", check=True)
    # Root runs something named cron that is not this system's cron binary.
    th.exec_on("h1", ["sh", "-c", "mkdir -p /root/bin && cp /bin/sleep /root/bin/cron && "
                                  "setsid /root/bin/cron 900 </dev/null >/dev/null 2>&1 &"], check=True)
    # A zombie of the real cron binary.
    th.exec_on("h1", ["sh", "-c", f"setsid python3 -c '{ZOMBIE}' </dev/null >/dev/null 2>&1 &"], check=True)
    th.exec_on("h1", ["sh", "-c", "for i in $(seq 100); do [ -s /run/zombie-cron.pid ] && exit 0; sleep 0.1; done; exit 1"],
               check=True)

    fooled = p.deployer("verify", "dev")
    text = flat(fooled.stdout)
    assert fooled.exit_code == 1, fooled
    assert "fail cron-daemon no cron daemon is running: no job will run (start cron) (not counted:" in text, fooled
    assert "'cron': runs as alice, not root" in text, fooled
    assert "'cron': it runs /root/bin/cron, not a cron binary of this system" in text, fooled
    assert "'cron': a zombie (exited, not reaped)" in text, fooled

    # The real daemon again: verify passes, the impostors notwithstanding.
    th.exec_on("h1", ["sh", "-c", "rm -f /run/crond.pid && setsid cron -f -L 15 </dev/null >/dev/null 2>&1 &"], check=True)
    th.exec_on("h1", ["sh", "-c", "for i in $(seq 100); do [ -s /run/crond.pid ] && exit 0; sleep 0.1; done; exit 1"], check=True)
    again = p.deployer("verify", "dev")
    assert again.exit_code == 0, again
    assert "pass cron-daemon cron is running" in flat(again.stdout)
