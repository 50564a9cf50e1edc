"""plan: a Release against Facts, as data. No host needed: facts are built here.

Each case starts from a target that matches the release exactly (``in_place``) or is
empty, changes one thing, and states the plan it expects.
"""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from deployer.config.inventory import Target
from deployer.config.load import load_project
from deployer.core.facts import CrontabFact, Facts, PathFact, live_revision
from deployer.core.plan import plan
from deployer.core.release import Identity, Release, materialize
from deployer.core.render import render
from deployer.remote.messages import Drift

WHO = Identity("alice", 1000, "/home/alice")
FOREIGN = "MAILTO=me\n0 1 * * * backup.sh\n"


@pytest.fixture
def release(tmp_path: Path) -> Release:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "a.py").write_text("print('a')\n")
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.yml").write_text("all: {hosts: {h1: {ansible_connection: local}}}\n")
    (tmp_path / "deployer.yml").write_text(
        "project: p\njobs:\n  a:\n    script: tasks/a.py\n    schedule: '@hourly'\n    env: {X: '1'}\n"
        "environments:\n  dev:\n    inventory: inv\n")
    project = load_project(tmp_path / "deployer.yml")
    env = project.environment("dev")
    target = Target("h1", "local")
    return materialize(render(project, env, target, [target]), WHO)


def empty(release: Release) -> Facts:
    return Facts(hostname="h1", identity=WHO, python="/usr/bin/python3", python_version="3.11", deploy_home=release.deploy_home,
                 users={}, crontabs={"alice": CrontabFact(None)}, paths={}, releases={}, current=None, cron_running=True,
                 cron_process="cron")


def in_place(release: Release, crontab: str = FOREIGN) -> Facts:
    files = {f.path: PathFact("file", f.mode, f.owner or WHO.user, "alice", f.sha256) for f in release.files}
    paths: dict[str, PathFact | None] = {d.path: PathFact("dir", d.mode, d.owner or WHO.user, "alice") for d in release.dirs}
    paths.update({f.path: PathFact("file", f.mode, f.owner or WHO.user, "alice") for f in release.job_files})
    return dataclasses.replace(empty(release), crontabs={"alice": CrontabFact(crontab + release.crontab_blocks["alice"])},
                               paths=paths, releases={release.revision: files}, current=release.revision,
                               current_link=release.revision)


def test_an_empty_target_gets_everything(release: Release) -> None:
    p = plan(release, empty(release))
    kinds = [c.kind for c in p.changes]
    assert kinds.count("release") == 1 and kinds.count("current") == 1
    assert {c.path for c in p.changes if c.kind == "dir"} == {d.path for d in release.dirs}
    assert len(p.release_files) == len(release.files)
    [cc] = p.crontab_changes
    assert cc.before is None and cc.after == release.crontab_blocks["alice"]
    assert p.bundle()["crontabs"] == [{"user": "alice", "expected": None, "text": cc.after}]


def test_a_target_in_place_needs_nothing(release: Release) -> None:
    p = plan(release, in_place(release))
    assert p.empty and not p.errors and p.bundle()["release"] is None


def test_foreign_lines_are_kept_when_the_block_changes(release: Release) -> None:
    stale = FOREIGN + release.crontab_blocks["alice"].replace("@hourly", "@daily") + "# mine, after\n"
    p = plan(release, dataclasses.replace(in_place(release), crontabs={"alice": CrontabFact(stale)}))
    [cc] = p.crontab_changes
    assert cc.after == FOREIGN + release.crontab_blocks["alice"] + "# mine, after\n"
    assert "-@daily" in cc.diff() and "+@hourly" in cc.diff()


def test_a_script_edited_on_the_target_is_restored(release: Release) -> None:
    facts = in_place(release)
    files = dict(facts.releases[release.revision])
    files["scripts/a.py"] = dataclasses.replace(files["scripts/a.py"], sha256="0" * 64)
    edited = b"print('a')\nprint('debug by hand')\n"
    drift: dict[str, dict[str, Drift]] = {release.revision: {"scripts/a.py": {"why": "modified", "content": base64.b64encode(edited).decode()}}}
    p = plan(release, dataclasses.replace(facts, releases={release.revision: files}, drift=drift))
    [change] = p.changes
    assert change.kind == "release" and change.summary.startswith("restore scripts/a.py (modified on the target: drift, edited by hand")
    assert [f.path for f in p.release_files] == ["scripts/a.py"]
    [(where, diff)] = p.drift
    assert where.endswith("/scripts/a.py") and "-print('debug by hand')" in diff and "(on the target)" in diff


def test_a_hand_edit_inside_the_block_is_drift_and_named(release: Release) -> None:
    block = release.crontab_blocks["alice"]
    edited = block.replace("@hourly", "*/2 * * * *")
    p = plan(release, dataclasses.replace(in_place(release), crontabs={"alice": CrontabFact(FOREIGN + edited)}))
    [cc] = p.crontab_changes
    assert cc.after == FOREIGN + block
    [change] = [c for c in p.changes if c.kind == "crontab"]
    assert change.summary.startswith("drift: the managed block was edited by hand") and "*/2 * * * *" in change.summary
    from deployer.core.checks import checks

    [check] = [c for c in checks(p) if c.name == "crontab"]
    assert check.status == "fail" and "edited by hand" in check.detail


def test_an_unexpected_file_in_the_release_is_removed(release: Release) -> None:
    facts = in_place(release)
    files = dict(facts.releases[release.revision])
    files["scripts/evil.py"] = PathFact("file", 0o755, "alice", "alice", "1" * 64)
    p = plan(release, dataclasses.replace(facts, releases={release.revision: files}))
    assert p.release_remove == ["scripts/evil.py"]


def test_wrong_modes_and_planted_links_are_fixed(release: Release) -> None:
    facts = in_place(release)
    log_dir = next(d for d in release.dirs if d.path.endswith("/logs"))
    lock = next(f for f in release.job_files if f.path.endswith(".lock"))
    paths = dict(facts.paths)
    paths[log_dir.path] = PathFact("dir", 0o777, "alice", "alice")
    paths[lock.path] = PathFact("link", 0o777, "alice", "alice")
    p = plan(release, dataclasses.replace(facts, paths=paths))
    assert [(c.path, c.summary) for c in p.changes] == [
        (log_dir.path, "mode 0777 -> 0750"),
        (lock.path, "is a symlink: replace it with a file (never followed)"),
    ]


def test_a_block_of_ours_for_a_user_no_longer_declared_is_removed(release: Release) -> None:
    facts = in_place(release)
    old_block = release.crontab_blocks["alice"]
    crontabs = dict(facts.crontabs)
    crontabs["bob"] = CrontabFact("# bob's\n" + old_block)
    p = plan(release, dataclasses.replace(facts, crontabs=crontabs))
    [cc] = p.crontab_changes
    assert cc.user == "bob" and cc.after == "# bob's\n"


def test_broken_markers_and_unreadable_crontabs_are_errors(release: Release) -> None:
    facts = in_place(release, crontab="")
    broken = dataclasses.replace(facts, crontabs={"alice": CrontabFact("# BEGIN deployer p/dev\n")})
    assert plan(release, broken).errors == [
        "crontab of alice: the crontab has '# BEGIN deployer p/dev' without its END marker (line 1); "
        "repair or remove the block by hand (crontab -e) and run again"]
    unreadable = dataclasses.replace(facts, crontabs={"alice": CrontabFact(None, "must be privileged to use -u")})
    assert plan(release, unreadable).errors == ["cannot read the crontab of alice: must be privileged to use -u"]


def test_no_cron_daemon_is_a_warning_for_plan(release: Release) -> None:
    p = plan(release, dataclasses.replace(in_place(release), cron_running=False))
    assert p.empty
    assert p.warnings == ["no cron daemon is running on this target: the jobs will not run until one is started"]


def test_the_crontab_block_not_the_link_says_which_revision_is_live(release: Release) -> None:
    """An apply killed between its crontab switch and the move of ``current``: cron runs the
    new release (its block says so), the link still names the old one. The live revision is
    the block's, and the plan only moves the link."""
    block = release.crontab_blocks["alice"]
    crontabs = {"alice": CrontabFact(FOREIGN + block)}
    assert live_revision(crontabs, "0ld", "p", "dev") == release.revision
    assert live_revision({"alice": CrontabFact(FOREIGN)}, "0ld", "p", "dev") == "0ld"  # no block: the link
    other = block.replace(f"rev={release.revision}", "rev=0ther")
    mixed = {"alice": CrontabFact(block), "bob": CrontabFact(other)}
    assert live_revision(mixed, "0ld", "p", "dev") == "0ld"  # users disagree: not one revision
    broken = {"alice": CrontabFact(block + block)}
    assert live_revision(broken, "0ld", "p", "dev") == "0ld"

    p = plan(release, dataclasses.replace(in_place(release), current_link="0ld"))
    [change] = p.changes
    assert change.kind == "current" and "which cron already runs (it still names 0ld)" in change.summary
    assert p.set_current and not p.crontab_changes and p.bundle()["release"] is None
