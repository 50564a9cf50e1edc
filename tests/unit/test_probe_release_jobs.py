"""What the probe reads back of a kept release's jobs for rollback's healthchecks checks
(deployer/remote/probe.py _release_jobs): hostile files, each value kept only of its type,
and never a ping URL or its secret segment."""

from __future__ import annotations

import json
from pathlib import Path

from deployer.remote.probe import _release_jobs


def release(tmp_path: Path, jobs: dict[str, object], alerts: dict[str, object]) -> dict[str, object]:
    for folder, files in (("jobs", jobs), ("alerts", alerts)):
        (tmp_path / folder).mkdir()
        for job, content in files.items():
            (tmp_path / folder / f"{job}.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return {str(p.relative_to(tmp_path)): {"type": "file"} for p in tmp_path.rglob("*.json")}


def test_a_release_jobs_schedule_grace_and_the_slug_it_pings(tmp_path: Path) -> None:
    spec = {"project": "shop", "env": "prod", "schedule": "0 3 * * *", "timeout": 600, "description": "Backup"}
    files = release(tmp_path, {
        "backup": spec,
        "own": {**spec, "schedule": "*/5 * * * *"},
        "odd": {**spec, "schedule": ["0"], "timeout": True, "description": 7},
        "broken": "{not json",
    }, {
        "backup": {"grace": 900, "ping": "https://hc-ping.com/pk-secret/shop-prod-backup-db1"},
        "own": {"grace": "15m", "ping": "https://hc-ping.com/5f0c2bd8-9a1e-4a8e-bb6e-0c7a3d2e9f11"},
        "odd": {"ping": "https://hc-ping.com/pk-secret/shop-prod-Odd-DB1"},
    })
    jobs = _release_jobs(str(tmp_path), files)  # type: ignore[arg-type]
    assert jobs["backup"] == {"schedule": "0 3 * * *", "timeout": 600, "description": "Backup", "grace": 900,
                              "ping_slug": "shop-prod-backup-db1"}
    # The operator's own check URL: its last segment is its secret and does not go back.
    assert jobs["own"] == {"schedule": "*/5 * * * *", "timeout": 600, "description": "Backup", "grace": None, "ping_slug": None}
    assert jobs["odd"] == {"schedule": None, "timeout": None, "description": None, "grace": None, "ping_slug": None}
    assert jobs["broken"] == {"schedule": None, "timeout": None, "description": None, "grace": None, "ping_slug": None}
    assert "pk-secret" not in json.dumps(jobs)
