"""rollback, destroy and drift with the real crontab binary and the real cron daemon.

deployer runs as root and installs the jobs into the test user's crontab (``run_as``),
with foreign lines around our block that must come out byte for byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import BLOCK_USER, TEST_USER, Project, read_crontab, write_crontab
from tests.cron.test_crontab_tier import FOREIGN_AFTER, FOREIGN_BEFORE, declare

pytestmark = pytest.mark.cron

HOME = Path("/var/lib/deployer/demo-dev")


def version(project: Project, n: int) -> None:
    """Version n of the declaration: the script prints n, the schedule and env change with n."""
    project.write("tasks/hello.py", f"print('version {n}')\n")
    declare(project, f"""\
  hello:
    script: tasks/hello.py
    schedule: "*/{n + 4} * * * *"
    env: {{GREETING: "v{n}"}}
""")


def live(project: Project) -> str:
    return os.readlink(HOME / "current").rsplit("/", 1)[-1]


def test_rollback_restores_the_previous_release_and_verify_passes(project: Project, user_crontab: str,
                                                                   cron_daemon: int) -> None:
    write_crontab(BLOCK_USER, FOREIGN_BEFORE)
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    v1_crontab, v1 = read_crontab(BLOCK_USER), live(project)
    version(project, 2)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    v2 = live(project)
    assert v2 != v1
    # A person adds a line after the deploy: the rollback must keep it.
    write_crontab(BLOCK_USER, (read_crontab(BLOCK_USER) or "") + FOREIGN_AFTER)

    listed = project.deployer("rollback", "dev", "--list", "--json")
    assert listed.exit_code == 0, listed
    [entry] = json.loads(listed.stdout)["hosts"]["localhost"]["history"]
    assert entry["revision"] == v1 and entry["by"] == v2 and entry["kept"] is True

    back = project.deployer("rollback", "dev", "--yes")
    assert back.exit_code == 0, back
    assert f"roll back from {v2} to {v1}" in back.stdout
    assert live(project) == v1
    assert read_crontab(BLOCK_USER) == (v1_crontab or "") + FOREIGN_AFTER
    assert (HOME / "current/scripts/hello.py").read_text() == "print('version 1')\n"
    assert '"v1"' in (HOME / "current/env/hello.env").read_text()

    # The audit checks the target against the revision it was rolled back to, and says so.
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    assert f"warn rollback     held at {v1} by a rollback" in verified.stdout
    assert f"pass crontab      the crontab of {BLOCK_USER} holds the block of revision {v1}" in verified.stdout
    assert project.deployer("verify", "dev", "--strict").exit_code == 1

    # plan says how to go forward; apply does, and the hold is over.
    planned = project.deployer("plan", "dev")
    assert f"apply moves it forward to {v2}" in planned.stdout, planned
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert live(project) == v2 and not (HOME / "rollback.json").exists()
    assert read_crontab(BLOCK_USER) == FOREIGN_BEFORE + (v1_crontab or "")[len(FOREIGN_BEFORE):].replace(v1, v2).replace(
        "*/5 *", "*/6 *") + FOREIGN_AFTER
    assert project.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0


def test_rollback_to_a_named_revision_and_its_refusals(project: Project, user_crontab: str) -> None:
    version(project, 1)
    none_yet = project.deployer("rollback", "dev", "--yes")
    assert none_yet.exit_code == 1 and "nothing of this project/environment is deployed here" in none_yet.stdout, none_yet
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    v1 = live(project)
    first_only = project.deployer("rollback", "dev", "--yes")
    assert first_only.exit_code == 1 and "no earlier revision is recorded here" in first_only.stdout, first_only
    for n in (2, 3):
        version(project, n)
        assert project.deployer("apply", "dev", "--yes").exit_code == 0
    unknown = project.deployer("rollback", "dev", "--to", "ffffff", "--yes")
    assert unknown.exit_code == 1 and "revision ffffff is unknown here" in unknown.stdout, unknown
    assert project.deployer("rollback", "dev", "--to", v1[:6], "--yes").exit_code == 0
    assert live(project) == v1 and "*/5 * * * *" in (read_crontab(BLOCK_USER) or "")

    # A release edited on the target is not brought back.
    version(project, 4)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    (HOME / f"releases/{v1}/scripts/hello.py").write_text("print('tampered')\n")
    refused = project.deployer("rollback", "dev", "--to", v1, "--yes")
    assert refused.exit_code == 1 and "scripts/hello.py (modified)" in refused.stdout, refused


def test_destroy_keeps_foreign_lines_and_history_unless_purged(project: Project, user_crontab: str) -> None:
    write_crontab(BLOCK_USER, FOREIGN_BEFORE)
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    write_crontab(BLOCK_USER, (read_crontab(BLOCK_USER) or "") + FOREIGN_AFTER)
    ran = project.deployer("run", "dev", "hello")
    assert ran.exit_code == 0 and "version 1" in ran.stdout, ran
    log = HOME / "logs/hello.log"

    refused = project.deployer("destroy", "dev")  # no terminal, no --yes
    assert refused.exit_code == 2 and (HOME / "current").exists()

    gone = project.deployer("destroy", "dev", "--yes")
    assert gone.exit_code == 0, gone
    assert read_crontab(BLOCK_USER) == FOREIGN_BEFORE + FOREIGN_AFTER
    assert not (HOME / "releases").exists() and not (HOME / "current").exists()
    assert "version 1" in log.read_text()  # the log and the run history stay
    assert (HOME / "state/hello/ledger.jsonl").read_text().count("\n") == 1
    again = project.deployer("destroy", "dev", "--yes", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["hosts"]["localhost"]["status"] == "ok", again

    purged = project.deployer("destroy", "dev", "--yes", "--purge-logs")
    assert purged.exit_code == 0, purged
    assert not HOME.exists() and not log.exists()
    assert read_crontab(BLOCK_USER) == FOREIGN_BEFORE + FOREIGN_AFTER


def test_hand_edits_are_shown_as_drift_restored_and_kept(project: Project, user_crontab: str) -> None:
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    script = HOME / "current/scripts/hello.py"
    script.write_text("print('version 1')\nprint('hot fix by hand')\n")
    text = read_crontab(BLOCK_USER) or ""
    write_crontab(BLOCK_USER, text.replace("*/5 * * * *", "*/1 * * * *"))

    planned = project.deployer("plan", "dev")
    assert "(modified on the target: drift, edited by hand" in planned.stdout, planned
    assert "-print('hot fix by hand')" in planned.stdout  # the diff of the script, target -> declared
    assert "drift: the managed block was edited by hand" in planned.stdout and "*/1 * * * *" in planned.stdout
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 1
    assert "fail release" in verified.stdout and "restore scripts/hello.py (modified on the target: drift" in verified.stdout, verified
    assert "fail crontab" in verified.stdout and "edited by hand" in verified.stdout

    applied = project.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert script.read_text() == "print('version 1')\n" and read_crontab(BLOCK_USER) == text
    [kept] = list((HOME / "backups").glob("*/drift/*/scripts/hello.py"))
    assert "hot fix by hand" in kept.read_text()
    # The hand-edited crontab is in the backup of that apply, too.
    latest = sorted((HOME / "backups").iterdir())[-1]
    assert "*/1 * * * *" in json.loads((latest / "index.json").read_text())["crontabs"][BLOCK_USER]


def test_a_job_kept_by_hand_is_adopted_not_run_twice(project: Project, user_crontab: str) -> None:
    hand = "*/5 * * * * /usr/bin/php /srv/shop/hello.php >> /srv/shop/logs/hello.log 2>&1\n"
    write_crontab(TEST_USER, FOREIGN_BEFORE + hand + FOREIGN_AFTER)
    version(project, 1)
    declared = (project.root / "deployer.yml").read_text()  # hello.py replaces the hand-made hello.php
    project.write("deployer.yml", declared.replace("    script: tasks/hello.py\n",
                                                   "    script: tasks/hello.py\n    legacy_scripts: [/srv/shop/hello.php]\n"))

    planned = project.deployer("plan", "dev")
    assert "warning: job 'hello' would run twice: line 7 of the crontab of deployer-test" in planned.stdout, planned
    assert project.deployer("apply", "dev", "--yes").exit_code == 0  # without --adopt: installed, line kept, warned
    text = read_crontab(TEST_USER) or ""
    assert hand in text
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 1 and "fail duplicate" in verified.stdout and "it runs twice" in verified.stdout

    adopted = project.deployer("apply", "dev", "--yes", "--adopt")
    assert adopted.exit_code == 0, adopted
    assert "adopt job 'hello': remove hand-made line 7" in adopted.stdout
    assert read_crontab(TEST_USER) == text.replace(hand, "")  # that line only; every other byte stays
    latest = sorted((HOME / "backups").iterdir())[-1]
    assert hand in (latest / f"crontab.{TEST_USER}").read_text()  # the removed line is kept in the backup
    assert project.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0


def test_a_renamed_job_moves_its_entry_and_history(project: Project, user_crontab: str) -> None:
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert project.deployer("run", "dev", "hello").exit_code == 0
    renamed = (project.root / "deployer.yml").read_text().replace("  hello:\n", "  greet:\n    previous_ids: [hello]\n")
    project.write("deployer.yml", renamed)

    planned = project.deployer("plan", "dev")
    assert f"move {HOME}/state/hello here (job renamed to 'greet'" in planned.stdout, planned
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    text = read_crontab(BLOCK_USER) or ""
    assert text.count("/run ") == 1 and text.rstrip().splitlines()[-2].endswith("/run greet"), text
    assert not (HOME / "state/hello").exists()
    assert (HOME / "state/greet/ledger.jsonl").read_text().count("\n") == 1  # the history followed
    assert "version 1" in (HOME / "logs/greet.log").read_text() and not (HOME / "logs/hello.log").exists()
    assert project.deployer("plan", "dev", "--detailed-exitcode").exit_code == 0

    # An entry of ours whose id is no longer declared (and not renamed) is removed, not left behind.
    project.write("deployer.yml", renamed.replace("  greet:\n", "  other:\n"))
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    text = read_crontab(BLOCK_USER) or ""
    assert "/run other" in text and "/run greet" not in text


def test_previous_ids_must_be_ids_that_no_longer_exist(project: Project) -> None:
    version(project, 1)
    project.write("deployer.yml", (project.root / "deployer.yml").read_text().replace(
        "  hello:\n", "  hello:\n    previous_ids: [hello]\n"))
    result = project.deployer("validate")
    assert result.exit_code == 2
    assert "deployer.yml:7: jobs.hello.previous_ids: 'hello' is the id of a declared job" in result.stderr, result
