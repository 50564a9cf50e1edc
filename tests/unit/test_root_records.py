"""Deployed by root, a job of another user is started from root's crontab and root keeps its
run records (issue 12, class 5): what the release, plan and rollback say of it, as data.
The tier test (tests/cron/test_root_keeps_records.py) carries out the attacks for real."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deployer.config.inventory import Target
from deployer.config.load import load_project
from deployer.core.facts import CrontabFact, Facts, PathFact
from deployer.core.lifecycle import plan_rollback
from deployer.core.plan import ledger_path, plan
from deployer.core.release import Identity, Release, materialize
from deployer.core.render import render

ROOT = Identity("root", 0, "/root")
ALICE = Identity("alice", 1000, "/home/alice")


def release_for(tmp_path: Path, who: Identity, run_as: str | None) -> Release:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    (tmp_path / "tasks" / "a.py").write_text("print('a')\n")
    (tmp_path / "inv").mkdir(exist_ok=True)
    (tmp_path / "inv" / "hosts.yml").write_text("all: {hosts: {h1: {ansible_connection: local}}}\n")
    defaults = f"defaults: {{run_as: {run_as}}}\n" if run_as else ""
    (tmp_path / "deployer.yml").write_text(
        f"project: p\n{defaults}jobs:\n  a:\n    script: tasks/a.py\n    schedule: '@hourly'\n    env: {{X: '1'}}\n"
        "environments:\n  dev:\n    inventory: inv\n")
    project = load_project(tmp_path / "deployer.yml")
    target = Target("h1", "local")
    return materialize(render(project, project.environment("dev"), target, [target]), who)


def facts_for(release: Release, who: Identity, crontabs: dict[str, str | None], owner: str) -> Facts:
    """A target where ``release`` is in place, its state folder and ledger owned by ``owner``."""
    [job] = release.jobs
    paths: dict[str, PathFact | None] = {d.path: PathFact("dir", d.mode, d.owner or who.user, who.user) for d in release.dirs}
    paths.update({f.path: PathFact("file", f.mode, f.owner or who.user, who.user) for f in release.job_files})
    paths[job.state_dir] = PathFact("dir", 0o750, owner, owner)
    paths[ledger_path(job.state_dir)] = PathFact("file", 0o640, owner, owner)
    files = {f.path: PathFact("file", f.mode, f.owner or who.user, who.user, f.sha256) for f in release.files}
    return Facts(hostname="h1", identity=who, python="/usr/bin/python3", python_version="3.11",
                 deploy_home=release.deploy_home, users={"www-data": {"uid": 33, "gid": 33, "home": "/var/www"}},
                 crontabs={u: CrontabFact(t) for u, t in crontabs.items()}, paths=paths,
                 releases={release.revision: files}, current=release.revision, current_link=release.revision,
                 cron_running=True, cron_process="cron",
                 release_blocks={release.revision: dict(release.crontab_blocks)})


def test_root_starts_every_job_from_its_own_crontab_and_keeps_the_records(tmp_path: Path) -> None:
    release = release_for(tmp_path, ROOT, "www-data")
    [job] = release.jobs
    assert set(release.crontab_blocks) == {"root"}
    assert json.loads(next(f for f in release.files if f.path == "manifest.json").content)["crontab_users"] == ["root"]
    [kept] = release.records
    assert (kept.state_dir, kept.owner) == (job.state_dir, "root")
    env = next(f for f in release.files if f.path == "env/a.env")
    assert env.owner is None  # root's: the wrapper reads it, the job gets the values
    state = next(d for d in release.dirs if d.path == job.state_dir)
    assert state.owner is None and state.mode == 0o750
    # the job's log and lock stay the job user's: the wrapper opens them with that user's ids
    assert {f.owner for f in release.job_files} == {"www-data"}


@pytest.mark.parametrize(("who", "run_as"), [(ALICE, None), (ROOT, None), (ROOT, "root")])
def test_a_job_that_runs_as_the_deploying_user_has_nothing_to_keep(tmp_path: Path, who: Identity, run_as: str | None) -> None:
    release = release_for(tmp_path, who, run_as)
    assert set(release.crontab_blocks) == {who.user} and release.records == ()


def test_records_the_job_user_wrote_are_taken_over_after_the_switch(tmp_path: Path) -> None:
    release = release_for(tmp_path, ROOT, "www-data")
    [job] = release.jobs
    old_block = release.crontab_blocks["root"]
    # As a release from before left it: the entry in www-data's crontab, the records www-data's.
    before = facts_for(release, ROOT, {"root": None, "www-data": "MAILTO=ops\n" + old_block}, "www-data")
    p = plan(release, before)
    assert [(c.path, c.summary) for c in p.changes if c.kind == "records"] == [
        (job.state_dir, "root keeps the run records from now on (www-data wrote them and could forge them)")]
    assert p.bundle()["records"] == [{"path": job.state_dir, "owner": "root"}]
    assert {c.user: c.after for c in p.crontab_changes} == {"root": old_block, "www-data": "MAILTO=ops\n"}

    from deployer.core.checks import checks

    [trust] = [c for c in checks(p) if c.name == "trust"]
    assert trust.status == "warn" and "a by www-data" in trust.detail

    done = facts_for(release, ROOT, {"root": old_block, "www-data": "MAILTO=ops\n"}, "root")
    p = plan(release, done)
    assert p.empty and p.bundle()["records"] == []
    [trust] = [c for c in checks(p) if c.name == "trust"]
    assert trust.status == "pass" and trust.detail.startswith("root keeps the run records of every job")

    # A ledger left the user's inside a folder already root's (an apply cut mid-way): taken again.
    paths = dict(done.paths)
    paths[ledger_path(job.state_dir)] = PathFact("file", 0o640, "www-data", "www-data")
    assert plan(release, dataclasses.replace(done, paths=paths)).bundle()["records"] == [
        {"path": job.state_dir, "owner": "root"}]


def test_a_rollback_to_a_release_run_by_the_users_crontab_hands_the_records_back(tmp_path: Path) -> None:
    release = release_for(tmp_path, ROOT, "www-data")
    [job] = release.jobs
    new_block = release.crontab_blocks["root"]
    old_rev = "0ld0ld0ld0ld"
    old_block = new_block.replace(release.revision, old_rev)
    facts = facts_for(release, ROOT, {"root": new_block, "www-data": "MAILTO=ops\n"}, "root")
    facts = dataclasses.replace(
        facts, releases={**facts.releases, old_rev: facts.releases[release.revision]},
        release_blocks={**facts.release_blocks, old_rev: {"www-data": old_block}},
        backups=[{"revision": old_rev, "to": release.revision, "kind": "apply", "name": "b1",
                  "crontabs": {"www-data": "MAILTO=ops\n" + old_block, "root": None}}])
    p = plan_rollback(release, facts)
    assert not p.errors, p.errors
    assert p.params is not None and p.params["records"] == [{"path": job.state_dir, "owner": "www-data"}]
    assert ("records", job.state_dir) in [(c.kind, c.path) for c in p.changes]
    assert {c.user: c.after for c in p.crontab_changes} == {"root": "", "www-data": "MAILTO=ops\n" + old_block}
