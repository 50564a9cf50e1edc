"""Generated schedules for the oracle: ordinary ones, tricky day rules, ranges and steps,
names, DST-sensitive ones, and garbage for the parser. Deterministic (a fixed seed)."""

from __future__ import annotations

import random

ORDINARY = [
    "* * * * *", "*/5 * * * *", "0 * * * *", "0 2 * * *", "30 2 * * *", "15 3 * * *", "0 0 * * *",
    "0 4 1 * *", "0 0 1 1 *", "0-59/15 8-18 * * mon-fri", "0 0 1,15 jan,jul *", "0 0 * * 7",
    "30 3 * * SUN", "@daily", "@hourly", "@weekly", "@monthly", "@yearly", "@midnight", "@annually",
]
TRICKY_DAYS = [
    "0 0 */2 * 1", "0 0 *,1 * mon", "0 0 1 * */2", "0 0 1-31/2 * 1", "0 0 13 * 5", "0 0 *,13 * 5",
    "0 0 13 * *,5", "* * */1 * 3", "0 0 31 * *", "0 0 29 2 *", "0 0 30 2 *", "0 0 29 2 */7",
    "0 0 1-7 * 1", "0 0 */7 * 0", "0 12 15 * sat,sun", "0 0 31 4,6,9,11 *", "0 0 L * *",
]
EQUAL_ENDS = ["5-5 * * * *", "0 0 * * mon-mon", "0 0 * * 7-7", "0 0 1 12-12/1 *", "0 0 * * 0-0", "0 3-3 * * *"]
DST = [
    "0 1 * * *", "0 2 * * *", "30 2 * * *", "59 2 * * *", "0 3 * * *", "* 2 * * *", "*/10 2 * * *",
    "30 * * * *", "0,30 1-3 * * *", "*/15 * * * *", "0 0 * * *", "30 0 * * *", "0 23 * * *", "* 0 * * *",
    "0 */2 * * *", "45 1,2,3 * * *",
]


def _field(rng: random.Random, low: int, high: int, names: list[str] | None) -> str:
    def value() -> str:
        v = rng.randint(low, high)
        if names and rng.random() < 0.3:
            return names[v - low] if v - low < len(names) else str(v)
        return str(v)

    def part() -> str:
        kind = rng.random()
        if kind < 0.2:
            return "*"
        if kind < 0.35:
            return f"*/{rng.randint(1, high - low + 2)}"
        if kind < 0.6:
            return value()
        a, b = sorted((rng.randint(low, high), rng.randint(low, high)))
        text = f"{a}-{b}"
        if rng.random() < 0.4:
            text += f"/{rng.randint(1, 7)}"
        return text

    return ",".join(part() for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)))


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


def generated(count: int, seed: int = 14) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        out.append(" ".join([
            _field(rng, 0, 59, None), _field(rng, 0, 23, None), _field(rng, 1, 31, None),
            _field(rng, 1, 12, MONTHS), _field(rng, 0, 7, DAYS),
        ]))
    return out


GARBAGE = [
    "0 0 * * ５", "² * * * *", "5# * * * *", "5x * * * *", "*x * * * *", "*5 * * * *", "5/10 * * * *",
    "*/0 * * * *", "*/-1 * * * *", "*/2147483648 * * * *", "*/2147483647 * * * *", "*/4294967297 * * * *",
    "1-5/2147483647 * * * *", "0-59/4294967296 * * * *", "4294967301 * * * *", "1" * 999 + " * * * *",
    "1" * 998 + " * * * *", "0" * 998 + "5 * * * *", "0,,5 * * * *", "0, 5 * * * *", ",5 * * * *", "5, * * * *",
    "5-1 * * * *", "0 22-6 * * *", "60 * * * *", "* 24 * * *", "0 0 0 * *", "0 0 32 * *", "0 0 1 13 *",
    "0 0 1 0 *", "0 0 * * 8", "0 0 * jan-mar/2 *", "0 0 * * MON", "0 0 * * Monday", "0 0 * janu *",
    "0 0 * * sun-sat", "0 0 * * sat-sun", "0 0 * * 1-7", "0 0 * * 7-1", "* * * *", "* * * * * *",
    "0 0 0 * * *", "@reboot", "@every", "@Daily", "@daily5", "0\t0 * * *", "0 0 * * 1-", "0 0 * * -1",
    "0 0 * * 1/", "0 0 * * /1", "0-/5 * * * *", "0--5 * * * *", "0-5-9 * * * *", "0/5/5 * * * *",
    "*/5/5 * * * *", "*-5 * * * *", "** * * * *", "*,* * * * *", "0 0 * * é", "0 0 * * 1é",
    "0 0 1,15 * 1-5", "0 0 *\u00a0* * *", "-1 * * * *", "+1 * * * *", "0x10 * * * *", "1e2 * * * *",
]


def parse_corpus() -> list[str]:
    return ORDINARY + TRICKY_DAYS + EQUAL_ENDS + DST + GARBAGE + generated(600)


def run_corpus() -> list[str]:
    """Schedules for the fire-time comparison (those Debian's crontab refuses are dropped by the test)."""
    return ORDINARY + TRICKY_DAYS + EQUAL_ENDS + DST + generated(150, seed=41)
