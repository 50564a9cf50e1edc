"""No digest of a secret where others read it (issue 12, class 3: the manifest's part).

manifest.json and the revision (in the crontab, in folder names) are world-readable. A
SHA-256 of a 0600 env file there lets anyone test guessed secrets offline; so a file with
secrets enters neither with its real content: the manifest names it without a digest, the
revision hashes it with every secret value masked. A changed secret is still deployed: plan
compares the target's file (read by the probe) with the declaration's own digest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import cast

from deployer.config.inventory import load_inventory
from deployer.config.load import load_project
from deployer.core.desired import DesiredState
from deployer.core.facts import parse_facts
from deployer.core.plan import plan
from deployer.core.release import Identity, Release, materialize
from deployer.core.render import render
from deployer.remote.messages import ProbeAnswer

REPO = Path(__file__).resolve().parents[2]
ROOT = Identity("root", 0, "/root")


def release_with(secret: str, env_name: str = "prod", host: str = "web1") -> Release:
    project = load_project(REPO / "deployer.yml")
    env = project.environment(env_name)
    targets = load_inventory(env.inventory, env.inventory_shown)
    target = next(t for t in targets if t.name == host)
    return materialize(render(project, env, target, targets, environ={"SHOP_SMTP_PASSWORD": secret}), ROOT)


def test_the_manifest_holds_no_digest_of_a_file_with_secrets() -> None:
    release = release_with("hunter2")
    manifest = next(f for f in release.files if f.path == "manifest.json").content
    secret_files = [f for f in release.files if f.secret]
    assert secret_files, "the example declares a secret: its env file must be here"
    for f in secret_files:
        assert json.loads(manifest)["files"][f.path]["sha256"] is None
        assert f.sha256.encode() not in manifest
        # nor any digest a guesser could recompute from the file as it is
        assert hashlib.sha256(f.content).hexdigest().encode() not in manifest
    assert b"hunter2" not in manifest


def test_the_revision_does_not_depend_on_a_secrets_value() -> None:
    weak, strong = release_with("hunter2"), release_with("Kq8#vR2!pZ")
    assert weak.revision == strong.revision
    # A plain (non-secret) value of the same env file still makes a new revision.
    desired = render_desired()
    job = next(j for j in desired.jobs if j.secret_names)
    plain = next(n for n, _ in job.env if n not in job.secret_names)
    changed = replace(job, env=tuple((n, v + "-changed" if n == plain else v) for n, v in job.env))
    other = materialize(replace(desired, jobs=tuple(changed if j is job else j for j in desired.jobs)), ROOT)
    assert other.revision != weak.revision


def render_desired() -> DesiredState:
    project = load_project(REPO / "deployer.yml")
    env = project.environment("prod")
    targets = load_inventory(env.inventory, env.inventory_shown)
    target = next(t for t in targets if t.name == "web1")
    return render(project, env, target, targets, environ={"SHOP_SMTP_PASSWORD": "hunter2"})


def test_a_changed_secret_is_still_deployed() -> None:
    """The target holds the release of the old secret (same revision): plan restores the env file."""
    old, new = release_with("hunter2"), release_with("Kq8#vR2!pZ")
    on_target = {f.path: {"type": "file", "mode": f.mode, "owner": f.owner or "root", "group": "root", "sha256": f.sha256}
                 for f in old.files}
    facts = parse_facts(cast(ProbeAnswer, {"hostname": "web1", "user": "root", "uid": 0, "home": "/root", "python": "python3",
                         "python_version": "3.11", "deploy_home": old.deploy_home, "users": {"www-data": {"uid": 33}},
                         "crontabs": {}, "paths": {}, "releases": {old.revision: {"files": on_target}},
                         "current": old.revision}), old.project, old.env)
    changes = [c for c in plan(new, facts).changes if c.kind == "release"]
    secret_paths = {f.path for f in new.files if f.secret}
    assert secret_paths and {c.path.rsplit("/", 2)[-2] + "/" + c.path.rsplit("/", 1)[-1] for c in changes} == secret_paths
    assert all("a secret changed" in c.summary for c in changes)
    assert not [c for c in plan(old, facts).changes if c.kind == "release"]
