"""An apply into a real Incus container, cut at each stage, leaves the old state or the new one.

The fault proofs of tests/faults/ (whose hosts are the fleet tier's, reached over SSH) on the
Incus tier: the controller is the real ``deployer`` CLI on this machine, its transport the real
``incus exec -T <container> -- python3 -`` of the real incusd (tests/incus/conftest.py), and
the faults are real SIGKILLs:

- the controller killed while the applier waits at a stage on the target, alone (its
  ``incus exec`` child survives it, orphaned) or together with its ``incus exec`` client (the
  whole process group, as when the operator's session dies): what becomes of the applier is
  up to incusd, and the tests assert what it really does;
- the applier itself killed (``kill -9`` inside the container) before and after its switch;
- the controller killed at its confirmation prompt, before any bundle is sent.

After each fault the container is read from inside (``incus exec ... python3 -c
STATE_SCRIPT``, no deployer code): the crontab block, the release folder, its manifest and
``current`` agree (``whole_revision``), foreign crontab lines intact. Then the next apply
converges, a second one has nothing to do, and verify passes.

Stages on the target are reached with the applier's test-only pause (tests/faults/conftest.py):
``DEPLOYER_TEST_PAUSE_AT=<stage>`` on the controller; the marker file is in the container's /tmp.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import (
    FOREIGN,
    PAUSE_ENV,
    TASK,
    Controller,
    at_the_prompt,
    converges_through,
    declaration,
    paused_pid_through,
    pid_alive_through,
    release_pause_through,
    state_through,
    stdin_pythons_through,
    wait_for,
    whole_revision,
)
from tests.harness.incus import Incus, starttime
from tests.incus.conftest import IncusProject

pytestmark = pytest.mark.incus

STAGES = ["release-written", "crontab-written"]


@dataclass
class Target:
    """The project and its one container, inventory name h1 (as the faults tier's host)."""

    p: IncusProject
    container: str

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """argv as root inside the container, through the incus CLI (no deployer code)."""
        return self.p.incus.exec(self.container, argv)

    def state(self) -> dict[str, Any]:
        return state_through(self.run)


@pytest.fixture
def target(incus_env: Incus, container: str, tmp_path: Path) -> Iterator[Target]:
    """A fresh container with foreign lines in root's crontab, and project demo targeting it."""
    home = tmp_path / "home"
    home.mkdir()
    p = IncusProject(incus_env, tmp_path / "project", home)
    p.write("tasks/hello.py", TASK)
    p.inventory({"h1": {"ansible_incus_host": container}})
    incus_env.exec(container, ["crontab", "-"], input=FOREIGN, check=True)
    yield Target(p, container)


def deploy_v1(t: Target) -> str:
    t.p.write("deployer.yml", declaration("v1"))
    first = t.p.deployer("apply", "dev", "--yes")
    assert first.exit_code == 0, first
    return whole_revision(t.state())


def declare_v2(t: Target) -> str:
    """Declare the next version; its revision as plan computes it (nothing applied)."""
    t.p.write("deployer.yml", declaration("v2"))
    planned, report = t.p.deployer_json("plan", "dev")
    assert planned.exit_code == 0, planned
    return str(report["hosts"]["h1"]["revision"])


def converges(t: Target, new: str) -> None:
    converges_through(t.p, new, t.state)


# ----------------------------------------------------------------------------- processes here


def start_deployer(t: Target, *args: str, env: dict[str, str] | None = None,
                   stdin: int | None = subprocess.DEVNULL) -> Controller:
    """The CLI in its own process group (so that it can be killed with its incus client)."""
    proc = subprocess.Popen([sys.executable, "-m", "deployer", "--no-color", *args], cwd=t.p.root,
                            env={**t.p.env(), **(env or {})}, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, process_group=0)
    return Controller(proc)


@dataclass(frozen=True)
class Proc:
    """A process of this machine, named by pid and start time (a reused pid is another one)."""

    pid: int
    start: str

    def alive(self) -> bool:
        return starttime(self.pid) == self.start

    def argv(self) -> list[str]:
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        except OSError:
            return []


def incus_clients(controller: Controller) -> list[Proc]:
    """The ``incus exec`` processes the controller has started and that still run."""
    pid = controller.proc.pid
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    found = []
    for child in children:
        start = starttime(child)
        if start is None:
            continue
        proc = Proc(child, start)
        argv = proc.argv()
        if argv and os.path.basename(argv[0]) == "incus" and argv[1:2] == ["exec"]:
            found.append(proc)
    return found


@pytest.fixture
def strays() -> Iterator[list[Proc]]:
    """Processes a test leaves behind on purpose (an orphaned incus client): killed, by pid,
    if still there at the end."""
    left: list[Proc] = []
    yield left
    for proc in left:
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)


def paused_apply(t: Target, stage: str) -> tuple[Controller, int, Proc]:
    """An apply of the declared version, its applier waiting at ``stage`` in the container:
    the controller, the applier's pid (in the container) and the controller's incus client."""
    controller = start_deployer(t, "apply", "dev", "--yes", env={PAUSE_ENV: stage})
    pid = wait_for(lambda: paused_pid_through(t.run, stage) or controller.proc.poll() is not None,
                   f"the applier to reach {stage}")
    assert controller.proc.poll() is None, controller.finish()
    clients = incus_clients(controller)
    assert len(clients) == 1, f"the controller should have one incus exec running (the applier's): {clients}"
    assert clients[0].argv()[2:5] == ["-T", f"local:{t.container}", "--"], clients[0].argv()
    return controller, int(pid), clients[0]


def old_or_new_then_converges(t: Target, stage: str, old: str, new: str) -> None:
    """The applier died at ``stage``: before the switch the old revision, whole; after it the
    new one, ``current`` lagging. Then the next apply converges."""
    if stage == "release-written":
        assert whole_revision(t.state()) == old
    else:
        applier_killed_after_the_switch(t, old, new)
    converges(t, new)


def applier_killed_after_the_switch(t: Target, old: str, new: str) -> None:
    """The applier died between the crontab install and the move of ``current``: cron runs the
    new release whole, the link still names the old one, and every view of deployer follows
    the crontab (tests/faults/test_cut_apply.py::test_applier_killed_mid_apply)."""
    state = t.state()
    assert whole_revision(state, link_may_lag=True) == new
    assert state["current"] == f"releases/{old}", "the kill came before the link moved: nothing to prove"
    planned, report = t.p.deployer_json("plan", "dev")
    assert planned.exit_code == 0, planned
    changes = report["hosts"]["h1"]["changes"]
    assert [c["kind"] for c in changes] == ["current"], changes
    assert f"which cron already runs (it still names {old})" in changes[0]["summary"], changes
    listed, history = t.p.deployer_json("rollback", "dev", "--list")
    assert listed.exit_code == 0, listed
    assert history["hosts"]["h1"]["current"] == new, history
    ran = t.p.deployer("run", "dev", "hello")
    assert ran.exit_code == 0 and "'v2'" in ran.stdout, ran  # the manual run is the release cron runs


# ----------------------------------------------------------------------------- the controller killed


@pytest.mark.parametrize("stage", STAGES)
def test_controller_killed_mid_apply_its_incus_exec_goes_on(target: Target, stage: str, strays: list[Proc]) -> None:
    """SIGKILL of the deployer process alone: its ``incus exec`` child is not in the kill, lives
    on orphaned and keeps the exec session open, so the applier finishes its work once let go
    and the container is new whole."""
    t = target
    old = deploy_v1(t)
    new = declare_v2(t)
    controller, pid, client = paused_apply(t, stage)
    strays.append(client)
    if stage == "release-written":
        assert whole_revision(t.state()) == old  # written beside it, not switched yet
    controller.kill()
    assert client.alive(), "the incus client died with the controller"
    assert pid_alive_through(t.run, pid), "the applier died with the controller"
    release_pause_through(t.run, stage)
    wait_for(lambda: not pid_alive_through(t.run, pid), "the applier to end")
    # Its answer reaches nobody: the orphaned client ends (on the closed pipe) once it is given it.
    wait_for(lambda: not client.alive(), "the orphaned incus client to end", timeout=60)
    assert whole_revision(t.state()) == new
    converges(t, new)


@pytest.mark.parametrize("stage", STAGES)
def test_controller_killed_with_its_incus_exec(target: Target, stage: str) -> None:
    """SIGKILL of the controller and its ``incus exec`` client: incusd sees the exec session's
    client go away and kills the command it runs. The applier dies where it was paused, never
    let go: before the switch the container is old whole; after it, cron runs the new release
    whole while ``current`` lags (as for the applier's kill -9). Both are killed by pid: deployer
    starts its commands in a session of their own (issue 12, class 1), so a kill of deployer's
    process group no longer reaches the client (that case is the test above)."""
    t = target
    old = deploy_v1(t)
    new = declare_v2(t)
    controller, pid, client = paused_apply(t, stage)
    os.kill(controller.proc.pid, signal.SIGKILL)
    os.kill(client.pid, signal.SIGKILL)
    controller.proc.wait(timeout=30)
    wait_for(lambda: not client.alive(), "the incus client to die")
    # The pause is NOT released: only incusd can end the applier now.
    wait_for(lambda: not pid_alive_through(t.run, pid), "incusd to end the applier of the dead exec session",
             timeout=120, every=0.2)
    assert paused_pid_through(t.run, stage) == pid, "the applier left its pause: it was let go, not killed"
    release_pause_through(t.run, stage)
    old_or_new_then_converges(t, stage, old, new)


# ----------------------------------------------------------------------------- the applier killed


@pytest.mark.parametrize("stage", STAGES)
def test_applier_killed_mid_apply(target: Target, stage: str) -> None:
    """kill -9 of the applier inside the container: nothing can finish its work; what is left
    is one whole revision (the old one before the switch, the new one after it)."""
    t = target
    old = deploy_v1(t)
    new = declare_v2(t)
    controller, pid, client = paused_apply(t, stage)
    killed = t.run(["kill", "-KILL", str(pid)])
    assert killed.returncode == 0, killed.stderr
    code, out, err = controller.finish()
    assert code == 1, (code, out, err)
    assert "applier failed on the target" in out + err, (out, err)
    assert not client.alive()
    release_pause_through(t.run, stage)
    old_or_new_then_converges(t, stage, old, new)


# ----------------------------------------------------------------------------- before the bundle


def prompting_apply(t: Target) -> tuple[Controller, int]:
    """``apply`` at its prompt (``at_the_prompt``) in front of a container."""
    controller, master = at_the_prompt(lambda tty: start_deployer(t, "apply", "dev", stdin=tty))
    assert incus_clients(controller) == [], "the probe's incus exec is over"
    assert stdin_pythons_through(t.run) == [], "the probe is over: nothing of ours runs in the container"
    return controller, master


def test_controller_killed_before_the_bundle(target: Target) -> None:
    t = target
    old = deploy_v1(t)
    new = declare_v2(t)
    controller, master = prompting_apply(t)
    os.killpg(controller.proc.pid, signal.SIGKILL)
    controller.proc.wait(timeout=30)
    os.close(master)
    assert whole_revision(t.state()) == old
    converges(t, new)
