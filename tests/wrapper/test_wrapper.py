"""The run wrapper, run for real: outcomes, lock, timeout, env, ledger, symlinks.

No cron here: the wrapper is started the way cron starts it (``python3 <release>/run ID``)
on a release folder laid out as apply lays it out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployer.core.release import wrapper_source


class Release:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "releases" / "rev123"
        for sub in ("jobs", "scripts", "env"):
            (self.dir / sub).mkdir(parents=True)
        (self.dir / "run").write_bytes(wrapper_source())
        (root / "locks").mkdir()
        (root / "logs").mkdir()

    def job(self, job_id: str, script: str, *, timeout: int = 30, env: dict[str, str] | None = None,
            args: list[str] | None = None, concurrency: str = "forbid", retention: dict[str, int] | None = None) -> None:
        (self.dir / "scripts" / f"{job_id}.py").write_text(script)
        if env:
            lines = "".join(f"{k}={json.dumps(v)}\n" for k, v in env.items())
            (self.dir / "env" / f"{job_id}.env").write_text("# header\n" + lines)
        spec = {"id": job_id, "project": "p", "env": "dev", "description": "", "schedule": "* * * * *",
                "script": f"{job_id}.py", "command": None, "args": args or [], "run_as": None,
                "log_file": str(self.root / "logs" / f"{job_id}.log"), "lock_file": str(self.root / "locks" / f"{job_id}.lock"),
                "state_dir": str(self.root / "state" / job_id), "timeout": timeout, "concurrency": concurrency,
                "workdir": None, "env_file": f"env/{job_id}.env" if env else None,
                "retention": retention or {"runs": 10000, "days": 400, "log_size": 10485760, "log_files": 5}}
        (self.dir / "jobs" / f"{job_id}.json").write_text(json.dumps(spec))

    def start(self, job_id: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(self.dir / "run"), job_id], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def run(self, job_id: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, str(self.dir / "run"), job_id], capture_output=True, timeout=60)

    def ledger(self, job_id: str) -> list[dict[str, object]]:
        path = self.root / "state" / job_id / "ledger.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log(self, job_id: str) -> str:
        return (self.root / "logs" / f"{job_id}.log").read_text()


@pytest.fixture
def release(tmp_path: Path) -> Release:
    return Release(tmp_path)


def test_success_with_env_args_and_ledger(release: Release) -> None:
    release.job("ok", "import os, sys\nprint(os.environ['TOKEN'], sys.argv[1:], os.environ['DEPLOYER_JOB'])\n",
                env={"TOKEN": "s3cret value\nwith newline"}, args=["a b", "50%", "$(id)"])
    done = release.run("ok")
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b""  # cron would mail any output
    assert "s3cret value\nwith newline ['a b', '50%', '$(id)'] ok" in release.log("ok")
    [entry] = release.ledger("ok")
    assert entry["outcome"] == "success" and entry["exit_code"] == 0 and entry["revision"] == "rev123"
    assert set(entry) >= {"run_id", "start", "end", "duration", "host", "pid", "user", "trigger", "job", "project", "env"}
    assert not list((release.root / "state" / "ok" / "running").iterdir())  # the running marker is gone


def test_failure_keeps_the_exit_code(release: Release) -> None:
    release.job("bad", "import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    assert release.run("bad").returncode == 3
    [entry] = release.ledger("bad")
    assert entry["outcome"] == "failure" and entry["exit_code"] == 3
    assert "boom" in release.log("bad")


def test_timeout_kills_the_whole_process_group(release: Release, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    release.job("slow", f"import subprocess, time\np = subprocess.Popen(['sleep', '300'])\n"
                        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\ntime.sleep(300)\n", timeout=1)
    started = time.monotonic()
    assert release.run("slow").returncode == 124
    assert time.monotonic() - started < 15
    [entry] = release.ledger("slow")
    assert entry["outcome"] == "timeout" and entry["exit_code"] == 124
    grandchild = int(pidfile.read_text())
    deadline = time.time() + 5
    while Path(f"/proc/{grandchild}").exists() and time.time() < deadline:
        time.sleep(0.05)
    # Gone, or a zombie waiting for init to reap it: either way, not running anymore.
    assert not Path(f"/proc/{grandchild}").exists() or "Z" in Path(f"/proc/{grandchild}/stat").read_text().split()[2]


def test_a_second_run_while_the_first_holds_the_lock_is_skipped(release: Release, tmp_path: Path) -> None:
    started = tmp_path / "started"
    release.job("long", f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(3)\n")
    first = release.start("long")
    deadline = time.time() + 10
    while not started.exists() and time.time() < deadline:
        time.sleep(0.05)
    second = release.run("long")
    assert second.returncode == 0
    assert first.wait(timeout=30) == 0
    outcomes = [e["outcome"] for e in release.ledger("long")]
    assert outcomes == ["skipped-locked", "success"]
    assert "skipped: the previous run still holds the lock (pid" in release.log("long")


def test_a_killed_job_is_recorded_as_crashed_and_the_lock_is_free_again(release: Release, tmp_path: Path) -> None:
    pidfile = tmp_path / "job.pid"
    release.job("victim", f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    proc = release.start("victim")
    deadline = time.time() + 10
    while not (pidfile.exists() and pidfile.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert proc.wait(timeout=30) == 128 + signal.SIGKILL
    [entry] = release.ledger("victim")
    assert entry["outcome"] == "crashed" and entry["signal"] == signal.SIGKILL
    pidfile.unlink()
    release.job("victim", "print('next run')\n")
    assert release.run("victim").returncode == 0
    assert [e["outcome"] for e in release.ledger("victim")] == ["crashed", "success"]


def test_a_symlink_planted_as_the_log_file_is_not_followed(release: Release, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("do not touch\n")
    release.job("j", "print('x')\n")
    (release.root / "logs" / "j.log").symlink_to(target)
    done = release.run("j")
    assert done.returncode == 1
    assert done.stderr.decode() == (f"deployer run: {release.root}/logs/j.log is a symlink; refusing to follow it "
                                    "(remove it, then run `deployer apply` to recreate the file)\n")
    assert target.read_text() == "do not touch\n"


def test_the_ledger_keeps_the_last_runs_and_drops_old_ones(release: Release) -> None:
    release.job("r", "print('x')\n", retention={"runs": 3, "days": 30, "log_size": 10485760, "log_files": 5})
    ledger = release.root / "state" / "r" / "ledger.jsonl"
    ledger.parent.mkdir(parents=True)
    old = {"run_id": "ancient", "start": "2001-01-01T00:00:00.000Z", "outcome": "success"}
    ledger.write_text(json.dumps(old) + "\n")
    for _ in range(5):
        assert release.run("r").returncode == 0
    entries = release.ledger("r")
    assert len(entries) == 3 and all(e["run_id"] != "ancient" for e in entries)
    assert [e["outcome"] for e in entries] == ["success"] * 3


def test_the_log_is_rotated_past_its_size(release: Release) -> None:
    release.job("big", "print('y' * 3000)\n", retention={"runs": 100, "days": 30, "log_size": 4000, "log_files": 2})
    for _ in range(6):
        assert release.run("big").returncode == 0
    logs = sorted(p.name for p in (release.root / "logs").iterdir())
    assert logs == ["big.log", "big.log.1", "big.log.2"]
    assert all((release.root / "logs" / name).stat().st_size < 8000 for name in logs)
    assert "rotated the log at" in release.log("big")


def test_each_run_keeps_its_own_log_the_last_n_kept(release: Release) -> None:
    """retention.run_logs: each run's output (and the wrapper's start/end lines) in a file of
    its own, named in its ledger line; the main log still gets everything; the oldest go."""
    # The job counts its runs in its working folder (the state folder); the second one fails.
    release.job("counted", "import os, sys\nos.makedirs('seen', exist_ok=True)\ncount = len(os.listdir('seen'))\n"
                "open('seen/%d' % count, 'w').close()\n"
                "print('run', count + 1, 'out')\nprint('run', count + 1, 'err', file=sys.stderr)\n"
                "sys.exit(3 if count == 1 else 0)\n",
                retention={"runs": 10000, "days": 400, "log_size": 10485760, "log_files": 5, "run_logs": 2})
    codes = [release.run("counted").returncode for _ in range(3)]
    assert codes == [0, 3, 0]
    entries = release.ledger("counted")
    assert [e["outcome"] for e in entries] == ["success", "failure", "success"]
    folder = release.root / "state" / "counted" / "runs"
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == sorted(str(e["log"]).split("/", 1)[1] for e in entries[1:])  # the first run's file is gone
    assert all(str(e["log"]).startswith("runs/") and str(e["run_id"]) in str(e["log"]) for e in entries)
    for entry in entries[1:]:
        text = (release.root / "state" / "counted" / str(entry["log"])).read_text()
        n = entries.index(entry) + 1
        assert f"run {n} out\n" in text and f"run {n} err\n" in text  # stdout and stderr, this run's only
        assert text.count("run ") == 2 + 2  # its two output lines and the wrapper's start and end lines
        assert f"run {entry['run_id']} start" in text and f"run {entry['run_id']} end: {entry['outcome']}" in text
        assert oct((folder / str(entry["log"]).split("/", 1)[1]).stat().st_mode & 0o777) == "0o640"
    main = release.log("counted")
    assert all(f"run {n} out" in main for n in (1, 2, 3))  # the job's log keeps every run


def test_without_run_logs_no_run_folder_is_made(release: Release) -> None:
    release.job("plain", "print('x')\n")
    assert release.run("plain").returncode == 0
    assert not (release.root / "state" / "plain" / "runs").exists()
    assert "log" not in release.ledger("plain")[0]
