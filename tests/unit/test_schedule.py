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


# What Debian's crontab refuses, or would install but never run / run other than it reads:
# refused, saying what cron would do. (tests/cron/test_schedule_acceptance.py checks every
# schedule validate accepts against the real crontab binary.)
REFUSED_AS_CRON_WOULD = [
    ("0 0 * * ５", "day-of-week field '５': '５' is not a number (0-7 or sun-sat)"),  # str.isdigit() says yes
    ("² * * * *", "minute field '²': '²' is not a number (0-59)"),  # int('²') used to raise a raw ValueError
    ("*/２ * * * *", "minute field '*/２': step '２' must be a positive number"),
    ("*/2147483648 * * * *", "minute field '*/2147483648': step 2147483648 is too large: cron reads numbers as 32-bit "
                             "integers and refuses it; write a step of at most 59"),
    ("*/4294967297 * * * *", "minute field '*/4294967297': step 4294967297 is too large: cron reads numbers as 32-bit "
                             "integers and reads it as 1; write a step of at most 59"),
    ("1" * 1000 + " * * * *", "minute field '1111111111111111111111111111111111111...': "
                              "1111111111111111111111111111111111111... is out of range 0-59"),
    ("*/60 * * * *", "minute field '*/60': step 60 is larger than the field (0-59): cron would only ever use the "
                     "first value, 0; write that instead"),
    ("0 0 30 2 *", "'0 0 30 2 *' never fires: no month among feb has a day 30; Debian/Ubuntu cron (Vixie cron 3.0pl1) "
                   "would install it and never run it"),
    ("0 0 31 4,6,9,11 *", "'0 0 31 4,6,9,11 *' never fires: no month among apr,jun,sep,nov has a day 31; "
                          "Debian/Ubuntu cron (Vixie cron 3.0pl1) would install it and never run it"),
    # a leading '*' makes cron AND the day fields: Sundays that are a 30th or 31st of February
    ("0 0 30,31 2 */7", "'0 0 30,31 2 */7' never fires: no month among feb has a day 30-31; "
                        "Debian/Ubuntu cron (Vixie cron 3.0pl1) would install it and never run it"),
    ("5# * * * *", "minute field '5#': '5#' is not a number (0-59)"),  # cron would silently ignore the '#'
]

ACCEPTED_AS_CRON_READS = [
    "0 0 30 2 1",        # neither day field starts with '*': ORed, so every Monday of February
    "0 0 */2 * 1",       # ANDed: odd days that are Mondays
    "5-5 * * * *", "0 0 * * mon-mon", "0 0 * * 7-7", "0 0 1 12-12/1 *",  # equal ends: one value
    "*/59 * * * *", "0 0 29 2 *",
]


@pytest.mark.parametrize(("schedule", "message"), REFUSED_AS_CRON_WOULD)
def test_refused_as_cron_would(schedule: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        normalize(schedule)
    assert str(caught.value) == message


@pytest.mark.parametrize("schedule", ACCEPTED_AS_CRON_READS)
def test_accepted_as_cron_reads(schedule: str) -> None:
    assert normalize(schedule) == schedule
