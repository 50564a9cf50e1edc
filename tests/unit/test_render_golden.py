"""render + materialize of the bundled example, compared with golden files.

Set UPDATE_GOLDEN=1 to rewrite them after an intended change, and review the diff.
The run wrapper is replaced by a stub so that editing it does not churn every file here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployer.config.inventory import load_inventory
from deployer.config.load import load_project
from deployer.core import release as release_module
from deployer.core.release import Identity, materialize
from deployer.core.render import render

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
SECRET = "golden-smtp-secret"

CASES = [
    ("dev", "localhost", Identity("alice", 1000, "/home/alice")),
    ("dev", "localhost", Identity("root", 0, "/root")),
    ("prod", "web1", Identity("root", 0, "/root")),
    ("prod", "web2", Identity("root", 0, "/root")),
    ("recette", "shop-recette-web", Identity("root", 0, "/root")),
]


def rendered(env_name: str, host: str, who: Identity) -> str:
    project = load_project(REPO / "deployer.yml")
    env = project.environment(env_name)
    targets = load_inventory(env.inventory, env.inventory_shown)
    target = next(t for t in targets if t.name == host)
    desired = render(project, env, target, targets, environ={"SHOP_SMTP_PASSWORD": SECRET})
    result = materialize(desired, who)
    out = [f"# {env_name} {host} as {who.user}: revision {result.revision}, home {result.deploy_home}"]
    for job_id, why in desired.skipped:
        out.append(f"# skipped {job_id}: {why}")
    for user, block in result.crontab_blocks.items():
        out.append(f"=== crontab of {user}")
        out.append(block.rstrip("\n"))
    for d in result.dirs:
        out.append(f"=== dir {d.path} {d.mode:04o} {d.owner or '-'} {d.group or '-'}")
    for f in result.job_files:
        out.append(f"=== file {f.path} {f.mode:04o} {f.owner or '-'}")
    for rf in sorted(result.files, key=lambda f: f.path):
        out.append(f"=== release {rf.path} {rf.mode:04o} {rf.owner or '-'}")
        if not rf.path.startswith("scripts/"):
            out.append(rf.content.decode().rstrip("\n"))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize(("env_name", "host", "who"), CASES, ids=[f"{e}-{h}-{w.user}" for e, h, w in CASES])
def test_render_matches_golden(env_name: str, host: str, who: Identity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release_module, "wrapper_source", lambda: b"# the run wrapper (stub for golden files)\n")
    text = rendered(env_name, host, who)
    golden = GOLDEN / f"{env_name}-{host}-{who.user}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run with UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text()
    # The secret is in the 0600 env file of email-queue and nowhere else.
    crontab_part = text.split("=== dir", 1)[0]
    assert SECRET not in crontab_part


def test_render_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    who = Identity("alice", 1000, "/home/alice")
    assert rendered("dev", "localhost", who) == rendered("dev", "localhost", who)
