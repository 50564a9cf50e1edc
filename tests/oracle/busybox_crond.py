"""busybox crond's own field parser, cut out of its source package into a harness.

``apt-get source busybox`` (as for cron, with temporary apt state: debian_cron.source);
ParseField and FixDayDow are copied verbatim out of miscutils/crond.c (with the DowAry and
MonAry name tables) into crond_pieces.c, which busybox_harness.c includes.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from tests.oracle.debian_cron import CACHE, OracleUnavailable, _cc, source

HARNESS_C = Path(__file__).with_name("busybox_harness.c")


def _function(text: str, signature: str) -> str:
    start = text.index(signature)
    return text[start:text.index("\n}\n", start) + 3]


def harness() -> Path:
    crond = (source("busybox") / "miscutils" / "crond.c").read_text()
    try:
        tables = crond[crond.index("static const char DowAry[]"):crond.index(";", crond.index("static const char MonAry[]")) + 1]
        pieces = "\n".join([tables, _function(crond, "static void ParseField("), _function(crond, "static void FixDayDow(")])
    except ValueError:
        raise OracleUnavailable("miscutils/crond.c no longer has ParseField/FixDayDow/DowAry/MonAry as expected") from None
    key = hashlib.sha256(HARNESS_C.read_bytes() + pieces.encode()).hexdigest()[:16]
    binary = CACHE / f"busybox-harness-{key}"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as name:
        build = Path(name)
        (build / "crond_pieces.c").write_text(pieces)
        (build / "harness.c").write_text(HARNESS_C.read_text())
        _cc(["gcc", "-w", "-O2", "-std=gnu99", f"-I{build}", "-o", str(binary), str(build / "harness.c")])
    return binary


def parse(schedules: list[str]) -> list[str]:
    done = subprocess.run([str(harness())], input="\n".join(schedules) + "\n", capture_output=True, text=True, check=True)
    return done.stdout.splitlines()
