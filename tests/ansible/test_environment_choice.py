"""Which declaration and environment a playbook task uses (deployer/ansible/host.py). Pure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployer.ansible.host import declaration_file, environment_name
from deployer.config.load import load_project
from deployer.errors import InvalidInput

pytestmark = pytest.mark.ansible


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "tasks").mkdir()
    (tmp_path / "deployer.yml").write_text(
        "project: demo\njobs:\n  nightly: {command: /bin/true, schedule: '@daily'}\nenvironments:\n"
        "  dev: {inventory: inventories/dev}\n  prod: {inventory: inventories/prod}\n  prod2: {inventory: inventories/prod}\n"
        "  recette: {inventory: inventories/recette/hosts.yml}\n")
    for env in ("dev", "prod", "recette"):
        (tmp_path / "inventories" / env).mkdir(parents=True)
        (tmp_path / "inventories" / env / "hosts.yml").write_text("all:\n  hosts:\n    h1: {ansible_connection: local}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("sources, expected", [
    (["inventories/dev"], "dev"),                      # -i inventories/dev
    (["inventories/dev/hosts.yml"], "dev"),            # -i the file inside the environment's folder
    (["inventories/recette/hosts.yml"], "recette"),    # an environment whose inventory is a file
    (["inventories", "inventories/dev"], "dev"),       # -i the parent folder: the host's inventory_dir decides
])
def test_the_environment_whose_inventory_ansible_reads(project: Path, sources: list[str], expected: str) -> None:
    assert environment_name(load_project("deployer.yml"), None, [str(project / s) for s in sources]) == expected


@pytest.mark.parametrize("sources, why", [
    (["elsewhere"], "is not the inventory of any environment"),
    (["inventories/prod"], "belongs to several environments (prod, prod2)"),
])
def test_an_unclear_environment_says_how_to_name_it(project: Path, sources: list[str], why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        environment_name(load_project("deployer.yml"), None, [str(project / s) for s in sources])
    message = str(caught.value)
    assert message.startswith("deployer.yml: environments: cannot tell which environment to deploy: ") and why in message
    assert message.endswith("set the variable deployer_env (-e deployer_env=NAME, or in group_vars)")


def test_a_named_environment_wins_and_must_exist(project: Path) -> None:
    p = load_project("deployer.yml")
    assert environment_name(p, "prod2", [str(project / "inventories/dev")]) == "prod2"
    with pytest.raises(InvalidInput, match=r"unknown environment 'nope' \(declared: dev, prod, prod2, recette\)"):
        environment_name(p, "nope", [])


def test_the_declaration_is_found_as_the_cli_finds_it(project: Path) -> None:
    assert declaration_file(None, {}) == "deployer.yml"
    assert declaration_file(None, {"DEPLOYER_FILE": "other.yml"}) == "other.yml"
    assert declaration_file(str(project / "deployer.yml"), {}) == "deployer.yml"  # shown as the CLI shows it
    assert declaration_file("/elsewhere/deployer.yml", {}) == "/elsewhere/deployer.yml"
    assert os.getcwd() == str(project)
