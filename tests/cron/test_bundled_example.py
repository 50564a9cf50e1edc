"""The bundled example, applied as the README says, to this machine as an ordinary user.

The repository's own deployer.yml, tasks/ and inventories are copied; only the dev
inventory is changed to become the dedicated test user, so the machine's own crontab is
not touched. Every enabled job is then run through the wrapper and must do its work.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_USER, Project, read_crontab

pytestmark = pytest.mark.cron


def test_bundled_example_applies_verifies_and_its_jobs_work(tmp_path: Path, user_crontab: str, test_user: object) -> None:
    root = tmp_path / "example"
    root.mkdir()
    shutil.copy(REPO / "deployer.yml", root)
    shutil.copytree(REPO / "tasks", root / "tasks")
    shutil.copytree(REPO / "inventories", root / "inventories")
    (root / "inventories/dev/hosts.yml").write_text(
        f"all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
        f"      ansible_become: true\n      ansible_become_user: {TEST_USER}\n")
    example = Project(root)

    assert example.deployer("validate").exit_code == 0
    first = example.deployer("apply", "dev", "--yes")
    assert first.exit_code == 0, first
    second = example.deployer("apply", "dev", "--yes", "--json")
    assert json.loads(second.stdout)["hosts"]["localhost"]["status"] == "ok"

    home = Path(test_user.pw_dir)  # type: ignore[attr-defined]
    crontab = read_crontab(TEST_USER) or ""
    for job in ("email-queue", "purge-security-data", "clean-logs", "purge-events", "seed-demo-data"):
        assert f"/run {job}\n" in crontab
    assert "db-sync" not in crontab  # declared, disabled

    release = home / ".local/share/deployer/shop-dev/current"
    shop = home / ".local/share/shop-dev"
    shutil.rmtree(shop / "data", ignore_errors=True)  # a fresh shop: seeded emails are queued, not already sent

    def run(job: str) -> str:
        done = subprocess.run(["runuser", "-u", TEST_USER, "--", "python3", str(release / "run"), job, "--trigger", "manual"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{job}: {done.stderr}\n{(shop / 'cron-logs' / (job + '.log')).read_text()}"
        return (shop / "cron-logs" / f"{job}.log").read_text()

    run("seed-demo-data")
    queued_before = sqlite3.connect(shop / "data/shop.sqlite").execute(
        "select count(*) from email_queue where status = 'queued'").fetchone()[0]
    assert queued_before > 0
    assert "sent " in run("email-queue")
    queued_after = sqlite3.connect(shop / "data/shop.sqlite").execute(
        "select count(*) from email_queue where status = 'queued'").fetchone()[0]
    assert queued_after < queued_before
    assert list((shop / "outbox").glob("*.eml"))
    run("purge-security-data")
    run("clean-logs")
    run("purge-events")
    ledgers = home / ".local/share/deployer/shop-dev/state"
    outcomes = {p.parent.name: json.loads(p.read_text().splitlines()[-1])["outcome"] for p in ledgers.glob("*/ledger.jsonl")}
    assert outcomes == dict.fromkeys(["seed-demo-data", "email-queue", "purge-security-data", "clean-logs", "purge-events"], "success")
