"""playbooks/apply.yml and verify.yml into a real Incus container over Ansible's
``community.general.incus`` connection (the collection comes with PyPI's ``ansible``
package; galaxy is not reachable here). Skipped, saying why, when the collection or the
Incus tier (root, incusd) is not available.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.ansible.conftest import ANSIBLE_PLAYBOOK, PLAYBOOKS, QUIET_JOBS, PlaybookResult, community_general
from tests.conftest import REPO
from tests.incus.conftest import IncusProject, container, incus_env, incus_project  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.ansible, pytest.mark.incus]

PROJECT = "ansibledemo"  # not "demo": the cron tier deploys that one on this machine itself


def playbook(p: IncusProject, name: str, *args: str) -> PlaybookResult:
    env = {k: v for k, v in p.env().items() if not k.startswith("ANSIBLE_")}
    env.update(PYTHONPATH=str(REPO), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "inventories/dev", str(PLAYBOOKS / f"{name}.yml"), *args], cwd=p.root,
                          env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    return PlaybookResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def incus_ansible(incus_project: IncusProject) -> IncusProject:  # noqa: F811
    if not community_general():
        pytest.skip("the community.general collection (community.general.incus) is not installed: "
                    "pip install 'ansible>=12,<13' (ansible-galaxy cannot reach its server here)")
    p = incus_project
    p.extra_env["PYTHONPATH"] = str(REPO)
    p.write("deployer.yml", f"project: {PROJECT}\ndefaults:\n  timeout: 1m\njobs:\n{QUIET_JOBS}\n"
                            "environments:\n  dev:\n    inventory: inventories/dev\n")
    return p


def test_apply_check_and_verify_into_a_container(incus_ansible: IncusProject, container: str) -> None:  # noqa: F811
    p = incus_ansible
    p.inventory({"web": {"ansible_host": container}})

    checked = playbook(p, "apply", "--check", "--diff")
    assert checked.exit_code == 0 and checked.changed() == {"web": 1}, checked
    assert "+++ after: crontab of root (planned)" in checked.stdout, checked.stdout
    assert p.crontab(container) == "" and p.exec(container, "test", "-e", f"/var/lib/deployer/{PROJECT}-dev").returncode == 1

    applied = playbook(p, "apply")
    assert applied.exit_code == 0 and applied.changed() == {"web": 1}, applied
    assert f"# BEGIN deployer {PROJECT}/dev" in p.crontab(container)

    again = playbook(p, "apply", "--check")
    assert again.exit_code == 0 and again.changed() == {"web": 0}, again
    plan = p.deployer("plan", "dev", "--detailed-exitcode")  # the CLI's own incus transport agrees
    assert plan.exit_code == 0, plan
    verified = playbook(p, "verify")
    assert verified.exit_code == 0 and verified.recap["web"]["failed"] == 0, verified
