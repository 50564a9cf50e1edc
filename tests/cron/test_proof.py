"""The proof cannot lie (issue 12, class 5): verify compares our crontab block byte for byte
with the one the live release installs, through backups and rollbacks.

A hand edit inside our block is kept in the backup of the next apply (for people: the
crontab as it was); a rollback must not bring it back, and verify must not pass it.
"""

from __future__ import annotations

import pytest

from tests.conftest import BLOCK_USER, Project, read_crontab, write_crontab
from tests.cron.test_lifecycle import live, version

pytestmark = pytest.mark.cron


def test_a_hand_edit_inside_our_block_survives_neither_backup_nor_rollback(project: Project, user_crontab: str,
                                                                           cron_daemon: int) -> None:
    version(project, 1)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    v1, pristine = live(project), read_crontab(BLOCK_USER) or ""
    # A person edits our block by hand: the job now runs every minute.
    edited = pristine.replace("*/5 * * * *", "* * * * *")
    assert edited != pristine
    write_crontab(BLOCK_USER, edited)
    assert project.deployer("verify", "dev").exit_code == 1

    version(project, 2)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0  # its backup holds the edited crontab
    back = project.deployer("rollback", "dev", "--yes")
    assert back.exit_code == 0, back
    assert live(project) == v1
    assert read_crontab(BLOCK_USER) == pristine, "the rollback brought back a hand edit of our block"
    verified = project.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    assert f"pass crontab      the crontab of {BLOCK_USER} holds the block of revision {v1}" in verified.stdout

    # Edited again while held at v1: verify compares with what v1 installs, byte for byte.
    write_crontab(BLOCK_USER, pristine.replace("\n# END", " \n# END"))  # one trailing space
    held = project.deployer("verify", "dev")
    assert held.exit_code == 1, held
    assert (f"fail crontab      the crontab of {BLOCK_USER} does not hold the block revision {v1} installs, byte for byte"
            in held.stdout), held
