"""The README's two commands, as written, in a fresh clone, inside pristine Debian 12 and 13
systems (minbase + python3, nothing else): what a newcomer gets (issue 11).

Each system is an overlay on a cached debootstrap (tests/harness/pristine.py); nothing the
machine has installed is visible inside, so a missing install step fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.harness.pristine import SUITES, PristineSystem, fresh_clone

pytestmark = pytest.mark.fresh

FIRST = "./install.sh && deployer apply dev --yes"  # the README's first command
CLONE = "/root/deployer"
USER = "alice"
# Debian's cron, started in the system unless it runs already (minbase has no pgrep).
START_CRON = "[ -s /run/crond.pid ] && kill -0 \"$(cat /run/crond.pid)\" 2>/dev/null || cron"


def readme_commands() -> list[str]:
    """The two commands of the README's "The two commands" section, as written there."""
    from tests.conftest import REPO

    text = (REPO / "README.md").read_text()
    block = re.search(r"## The two commands.*?```sh\n(.*?)```", text, re.S)
    assert block, "README.md lost its 'The two commands' section"
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_the_tier_runs_the_readme_commands_as_written() -> None:
    assert readme_commands() == [FIRST, "tests/run"]


@pytest.fixture(scope="module", params=SUITES)
def system(request: pytest.FixtureRequest) -> Iterator[PristineSystem]:
    s = PristineSystem(request.param)
    try:
        fresh_clone(s.path(CLONE))
        yield s
    finally:
        s.close()


def checks(system: PristineSystem, user: str = "root") -> dict[str, str]:
    done = system.sh("cd ~/deployer && deployer verify dev --json", user=user)
    report = json.loads(done.output[done.output.index("{"):])
    return {f"{c['name']} {c['job'] or ''}".strip(): f"{c['status']}: {c['detail']}"
            for c in report["hosts"]["localhost"]["checks"]}


def failing(found: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in found.items() if not v.startswith("pass")}


def test_first_command_as_root_installs_and_applies(system: PristineSystem) -> None:
    assert system.sh("command -v pip pip3 deployer crontab; python3 -m pip --version").exit_code != 0  # really pristine

    first = system.sh(f"cd {CLONE} && {FIRST}")
    print(first)  # kept in the report: the closing note quotes it
    assert first.exit_code == 0, first
    assert "deployer is /usr/local/bin/deployer -> /opt/deployer/bin/deployer" in first.output
    assert system.sh(f"cd {CLONE} && deployer plan dev --detailed-exitcode").exit_code == 0

    # No daemon runs in a chroot: every check passes but that one.
    found = checks(system)
    assert set(failing(found)) == {"cron-daemon"}, found
    assert found["cron-daemon"].startswith("fail"), found

    # cron started inside the system: it is this system's daemon, and the audit passes whole.
    started = system.sh(START_CRON)
    assert started.exit_code == 0, started
    found = checks(system)
    assert failing(found) == {}, found

    again = system.sh(f"cd {CLONE} && {FIRST}")
    assert again.exit_code == 0, again
    assert "nothing to change" in again.output, again

    # From CI: the venv's ansible-playbook finds deployer's plugins and Python (README, From CI).
    check = system.sh(f"cd {CLONE} && /opt/deployer/bin/ansible-playbook -i inventories/dev playbooks/apply.yml --check")
    assert check.exit_code == 0 and re.search(r"localhost\s+: ok=\d+\s+changed=0 .*failed=0", check.output), check
    audit = system.sh(f"cd {CLONE} && /opt/deployer/bin/ansible-playbook -i inventories/dev playbooks/verify.yml")
    assert audit.exit_code == 0, audit


def test_first_command_as_an_ordinary_user(system: PristineSystem) -> None:
    """After root's install (which brought cron and python3-venv), a user runs the same command
    in a clone of their own; state goes under their home."""
    assert system.sh(f"useradd -m -s /bin/bash {USER} && cp -a {CLONE} /home/{USER}/deployer && "
                     f"chown -R {USER}: /home/{USER}/deployer").exit_code == 0
    started = system.sh(START_CRON)
    assert started.exit_code == 0, started

    # A brand-new account: ~/.local/bin is not on its PATH until its next login (Debian's
    # ~/.profile adds it when it exists), and root's /usr/local/bin/deployer is. install.sh
    # says which deployer this shell would run and how to get the new one, and stops the `&&`.
    first = system.sh(f"cd ~/deployer && {FIRST}", user=USER)
    assert first.exit_code == 3, first
    assert (f"'deployer' on this shell's PATH is /usr/local/bin/deployer, not the one just installed "
            f"(/home/{USER}/.local/bin/deployer)") in first.output, first
    assert f'export PATH="/home/{USER}/.local/bin:$PATH"' in first.output, first

    # The next login shell has it: the command as written works.
    again = system.sh(f"cd ~/deployer && {FIRST}", user=USER)
    print(again)
    assert again.exit_code == 0, again
    assert f"deployer is /home/{USER}/.local/bin/deployer -> /home/{USER}/.local/share/deployer/venv/bin/deployer" in again.output
    assert system.sh("cd ~/deployer && deployer plan dev --detailed-exitcode", user=USER).exit_code == 0
    assert system.path(f"/home/{USER}/.local/share/deployer/shop-dev/current").is_symlink()
    assert f"/home/{USER}/.local/share/deployer/shop-dev/releases/" in system.sh("crontab -l", user=USER).output
    found = checks(system, user=USER)
    assert failing(found) == {}, found


def test_a_broken_install_names_the_step(system: PristineSystem) -> None:
    """No way to the package index: the step is named, with what to do, exit non-zero."""
    broken = system.sh(f"cd {CLONE} && DEPLOYER_VENV=/tmp/broken-venv DEPLOYER_BIN_DIR=/tmp/broken-bin ./install.sh",
                       env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_DEFAULT_TIMEOUT": "5"})
    print(broken)
    assert broken.exit_code == 1, broken
    assert "install.sh: FAILED: pip install deployer into /tmp/broken-venv" in broken.output, broken
    assert "what to do: check that this machine reaches the Python package index" in broken.output, broken
    assert "Traceback" not in broken.output, broken
    assert not system.path("/tmp/broken-bin/deployer").exists()

    # A bin folder that is not on the PATH: said, with the line that fixes it, exit 3.
    off_path = system.sh(f"cd {CLONE} && PATH=/usr/bin:/bin DEPLOYER_BIN_DIR=/tmp/off-path ./install.sh")
    assert off_path.exit_code == 3, off_path
    assert "install.sh: /tmp/off-path is not on this shell's PATH yet" in off_path.output, off_path
    assert 'what to do: run   export PATH="/tmp/off-path:$PATH"' in off_path.output, off_path

    as_user = system.sh("cd ~/deployer && tests/run", user=USER)
    assert as_user.exit_code == 1, as_user
    assert "tests/run: FAILED: the test tiers need root" in as_user.output, as_user


def test_second_command_installs_and_runs_the_unit_tier(system: PristineSystem) -> None:
    """tests/run as written: its whole install part (apt for every tier, incus, the test venv, the
    hosts' rootfs), then the pure unit tier (the other tiers need a booted machine's namespaces,
    users and daemons, and the oracle builds cron from source: the machine itself runs those)."""
    done = system.sh(f'cd {CLONE} && tests/run -q -p no:cacheprovider -m "not (cron or e2e or fleet or incus or ansible or oracle or fresh)"',
                     timeout=2400)
    tail = "\n".join(done.output.splitlines()[-15:])
    print(tail)
    assert done.exit_code == 0, done
    summary = re.findall(r"^=* ?(\d+ passed[^=]*?) in [\d.]+s", done.output, re.M)  # pytest's closing line
    assert summary and "failed" not in summary[-1] and "error" not in summary[-1], tail
