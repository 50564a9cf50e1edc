"""deployer's cron engine (flavour busybox) against busybox crond's own ParseField and
FixDayDow (busybox 1.35, from Debian's source package), over the oracle's corpus: the same
schedules refused ("parse error"), the same minutes, hours, days, months and weekdays once
FixDayDow has cleared the complete day field."""

from __future__ import annotations

import re
import sys

import pytest

from deployer.remote import cronengine
from tests.oracle import busybox_crond, corpus

pytestmark = pytest.mark.oracle


def _engine_line(schedule: str) -> str:
    try:
        e = cronengine.parse(schedule, "busybox")
    except cronengine.CronSyntaxError:
        return "ERR"
    doms, dows = set(e.doms), set(e.dows)
    if e.dom_star != e.dow_star:  # FixDayDow clears the complete field when the other is restricted
        if e.dom_star:
            doms = set()
        else:
            dows = set()

    def bits(values: set[int] | frozenset[int], offset: int = 0) -> str:
        return ",".join(str(v - offset) for v in sorted(values)) or "-"

    return " ".join(["OK", bits(e.minutes), bits(e.hours), bits(doms), bits(e.months, 1), bits(dows)])


def _real_line(line: str) -> str:
    # crond's day array has a slot 0 that no date matches: only days 1-31 are compared
    if not line.startswith("OK"):
        return line
    parts = line.split(" ")
    days = [d for d in parts[3].split(",") if d not in ("-", "0")]
    parts[3] = ",".join(days) or "-"
    return " ".join(parts)


def comparable(schedule: str) -> bool:
    # @-specials are not ParseField's; numbers past 9 digits overflow crond's int (C
    # undefined behaviour, and validate refuses them); a month 0 makes ParseField write
    # before its array (index -1): undefined too, and validate refuses it
    fields = re.split(r"[ \t]+", schedule)
    return (not schedule.startswith("@") and not re.search(r"[0-9]{10}", schedule)
            and not (len(fields) > 3 and re.search(r"(^|[^0-9])0+($|[^0-9])", fields[3])))


def test_parser_agrees_with_crond_c(oracle: object) -> None:
    schedules = [s for s in corpus.parse_corpus() if comparable(s)]
    real = [_real_line(line) for line in busybox_crond.parse(schedules)]
    assert len(real) == len(schedules)
    differ = [(s, r, _engine_line(s)) for s, r in zip(schedules, real, strict=True) if r != _engine_line(s)]
    accepted = sum(1 for r in real if r.startswith("OK"))
    print(f"\noracle busybox: {len(schedules)} schedules, {accepted} parsed without error by crond.c's ParseField, "
          f"{len(differ)} differences", file=sys.stderr)
    assert not differ, "\n".join(f"{s!r}:\n  crond:  {r}\n  engine: {e}" for s, r, e in differ[:10])
