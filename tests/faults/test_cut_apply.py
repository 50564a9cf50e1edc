"""An apply cut at every stage leaves the target in its old state or its new one, never a mix.

For each way the connection can die -- the controller process killed (transport gone), the
host's network link taken down, the applier process killed on the target -- and each stage
of an apply -- before the bundle is sent, during its transfer, on the target after the new
release is written (crontab not yet switched), after the crontab is switched (``current``
not yet moved) -- the test causes the fault for real, then reads the target from inside
(``whole_revision``: crontab block, release folder, manifest and ``current`` agree, the
foreign crontab lines are intact). Then the next apply converges, a second one has nothing
to do, and verify passes.

Stages on the target are reached with the applier's test-only pause (see conftest.py).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from deployer.engine.remote import build_script
from tests.faults.conftest import (
    HOME,
    PAUSE_ENV,
    Controller,
    at_the_prompt,
    converges,
    declare_v2,
    deploy_v1,
    fast_link,
    pause_marker,
    paused_pid,
    pid_alive,
    release_pause,
    slow_link,
    start_deployer,
    stdin_pythons,
    target_state,
    wait_for,
    whole_revision,
)
from tests.fleet.conftest import FleetProject

pytestmark = pytest.mark.fleet


def paused_apply(p: FleetProject, stage: str) -> tuple[Controller, int]:
    """An apply of the declared version, its applier waiting at ``stage`` on the target."""
    controller = start_deployer(p, "apply", "dev", "--yes", env={PAUSE_ENV: stage})
    pid = wait_for(lambda: paused_pid(p.th, stage) or controller.proc.poll() is not None, f"the applier to reach {stage}")
    assert controller.proc.poll() is None, controller.finish()
    return controller, int(pid)


# ----------------------------------------------------------------------------- before the bundle


def prompting_apply(p: FleetProject) -> tuple[Controller, int]:
    """``apply`` at its prompt (``at_the_prompt``), the SSH connection open."""
    controller, master = at_the_prompt(lambda tty: start_deployer(p, "apply", "dev", stdin=tty))
    assert stdin_pythons(p.th) == [], "the probe is over: nothing of ours runs on the target"
    return controller, master


def test_controller_killed_before_the_bundle(one_host: FleetProject) -> None:
    p = one_host
    old = deploy_v1(p)
    new = declare_v2(p)
    controller, master = prompting_apply(p)
    controller.kill()
    os.close(master)
    assert whole_revision(target_state(p.th)) == old
    converges(p, new)


def test_link_down_before_the_bundle(one_host: FleetProject) -> None:
    p = one_host
    old = deploy_v1(p)
    new = declare_v2(p)
    controller, master = prompting_apply(p)
    p.th.link_down("h1")
    try:
        os.write(master, b"y\n")  # the operator says yes; the bundle cannot get through
        code, out, err = controller.finish()
    finally:
        p.th.link_up("h1")
        os.close(master)
    assert code == 4, (code, out, err)
    assert "h1" in out + err and "no answer within 3s" in out + err, (out, err)
    assert whole_revision(target_state(p.th)) == old
    converges(p, new)


# ----------------------------------------------------------------------------- during the transfer


def probe_reads(p: FleetProject) -> int:
    """How many bytes a whole probe of this project reads on h1 (rchar: its stdin, python's own
    start-up, the files it looks at), measured by running the real probe bundle there."""
    script = build_script("probe", {"deploy_home": HOME, "crontab_users": ["root"]})
    script += b"\nimport sys as _s\n_s.stderr.write(open('/proc/self/io').read())\n"
    done = p.th.exec_on("h1", ["python3", "-I", "-"], input=script, text=False, check=True)
    return int(next(line.split()[1] for line in done.stderr.decode().splitlines() if line.startswith("rchar:")))


def transfer_in_progress(p: FleetProject, controller: Controller, bundle: int) -> dict[str, int]:
    """The applier has started reading its bundle from stdin and is far from done."""

    # rchar also counts python's own start-up reads and the probe's: past what a whole probe
    # reads on this host (measured, plus a margin; at least 1 MiB) only the applier's bundle,
    # read from stdin, can be the reason.
    floor = max(1024 * 1024, probe_reads(p) + 256 * 1024)
    assert floor < bundle // 2, f"a probe reads {floor} bytes on h1: the bundle is too small to tell the applier apart"

    def midway() -> Any:
        assert controller.proc.poll() is None, controller.finish()
        readers = [r for r in stdin_pythons(p.th) if floor < r["rchar"] < bundle // 2]
        return readers[0] if readers else None

    reader: dict[str, int] = wait_for(midway, "the bundle's transfer to be under way", every=0.02)
    return reader


@pytest.mark.parametrize("fault", ["controller-killed", "link-down", "applier-killed"])
def test_cut_during_the_transfer(one_host: FleetProject, fault: str) -> None:
    p = one_host
    old = deploy_v1(p)
    new = declare_v2(p, big=True)  # 2 MiB of module: the bundle is ~3.5 MiB of base64 (of base64)
    bundle = 3 * 1024 * 1024
    # A slow link (a real qdisc), so that the transfer takes seconds and is cut in its middle.
    slow_link(p.th, rate="2mbit")
    controller = start_deployer(p, "apply", "dev", "--yes", env={PAUSE_ENV: "locked"})
    reader = transfer_in_progress(p, controller, bundle)
    if fault == "controller-killed":
        controller.kill()
    elif fault == "link-down":
        p.th.link_down("h1")
        controller.kill()  # the operator gives up on the hung apply
        fast_link(p.th)
        p.th.link_up("h1")
    else:
        p.th.exec_on("h1", ["kill", "-KILL", str(reader["pid"])], check=True)
        code, out, err = controller.finish()
        assert code == 1, (code, out, err)
        assert "applier failed on the target" in out + err, (out, err)
    fast_link(p.th)
    # A cut bundle is never executed: python reads the whole script before running any of it,
    # and the call to main() is its last line. So the applier ends without taking the lock...
    outcome = wait_for(lambda: "ran" if paused_pid(p.th, "locked") else ("gone" if not stdin_pythons(p.th) else None),
                       "the cut applier to exit")
    if fault == "link-down" and outcome == "ran":
        # ...unless the kernel of the killed controller still held the whole rest of the
        # bundle in its socket buffer and delivered it once the link came back: then the
        # bundle is complete, and the apply runs to its end.
        release_pause(p.th, "locked")
        wait_for(lambda: not stdin_pythons(p.th), "the applier to end")
        assert whole_revision(target_state(p.th)) == new
    else:
        assert outcome == "gone", "the applier ran a bundle it had not fully received"
        assert whole_revision(target_state(p.th)) == old
    converges(p, new)


# ----------------------------------------------------------------------------- on the target


@pytest.mark.parametrize("stage", ["release-written", "crontab-written"])
def test_controller_killed_mid_apply(one_host: FleetProject, stage: str) -> None:
    """The transport dies while the applier works: the applier finishes on its own (sshd does
    not kill a session's command when the client goes away), so the target is new."""
    p = one_host
    old = deploy_v1(p)
    new = declare_v2(p)
    controller, pid = paused_apply(p, stage)
    if stage == "release-written":
        assert whole_revision(target_state(p.th)) == old  # written beside it, not switched yet
    controller.kill()
    release_pause(p.th, stage)
    wait_for(lambda: not pid_alive(p.th, pid), "the applier to end")
    assert whole_revision(target_state(p.th)) == new
    converges(p, new)


@pytest.mark.parametrize("stage", ["release-written", "crontab-written"])
def test_link_down_mid_apply(one_host: FleetProject, stage: str) -> None:
    """The link drops while the applier works and comes back once it is done: the applier's
    answer, held by the host's TCP stack meanwhile, still reaches the controller."""
    p = one_host
    deploy_v1(p)
    new = declare_v2(p)
    controller, pid = paused_apply(p, stage)
    p.th.link_down("h1")
    try:
        release_pause(p.th, stage)
        wait_for(lambda: not pid_alive(p.th, pid), "the applier to end")
        assert whole_revision(target_state(p.th)) == new
    finally:
        p.th.link_up("h1")
    code, out, err = controller.finish()
    assert code == 0, (code, out, err)
    assert whole_revision(target_state(p.th)) == new
    converges(p, new)


@pytest.mark.parametrize("stage", ["release-written", "crontab-written"])
def test_applier_killed_mid_apply(one_host: FleetProject, stage: str) -> None:
    """kill -9 of the applier itself: nothing can finish its work; what is left must still be
    one whole revision (the old one before the switch, the new one after it)."""
    p = one_host
    old = deploy_v1(p)
    new = declare_v2(p)
    controller, pid = paused_apply(p, stage)
    p.th.exec_on("h1", ["kill", "-KILL", str(pid)], check=True)
    code, out, err = controller.finish()
    assert code == 1, (code, out, err)
    assert "applier failed on the target" in out + err, (out, err)
    p.th.exec_on("h1", ["rm", "-f", pause_marker(stage)])
    if stage == "release-written":
        assert whole_revision(target_state(p.th)) == old
    else:
        # Past the switch: cron runs the new release, whole; the `current` link, a second
        # write, still names the old one. deployer's every view follows the crontab.
        state = target_state(p.th)
        assert whole_revision(state, link_may_lag=True) == new
        assert state["current"] == f"releases/{old}", "the kill came before the link moved: nothing to prove"
        _, planned = p.deployer_json("plan", "dev")
        changes = planned["hosts"]["h1"]["changes"]
        assert [c["kind"] for c in changes] == ["current"], changes
        assert f"which cron already runs (it still names {old})" in changes[0]["summary"], changes
        _, history = p.deployer_json("rollback", "dev", "--list")
        assert history["hosts"]["h1"]["current"] == new, history
        ran = p.deployer("run", "dev", "hello")
        assert ran.exit_code == 0 and "'v2'" in ran.stdout, ran  # the manual run is the release cron runs
    converges(p, new)

