"""The proof cannot lie (issue 12, class 5): verify compares our crontab block byte for byte
with the one the live release installs, through backups and rollbacks.

A hand edit inside our block is kept in the backup of the next apply (for people: the
crontab as it was); a rollback must not bring it back, and verify must not pass it.
"""

from __future__ import annotations

import pytest

from tests.conftest import TEST_USER, Project, read_crontab, write_crontab
from tests.cron.test_crontab_tier import declare
from tests.cron.test_lifecycle import live, version
from tests.cron.test_root_paths import as_user

pytestmark = pytest.mark.cron


def test_a_hand_edit_inside_our_block_survives_neither_backup_nor_rollback(project: Project, user_crontab: str,
                                                                           cron_daemon: int) -> None:
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    v1, pristine = live(project), read_crontab(TEST_USER) or ""
    # A person edits our block by hand: the job now runs every minute.
    edited = pristine.replace("*/5 * * * *", "* * * * *")
    assert edited != pristine
    write_crontab(TEST_USER, edited)
    assert project.deployer("verify", "dev").exit_code == 1

    version(project, 2)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0  # its backup holds the edited crontab
    back = project.deployer("rollback", "dev", "--yes")
    assert back.exit_code == 0, back
    assert live(project) == v1
    assert read_crontab(TEST_USER) == pristine, "the rollback brought back a hand edit of our block"
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    assert f"pass crontab      the crontab of {TEST_USER} holds the block of revision {v1}" in verified.stdout

    # Edited again while held at v1: verify compares with what v1 installs, byte for byte.
    write_crontab(TEST_USER, pristine.replace("\n# END", " \n# END"))  # one trailing space
    held = project.deployer("verify", "dev")
    assert held.exit_code == 1, held
    assert (f"fail crontab      the crontab of {TEST_USER} does not hold the block revision {v1} installs, byte for byte"
            in held.stdout), held


def test_verify_says_whose_word_the_run_records_are(project: Project, user_crontab: str, cron_daemon: int) -> None:
    """The wrapper runs as the job's user and writes the ledger as that user, so that user can
    append a `success` line of its own (done here, for real). Until root keeps the records,
    verify says so instead of implying more; without root, the boundary is the user deployer is."""
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    ledger = "/var/lib/deployer/demo-dev/state/hello/ledger.jsonl"
    forged = ('{"run_id": "f0f0f0f0f0f0f0f0", "job": "hello", "start": "2999-01-01T00:00:00.000Z", '
              '"end": "2999-01-01T00:00:01.000Z", "outcome": "success", "exit_code": 0}')
    as_user(f"echo '{forged}' >> {ledger}")
    verified = project.deployer("verify", "dev")
    assert (f"warn trust runs are recorded by the jobs' own users (hello by {TEST_USER}), who can forge them"
            in " ".join(verified.stdout.split())), verified

    declare(project, "  hello:\n    script: tasks/hello.py\n    schedule: '*/5 * * * *'\n", become=True)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    as_self = project.deployer("verify", "dev")
    assert (f"pass trust deployer is {TEST_USER} here, not root: every job, its records and this audit are as "
            f"trustworthy as {TEST_USER}") in " ".join(as_self.stdout.split()), as_self
