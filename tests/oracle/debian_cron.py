"""Debian's cron, built from its own source into the oracle harness (harness.c beside this file).

The source comes from Debian's archive through apt's ordinary client, without touching the
machine's apt configuration: a temporary sources list holding one deb-src line, and
temporary state and list folders. Source and harness are cached under
/var/cache/deployer-tests/ (the harness by the hash of harness.c and the source version).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("DEPLOYER_TEST_CACHE", "/var/cache/deployer-tests")) / "cron-oracle"
HARNESS_C = Path(__file__).with_name("harness.c")
SUITE = os.environ.get("DEPLOYER_TEST_SUITE", "bookworm")
MIRROR = os.environ.get("DEPLOYER_TEST_MIRROR", "http://deb.debian.org/debian")


class OracleUnavailable(RuntimeError):
    """The source or a compiler could not be had; the message says which and what to do."""


def _apt(args: list[str], tmp: Path, cwd: Path) -> None:
    options = [
        "-o", f"Dir::Etc::SourceList={tmp / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={tmp / 'lists'}",
        "-o", f"Dir::Cache={tmp / 'cache'}",
        "-o", "APT::Sandbox::User=root",
        "-q",
    ]
    done = subprocess.run(["apt-get", *options, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise OracleUnavailable(f"apt-get {' '.join(args)} failed: {done.stderr.strip()[-500:]}\n"
                                f"--- what to do: check that {MIRROR} is reachable (DEPLOYER_TEST_MIRROR to choose one)")


def source(package: str = "cron") -> Path:
    """The unpacked source tree of a Debian package (Debian patches applied), fetched once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    home = CACHE / ("src" if package == "cron" else f"src-{package}")
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(p for p in home.glob(f"{package}-*") if p.is_dir())
        if found:
            return found[-1]
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            (tmp / "lists" / "partial").mkdir(parents=True)
            (tmp / "cache" / "archives" / "partial").mkdir(parents=True)
            (tmp / "sources.list").write_text(
                f"deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} {SUITE} main\n")
            out = tmp / "out"
            out.mkdir()
            _apt(["update"], tmp, out)
            _apt(["source", package], tmp, out)
            tree = next(p for p in out.glob(f"{package}-*") if p.is_dir())
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            target = home / tree.name
            shutil.copytree(tree, target, symlinks=True)
            (home / "VERSION").write_text(next(out.glob(f"{package}_*.dsc")).name + "\n")
            return target


def version() -> str:
    source()
    return (CACHE / "src" / "VERSION").read_text().strip()


def harness() -> Path:
    """The harness binary: harness.c linked with cron's own cron.c, entry.c, misc.c, env.c."""
    src = source()
    key = hashlib.sha256(HARNESS_C.read_bytes() + version().encode()).hexdigest()[:16]
    binary = CACHE / f"harness-{key}"
    if binary.exists():
        return binary
    if shutil.which("gcc") is None:
        raise OracleUnavailable("gcc is not installed\n--- what to do: apt-get install gcc")
    with tempfile.TemporaryDirectory() as name:
        build = Path(name)
        flags = ["-w", "-O2", f"-I{src}", "-DDEBUGGING=0"]
        units = {
            "entry": [],
            "env": [],
            # misc.c's daemon chores are replaced by the harness's no-ops
            "misc": ["-Dacquire_daemonlock=real_acquire_daemonlock", "-Dset_cron_uid=real_set_cron_uid",
                     "-Dset_cron_cwd=real_set_cron_cwd", "-Dlog_it=real_log_it"],
            # the real main loop, on the harness's clock
            "cron": ["-Dmain=cron_main", "-Dtime=fake_time", "-Dsleep=fake_sleep", "-Daccess=fake_access"],
        }
        objects = []
        for unit, defines in units.items():
            obj = build / f"{unit}.o"
            _cc(["gcc", *flags, *defines, "-c", str(src / f"{unit}.c"), "-o", str(obj)])
            objects.append(str(obj))
        obj = build / "harness.o"
        _cc(["gcc", *flags, "-c", str(HARNESS_C), "-o", str(obj)])
        _cc(["gcc", "-o", str(build / "harness"), str(obj), *objects])
        shutil.copy2(build / "harness", binary)
    return binary


def _cc(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise OracleUnavailable(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")


def parse(schedules: list[str]) -> list[str]:
    """One line per schedule as the harness prints it: 'ERR reason' or 'OK flags sets...'."""
    done = subprocess.run([str(harness()), "parse"], input="\n".join(schedules) + "\n",
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def run(schedules: list[str], tz: str, start: int, end: int, queries: list[int],
        dumps: list[tuple[int, int]]) -> tuple[dict[tuple[int, int], tuple[int, int]], set[tuple[int, int]]]:
    """Run cron's main loop from ``start`` to ``end`` (epoch seconds) in zone ``tz``.

    Returns {(entry, query index): (last fire <= query, first fire > query)} (-1: none in the
    run) and every fire (entry, epoch second) inside the ``dumps`` windows."""
    with tempfile.TemporaryDirectory() as name:
        qfile, dfile = Path(name) / "q", Path(name) / "d"
        qfile.write_text("".join(f"{q}\n" for q in queries))
        dfile.write_text("".join(f"{a} {b}\n" for a, b in dumps))
        done = subprocess.run([str(harness()), "run", tz, str(start), str(end), str(qfile), str(dfile)],
                              input="\n".join(schedules) + "\n", capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"harness failed ({done.returncode}): {done.stderr[-2000:]}")
    answers: dict[tuple[int, int], tuple[int, int]] = {}
    fires: set[tuple[int, int]] = set()
    for line in done.stdout.splitlines():
        kind, *values = line.split()
        if kind == "Q":
            i, k, prev, nxt = map(int, values)
            answers[(i, k)] = (prev, nxt)
        elif kind == "F":
            i, t = map(int, values)
            fires.add((i, t))
    return answers, fires
