"""The cron engine's rules, flavour by flavour, with a fixed clock.

Debian's flavour is proven against Debian cron's own code by tests/oracle; these tests pin
the behaviours the issue names (so a regression reads plainly), and test the cronie and
busybox rules against their documented semantics and the source they follow (cronie's
source is not in Debian's archive; busybox crond's is, but is not built here).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployer.remote import cronengine
from deployer.remote.cronengine import CronSyntaxError, fires_after, next_fire, parse, previous_fire

PARIS = "Europe/Paris"  # 2026: forward on 03-29 at 01:00 UTC (02:00 -> 03:00), back on 10-25 at 01:00 UTC


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC) if "+" in text else datetime.fromisoformat(text).replace(tzinfo=UTC)


def iso(moments: list[datetime], tz: str = PARIS) -> list[str]:
    return [m.astimezone(cronengine.zone(tz)).isoformat() for m in moments]


# -- Debian (Vixie 3.0pl1) -------------------------------------------------------------------

def test_a_leading_star_in_a_day_field_ands_the_two() -> None:
    # '*/2' starts with '*': cron ANDs day-of-month and day-of-week (croniter ORed them)
    fires = fires_after(parse("0 0 */2 * 1"), at("2026-01-01T00:00:00"), "UTC", 3)
    assert iso(fires, "UTC") == ["2026-01-05T00:00:00+00:00", "2026-01-19T00:00:00+00:00", "2026-02-09T00:00:00+00:00"]
    # written without the star, the same days are ORed: every odd day and every Monday
    fires = fires_after(parse("0 0 1-31/2 * 1"), at("2026-01-01T00:00:00"), "UTC", 3)
    assert iso(fires, "UTC") == ["2026-01-03T00:00:00+00:00", "2026-01-05T00:00:00+00:00", "2026-01-07T00:00:00+00:00"]


@pytest.mark.parametrize(("schedule", "field", "values"), [
    ("5-5 * * * *", "minutes", {5}), ("0 0 * * mon-mon", "dows", {1}), ("0 0 * * 7-7", "dows", {0}),
    ("0 0 1 12-12/1 *", "months", {12}),
])
def test_a_range_with_equal_ends_is_one_value(schedule: str, field: str, values: set[int]) -> None:
    assert getattr(parse(schedule), field) == values


def test_spring_forward_runs_fixed_jobs_of_the_skipped_hour_at_the_jump_and_skips_wildcard_ones() -> None:
    start = at("2026-03-29T00:00:00")  # 01:00 CET
    assert iso(fires_after(parse("30 2 * * *"), start, PARIS, 1)) == ["2026-03-29T03:00:00+02:00"]
    assert iso(fires_after(parse("*/20 2 * * *"), start, PARIS, 1)) == ["2026-03-30T02:00:00+02:00"]
    assert iso(fires_after(parse("30 * * * *"), start, PARIS, 2)) == ["2026-03-29T01:30:00+01:00",
                                                                     "2026-03-29T03:30:00+02:00"]


def test_fall_back_runs_fixed_jobs_once_and_wildcard_jobs_in_both_passes() -> None:
    start = at("2026-10-24T23:00:00")  # 01:00 CEST
    assert iso(fires_after(parse("30 2 * * *"), start, PARIS, 2)) == ["2026-10-25T02:30:00+02:00",
                                                                     "2026-10-26T02:30:00+01:00"]
    assert iso(fires_after(parse("30 * * * *"), start, PARIS, 4)) == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"]


def test_previous_fire_is_never_after_now() -> None:
    now = at("2026-06-01T10:05:00.5")
    assert previous_fire(parse("*/5 * * * *"), now, "UTC") == at("2026-06-01T10:05:00")
    assert previous_fire(parse("*/5 * * * *"), at("2026-06-01T10:04:59.999"), "UTC") == at("2026-06-01T10:00:00")


def test_a_schedule_that_never_fires_has_no_fire_time_and_says_why() -> None:
    entry = parse("0 0 30 2 *")
    assert next_fire(entry, at("2026-01-01T00:00:00"), "UTC") is None
    assert previous_fire(entry, at("2026-01-01T00:00:00"), "UTC") is None
    assert cronengine.never_fires_reason(entry) == "no month among feb has a day 30"
    # a rare one is found all the same: February 29th on a Sunday ('*/7': ANDed, Sundays)
    assert iso(fires_after(parse("0 0 29 2 */7"), at("2026-01-01T00:00:00"), "UTC", 1), "UTC") == [
        "2032-02-29T00:00:00+00:00"]


@pytest.mark.parametrize(("schedule", "reason"), [
    ("0 0 * * ５", "bad day-of-week"), ("*/2147483648 * * * *", "bad minute"), ("5/10 * * * *", "bad minute"),
    ("1" * 1000 + " * * * *", "bad minute"), ("@every", "bad time specifier"), ("0 0 0 * * *", "bad day-of-month"),
])
def test_what_debian_crontab_refuses(schedule: str, reason: str) -> None:
    with pytest.raises(CronSyntaxError) as caught:
        parse(schedule)
    assert caught.value.reason == reason


def test_what_debian_cron_reads_silently() -> None:
    assert parse("5# * * * *").minutes == {5}            # trailing characters are skipped
    assert parse("*/4294967297 * * * *").minutes == set(range(60))  # atoi keeps 32 bits: a step of 1
    assert parse("0 0 22-6 * *").doms == frozenset()     # a backwards range matches nothing


# -- cronie ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("schedule", "fixed"), [
    ("5# * * * *", "5 * * * *"), ("0 22-6 * * *", "0 6-22 * * *"), ("5/10 * * * *", "5-59/10 * * * *"),
    ("*/0 * * * *", "*/1 * * * *"), ("0 0 * * 1x", "0 0 * * 1"),
])
def test_cronie_refuses_what_its_entry_c_refuses(schedule: str, fixed: str) -> None:
    # src/entry.c: a number must end at a separator, a range must not go backwards, a step
    # needs a range and is not 0 (Debian's cron takes '5#' as 5 and '22-6' as nothing)
    parse(fixed, "cronie")
    with pytest.raises(CronSyntaxError):
        parse(schedule, "cronie")


def test_cronie_keeps_vixie_day_rule_and_dst_handling() -> None:
    fires = fires_after(parse("0 0 */2 * 1", "cronie"), at("2026-01-01T00:00:00"), "UTC", 1)
    assert iso(fires, "UTC") == ["2026-01-05T00:00:00+00:00"]
    assert iso(fires_after(parse("30 2 * * *", "cronie"), at("2026-03-29T00:00:00"), PARIS, 1)) == [
        "2026-03-29T03:00:00+02:00"]


# -- busybox crond ---------------------------------------------------------------------------

def test_busybox_ranges_wrap_around() -> None:
    assert parse("0 22-2 * * *", "busybox").hours == {22, 23, 0, 1, 2}


def test_busybox_day_rule_goes_by_complete_fields_not_by_stars() -> None:
    # '*/2' is not a complete field: busybox ORs it with Monday (Vixie would AND); and its
    # day array starts at 0, so '*/2' means the even days
    fires = fires_after(parse("0 0 */2 * 1", "busybox"), at("2026-01-01T00:00:00"), "UTC", 3)
    assert iso(fires, "UTC") == ["2026-01-02T00:00:00+00:00", "2026-01-04T00:00:00+00:00", "2026-01-05T00:00:00+00:00"]
    # '1-31' leaves crond's day 0 unset: not complete either, so ORed with the weekday
    assert parse("0 0 1-31 * 1", "busybox").day_matches(6, 1, 2)
    # '*' day-of-month with a weekday: weekday only
    fires = fires_after(parse("0 0 * * 1", "busybox"), at("2026-01-01T00:00:00"), "UTC", 1)
    assert iso(fires, "UTC") == ["2026-01-05T00:00:00+00:00"]


def test_busybox_has_no_dst_catch_up() -> None:
    # flag_starting_jobs turns every UTC minute into local time: 02:30 never happens on the
    # spring night, and happens twice on the autumn one
    spring = fires_after(parse("30 2 * * *", "busybox"), at("2026-03-28T12:00:00"), PARIS, 1)
    assert iso(spring) == ["2026-03-30T02:30:00+02:00"]
    autumn = fires_after(parse("30 2 * * *", "busybox"), at("2026-10-24T12:00:00"), PARIS, 3)
    assert iso(autumn) == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00"]
    assert autumn[1] - autumn[0] == timedelta(hours=1)
