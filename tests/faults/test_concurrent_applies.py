"""Two applies on one target at once are serialised by the deploy lock on the target, never
interleaved: the second waits while the first holds it, and past its bound fails naming the
holder. Both applies are real ``deployer`` processes; the first is held at a known point by
the applier's test-only pause (conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.faults.conftest import (
    PAUSE_ENV,
    Controller,
    converges,
    declaration,
    deploy_v1,
    paused_pid,
    pid_alive,
    release_pause,
    start_deployer,
    stdin_pythons,
    target_state,
    wait_for,
    whole_revision,
)
from tests.fleet.conftest import FleetProject

pytestmark = pytest.mark.fleet


def second_project(p: FleetProject, version: str) -> FleetProject:
    """Another operator's checkout of the same project, declaring another version."""
    other_root = p.root.parent / "project-b"
    shutil.copytree(p.root, other_root)
    other = FleetProject(p.th, other_root, p.home, p.known_hosts)
    other.write("deployer.yml", declaration(version))
    return other


def first_holds_the_lock(p: FleetProject) -> tuple[str, FleetProject, Controller, int]:
    """v1 deployed; an apply of v2 holds the deploy lock (paused there); another checkout
    declares v3. Returns v1's revision, that checkout, the first apply and its applier's pid."""
    old = deploy_v1(p)
    p.write("deployer.yml", declaration("v2"))
    b = second_project(p, "v3")
    first = start_deployer(p, "apply", "dev", "--yes", env={PAUSE_ENV: "locked"})
    holder = wait_for(lambda: paused_pid(p.th, "locked"), "the first apply to hold the deploy lock")
    return old, b, first, holder


def test_second_apply_waits_then_is_refused_by_compare_and_swap(one_host: FleetProject) -> None:
    p = one_host
    old, b, first, holder = first_holds_the_lock(p)

    second = start_deployer(b, "apply", "dev", "--yes")
    # The second applier is on the target, waiting for the lock: a `python3 -` other than the
    # paused one with the lock file open. (The second deployer's probe is a `python3 -` too, but
    # it never opens the lock file, so counting processes alone could catch the probe.)
    waiting = wait_for(lambda: [r["pid"] for r in stdin_pythons(p.th) if r["pid"] != holder and r["deploy_lock_open"]],
                       "the second applier to wait for the lock")
    assert second.proc.poll() is None, second.finish()
    assert whole_revision(target_state(p.th)) == old, "something changed while the first apply held the lock"

    release_pause(p.th, "locked")
    code, out, err = first.finish()
    assert code == 0, (code, out, err)
    code, out, err = second.finish()
    # It got the lock once the first was done, and found the crontab it had read replaced.
    assert code == 1, (code, out, err)
    assert "the crontab of root changed since it was read" in out + err, (out, err)
    assert not pid_alive(p.th, waiting[0])
    state = target_state(p.th)
    _, report = p.deployer_json("plan", "dev")
    assert whole_revision(state) == report["hosts"]["h1"]["revision"], "the target is not v2, whole"
    assert len([e for e in state["entries"] if not e.startswith(".")]) == 2, state["entries"]  # v1 and v2: v3 never landed

    # The refused operator plans again and applies: v3 lands, whole.
    _, planned = b.deployer_json("plan", "dev")
    converges(b, planned["hosts"]["h1"]["revision"])


def test_second_apply_gives_up_after_its_bound_naming_the_holder(one_host: FleetProject) -> None:
    p = one_host
    old, b, first, holder = first_holds_the_lock(p)
    try:
        code, out, err = start_deployer(b, "apply", "dev", "--yes").finish()  # waits its bound (30 s), then fails
        assert code == 1, (code, out, err)
        assert f"another apply is running on this target (pid {holder} since " in " ".join((out + err).split()), (out, err)
        assert whole_revision(target_state(p.th)) == old
    finally:
        release_pause(p.th, "locked")
    code, out, err = first.finish()
    assert code == 0, (code, out, err)
    _, report = p.deployer_json("plan", "dev")
    converges(p, report["hosts"]["h1"]["revision"])
