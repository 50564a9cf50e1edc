"""A run whose wrapper is killed (kill -9) leaves its running marker and no ledger line: the
next run of the job records it as ``crashed``, once. Run for real, as tests/wrapper/test_wrapper.py."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.wrapper.test_wrapper import Release, release  # release: the fixture, found by name

__all__ = ["release"]


def _wait_for(check: object, seconds: float = 15) -> None:
    deadline = time.time() + seconds
    while not check() and time.time() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    assert check(), "timed out"  # type: ignore[operator]


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_next_run_records_a_killed_wrappers_run_as_crashed_once(release: Release, tmp_path: Path) -> None:
    pidfile = tmp_path / "job.pid"
    release.job("victim", f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(1)\n")
    wrapper = release.start("victim")
    _wait_for(lambda: pidfile.exists() and pidfile.read_text())
    running = release.root / "state" / "victim" / "running"
    [marker] = list(running.iterdir())
    os.kill(wrapper.pid, signal.SIGKILL)  # the wrapper only: its job goes on, then ends on its own
    wrapper.wait()
    job_pid = int(pidfile.read_text())
    _wait_for(lambda: _gone(job_pid))
    assert release.ledger("victim") == [] and marker.exists()
    # what is not a wrapper's marker is left alone (the probe reports it)
    (running / "notes.json").write_text(json.dumps({"run_id": "x", "start": "2026-01-01T00:00:00.000Z", "pid": 1}))

    pidfile.unlink()
    assert release.run("victim").returncode == 0
    crashed, success = release.ledger("victim")
    seen = json.loads(marker.read_text()) if marker.exists() else None
    assert seen is None  # claimed
    assert crashed["outcome"] == "crashed" and crashed["run_id"] == marker.stem and crashed["exit_code"] is None
    assert crashed["pid"] == job_pid and crashed["revision"] == "rev123"
    assert f"found by run {success['run_id']}" in str(crashed["error"])
    assert str(crashed["start"]) < str(success["start"]) and success["outcome"] == "success"
    assert f"run {marker.stem}, started " in release.log("victim")

    assert release.run("victim").returncode == 0
    assert [e["outcome"] for e in release.ledger("victim")] == ["crashed", "success", "success"]  # once
    assert sorted(p.name for p in running.iterdir()) == ["notes.json"]


def test_a_run_going_on_is_not_taken_for_a_crashed_one(release: Release, tmp_path: Path) -> None:
    hold, started = tmp_path / "hold", tmp_path / "started"
    release.job("both", f"import os, time\nif os.path.exists({str(hold)!r}):\n    open({str(started)!r}, 'w').close()\n"
                        "    time.sleep(3)\n", concurrency="allow")
    hold.touch()
    first = release.start("both")
    _wait_for(started.exists)
    hold.unlink()
    second = release.run("both")  # overlaps the first (concurrency: allow): its marker is a live run's
    assert second.returncode == 0
    assert [e["outcome"] for e in release.ledger("both")] == ["success"]
    assert first.wait(timeout=30) == 0
    assert [e["outcome"] for e in release.ledger("both")] == ["success", "success"]
