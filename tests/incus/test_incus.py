"""plan / apply / verify into real Incus containers, locally and through an SSH host.

Every test launches its own containers from the ``deployer-test`` image (Debian bookworm,
cron, python3, sudo; see tests/harness/incus.py) and writes a small project whose inventory
says ``ansible_connection: community.general.incus``. Faults are caused for real: stopped,
frozen and missing instances, an unknown project or remote, an incus client that is not
installed, that may not talk to the daemon (the real client run as ``nobody``) or that
finds no daemon (the real client pointed at an empty ``INCUS_DIR``), a container without
python3 or without cron.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.harness.incus import Incus, LoopbackSshd, free_port, incus
from tests.incus.conftest import IncusProject, fake_incus, flat

pytestmark = pytest.mark.incus

# Not "demo": the cron tier deploys a project called demo on this machine itself, and the
# tests below check that nothing of theirs lands here.
PROJECT = "incusdemo"


def declare(p: IncusProject, jobs: str | None = None) -> None:
    p.declare(**({"jobs": jobs} if jobs else {}))
    text = (p.root / "deployer.yml").read_text().replace("project: demo", f"project: {PROJECT}", 1)
    (p.root / "deployer.yml").write_text(text)


# --------------------------------------------------------------------------- the local daemon


def test_plan_apply_verify_into_a_container(incus_project: IncusProject, container: str) -> None:
    p = incus_project
    declare(p)
    # An FQDN in ansible_host: like community.general.incus, the instance is the part before the dot.
    p.inventory({"web": {"ansible_host": f"{container}.containers.example"}})

    planned = p.deployer("plan", "dev", "--detailed-exitcode")
    assert planned.exit_code == 3, planned
    assert "── web (incus) changes" in planned.stdout and "+++ crontab of root (planned)" in planned.stdout

    applied, report = p.deployer_json("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    host = report["hosts"]["web"]
    assert host["status"] == "changed"
    assert host["counters"]["connections"] == 0 and host["counters"]["execs"] == 2  # probe + applier
    crontab = p.crontab(container)
    assert f"# BEGIN deployer {PROJECT}/dev" in crontab and f"/var/lib/deployer/{PROJECT}-dev/releases/" in crontab
    assert p.exec(container, "test", "-x", f"/var/lib/deployer/{PROJECT}-dev/current/run").returncode == 0
    assert not Path(f"/var/lib/deployer/{PROJECT}-dev").exists()  # nothing landed on this machine

    verified, checks = p.deployer_json("verify", "dev")
    assert verified.exit_code == 0, verified
    by_name = {c["name"]: c for c in checks["hosts"]["web"]["checks"]}
    assert by_name["cron-daemon"]["status"] == "pass", by_name  # the cron of the container, seen from inside
    assert all(c["status"] == "pass" for c in by_name.values()), by_name

    again = p.deployer("plan", "dev", "--detailed-exitcode")
    assert again.exit_code == 0, again
    assert "release" in again.stdout and "in place" in again.stdout


def test_idempotence_one_exec_then_a_change_two(incus_project: IncusProject, container: str) -> None:
    p = incus_project
    declare(p)
    p.inventory({container: {}})
    first = p.deployer("apply", "dev", "--yes")
    assert first.exit_code == 0, first

    started = time.monotonic()
    again, report = p.deployer_json("apply", "dev", "--yes")
    wall = time.monotonic() - started
    assert again.exit_code == 0, again
    host = report["hosts"][container]
    assert host["status"] == "ok" and host["changes"] == [] and host["crontab_diffs"] == {}
    assert host["counters"]["execs"] == 1 and host["counters"]["connections"] == 0, host["counters"]
    print(f"no-op apply into one container: {wall:.2f} s wall, {host['seconds']:.3f} s on the target")

    declare(p, jobs="  hello:\n    script: tasks/hello.py\n    schedule: '*/10 * * * *'\n")
    changed, report = p.deployer_json("apply", "dev", "--yes")
    assert changed.exit_code == 0, changed
    assert report["hosts"][container]["status"] == "changed"
    assert report["hosts"][container]["counters"]["execs"] == 2
    crontab = p.crontab(container)
    assert "*/10 * * * *" in crontab and "nightly" not in crontab


def test_two_containers_in_parallel_one_as_a_plain_user(incus_project: IncusProject, incus_env: Incus,
                                                        containers: Callable[[int], list[str]]) -> None:
    p = incus_project
    declare(p)
    c1, c2 = containers(2)
    assert p.exec(c2, "useradd", "-m", "-s", "/bin/sh", "-p", "*", "app").returncode == 0
    # ansible_user: the user inside the instance, reached with su as community.general.incus does.
    p.inventory({"one": {"ansible_incus_host": c1}, "two": {"ansible_incus_host": c2, "ansible_user": "app"}})
    applied, report = p.deployer_json("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert {h["status"] for h in report["hosts"].values()} == {"changed"}
    assert f"# BEGIN deployer {PROJECT}/dev" in p.crontab(c1)
    assert p.crontab(c2, "root") == ""
    assert f"/home/app/.local/share/deployer/{PROJECT}-dev/releases/" in p.crontab(c2, "app")
    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified


@pytest.mark.e2e
def test_a_job_installed_in_a_container_fires_there(incus_project: IncusProject, container: str) -> None:
    p = incus_project
    p.write("tasks/touch.py", """\
        import os, socket, sys
        with open("/root/fired", "w") as f:
            f.write(socket.gethostname() + " " + " ".join(sys.argv[1:]))
        print("fired in", socket.gethostname())
        """)
    declare(p, jobs="  every-minute:\n    script: tasks/touch.py\n    args: ['50%', 'a b']\n"
                    "    schedule: '* * * * *'\n    timeout: 30s\n")
    p.inventory({container: {}})
    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied

    ledger = f"/var/lib/deployer/{PROJECT}-dev/state/every-minute/ledger.jsonl"
    deadline = time.time() + 75  # the next minute boundary, plus cron's own latency
    text = ""
    while time.time() < deadline:
        text = p.exec(container, "cat", ledger).stdout.strip()
        if text:
            break
        time.sleep(1)
    log = p.exec(container, "cat", f"/var/lib/deployer/{PROJECT}-dev/logs/every-minute.log").stdout
    assert text, f"cron in {container} did not run the job within 75 s; crontab:\n{p.crontab(container)}\nlog:\n{log}"
    entry = json.loads(text.splitlines()[0])
    assert entry["outcome"] == "success" and entry["exit_code"] == 0 and entry["trigger"] == "cron", entry
    assert entry["host"] == container and entry["user"] == "root", entry
    assert p.exec(container, "cat", "/root/fired").stdout == f"{container} 50% a b"
    assert f"fired in {container}" in log


def test_instance_stopped_frozen_or_missing(incus_project: IncusProject, incus_env: Incus,
                                            containers: Callable[[int], list[str]]) -> None:
    p = incus_project
    declare(p)
    running, stopped, frozen = containers(3)
    incus_env.stop(stopped)
    incus("pause", frozen)
    missing = f"dt-missing-{os.getpid()}"
    p.inventory({"running": {"ansible_host": running}, "stopped": {"ansible_host": stopped},
                 "frozen": {"ansible_host": frozen}, missing: {}})
    result, report = p.deployer_json("plan", "dev")
    assert result.exit_code == 4, result  # unreachable targets; the reachable one is still planned
    hosts = report["hosts"]
    assert hosts["running"]["status"] == "changed"
    assert hosts["stopped"]["status"] == "unreachable"
    assert hosts["stopped"]["error"] == (f"instance '{stopped}' (Incus on this machine): the instance is stopped "
                                         f"(start it: incus start local:{stopped})")
    assert hosts["frozen"]["status"] == "unreachable"
    assert f"instance '{frozen}' (Incus on this machine): the instance is frozen (paused)" in hosts["frozen"]["error"]
    assert f"incus resume local:{frozen}" in hosts["frozen"]["error"]
    assert hosts[missing]["status"] == "unreachable"
    assert hosts[missing]["error"].startswith(f"instance '{missing}' (Incus on this machine): no such instance")
    incus("resume", frozen)

    text = p.deployer("apply", "dev", "--yes")
    assert text.exit_code == 4, text
    out = flat(text.stdout)
    assert f"instance '{stopped}' (Incus on this machine): the instance is stopped" in out
    assert "Traceback" not in text.stdout + text.stderr
    assert f"# BEGIN deployer {PROJECT}/dev" in p.crontab(running)  # the others converged


def test_incus_itself_failing(incus_project: IncusProject, container: str, tmp_path: Path) -> None:
    """Unknown project and remote, no client, a client that may not or cannot reach the daemon."""
    p = incus_project
    declare(p)
    nobody = fake_incus(tmp_path, 'export HOME=/tmp\nexec setpriv --reuid=65534 --regid=65534 --clear-groups incus "$@"')
    (tmp_path / "empty").mkdir()
    nodaemon = tmp_path / "incus-nodaemon"
    nodaemon.write_text(f'#!/bin/sh\nINCUS_DIR={tmp_path / "empty"} exec incus "$@"\n')
    nodaemon.chmod(0o755)
    p.inventory({
        "project": {"ansible_host": container, "ansible_incus_project": "no-such-project"},
        "remote": {"ansible_host": container, "ansible_incus_remote": "no-such-remote"},
        "client": {"ansible_host": container, "deployer_incus_binary": "/nonexistent/bin/incus"},
        "denied": {"ansible_host": container, "deployer_incus_binary": str(nobody)},
        "nodaemon": {"ansible_host": container, "deployer_incus_binary": str(nodaemon)},
    })
    result, report = p.deployer_json("plan", "dev")
    assert result.exit_code == 4, result
    errors = {name: h["error"] for name, h in report["hosts"].items()}
    assert {h["status"] for h in report["hosts"].values()} == {"unreachable"}, errors
    assert errors["project"].startswith(f"instance '{container}', project 'no-such-project' (Incus on this machine): "
                                        "the Incus project 'no-such-project' does not exist"), errors
    assert errors["remote"].startswith(f"instance '{container}' on Incus remote 'no-such-remote': "
                                       "the Incus remote 'no-such-remote' is not known on this machine"), errors
    assert errors["client"].startswith(f"instance '{container}' (Incus on this machine): '/nonexistent/bin/incus' "
                                       "(the Incus client) is not installed on this machine"), errors
    assert errors["denied"].startswith(f"instance '{container}' (Incus on this machine): not permitted to use Incus: "
                                       "You don't have the needed permissions"), errors
    assert "incus-admin" in errors["denied"]
    assert errors["nodaemon"].startswith(f"instance '{container}' (Incus on this machine): "
                                         "the Incus daemon is not running on this machine"), errors
    assert "Traceback" not in result.stdout + result.stderr


def test_a_container_without_cron_then_without_python3(incus_project: IncusProject, container: str) -> None:
    p = incus_project
    declare(p)
    p.inventory({container: {}})
    assert p.deployer("apply", "dev", "--yes").exit_code == 0

    # No cron in the container: verify says so, even though this machine may run a cron of its own.
    assert p.exec(container, "sh", "-c", "kill $(cat /run/crond.pid)").returncode == 0
    deadline = time.monotonic() + 5
    while p.exec(container, "sh", "-c", "ps -eo comm | grep -qx cron").returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    verified, checks = p.deployer_json("verify", "dev")
    assert verified.exit_code == 1, verified
    host = checks["hosts"][container]
    assert host["error"] == "failed: cron-daemon"
    cron = next(c for c in host["checks"] if c["name"] == "cron-daemon")
    assert cron["status"] == "fail" and "no cron daemon is running" in cron["detail"], cron

    # No python3: plan and verify say it, no traceback.
    assert p.exec(container, "sh", "-c", "rm -f /usr/bin/python3 /usr/bin/python3.*").returncode == 0
    for command in ("plan", "verify"):
        result, report = p.deployer_json(command, "dev")
        assert result.exit_code == 4, result
        assert report["hosts"][container]["error"].startswith("python3 is not installed on the target"), report
        text = p.deployer(command, "dev")
        assert "python3 is not installed on the target" in flat(text.stdout) and "Traceback" not in text.stdout + text.stderr


def test_bundled_example_recette_names_the_unknown_remote(tmp_path: Path, incus_env: Incus) -> None:
    """inventories/recette targets an Incus remote 'recette', which this machine does not know."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYER_")}
    env.update(HOME=str(tmp_path), COLUMNS="250", SHOP_SMTP_PASSWORD="not-a-real-password")  # no incus remotes of ours
    proc = subprocess.run([sys.executable, "-m", "deployer", "--no-color", "plan", "recette"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    out = flat(proc.stdout)
    assert ("── shop-recette-web (incus) unreachable instance 'shop-recette-web' on Incus remote 'recette': "
            "the Incus remote 'recette' is not known on this machine") in out, out
    assert "incus remote add recette" in out


# --------------------------------------------------------------------------- through an SSH host


def ssh_vars(sshd: LoopbackSshd, **extra: str) -> dict[str, str]:
    return {"deployer_incus_ssh_host": sshd.spec, "ansible_ssh_private_key_file": str(sshd.client_key),
            "deployer_known_hosts": str(sshd.known_hosts), **extra}


def test_over_ssh_apply_verify_idempotent(incus_project: IncusProject, container: str, loopback_sshd: LoopbackSshd) -> None:
    """deployer SSHes to an Incus host (here: an sshd of ours on 127.0.0.1) and runs incus exec there."""
    p = incus_project
    declare(p)
    p.inventory({"web": {"ansible_host": container, **ssh_vars(loopback_sshd)}})
    applied, report = p.deployer_json("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert report["hosts"]["web"]["counters"]["connections"] == 1 and report["hosts"]["web"]["counters"]["execs"] == 2
    assert f"# BEGIN deployer {PROJECT}/dev" in p.crontab(container)
    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    again, report = p.deployer_json("apply", "dev", "--yes")
    assert again.exit_code == 0, again
    host = report["hosts"]["web"]
    assert host["status"] == "ok" and host["counters"]["connections"] == 1 and host["counters"]["execs"] == 1, host
    log = (loopback_sshd.log).read_text()
    assert "Accepted publickey for root from 127.0.0.1" in log  # it really went through that sshd


def test_over_ssh_failures_name_the_instance_and_the_host(incus_project: IncusProject, incus_env: Incus,
                                                          containers: Callable[[int], list[str]],
                                                          loopback_sshd: LoopbackSshd) -> None:
    p = incus_project
    declare(p)
    (stopped,) = containers(1)
    incus_env.stop(stopped)
    closed = free_port()
    where = loopback_sshd.spec
    p.inventory({
        "stopped": {"ansible_host": stopped, **ssh_vars(loopback_sshd)},
        "noclient": {"ansible_host": stopped, **ssh_vars(loopback_sshd, deployer_incus_binary="/nonexistent/incus")},
        "nossh": {"ansible_host": stopped, **ssh_vars(loopback_sshd, deployer_incus_ssh_host=f"root@127.0.0.1:{closed}")},
        "badspec": {"ansible_host": stopped, **ssh_vars(loopback_sshd, deployer_incus_ssh_host="root@")},
        "nokey": {"ansible_host": stopped, **ssh_vars(loopback_sshd, ansible_ssh_private_key_file="/nonexistent/key")},
    })
    result, report = p.deployer_json("plan", "dev")
    assert result.exit_code == 4, result
    errors = {name: h["error"] for name, h in report["hosts"].items()}
    assert errors["stopped"] == (f"instance '{stopped}' (Incus on {where}): the instance is stopped "
                                 f"(start it (on {where}): incus start local:{stopped})"), errors
    assert errors["noclient"].startswith(f"instance '{stopped}' (Incus on {where}): '/nonexistent/incus' (the Incus "
                                         f"client) is not installed on {where}"), errors
    assert errors["nossh"].startswith(f"instance '{stopped}': root@127.0.0.1:{closed}: connection refused"), errors
    assert errors["badspec"] == "deployer_incus_ssh_host of badspec is 'root@', which is not [user@]host[:port]", errors
    assert errors["nokey"].startswith(f"instance '{stopped}' (Incus on {where}): the private key /nonexistent/key "), errors
    assert "Traceback" not in result.stdout + result.stderr
