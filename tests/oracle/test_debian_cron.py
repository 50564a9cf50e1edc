"""deployer's cron engine (flavour debian) against Debian cron 3.0pl1's own parser, day rule
and main loop, compiled from the source package into tests/oracle/harness.c.

- Parsing: every schedule of the corpus is accepted or refused alike (with the same reason:
  "bad minute", ...), and accepted ones give the same sets of minutes, hours, days, months,
  weekdays and the same star flags.
- Fire instants: the real main loop runs 14 months on a fake clock in several zones; at
  query instants across 2026 (random ones and ones around both DST changes) the last fire
  at or before and the first fire after agree, and every fire of the DST nights agrees.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime
from types import ModuleType

import pytest

from deployer.remote import cronengine
from tests.oracle import corpus

pytestmark = pytest.mark.oracle

ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata"]
YEAR_START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
YEAR_END = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
MARGIN = 40 * 86400  # the daemon runs 40 days before and after the year: rare schedules have a prev/next


def _engine_line(schedule: str) -> str:
    try:
        e = cronengine.parse(schedule, "debian")
    except cronengine.CronSyntaxError as exc:
        return f"ERR {exc.reason}"
    flags = (1 if e.dom_star else 0) | (2 if e.dow_star else 0) | (4 if e.reboot else 0) \
        | (8 if e.min_star else 0) | (16 if e.hr_star else 0)

    def bits(values: frozenset[int], offset: int) -> str:
        return ",".join(str(v - offset) for v in sorted(values)) or "-"

    dows = set(e.dows) | ({7} if 0 in e.dows else set())
    return " ".join(["OK", str(flags), bits(e.minutes, 0), bits(e.hours, 0), bits(e.doms, 1),
                     bits(e.months, 1), bits(frozenset(dows), 0)])


def test_parser_agrees_with_entry_c(oracle: ModuleType) -> None:
    schedules = corpus.parse_corpus()
    real = oracle.parse(schedules)
    assert len(real) == len(schedules)
    differ = [(s, r, _engine_line(s)) for s, r in zip(schedules, real, strict=True) if r != _engine_line(s)]
    accepted = sum(1 for r in real if r.startswith("OK"))
    print(f"\noracle parse: {len(schedules)} schedules, {accepted} accepted, {len(schedules) - accepted} refused "
          f"by Debian cron's entry.c, {len(differ)} differences", file=sys.stderr)
    assert not differ, "\n".join(f"{s!r}:\n  cron:   {r}\n  engine: {e}" for s, r, e in differ[:10])


def _queries(tz: str, transitions: list[int]) -> list[int]:
    rng = random.Random(tz)
    qs = {rng.randrange(YEAR_START, YEAR_END) // 60 * 60 + 30 for _ in range(40)}
    for t in transitions:
        for minutes in (-150, -90, -61, -60, -31, -30, -1, 0, 1, 29, 30, 31, 59, 60, 61, 89, 90, 121, 150, 181):
            qs.add((t + minutes) * 60 + 30)
    return sorted(qs)


@pytest.mark.parametrize("tz", ZONES)
def test_fire_instants_agree_with_cron_main_loop(oracle: ModuleType, tz: str) -> None:
    accepted = [s for s, r in zip(corpus.run_corpus(), oracle.parse(corpus.run_corpus()), strict=True) if r.startswith("OK")
                and s != "@reboot"]
    clock = cronengine._clock(tz)
    transitions = clock.transitions(YEAR_START // 60, YEAR_END // 60)
    queries = _queries(tz, transitions)
    dumps = [((t - 180) * 60, (t + 300) * 60) for t in transitions]
    answers, fires = oracle.run(accepted, tz, YEAR_START - MARGIN, YEAR_END + MARGIN, queries, dumps)
    entries = [cronengine.parse(s) for s in accepted]
    compared = 0
    differ = []
    for i, entry in enumerate(entries):
        for k, q in enumerate(queries):
            prev, nxt = answers[(i, k)]
            moment = datetime.fromtimestamp(q, UTC)
            if prev >= 0:
                got = cronengine.previous_fire(entry, moment, tz)
                compared += 1
                if got is None or int(got.timestamp()) // 60 != prev // 60:
                    differ.append((accepted[i], "prev", moment, prev, got))
            if nxt >= 0:
                got = cronengine.next_fire(entry, moment, tz)
                compared += 1
                if got is None or int(got.timestamp()) // 60 != nxt // 60:
                    differ.append((accepted[i], "next", moment, nxt, got))
    # every fire of the DST nights, both ways
    engine_fires = set()
    for a, b in dumps:
        for i, entry in enumerate(entries):
            for fire in cronengine.fires_after(entry, datetime.fromtimestamp(a - 60, UTC), tz, 10**6,
                                               until=datetime.fromtimestamp(b, UTC)):
                engine_fires.add((i, int(fire.timestamp()) // 60))
    real_fires = {(i, t // 60) for i, t in fires}
    night = sorted(real_fires ^ engine_fires)
    print(f"\noracle {tz}: {len(accepted)} schedules, {len(transitions)} transitions, {len(queries)} query instants, "
          f"{compared} prev/next compared, {len(real_fires)} fires on DST nights compared, "
          f"{len(differ)} + {len(night)} differences", file=sys.stderr)
    assert not differ, "\n".join(
        f"{s!r} {kind} of {m.isoformat()}: cron {datetime.fromtimestamp(r, UTC).isoformat()}, engine {g}"
        for s, kind, m, r, g in differ[:10])
    assert not night, "\n".join(
        f"{accepted[i]!r} at {datetime.fromtimestamp(u * 60, UTC).isoformat()}: "
        f"{'cron only' if (i, u) in real_fires else 'engine only'}" for i, u in night[:10])
