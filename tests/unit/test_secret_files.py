"""{secret: {file: ...}} reads only files inside the project folder (issue 12, class 3): a
declaration cannot ship a file of the controller (an SSH key, cloud credentials) into a
target's env file, not by an absolute path, '~' or '..' (tests/bad_inputs/183-184) and not
through a link planted in the project (here, for real). The operator, and only the operator,
allows other folders with $DEPLOYER_SECRET_DIRS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.config.inventory import load_inventory
from deployer.config.load import load_project
from deployer.core.render import render

DECLARATION = """project: demo
jobs:
  hello:
    command: /bin/true
    schedule: "*/5 * * * *"
    env:
      TOKEN: {secret: {file: SECRET}}
environments:
  dev:
    inventory: inventories/dev
"""
PRIVATE = "-----BEGIN OPENSSH PRIVATE KEY----- the operator's own key"


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "inventories" / "dev").mkdir(parents=True)
    (root / "inventories" / "dev" / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    (root / "secrets").mkdir()
    keys = tmp_path / "operator-ssh"  # stands for ~/.ssh: outside the project
    keys.mkdir()
    (keys / "id_ed25519").write_text(PRIVATE + "\n")
    return root


def _deployer(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DEPLOYER_SECRET_DIRS"}
    environ.update(env, HOME=str(root.parent), DEPLOYER_PROJECT_CACHE="0")
    return subprocess.run([sys.executable, "-m", "deployer", "--no-color", "-f", str(root / "deployer.yml"), *args],
                          capture_output=True, text=True, env=environ, timeout=120, check=False)


def test_a_link_planted_in_the_project_does_not_lead_out_of_it(project: Path) -> None:
    # The attacker's pull request: an innocent-looking secrets/token that links to the operator's key.
    (project / "secrets" / "token").symlink_to(project.parent / "operator-ssh" / "id_ed25519")
    (project / "deployer.yml").write_text(DECLARATION.replace("SECRET", "secrets/token"))
    for command in (["validate"], ["render", "dev"]):
        result = _deployer(project, *command)
        assert result.returncode == 2, result
        assert (f"error: {project}/deployer.yml:7: jobs.hello.env.TOKEN: secret of job 'hello': secret file "
                f"'secrets/token' is a link to {project.parent}/operator-ssh/id_ed25519, outside the project folder "
                f"({project}); deployer reads secret files only inside it: copy the file into the project, or allow "
                "its folder with DEPLOYER_SECRET_DIRS=/that/folder on this machine") in result.stderr.splitlines()
        assert PRIVATE not in result.stdout + result.stderr


def test_a_link_inside_the_project_is_fine(project: Path) -> None:
    (project / "secrets" / "real").write_text("s3cret\n")
    (project / "secrets" / "token").symlink_to("real")
    (project / "deployer.yml").write_text(DECLARATION.replace("SECRET", "secrets/token"))
    assert _env_of(project, {}) == "s3cret"


def test_a_fifo_is_refused_not_waited_for(project: Path) -> None:
    os.mkfifo(project / "secrets" / "token")
    (project / "deployer.yml").write_text(DECLARATION.replace("SECRET", "secrets/token"))
    result = _deployer(project, "render", "dev")
    assert result.returncode == 2
    assert "secret file " + str(project / "secrets" / "token") + " cannot be read: not a regular file" in result.stderr


@pytest.mark.parametrize("spelt", ["ABS/id_ed25519", "../operator-ssh/id_ed25519", "~/operator-ssh/id_ed25519"])
def test_the_operator_allows_a_folder_with_deployer_secret_dirs(project: Path, spelt: str) -> None:
    folder = project.parent / "operator-ssh"
    (project / "deployer.yml").write_text(DECLARATION.replace("SECRET", spelt.replace("ABS", str(folder))))
    refused = _deployer(project, "validate")
    assert refused.returncode == 2 and "is outside the project folder" in refused.stderr
    assert _env_of(project, {"DEPLOYER_SECRET_DIRS": f"/nonexistent:{folder}", "HOME": str(project.parent)}) == PRIVATE
    # Another folder allowed is not this one.
    with pytest.raises(Exception, match="outside the project folder"):
        _env_of(project, {"DEPLOYER_SECRET_DIRS": str(project.parent / "elsewhere"), "HOME": str(project.parent)})


def _env_of(root: Path, environ: dict[str, str]) -> str:
    """The TOKEN the job would get, rendered in-process with ``environ`` as the controller's environment."""
    old_home = os.environ.get("HOME")
    if "HOME" in environ:
        os.environ["HOME"] = environ["HOME"]  # '~' in a declared path is the controller user's home
    try:
        project = load_project(root / "deployer.yml")
        env = project.environment("dev")
        targets = load_inventory(env.inventory, env.inventory_shown)
        desired = render(project, env, targets[0], targets, environ=environ)
    finally:
        if old_home is not None:
            os.environ["HOME"] = old_home
    return dict(desired.jobs[0].env)["TOKEN"]
