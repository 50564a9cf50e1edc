"""Owners, modes and planted symlinks on a real host.

A log folder that exists with the wrong owner and mode is corrected by apply. A symlink
planted where a job's log or lock file goes is never followed: not by apply (it replaces the
link with a regular file) and not by the run wrapper (it refuses to run); the file the link
points to keeps its content, owner and mode.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import FleetProject, make_project

pytestmark = pytest.mark.fleet

LOGS, LOCKS = "/var/log/demo", "/var/lib/demo-locks"

DECLARATION = f"""\
project: demo
defaults:
  timeout: 1m
  run_as: alice
  logs: {{dir: {LOGS}, mode: "0750", owner: alice, group: alice}}
  locks: {{dir: {LOCKS}, mode: "0755"}}
jobs:
  hello:
    script: tasks/hello.py
    schedule: "*/5 * * * *"
environments:
  dev:
    inventory: inventories/dev
"""

STAT = r"""
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        out[path] = None
        continue
    kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
    data = open(path, "rb").read().decode("utf-8", "replace") if kind == "file" else None
    out[path] = {"kind": kind, "mode": "%04o" % (st.st_mode & 0o7777), "uid": st.st_uid, "gid": st.st_gid,
                 "mtime": st.st_mtime_ns, "data": data}
print(json.dumps(out))
"""


def stat(p: FleetProject, *paths: str) -> dict[str, Any]:
    proc = p.th.exec_on("h1", ["python3", "-c", STAT, *paths])
    assert proc.returncode == 0, proc.stderr
    modes: dict[str, Any] = json.loads(proc.stdout)
    return modes


def sh(p: FleetProject, script: str, user: str | None = None) -> None:
    proc = p.th.exec_on("h1", ["sh", "-c", script], user=user)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def host(fleet_factory: Any, tmp_path: Path) -> FleetProject:
    th = fleet_factory(["h1"], users=["alice"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1")})
    p.write("deployer.yml", DECLARATION)
    return p


def test_wrong_log_folder_and_planted_links_are_corrected_not_followed(host: FleetProject) -> None:
    p = host
    alice = int(p.th.exec_on("h1", ["id", "-u", "alice"]).stdout)
    # Before the first apply: the log folder exists, root's and world-writable; someone
    # planted links where the log and the lock of job hello go, to files of root's.
    sh(p, f"mkdir -p {LOGS} {LOCKS} && chmod 0777 {LOGS} && chown root:root {LOGS} && "
          f"printf 'root only\\n' > /root/precious && chmod 0600 /root/precious && "
          f"ln -s /root/precious {LOGS}/hello.log && ln -s /root/precious {LOCKS}/hello.lock")
    before = stat(p, "/root/precious")["/root/precious"]

    planned = p.deployer("plan", "dev")
    assert planned.exit_code == 0, planned
    flat = " ".join(planned.stdout.split())
    assert "mode 0777 -> 0750" in flat and "owner root -> alice" in flat, planned.stdout
    assert flat.count("is a symlink: replace it with a file (never followed)") == 2, planned.stdout

    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    seen = stat(p, LOGS, f"{LOGS}/hello.log", f"{LOCKS}/hello.lock", "/root/precious")
    assert (seen[LOGS]["kind"], seen[LOGS]["mode"], seen[LOGS]["uid"], seen[LOGS]["gid"]) == ("dir", "0750", alice, alice), seen
    for path, mode in ((f"{LOGS}/hello.log", "0640"), (f"{LOCKS}/hello.lock", "0600")):
        assert (seen[path]["kind"], seen[path]["mode"], seen[path]["uid"], seen[path]["data"]) == ("file", mode, alice, ""), seen
    assert seen["/root/precious"] == before, "apply wrote through a planted link"
    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified.stdout + verified.stderr


@pytest.mark.parametrize("which", ["log", "lock"])
def test_the_wrapper_never_follows_a_link_planted_after_apply(host: FleetProject, which: str) -> None:
    p = host
    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    path = f"{LOGS}/hello.log" if which == "log" else f"{LOCKS}/hello.lock"
    # alice runs the job and owns its log folder: she can swap her own files for links. The
    # link's target is a file she may write too; the wrapper must still not write through it.
    sh(p, f"printf 'keep me\\n' > /home/alice/notes && rm -f {path} && ln -s /home/alice/notes {path}"
          if which == "log" else "printf 'keep me\\n' > /home/alice/notes", user="alice")
    if which == "lock":  # the lock folder is root's: root plants that one
        sh(p, f"rm -f {path} && ln -s /home/alice/notes {path}")
    before = stat(p, "/home/alice/notes")["/home/alice/notes"]

    run = p.deployer("run", "dev", "hello")
    assert run.exit_code == 1, run
    assert f"deployer run: {path} is a symlink; refusing to follow it" in run.stdout + run.stderr, run
    assert stat(p, "/home/alice/notes")["/home/alice/notes"] == before, "the wrapper wrote through a planted link"

    # The next apply puts a regular file back; the job runs again; the link's target is intact.
    again = p.deployer("apply", "dev", "--yes")
    assert again.exit_code == 0, again
    assert stat(p, path)[path]["kind"] == "file"
    ran = p.deployer("run", "dev", "hello")
    assert ran.exit_code == 0, ran
    assert stat(p, "/home/alice/notes")["/home/alice/notes"] == before


def test_a_lock_folder_under_debians_var_lock_symlink(fleet_factory: Any, tmp_path: Path) -> None:
    """/var/lock is Debian's root-owned link to /run/lock (a small tmpfs): the lock folder goes
    there, and verify does not count a tmpfs of lock files as a disk running out."""
    th = fleet_factory(1, users=["alice"])
    p = make_project(th, tmp_path)
    assert th.exec_on("h1", ["readlink", "/var/lock"]).stdout.strip() in ("/run/lock", "../run/lock")
    p.write("deployer.yml", DECLARATION.replace(LOCKS, "/var/lock/demo"))
    p.inventory({"h1": p.host_vars("h1")})
    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    assert stat(p, "/run/lock/demo/hello.lock")["/run/lock/demo/hello.lock"]["kind"] == "file"
    verified = p.deployer("verify", "dev")
    assert verified.exit_code == 0, verified
    assert "/run/lock" not in verified.stdout and "/var/lock" not in verified.stdout


def test_root_never_acts_through_a_folder_or_hard_link_alice_planted(host: FleetProject) -> None:
    """Issue 12, class 2, over SSH: the log folder sits under alice's home. Alice swaps a folder
    on the way for a link to a root-only folder, then hard-links a root file she may write (as
    fs.protected_hardlinks allows) at the log path: apply chowns and chmods neither."""
    p = host
    logs = "/home/alice/app/var/logs"
    p.write("deployer.yml", DECLARATION.replace(f"dir: {LOGS}", f"dir: {logs}"))
    sh(p, "mkdir -m 0700 /root/vault && mkdir -m 0700 /root/vault/logs && printf 'root only\\n' > /root/vault/logs/hello.log "
          "&& chmod 0600 /root/vault/logs/hello.log && chmod 0711 /root && printf 'shared\\n' > /etc/shared.conf "
          "&& chmod 0666 /etc/shared.conf")
    sh(p, "mkdir -p /home/alice/app && ln -s /root/vault /home/alice/app/var", user="alice")
    before = stat(p, "/root/vault", "/root/vault/logs", "/root/vault/logs/hello.log")

    refused = p.deployer("apply", "dev", "--yes")
    assert refused.exit_code == 1, refused
    assert "/home/alice/app/var is a symlink that root did not make" in " ".join(refused.stdout.split()), refused
    assert stat(p, "/root/vault", "/root/vault/logs", "/root/vault/logs/hello.log") == before

    sh(p, "rm /home/alice/app/var && mkdir /home/alice/app/var", user="alice")
    assert p.deployer("apply", "dev", "--yes").exit_code == 0
    sh(p, f"rm {logs}/hello.log && ln /etc/shared.conf {logs}/hello.log", user="alice")
    shared = stat(p, "/etc/shared.conf")["/etc/shared.conf"]
    refused = p.deployer("apply", "dev", "--yes")
    assert refused.exit_code == 1, refused
    assert f"{logs}/hello.log has 2 names (a hard link to another file)" in " ".join(refused.stdout.split()), refused
    after = stat(p, "/etc/shared.conf")["/etc/shared.conf"]
    assert (after["uid"], after["mode"], after["data"]) == (shared["uid"], shared["mode"], shared["data"]) == (0, "0666", "shared\n")
