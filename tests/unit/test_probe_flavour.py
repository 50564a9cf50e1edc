"""The probe tells which cron a daemon is from the program it really runs: real processes
started here from programs named as crons (copies of sleep, busybox under a link or a hard
link), read through /proc as the probe reads the daemon's. No crond is started: busybox runs
its sleep applet (argv[0] 'sleep')."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.remote.probe import _cron_flavour

BUSYBOX = "/bin/busybox"  # busybox-static (./install.sh --test)


def started(executable: Path, argv: list[str]) -> Iterator[int]:
    proc = subprocess.Popen(argv, executable=str(executable), stdin=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(("name", "flavour"), [
    ("cron", "debian"), ("crond", "cronie"), ("cronie", "cronie"), ("fcron", None), ("dcron", None),
])
def test_a_program_named_as_a_cron(tmp_path: Path, name: str, flavour: str | None) -> None:
    program = tmp_path / name
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", program)
    for pid in started(program, [name, "30"]):
        assert _cron_flavour(str(pid), name) == flavour


def busybox() -> str:
    if not os.path.exists(BUSYBOX):
        pytest.fail("busybox-static is not installed (./install.sh --test installs it)")
    return BUSYBOX


def test_crond_that_is_a_link_to_busybox_is_busybox(tmp_path: Path) -> None:
    crond = tmp_path / "crond"
    crond.symlink_to(busybox())
    # argv[0] 'sleep': busybox runs its sleep applet, not a crond reading this machine's crontabs
    for pid in started(crond, ["sleep", "30"]):
        assert _cron_flavour(str(pid), "crond") == "busybox"


def test_crond_that_is_a_hard_link_to_busybox_is_busybox(tmp_path: Path) -> None:
    # busybox installed as a hard link named crond: no link for the kernel to resolve, the
    # same file. (A copy of busybox stands for the system's, so nothing is made in /bin.)
    system_busybox = tmp_path / "busybox"
    shutil.copy2(busybox(), system_busybox)
    crond = tmp_path / "crond"
    os.link(system_busybox, crond)
    for pid in started(crond, ["sleep", "30"]):
        assert _cron_flavour(str(pid), "crond") == "cronie"  # not one of the system's busyboxes
        assert _cron_flavour(str(pid), "crond", (str(system_busybox),)) == "busybox"


def test_busybox_crond_is_busybox(tmp_path: Path) -> None:
    for pid in started(Path(busybox()), ["sleep", "30"]):  # what 'busybox crond' looks like: comm busybox
        assert _cron_flavour(str(pid), "busybox") == "busybox"


def test_a_process_that_is_gone_reads_by_its_name() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert _cron_flavour(str(proc.pid), "crond") == "cronie"
    assert _cron_flavour(str(proc.pid), "atd") is None
