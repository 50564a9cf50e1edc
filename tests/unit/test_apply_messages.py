"""The applier's messages (deployer/remote/messages.py): one key set for the bundle of every
kind of change (issue 13: plan.py and lifecycle.py built it apart, with different keys), and
the answer read back as the typed ApplyAnswer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from deployer.core import crontab
from deployer.core.lifecycle import plan_destroy, plan_rollback
from deployer.core.plan import plan
from deployer.engine import remote
from deployer.remote.messages import ApplyRequest
from deployer.transport.local import LocalTransport
from tests.unit.test_root_records import ROOT, facts_for, release_for


def test_apply_rollback_and_destroy_send_one_key_set(tmp_path: Path) -> None:
    release = release_for(tmp_path, ROOT, None)
    block = release.crontab_blocks["root"]
    new = facts_for(release, ROOT, {"root": None}, "root")  # nothing of ours in the crontab yet
    applied = plan(release, new).bundle()
    old = "0ld0ld0ld0ld"
    live = facts_for(release, ROOT, {"root": block}, "root")
    live = dataclasses.replace(
        live, releases={**live.releases, old: live.releases[release.revision]},
        release_blocks={**live.release_blocks, old: {"root": block.replace(release.revision, old)}},
        backups=[{"revision": old, "to": release.revision, "kind": "apply", "name": "b1", "crontabs": {"root": None}}])
    rolled = plan_rollback(release, live).params
    destroyed = plan_destroy(release, live).params
    assert rolled is not None and destroyed is not None
    assert set(applied) == set(rolled) - {"rollback"} == set(destroyed) - {"destroy"}
    assert set(applied) | {"rollback", "destroy"} <= set(ApplyRequest.__annotations__)
    assert (applied["kind"], rolled["kind"], destroyed["kind"]) == ("apply", "rollback", "destroy")
    assert (applied["revision"], rolled["revision"], destroyed["revision"]) == (release.revision, old, None)
    assert destroyed["crontabs"] == [{"user": "root", "expected": block, "text": crontab.splice(block, "p", "dev", None)}]


def test_the_answer_is_read_as_an_apply_answer() -> None:
    assert remote.apply_answer({"ok": True, "done": ["backup /b"]}) == {"ok": True, "done": ["backup /b"]}
    assert remote.apply_answer({"ok": False, "kind": "conflict", "error": "changed", "done": []}) == {
        "ok": False, "done": [], "error": "changed", "kind": "conflict"}
    # a kind the controller does not tell apart is dropped: a plain failure, as before
    assert remote.apply_answer({"ok": False, "kind": "martian", "error": "e", "done": []}) == {"ok": False, "done": [], "error": "e"}


def test_a_bundle_with_a_release_and_no_revision_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The applier checks what its types say it needs before the deploy lock, not halfway."""
    home = tmp_path / "home"
    request: ApplyRequest = {"project": "p", "env": "dev", "deploy_home": str(home), "set_current": True}
    answer = remote.call_applier(LocalTransport(), request)
    assert answer == {"ok": False, "done": [], "kind": "bad-request",
                      "error": "the bundle has a release to write or make current, and no revision"}
    assert not home.exists()
