"""The real crontab binary, for a dedicated user: idempotence, foreign lines, hand edits.

deployer runs here as root and installs the jobs into the test user's crontab
(``run_as``) — the way a root deploy of www-data jobs works — and, in the ``become``
cases, connects to this machine as the test user through sudo, the way a non-root
deploy works (crontab without -u, home under ~, no chown).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from deployer.engine.session import Session
from deployer.errors import EXIT_FAILED
from tests.conftest import BLOCK_USER, CRON_PYTHON, TEST_USER, Project, read_crontab, write_crontab

pytestmark = pytest.mark.cron

FOREIGN_BEFORE = (
    "# my own jobs, kept by hand\n"
    "MAILTO=ops@example.com\n"
    "\n"
    "#Ansible: nightly backup\n"
    "0 1 * * * /usr/local/bin/backup.sh >> /var/log/backup.log 2>&1\n"
    "*/10 *  * * *   date +\\%s   # odd   spacing and an escaped percent\n"
)
FOREIGN_AFTER = "SHELL=/bin/sh\n# after our block\n@reboot echo hi\n"


def declare(project: Project, jobs: str, *, become: bool = False, env_name: str = "dev") -> None:
    """A declaration whose jobs run as the test user."""
    project.write("inventories/dev/hosts.yml", f"""\
        all:
          hosts:
            localhost:
              ansible_connection: local
              {"ansible_become: true" if become else ""}
              {"ansible_become_user: " + TEST_USER if become else ""}
        """)
    run_as = "" if become else f"  run_as: {TEST_USER}\n"
    project.write("deployer.yml", f"project: demo\ndefaults:\n{run_as}  timeout: 1m\njobs:\n{jobs}\n"
                  f"environments:\n  {env_name}:\n    inventory: inventories/dev\n")


TWO_JOBS = """\
  hello:
    description: Say hello
    script: tasks/hello.py
    args: [a b, "50%", "$(touch /tmp/pwned)"]
    schedule: "*/5 * * * *"
    env: {GREETING: hi}
  nightly:
    command: /bin/true
    schedule: "@daily"
"""


def block_lines(text: str) -> list[str]:
    start = text.index("# BEGIN deployer demo/dev")
    end = text.index("# END deployer demo/dev")
    return text[start:end].splitlines()


def test_idempotence_matrix(project: Project, user_crontab: str) -> None:
    declare(project, TWO_JOBS)
    first = project.deployer("plan", "dev", "--detailed-exitcode")
    assert first.exit_code == 3, first
    assert "+*/5 * * * * python3 /var/lib/deployer/demo-dev/releases/" in first.stdout

    applied = project.deployer("apply", "dev", "--yes", "--json")
    assert applied.exit_code == 0, applied
    report = json.loads(applied.stdout)["hosts"]["localhost"]
    assert report["status"] == "changed"
    assert report["counters"]["execs"] == 2  # one probe, one applier

    text = read_crontab(BLOCK_USER)
    assert text is not None
    lines = block_lines(text)
    assert lines[1] == "# hello: Say hello"
    assert lines[2].startswith("*/5 * * * * python3 /var/lib/deployer/demo-dev/releases/")
    assert lines[2].endswith("/run hello")
    assert lines[4].startswith("@daily python3 ")
    assert "=" not in "".join(lines[1:])  # no VAR= lines of ours, no env in the crontab

    second = project.deployer("plan", "dev", "--detailed-exitcode")
    assert second.exit_code == 0, second
    again = project.deployer("apply", "dev", "--yes", "--json")
    assert again.exit_code == 0, again
    report = json.loads(again.stdout)["hosts"]["localhost"]
    assert report["status"] == "ok" and report["applied"] == []
    assert report["counters"]["execs"] == 1  # a no-op apply is one probe and nothing else
    assert read_crontab(BLOCK_USER) == text

    verified = project.deployer("verify", "dev")
    # verify needs a cron daemon too; this tier does not start one, the e2e tier does.
    assert "pass crontab      the crontab of root holds the declared block (2 jobs)" in verified.stdout, verified
    assert "pass release" in verified.stdout and "pass files" in verified.stdout


def test_foreign_lines_survive_byte_for_byte(project: Project, user_crontab: str) -> None:
    write_crontab(BLOCK_USER, FOREIGN_BEFORE)
    declare(project, TWO_JOBS)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    after_apply = read_crontab(BLOCK_USER)
    assert after_apply is not None and after_apply.startswith(FOREIGN_BEFORE)

    # Lines added by hand below our block stay below it, untouched.
    write_crontab(BLOCK_USER, after_apply + FOREIGN_AFTER)
    declare(project, TWO_JOBS.replace('"*/5 * * * *"', '"*/7 * * * *"'))
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    text = read_crontab(BLOCK_USER)
    assert text is not None
    assert text.startswith(FOREIGN_BEFORE) and text.endswith(FOREIGN_AFTER)
    assert "*/7 * * * * python3" in text

    # Removing every job removes our block and nothing else.
    declare(project, "  hello:\n    script: tasks/hello.py\n    schedule: '@daily'\n    enabled: false\n")
    result = project.deployer("apply", "dev", "--yes")
    assert result.exit_code == 0, result
    assert read_crontab(BLOCK_USER) == FOREIGN_BEFORE + FOREIGN_AFTER


def test_disabling_one_job_removes_only_its_lines(project: Project, user_crontab: str) -> None:
    write_crontab(BLOCK_USER, FOREIGN_BEFORE)
    declare(project, TWO_JOBS)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    before = read_crontab(BLOCK_USER)
    assert before is not None
    declare(project, TWO_JOBS + "    enabled: false\n")  # the last job (nightly) is disabled
    plan = project.deployer("plan", "dev")
    assert "-@daily python3" in plan.stdout and "-# nightly" in plan.stdout, plan
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    after = read_crontab(BLOCK_USER)
    assert after is not None
    assert after.startswith(FOREIGN_BEFORE)
    block = "\n".join(block_lines(after))
    assert "nightly" not in block and "/run hello" in block
    assert len(block_lines(after)) == len(block_lines(before)) - 2


def test_hand_edit_between_plan_and_apply_is_refused(project: Project, user_crontab: str, tmp_path: Path) -> None:
    declare(project, TWO_JOBS)
    saved = tmp_path / "plan.json"
    assert project.deployer("plan", "dev", "--out", str(saved)).exit_code == 0
    edited = "# edited by hand after the plan\n*/1 * * * * echo mine\n"
    write_crontab(BLOCK_USER, edited)
    result = project.deployer("apply", "dev", "--plan", str(saved))
    assert result.exit_code == EXIT_FAILED, result
    assert "the crontab of root changed since the plan was saved (edited by hand?); nothing was changed" in result.stdout
    assert read_crontab(BLOCK_USER) == edited
    assert not Path("/var/lib/deployer/demo-dev/current").exists()


def test_applier_compare_and_swap_refuses_a_concurrent_edit(project: Project, user_crontab: str) -> None:
    """The edit lands after the probe, while the plan is shown: the applier itself refuses."""
    declare(project, TWO_JOBS)
    session = Session.load(project.root / "deployer.yml", "dev")
    session.observe()
    edited = "*/2 * * * * echo concurrent edit\n"
    write_crontab(BLOCK_USER, edited)
    session.apply()
    state = session.states[0]
    assert state.exit_code == EXIT_FAILED
    assert state.error == ("the crontab of root changed since it was read (edited by hand or by another tool?); "
                           "nothing was changed: run plan again to see the new state")
    assert read_crontab(BLOCK_USER) == edited
    # The new release may be on disk, but nothing points at it: the old state is whole.
    assert not Path("/var/lib/deployer/demo-dev/current").exists()


def test_files_and_permissions_on_the_target(project: Project, user_crontab: str) -> None:
    declare(project, TWO_JOBS.replace("env: {GREETING: hi}", "env: {GREETING: hi, TOKEN: {secret: {env: DEMO_TOKEN}}}"))
    result = project.deployer("apply", "dev", "--yes", env={"DEMO_TOKEN": "tok-9f8e7d6c"})
    assert result.exit_code == 0, result
    assert "tok-9f8e7d6c" not in result.stdout + result.stderr
    home = Path("/var/lib/deployer/demo-dev")
    release = home / "current"
    uid = os.stat(release / "run").st_uid
    assert uid == 0
    env_file = release / "env" / "hello.env"
    st = env_file.stat()
    assert oct(st.st_mode & 0o777) == "0o600"
    assert st.st_uid == 0  # read by the root-started wrapper; the job gets the values, not the file
    assert 'TOKEN="tok-9f8e7d6c"' in env_file.read_text()
    assert "tok-9f8e7d6c" not in (read_crontab(BLOCK_USER) or "")
    logs = home / "logs"
    assert oct(logs.stat().st_mode & 0o777) == "0o750"
    job_uid = __import__("pwd").getpwnam(TEST_USER).pw_uid
    assert logs.stat().st_uid == job_uid  # the log folder belongs to the user the jobs run as
    manifest = json.loads((release / "manifest.json").read_text())
    assert set(manifest["files"]) == {"run", "scripts/hello.py", "jobs/hello.json", "jobs/nightly.json", "env/hello.env"}
    # Root runs the job through the wrapper, as root's cron does: the job runs as the test user
    # and writes its log; root writes the ledger.
    run = subprocess.run([CRON_PYTHON, str(release / "run"), "hello"], capture_output=True, text=True, cwd="/")
    assert run.returncode == 0, run.stderr
    log = (logs / "hello.log").read_text()
    assert "hello hi ['a b', '50%', '$(touch /tmp/pwned)']" in log
    assert not Path("/tmp/pwned").exists()
    ledger = [json.loads(line) for line in (home / "state/hello/ledger.jsonl").read_text().splitlines()]
    assert ledger[-1]["outcome"] == "success" and ledger[-1]["user"] == TEST_USER
    assert (home / "state/hello/ledger.jsonl").stat().st_uid == 0
    assert (logs / "hello.log").stat().st_uid == job_uid


def test_ordinary_user_target_through_become(project: Project, user_crontab: str, test_user: object) -> None:
    """Connect as a non-root user: its own crontab, state under its home, no chown."""
    declare(project, TWO_JOBS, become=True)
    result = project.deployer("apply", "dev", "--yes")
    assert result.exit_code == 0, result
    home = Path(test_user.pw_dir)  # type: ignore[attr-defined]
    deploy_home = home / ".local/share/deployer/demo-dev"
    text = read_crontab(TEST_USER)
    assert text is not None and f"python3 {deploy_home}/releases/" in text
    assert (deploy_home / "current" / "run").stat().st_uid == test_user.pw_uid  # type: ignore[attr-defined]
    again = project.deployer("plan", "dev", "--detailed-exitcode")
    assert again.exit_code == 0, again

    # A job that runs as another user cannot be deployed by a non-root user: said clearly.
    declare(project, TWO_JOBS + "    run_as: root\n", become=True)
    refused = project.deployer("plan", "dev")
    assert refused.exit_code == EXIT_FAILED
    assert ("job 'nightly' runs as 'root', but deployer connects as 'deployer-test', who is not root: "
            "set ansible_become: true (sudo) or run_as: deployer-test") in refused.stdout


def test_verify_fails_without_a_cron_daemon(project: Project, user_crontab: str, no_cron_daemon: None) -> None:
    from tests.conftest import cron_daemon_pids

    if cron_daemon_pids():
        pytest.skip("the machine's own cron daemon is running (not one the tests started): it is not ours to stop")
    declare(project, TWO_JOBS)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    result = project.deployer("verify", "dev")
    assert result.exit_code == EXIT_FAILED, result
    assert "fail cron-daemon  no cron daemon is running: no job will run (start cron)" in result.stdout
    assert "pass crontab" in result.stdout


def test_verify_reports_a_script_edited_on_the_target(project: Project, user_crontab: str) -> None:
    declare(project, TWO_JOBS)
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    script = Path("/var/lib/deployer/demo-dev/current/scripts/hello.py")
    script.write_text(script.read_text() + "print('hot fix')\n")
    result = project.deployer("verify", "dev")
    assert result.exit_code == EXIT_FAILED, result
    assert "fail release      restore scripts/hello.py (modified on the target: drift, edited by hand" in result.stdout
    # apply puts the declared script back, and verify's release check passes again.
    assert project.deployer("apply", "dev", "--yes").exit_code == 0
    assert "hot fix" not in script.read_text()
    assert "pass release" in project.deployer("verify", "dev").stdout
