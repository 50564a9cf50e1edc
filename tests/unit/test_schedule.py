"""Cron schedules: what Debian's cron accepts passes, the rest is named field by field."""

from __future__ import annotations

import pytest

from deployer.config.schedule import ScheduleError, normalize

VALID = [
    ("*/5 * * * *", "*/5 * * * *"),
    ("0  2 * *   *", "0 2 * * *"),
    ("0 4 1 * *", "0 4 1 * *"),
    ("0-59/15 8-18 * * mon-fri", "0-59/15 8-18 * * mon-fri"),
    ("0 0 1,15 jan,jul *", "0 0 1,15 jan,jul *"),
    ("0 0 * * 7", "0 0 * * 7"),
    ("30 3 * * SUN", "30 3 * * SUN"),
    ("@daily", "@daily"),
    ("@reboot", "@reboot"),
]

INVALID = [
    ("61 * * * *", "minute field '61': 61 is out of range 0-59"),
    ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
    ("0 0 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
    ("0 0 1 13 *", "month field '13': 13 is out of range 1-12"),
    ("0 0 * * 8", "day-of-week field '8': 8 is out of range 0-7"),
    ("* * * *", "'* * * *' has 4 fields; a schedule has 5 (minute hour day-of-month month day-of-week) or is an alias like @daily"),
    ("* * * * * *", "'* * * * * *' has 6 fields; a schedule has 5 (minute hour day-of-month month day-of-week) or is an alias like @daily"),
    ("*/0 * * * *", "minute field '*/0': step '0' must be a positive number"),
    ("5-1 * * * *", "minute field '5-1': range 5-1 goes backwards, so cron would match nothing in it; "
                    "to wrap around write 5-59,0-1"),
    ("5/10 * * * *", "minute field '5/10': a step needs a range or '*' (e.g. '*/10')"),
    ("0 0 * foo *", "month field 'foo': 'foo' is not a number (1-12 or jan-dec)"),
    ("@every5m", "unknown schedule alias '@every5m' (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot)"),
    ("0,,5 * * * *", "minute field '0,,5': '' is not valid"),
]


@pytest.mark.parametrize(("schedule", "canonical"), VALID)
def test_valid(schedule: str, canonical: str) -> None:
    assert normalize(schedule) == canonical


@pytest.mark.parametrize(("schedule", "message"), INVALID)
def test_invalid(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        normalize(schedule)
    assert str(caught.value) == message
