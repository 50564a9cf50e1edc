"""The target's disk fills up during an apply: a clear error, the old state whole, and once
space is freed the next apply converges.

The deploy home of the host is a real, small tmpfs mounted inside the host's own mount
namespace (where its sshd, and so the applier, live); a filler file leaves too little room
for the new release, so the applier's writes hit a real ENOSPC.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import HOME, big_file, converges, declaration, deploy_v1, target_state, whole_revision
from tests.fleet.conftest import FleetProject

pytestmark = pytest.mark.fleet


def free_bytes(p: FleetProject) -> int:
    proc = p.th.exec_on("h1", ["python3", "-c", f"import os; s = os.statvfs({HOME!r}); print(s.f_bavail * s.f_frsize)"])
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_disk_full_during_apply(one_host: FleetProject) -> None:
    p = one_host
    p.th.exec_on("h1", ["mkdir", "-p", HOME], check=True)
    p.th.exec_on("h1", ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", HOME], check=True)
    old = deploy_v1(p)
    # Leave ~512 KiB: the new release carries a 2 MiB module and cannot fit.
    filler = f"{HOME}/filler"
    p.th.exec_on("h1", ["sh", "-c", f"head -c {free_bytes(p) - 512 * 1024} /dev/zero > {filler}"], check=True)
    p.write("deployer.yml", declaration("v2", files=[big_file(p)]))
    _, planned = p.deployer_json("plan", "dev")
    new = planned["hosts"]["h1"]["revision"]

    full, report = p.deployer_json("apply", "dev", "--yes")
    assert full.exit_code == 1, full
    error = report["hosts"]["h1"]["error"]
    assert report["hosts"]["h1"]["status"] == "failed", report
    assert error.startswith("the disk is full on the target: No space left on device"), error
    assert f"({HOME}/releases/" in error, f"the error does not say where: {error}"
    text = p.deployer("apply", "dev", "--yes")
    assert text.exit_code == 1 and "disk is full" in text.stdout + text.stderr, text

    state = target_state(p.th)
    assert whole_revision(state) == old
    assert not [e for e in state["entries"] if e.startswith(".")], f"a half-written release was left: {state['entries']}"

    # Space is freed: the filler goes and the volume grows past verify's own free-space floor.
    p.th.exec_on("h1", ["rm", "-f", filler], check=True)
    p.th.exec_on("h1", ["mount", "-o", "remount,size=256m", HOME], check=True)
    converges(p, new)
