"""Acceptance against the real ``crontab`` binary of this machine (Debian's cron 3.0pl1):
for every schedule of the oracle's corpus, the engine (flavour debian) accepts exactly what
``crontab`` installs, and ``validate`` accepts nothing ``crontab`` refuses.

Each schedule is installed for a throwaway user created here (and removed after), as
``SCHEDULE /bin/true``, in the C.UTF-8 locale (crontab calls setlocale: in a Latin-1 locale
a byte such as 'é' counts as a letter; validate refuses every non-ASCII character anyway).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from deployer.config.schedule import ScheduleError, normalize
from deployer.remote import cronengine
from tests.conftest import require_root
from tests.oracle import corpus

pytestmark = pytest.mark.cron

USER = "deployer-cronaccept"


@pytest.fixture(scope="module")
def throwaway_user() -> Iterator[str]:
    require_root()
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "-p", "*", USER], check=True)
    yield USER
    subprocess.run(["crontab", "-u", USER, "-r"], capture_output=True)
    subprocess.run(["userdel", USER], capture_output=True)


def crontab_accepts(user: str, schedule: str) -> tuple[bool, str]:
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".cron", delete=False) as f:
        f.write(f"{schedule} /bin/true\n")
    try:
        done = subprocess.run(["crontab", "-u", user, f.name], capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C.UTF-8"})
    finally:
        os.unlink(f.name)
    return done.returncode == 0, done.stderr.strip()


def test_engine_and_validate_against_the_real_crontab(throwaway_user: str) -> None:
    schedules = corpus.parse_corpus()
    engine_differs, validate_too_lax = [], []
    accepted = validated = 0
    for schedule in schedules:
        real, why = crontab_accepts(throwaway_user, schedule)
        accepted += real
        try:
            cronengine.parse(schedule, "debian")
            engine = True
        except cronengine.CronSyntaxError:
            engine = False
        if engine != real:
            engine_differs.append((schedule, real, why))
        try:
            normalize(schedule)
            validated += 1
            if not real:
                validate_too_lax.append((schedule, why))
        except ScheduleError:
            pass
    print(f"\ncrontab acceptance: {len(schedules)} schedules, crontab installs {accepted}, validate accepts {validated}, "
          f"{len(engine_differs)} engine differences, {len(validate_too_lax)} accepted by validate but refused by crontab",
          file=sys.stderr)
    assert not engine_differs, "\n".join(f"{s!r}: crontab {'installs' if r else 'refuses'} ({w})"
                                         for s, r, w in engine_differs[:10])
    assert not validate_too_lax, "\n".join(f"{s!r}: crontab says {w}" for s, w in validate_too_lax[:10])
