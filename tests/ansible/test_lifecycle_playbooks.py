"""playbooks/rollback.yml and destroy.yml with the real ansible-playbook: the CLI's plans,
over Ansible's connection; check mode writes nothing; the CLI agrees afterwards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import QUIET_JOBS
from tests.ansible.test_playbooks import DEPLOY_HOME, project_on

pytestmark = [pytest.mark.ansible, pytest.mark.fleet]


def test_rollback_and_destroy_playbooks(fleet_factory: Any, tmp_path: Path) -> None:
    p = project_on(fleet_factory, tmp_path, n=1)
    p.th.exec_on("h1", ["sh", "-c", "echo '0 4 * * * /bin/echo mine' | crontab -"])
    assert p.playbook("apply").exit_code == 0
    v1 = p.crontab("h1")
    p.declare(QUIET_JOBS.replace('"0 3 1 1 *"', '"0 5 1 1 *"'))
    assert p.playbook("apply").exit_code == 0
    v2 = p.crontab("h1")
    assert v2 != v1

    checked = p.playbook("rollback", "--check", "--diff")
    assert checked.exit_code == 0 and checked.changed() == {"h1": 1}, checked
    assert "-0 5 1 1 * " in checked.stdout and "+0 3 1 1 * " in checked.stdout, checked.stdout
    assert p.crontab("h1") == v2  # check mode: nothing written

    rolled = p.playbook("rollback")
    assert rolled.exit_code == 0 and rolled.changed() == {"h1": 1}, rolled
    assert p.crontab("h1") == v1
    verified = p.deployer("verify", "dev")  # the CLI audits the rolled-back host and passes (with a warning)
    assert verified.exit_code == 0 and "warn rollback" in verified.stdout, verified

    assert p.playbook("destroy", "--check").changed() == {"h1": 1}
    assert p.crontab("h1") == v1
    destroyed = p.playbook("destroy")
    assert destroyed.exit_code == 0 and destroyed.changed() == {"h1": 1}, destroyed
    assert p.crontab("h1") == "0 4 * * * /bin/echo mine\n"  # only the line we do not own is left
    assert p.th.exec_on("h1", ["test", "-e", f"{DEPLOY_HOME}/releases"]).returncode == 1
    assert p.playbook("destroy").changed() == {"h1": 0}
