"""playbooks/apply.yml and verify.yml with the real ansible-playbook on real sshd hosts.

As the ansible ``cron`` module's own integration test does: check, apply, check, apply must
report changed, changed, unchanged, unchanged; and the targets must end up exactly as
``deployer apply`` leaves them (parity both ways), byte for byte.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.conftest import QUIET_JOBS, AnsibleProject, make_ansible_project
from tests.conftest import REPO

pytestmark = [pytest.mark.ansible, pytest.mark.fleet]

DEPLOY_HOME = "/var/lib/deployer/demo-dev"


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A host's deploy home without what differs between any two applies: the backup folder's
    name (time and pid of the apply), the time its index records (compared apart) and the
    deploy lock's content (who held it last)."""
    out = {}
    for path, entry in snapshot.items():
        path = re.sub(r"^backups/\d{8}T\d{6}Z-\d+", "backups/<apply>", path)
        if path in (".deploy.lock", "backups/<apply>/index.json"):
            entry = {k: v for k, v in entry.items() if k != "sha256"}
        out[path] = entry
    return out


def backup_indexes(p: AnsibleProject, host: str) -> list[dict[str, Any]]:
    script = f"cat {DEPLOY_HOME}/backups/*/index.json 2>/dev/null | sed 's/$/\\n/'"
    lines = p.th.exec_on(host, ["sh", "-c", script]).stdout.replace("\\n", "\n").split("\n")
    return [{k: v for k, v in json.loads(line).items() if k != "at"} for line in lines if line.strip()]


def project_on(fleet_factory: Any, tmp_path: Path, n: int = 2, **fleet: Any) -> AnsibleProject:
    th = fleet_factory(n, **fleet)
    p = make_ansible_project(th, tmp_path)
    p.declare(QUIET_JOBS)
    p.inventory({h.name: p.host_vars(h.name) for h in th.hosts})
    return p


def test_check_apply_check_apply(fleet_factory: Any, tmp_path: Path) -> None:
    # h2 is reached as alice with Ansible's become (sudo): the plugin's commands go through it.
    th = fleet_factory(2, users=["alice"], sudo_users=["alice"])
    p = make_ansible_project(th, tmp_path)
    p.declare(QUIET_JOBS.replace("env: {GREETING: hi}", "env: {GREETING: hi, TOKEN: {secret: {env: DEMO_TOKEN}}}"))
    p.extra_env["DEMO_TOKEN"] = "s3cr3t-t0ken-value"
    p.inventory({"h1": p.host_vars("h1"), "h2": p.host_vars("h2", user="alice", ansible_become=True)})

    checked = p.playbook("apply", "--check", "--diff", "-v")
    assert checked.exit_code == 0, checked
    assert checked.changed() == {"h1": 1, "h2": 1}, checked
    for host in ("h1", "h2"):  # check mode wrote nothing at all
        assert p.crontab(host) == "", p.crontab(host)
        assert th.exec_on(host, ["test", "-e", DEPLOY_HOME]).returncode == 1
    # --diff: the whole crontab before/after, then the other changes as the CLI lists them.
    assert "--- before: crontab of root (now)" in checked.stdout and "+++ after: crontab of root (planned)" in checked.stdout
    assert "+# BEGIN deployer demo/dev" in checked.stdout, checked.stdout
    assert f"dir      {DEPLOY_HOME}/logs: create folder (0750)" in checked.stdout, checked.stdout
    assert "s3cr3t-t0ken-value" not in checked.stdout + checked.stderr

    applied = p.playbook("apply", "-v")
    assert applied.exit_code == 0, applied
    assert applied.changed() == {"h1": 1, "h2": 1}, applied
    assert "s3cr3t-t0ken-value" not in applied.stdout + applied.stderr
    crontabs = {h: p.crontab(h) for h in ("h1", "h2")}
    for host, crontab in crontabs.items():
        assert "# BEGIN deployer demo/dev" in crontab and f"{DEPLOY_HOME}/releases/" in crontab, (host, crontab)
    # The secret reached the job's env file only (0600), as with the CLI.
    env_files = th.exec_on("h2", ["sh", "-c", f"grep -rl s3cr3t-t0ken-value {DEPLOY_HOME}"]).stdout.split()
    assert env_files and all(th.exec_on("h2", ["stat", "-c", "%a", f]).stdout.strip() == "600" for f in env_files), env_files

    again_checked = p.playbook("apply", "--check", "--diff")
    assert again_checked.exit_code == 0, again_checked
    assert again_checked.changed() == {"h1": 0, "h2": 0}, again_checked
    again = p.playbook("apply")
    assert again.exit_code == 0, again
    assert again.changed() == {"h1": 0, "h2": 0}, again
    assert {h: p.crontab(h) for h in ("h1", "h2")} == crontabs

    # The result carries deployer's data: one probe exec for a no-op, nothing applied.
    report = p.playbook("apply", json_output=True).task_results()
    for host in ("h1", "h2"):
        data = report[host]["deployer"]
        assert report[host]["changed"] is False and data["status"] == "ok" and data["applied"] == [], data
        assert data["counters"]["execs"] == 1, data["counters"]


def test_check_mode_leaves_a_changed_target_untouched(fleet_factory: Any, tmp_path: Path) -> None:
    p = project_on(fleet_factory, tmp_path, n=1)
    assert p.playbook("apply").exit_code == 0
    before = (p.th.read_file("h1", "/var/spool/cron/crontabs/root"), p.snapshot("h1"))

    # A new schedule and a file mode changed by hand: a plan with several kinds of changes.
    p.declare(QUIET_JOBS.replace('"0 3 1 1 *"', '"0 5 1 1 *"'))
    p.th.exec_on("h1", ["chmod", "0700", f"{DEPLOY_HOME}/logs"])
    before = (before[0], p.snapshot("h1"))
    checked = p.playbook("apply", "--check", "--diff")
    assert checked.exit_code == 0, checked
    assert checked.changed() == {"h1": 1}, checked
    assert "-0 3 1 1 * " in checked.stdout and "+0 5 1 1 * " in checked.stdout, checked.stdout
    assert f"{DEPLOY_HOME}/logs: mode 0700 -> 0750" in checked.stdout, checked.stdout
    assert (p.th.read_file("h1", "/var/spool/cron/crontabs/root"), p.snapshot("h1")) == before

    applied = p.playbook("apply")
    assert applied.changed() == {"h1": 1}, applied
    assert "0 5 1 1 * " in p.crontab("h1")
    assert p.snapshot("h1")["logs"]["mode"] == "0o750"


def test_parity_with_the_cli_both_ways(fleet_factory: Any, tmp_path: Path) -> None:
    p = project_on(fleet_factory, tmp_path, n=2)
    # h1 by the CLI, h2 by the playbook, run from the repository root (its ansible.cfg, found
    # there by ansible-playbook itself, with the plugins' path relative to the file).
    cli = p.deployer("apply", "dev", "--yes", "--limit", "h1")
    assert cli.exit_code == 0, cli
    played = p.playbook("apply", "--limit", "h2", "-e", f"deployer_file={p.root / 'deployer.yml'}", cwd=REPO,
                        inventory=str(p.root / "inventories/dev"), config=None)
    assert played.exit_code == 0, played
    assert played.changed() == {"h2": 1}, played

    # Same crontab bytes (`crontab -l`: the spool file's header holds the install time), same
    # files, modes, owners, manifest, on both hosts.
    crontab = p.th.exec_on("h1", ["crontab", "-l"], text=False).stdout
    assert b"# BEGIN deployer demo/dev" in crontab and crontab == p.th.exec_on("h2", ["crontab", "-l"], text=False).stdout
    assert comparable(p.snapshot("h1")) == comparable(p.snapshot("h2"))
    assert backup_indexes(p, "h1") == backup_indexes(p, "h2")
    manifest = [p.th.exec_on(h, ["sh", "-c", f"cat {DEPLOY_HOME}/current/manifest.json"]).stdout for h in ("h1", "h2")]
    assert manifest[0] and manifest[0] == manifest[1]

    # Both ways: the playbook sees nothing to do where the CLI applied, and the CLI where it applied.
    checked = p.playbook("apply", "--check")
    assert checked.changed() == {"h1": 0, "h2": 0}, checked
    plan = p.deployer("plan", "dev", "--detailed-exitcode")
    assert plan.exit_code == 0, plan
    assert p.deployer("verify", "dev").exit_code == 0

    # And after a change of the declaration, the same plan from both.
    p.declare(QUIET_JOBS.replace('"0 3 1 1 *"', '"0 6 1 1 *"'))
    assert p.deployer("plan", "dev", "--detailed-exitcode").exit_code == 3
    assert p.playbook("apply", "--check").changed() == {"h1": 1, "h2": 1}


def test_verify_playbook(fleet_factory: Any, tmp_path: Path) -> None:
    p = project_on(fleet_factory, tmp_path, n=2)
    assert p.playbook("apply").exit_code == 0
    verified = p.playbook("verify", json_output=True)
    assert verified.exit_code == 0, verified
    for host, result in verified.task_results().items():
        assert result["changed"] is False and not result.get("failed"), (host, result)
        statuses = {c["name"]: c["status"] for c in result["checks"]}
        assert statuses["crontab"] == statuses["release"] == statuses["cron-daemon"] == "pass", (host, result["checks"])

    # A script edited by hand on h2: the audit fails there, with the CLI's words.
    p.th.exec_on("h2", ["sh", "-c", f"echo '# edited' >> {DEPLOY_HOME}/current/scripts/hello.py"])
    _, cli = p.deployer_json("verify", "dev")
    failed = p.playbook("verify", json_output=True)
    assert failed.exit_code == 2, failed  # ansible-playbook: a host failed
    results = failed.task_results()
    assert not results["h1"].get("failed")
    assert results["h2"]["failed"] is True
    assert results["h2"]["msg"].splitlines()[0] == cli["hosts"]["h2"]["error"] == "failed: release", results["h2"]["msg"]
    assert "fail release      restore scripts/hello.py (modified on the target" in results["h2"]["msg"], results["h2"]["msg"]
    assert [(c["name"], c["job"], c["status"]) for c in results["h2"]["checks"]] == \
        [(c["name"], c["job"], c["status"]) for c in cli["hosts"]["h2"]["checks"]]
    text = p.playbook("verify")
    assert "fatal: [h2]: FAILED!" in text.stdout and text.recap["h2"]["failed"] == 1 and text.recap["h1"]["failed"] == 0, text


def test_a_failing_host_fails_the_play_with_the_cli_message(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(2, users=["alice", "bob"], sudo_users=["alice"])
    p = make_ansible_project(th, tmp_path)
    p.declare(QUIET_JOBS.replace("    env: {GREETING: hi}\n", "    env: {GREETING: hi}\n    run_as: alice\n"))
    # h2 connects as bob, without become: deployer refuses to plan a job for alice there.
    p.inventory({"h1": p.host_vars("h1"), "h2": p.host_vars("h2", user="bob")})

    _, cli = p.deployer_json("plan", "dev")
    message = cli["hosts"]["h2"]["error"]
    assert message == ("job 'hello' runs as 'alice', but deployer connects as 'bob', who is not root: "
                       "set ansible_become: true (sudo) or run_as: bob"), message

    # The plugins found through `python3 -m deployer.ansible`, as for a pip-installed deployer.
    plugins = subprocess.run([sys.executable, "-m", "deployer.ansible"], capture_output=True, text=True, check=True,
                             env=p.env()).stdout.strip()
    empty_cfg = p.write("empty.cfg", "[defaults]\n")
    played = p.playbook("apply", json_output=True, config=str(empty_cfg), env={"ANSIBLE_ACTION_PLUGINS": plugins})
    assert played.exit_code == 2, played
    results = played.task_results()
    assert results["h2"]["failed"] is True and results["h2"]["msg"] == message, results["h2"]
    assert results["h1"]["changed"] is True and not results["h1"].get("failed"), results["h1"]
    # h1 deploys as root: root's crontab starts alice's job (its wrapper runs it as alice)
    assert "/run hello" in p.crontab("h1", "root") and p.crontab("h2", "alice") == ""
    text = p.playbook("apply")
    # What a person reads in the CI log (ansible.cfg: results as YAML, quoted where YAML needs it).
    assert text.recap["h2"]["failed"] == 1 and "fatal: [h2]: FAILED!" in text.stdout, text
    assert "who is not root: set ansible_become: true (sudo) or run_as: bob" in text.stdout, text

    # A host that is down is Ansible's UNREACHABLE (exit 4, as deployer's own exit code says).
    th.stop("h1")
    down = p.playbook("apply")
    assert down.exit_code == 4 and down.recap["h1"]["unreachable"] == 1, down
    assert "Traceback" not in down.stdout + down.stderr

    # Invalid input: every host fails with the CLI's exact words (exit 2 there), nothing touched.
    cli_unknown = p.deployer("plan", "nope")
    assert cli_unknown.exit_code == 2, cli_unknown
    unknown = p.playbook("apply", "-e", "deployer_env=nope", json_output=True)
    for result in unknown.task_results().values():
        assert result["failed"] is True and result["msg"] == cli_unknown.stderr.strip(), (result, cli_unknown.stderr)


def test_the_environment_comes_from_the_inventory(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(1)
    p = make_ansible_project(th, tmp_path)
    p.write("deployer.yml", f"project: demo\ndefaults:\n  timeout: 1m\njobs:\n{QUIET_JOBS}\nenvironments:\n"
                            "  dev:\n    inventory: inventories/dev\n  prod:\n    inventory: inventories/prod\n")
    p.inventory({"h1": p.host_vars("h1")})
    (p.root / "inventories/prod").mkdir()
    (p.root / "inventories/prod/hosts.yml").write_text((p.root / "inventories/dev/hosts.yml").read_text())

    played = p.playbook("apply", inventory="inventories/prod")
    assert played.exit_code == 0, played
    assert "# BEGIN deployer demo/prod" in p.crontab("h1") and "# BEGIN deployer demo/dev" not in p.crontab("h1")
    assert p.deployer("plan", "prod", "--detailed-exitcode").exit_code == 0

    # An inventory that is no environment's: the play says how to name one.
    (p.root / "elsewhere").mkdir()
    (p.root / "elsewhere/hosts.yml").write_text((p.root / "inventories/dev/hosts.yml").read_text())
    lost = p.playbook("apply", inventory="elsewhere", json_output=True)
    msg = lost.task_results()["h1"]["msg"]
    assert lost.exit_code == 2 and "cannot tell which environment to deploy" in msg and "deployer_env" in msg, msg
    named = p.playbook("apply", "-e", "deployer_env=dev", inventory="elsewhere")
    assert named.exit_code == 0 and named.changed() == {"h1": 1}, named
    assert "# BEGIN deployer demo/dev" in p.crontab("h1") and "# BEGIN deployer demo/prod" in p.crontab("h1")
