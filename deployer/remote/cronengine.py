"""deployer's cron engine: what a schedule means to the target's cron, exactly. Stdlib only.

The same module runs on the controller (validate, verify, status, explain) and can be shipped to
targets (it imports nothing but the standard library), so both sides share one set of maths.

Three flavours, each following named code:

- ``debian`` (the default): Debian/Ubuntu cron, Vixie cron 3.0pl1 with Debian's patches
  (package cron 3.0pl1-162, bookworm). Parsing follows entry.c's load_entry, get_list,
  get_range, get_number and set_element; matching follows cron.c's find_jobs (day-of-month
  and day-of-week are ANDed when either field *starts with* ``*``, ORed otherwise); the fire
  instants follow cron.c's main loop: set_time's clock in local minutes and the four
  wake-up kinds (late by 2-5 minutes: every missed minute runs; 6-180 minutes ahead, as
  when clocks go forward: wildcard jobs for the new minute, fixed-time jobs of every
  skipped minute at once; up to 180 minutes back, as when clocks go back: only wildcard
  jobs until the clock catches up; more: everything for the new minute only). A job is
  "wildcard" when its minute or hour field starts with ``*``.
  tests/oracle builds this very code (fetched with ``apt-get source cron``) into a
  harness and compares it with this module over a generated corpus.
- ``cronie``: cronie's src/entry.c as of commit 000b4ecb (read, not built: cronie is not
  in Debian's archive): numbers must end at a separator (no trailing characters),
  backwards ranges and a step without a range are refused, names are letters only.
  Its main loop (cron.c) has the same four wake-up kinds as Vixie cron, so fire instants
  are computed the same way.
- ``busybox``: busybox crond 1.35 (miscutils/crond.c, ParseField, FixDayDow,
  flag_starting_jobs): ranges may wrap (``22-6``), day-of-month and day-of-week are ANDed
  when exactly one of them is *complete* (every value set, however written) and ORed
  otherwise; each wall-clock second is turned into local time with localtime(), so jobs
  of an hour skipped by clocks going forward never run, and jobs of an hour repeated by
  clocks going back run twice. tests/oracle/test_busybox_crond.py compares the parser
  with ParseField and FixDayDow cut out of Debian's busybox source package; the minute
  loop (flag_starting_jobs) is tested against its reading, not built.

Known differences from the real daemons, each deliberate:

- The daemon is assumed to wake up on time every minute. A Vixie cron slowed by more than
  a minute in its catch-up after clocks go forward (it sleeps 10 s after every minute that
  started jobs) starts the caught-up jobs up to that much later than computed here.
- Zone transitions are found by sampling the offset every 6 hours; two changes less
  than 6 hours apart that cancel out would be missed (no zone in tzdata has one since 1970).
- Schedules are parsed on their own, not inside a crontab line: ``load_env`` (which would
  take a line such as ``A=1 * * * * cmd`` for an environment setting) is not modelled;
  validation refuses such schedules anyway (a letter that is no month or day name).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

FLAVOURS = ("debian", "cronie", "busybox")
DEFAULT_FLAVOUR = "debian"
FLAVOUR_NAMES = {
    "debian": "Debian/Ubuntu cron (Vixie cron 3.0pl1)",
    "cronie": "cronie",
    "busybox": "busybox crond",
}

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# Vixie's DowNames ends with a second "Sun" (7): both names and numbers accept 7 for Sunday.
DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

MAX_TEMPSTR = 1000  # cron.h: get_number refuses a word of this many characters or more
_EOF = None


class CronSyntaxError(ValueError):
    """The flavour's ``crontab`` refuses the schedule; ``reason`` is its own words."""

    def __init__(self, reason: str, field: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class Entry:
    """A parsed schedule: the sets of values cron keeps, and the flags its matching reads."""

    __slots__ = ("_fires", "_specials", "dom_star", "doms", "dow_star", "dows", "flavour", "hours",
                 "hr_star", "min_star", "minutes", "months", "reboot")

    def __init__(self, sets: list[set[int]], flags: tuple[bool, bool, bool, bool],
                 reboot: bool = False, flavour: str = DEFAULT_FLAVOUR) -> None:
        self.minutes, self.hours, self.doms, self.months = (frozenset(s) for s in sets[:4])
        # Sunday is both 0 and 7 (entry.c "make sundays equivalent"); we keep it as 0.
        self.dows = frozenset(d % 7 for d in sets[4])
        self.dom_star, self.dow_star, self.min_star, self.hr_star = flags
        self.reboot = reboot
        self.flavour = flavour
        self._fires: bool | None = None
        self._specials: dict[tuple[int, int], _Special] = {}  # (id of the clock, transition) -> _Special

    @property
    def wildcard(self) -> bool:
        """cron.c: a job whose minute or hour field starts with '*' (MIN_STAR|HR_STAR)."""
        return self.min_star or self.hr_star

    def day_matches(self, mday: int, month: int, wday: int) -> bool:
        """wday 0 = Sunday, as struct tm's tm_wday."""
        if month not in self.months:
            return False
        in_dom, in_dow = mday in self.doms, wday in self.dows
        if self.flavour == "busybox":
            # FixDayDow: the complete field is cleared when the other one is restricted,
            # then flag_starting_jobs ORs the two. (For busybox, dom_star and dow_star say
            # "complete": every slot of crond's array set, day 0 included for days.)
            dom_full, dow_full = self.dom_star, self.dow_star
            if dom_full != dow_full:
                return in_dow if dom_full else in_dom
            return in_dom or in_dow
        if self.dom_star or self.dow_star:
            return in_dom and in_dow
        return in_dom or in_dow

    def matches(self, minute: int, hour: int, mday: int, month: int, wday: int) -> bool:
        return minute in self.minutes and hour in self.hours and self.day_matches(mday, month, wday)

    def ever_fires(self) -> bool:
        """Whether some date matches at all (every valid date falls on every weekday within
        the 400-year Gregorian cycle, so weekdays only matter through the day rule)."""
        if self._fires is None:
            self._fires = self._ever_fires()
        return self._fires

    def _ever_fires(self) -> bool:
        if self.reboot:
            return True
        if not (self.minutes and self.hours and self.months):
            return False
        for month in self.months:
            longest = 29 if month == 2 else calendar.monthrange(2001, month)[1]
            for mday in range(1, longest + 1):
                if any(self.day_matches(mday, month, wday) for wday in range(7)):
                    return True
        return False


def _ranges(values: frozenset[int]) -> str:
    ordered, parts = sorted(values), list[list[int]]()
    for v in ordered:
        if parts and parts[-1][1] == v - 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def never_fires_reason(entry: Entry) -> str | None:
    """Why an entry cron accepts can never fire, in words; None when it fires some day."""
    if entry.ever_fires():
        return None
    for values, name in ((entry.minutes, "minute"), (entry.hours, "hour"), (entry.months, "month")):
        if not values:
            return f"its {name} field matches no {name}"
    months = ",".join(MONTH_NAMES[m - 1] for m in sorted(entry.months))
    if not entry.doms:
        return "its day-of-month field matches no day"
    return f"no month among {months} has a day {_ranges(entry.doms)}"


# -- parsing -------------------------------------------------------------------------------


class _Reader:
    """get_char/unget_char over the crontab line, as misc.c reads the file."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def get(self) -> str | None:
        if self.pos >= len(self.text):
            return _EOF
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def unget(self) -> None:
        self.pos -= 1


def _isdigit(ch: str | None) -> bool:
    # C's isdigit/isalnum: ASCII only (no locale makes '５' or '²' a digit in glibc).  # noqa: RUF003 (those very characters)
    return ch is not None and "0" <= ch <= "9"


def _isalpha(ch: str | None) -> bool:
    return ch is not None and ch.isascii() and ch.isalpha()


def c_atoi(digits: str) -> int:
    """glibc's atoi: (int) strtol(s, NULL, 10). strtol saturates at LONG_MAX/LONG_MIN, the cast to
    int keeps the low 32 bits (so 4294967301 is read as 5, 2147483648 as -2147483648)."""
    value = max(min(int(digits), 2**63 - 1), -(2**63)) & 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _wrap32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 2**32 if value >= 2**31 else value


def _get_number_vixie(r: _Reader, low: int, names: tuple[str, ...] | None, ch: str | None) -> tuple[str | None, int]:
    word, all_digits = "", True
    while _isdigit(ch) or _isalpha(ch):
        if len(word) + 1 >= MAX_TEMPSTR:
            return _EOF, 0
        word += ch  # type: ignore[operator]
        all_digits = all_digits and _isdigit(ch)
        ch = r.get()
    if not word:
        return _EOF, 0
    if names:
        for i, name in enumerate(names):
            if name == word.lower():
                return ch, i + low
    if all_digits:
        return ch, c_atoi(word)
    return _EOF, 0


def _get_number_cronie(r: _Reader, low: int, names: tuple[str, ...] | None, ch: str | None,
                       terms: str) -> tuple[str | None, int]:
    word = ""
    while _isdigit(ch):
        if len(word) + 1 >= MAX_TEMPSTR:
            return _EOF, 0
        word += ch  # type: ignore[operator]
        ch = r.get()
    if word:
        if ch is _EOF or ch not in terms:
            return _EOF, 0
        return ch, c_atoi(word)
    if names:
        while _isalpha(ch):
            if len(word) + 1 >= MAX_TEMPSTR:
                return _EOF, 0
            word += ch  # type: ignore[operator]
            ch = r.get()
        if word and ch is not _EOF and ch in terms:
            for i, name in enumerate(names):
                if name == word.lower():
                    return ch, i + low
    return _EOF, 0


def _get_range(r: _Reader, bits: set[int], low: int, high: int, names: tuple[str, ...] | None,
               ch: str | None, cronie: bool) -> str | None:
    if ch == "*":
        num1, num2 = low, high
        ch = r.get()
        if ch is _EOF:
            return _EOF
    else:
        if cronie:
            ch, num1 = _get_number_cronie(r, low, names, ch, ",- \t\n")
        else:
            ch, num1 = _get_number_vixie(r, low, names, ch)
        if ch is _EOF:
            return _EOF
        if ch != "-":
            if ch == "/" and not cronie:  # "1/20": step without a range
                return _EOF
            if not low <= num1 <= high:
                return _EOF
            bits.add(num1)
            return ch
        ch = r.get()
        if ch is _EOF:
            return _EOF
        if cronie:
            ch, num2 = _get_number_cronie(r, low, names, ch, "/, \t\n")
            if ch is _EOF or num1 > num2:
                return _EOF
        else:
            ch, num2 = _get_number_vixie(r, low, names, ch)
            if ch is _EOF:
                return _EOF
    if ch == "/":
        ch = r.get()
        if ch is _EOF:
            return _EOF
        if cronie:
            ch, num3 = _get_number_cronie(r, 0, None, ch, ", \t\n")
            if ch is _EOF or num3 == 0:
                return _EOF
        else:
            ch, num3 = _get_number_vixie(r, 0, None, ch)
            if ch is _EOF or num3 <= 0:
                return _EOF
    else:
        num3 = 1
    if not cronie and not (low <= num1 <= high and low <= num2 <= high):
        return _EOF
    i = num1
    while i <= num2:  # C's int arithmetic: i += num3 may wrap to a negative number
        if not low <= i <= high:
            return _EOF
        bits.add(i)
        i = _wrap32(i + num3)
    return ch


def _get_list(r: _Reader, bits: set[int], field: int, ch: str | None, cronie: bool) -> str | None:
    low, high = BOUNDS[field]
    names = MONTH_NAMES if field == 3 else DOW_NAMES if field == 4 else None
    while True:
        ch = _get_range(r, bits, low, high, names, ch, cronie)
        if ch is _EOF and cronie:
            return _EOF
        if ch == ",":
            ch = r.get()
        else:
            break
    if ch is _EOF:
        return _EOF
    while ch not in ("\t", " ", "\n", _EOF):  # Skip_Nonblanks: trailing characters are ignored
        ch = r.get()
    while ch in ("\t", " "):  # Skip_Blanks
        ch = r.get()
    return ch


_TIMESPEC = {
    # entry.c's @-specials: (minute, hour, dom, month, dow, flags dom/dow/min/hr star)
    "yearly": ("0", "0", "1", "1", "*", (False, True, False, False)),
    "annually": ("0", "0", "1", "1", "*", (False, True, False, False)),
    "monthly": ("0", "0", "1", "*", "*", (False, True, False, False)),
    "weekly": ("0", "0", "*", "*", "0", (True, False, False, False)),
    "daily": ("0", "0", "*", "*", "*", (False, False, False, False)),
    "midnight": ("0", "0", "*", "*", "*", (False, False, False, False)),
    "hourly": ("0", "*", "*", "*", "*", (False, False, False, True)),
}


def _full(field: int) -> set[int]:
    low, high = BOUNDS[field]
    return set(range(low, high + 1))


def _special(word: str, flavour: str) -> Entry:
    if word == "reboot":
        return Entry([set(), set(), set(), set(), set()], (False, False, False, False), True, flavour)
    spec = _TIMESPEC.get(word)
    if spec is None:
        raise CronSyntaxError("bad time specifier")
    sets = [_full(i) if text == "*" else {int(text)} for i, text in enumerate(spec[:5])]
    return Entry(sets, spec[5], False, flavour)


def parse(schedule: str, flavour: str = DEFAULT_FLAVOUR) -> Entry:
    """The entry the flavour's cron builds from ``schedule`` (a crontab line's time part),
    or CronSyntaxError with the reason its ``crontab`` gives."""
    if flavour == "busybox":
        return _parse_busybox(schedule)
    cronie = flavour == "cronie"
    # The schedule as the first part of a user crontab line: a command follows.
    r = _Reader(schedule + " command\n")
    ch = r.get()
    if ch == "@":
        word = ""
        ch = r.get()
        while ch not in (" ", "\t", "\n", _EOF):
            word += ch
            ch = r.get()
        return _special(word, flavour)
    sets: list[set[int]] = []
    flags = [False, False, False, False]  # dom, dow, min, hr star
    for field in range(5):
        if ch == "*":
            index = {0: 2, 1: 3, 2: 0, 4: 1}.get(field)
            if index is not None:
                flags[index] = True
        bits: set[int] = set()
        ch = _get_list(r, bits, field, ch, cronie)
        if ch is _EOF:
            raise CronSyntaxError(f"bad {FIELD_NAMES[field]}", field)
        sets.append(bits)
    if ch == "*" or (cronie and ch == "\n"):
        raise CronSyntaxError("bad command")
    return Entry(sets, (flags[0], flags[1], flags[2], flags[3]), False, flavour)


def _parse_busybox(schedule: str) -> Entry:
    """crond.c's ParseField on each of the five fields. busybox's crontab installs anything;
    on a bad field its crond logs "parse error" and keeps the line with whatever the field
    had set before the error: we refuse such a schedule instead."""
    text = schedule.strip(" \t")
    if text.startswith("@"):
        return _special(re.split(r"[ \t]+", text[1:])[0], "busybox")
    fields = re.split(r"[ \t]+", text)  # config_read splits on blanks and tabs only
    if len(fields) < 5:
        raise CronSyntaxError("parse error: fewer than 5 fields")
    # (modvalue, offset) per field as crond.c calls ParseField
    shapes = ((60, 0, None), (24, 0, None), (32, 0, None), (12, -1, MONTH_NAMES), (7, 0, DOW_NAMES[:7]))
    sets: list[set[int]] = []
    complete = []
    for field, (spec, (modvalue, off, names)) in enumerate(zip(fields, shapes, strict=False)):  # fields past the fifth are not the time
        ary = [False] * modvalue
        if not _busybox_field(spec, ary, modvalue, off, names):
            raise CronSyntaxError(f"parse error at {spec}", field)
        complete.append(all(ary))
        values = {i for i, on in enumerate(ary) if on}
        if field == 3:
            values = {v + 1 for v in values}
        if field == 2:
            values.discard(0)
        sets.append(values)
    return Entry(sets, (complete[2], complete[4], fields[0].startswith("*"), fields[1].startswith("*")), False, "busybox")


def _busybox_field(spec: str, ary: list[bool], modvalue: int, off: int, names: tuple[str, ...] | None) -> bool:
    pos, n1, n2 = 0, -1, -1

    def number(at: int) -> tuple[int, int]:
        """strtol(spec + at, &end, 10) cast to int: blanks, a sign, digits; no digits: 0, at."""
        end = at
        while end < len(spec) and spec[end] in " \t\n\v\f\r":
            end += 1
        sign = -1 if end < len(spec) and spec[end] == "-" else 1
        if end < len(spec) and spec[end] in "+-":
            end += 1
        digits = end
        while end < len(spec) and _isdigit(spec[end]):
            end += 1
        if end == digits:
            return 0, at
        return c_atoi(str(sign * int(spec[digits:end])) if sign < 0 else spec[digits:end]), end

    while True:
        skip = 0
        if pos < len(spec) and spec[pos] == "*":
            n1, n2, skip, pos = 0, modvalue - 1, 1, pos + 1
        elif pos < len(spec) and _isdigit(spec[pos]):
            value, pos = number(pos)
            if n1 < 0:
                n1 = value + off
            else:
                n2 = value + off
            skip = 1
        elif names:
            for i, name in enumerate(names):
                if spec[pos:pos + 3].lower() == name:
                    pos += 3
                    if n1 < 0:
                        n1 = i
                    else:
                        n2 = i
                    skip = 1
                    break
        if skip == 0:
            return False
        if pos < len(spec) and spec[pos] == "-" and n2 < 0:
            pos += 1
            continue
        if n2 < 0:
            n2 = n1
        if pos < len(spec) and spec[pos] == "/":
            skip, pos = number(pos + 1)
        s0, failsafe = 1, 1024
        n1 -= 1
        while True:
            n1 = (n1 + 1) % modvalue
            s0 -= 1
            if s0 == 0:
                ary[n1 % modvalue] = True
                s0 = skip
            failsafe -= 1
            if failsafe == 0:
                return False
            if n1 == n2:
                break
        if pos >= len(spec) or spec[pos] != ",":
            break
        pos += 1
        n1 = n2 = -1
    return pos >= len(spec)


# -- fire instants ---------------------------------------------------------------------------
# Instants are whole minutes counted from the epoch: UTC minutes ("u") for when things happen,
# local minutes ("c", cron's clockTime: UTC plus the zone's offset at that instant) for what
# the crontab's fields are matched against.

_EPOCH = datetime(1970, 1, 1)
_SAMPLE = 6 * 60  # minutes between two offset samples when looking for zone transitions
_HORIZON_DAYS = 366 * 401  # beyond a whole Gregorian cycle: a date that matches exists by then


def zone(name: str) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


class _Clock:
    """The zone's offset (in minutes, as set_time's GMToff / 60) at any UTC minute, and its
    transitions; one per zone, kept (offsets and transitions never change for a zone)."""

    _BUCKET = 30 * 24 * 60  # transitions are searched and kept per 30 days

    def __init__(self, tz: ZoneInfo | timezone) -> None:
        self.tz = tz
        self.cache: dict[int, int] = {}
        self.buckets: dict[int, list[int]] = {}

    def offset(self, u: int) -> int:
        found = self.cache.get(u)
        if found is None:
            # astimezone: utcoffset() of a UTC datetime would read its fields as local time
            delta = datetime.fromtimestamp(u * 60, UTC).astimezone(self.tz).utcoffset()
            found = int(delta.total_seconds()) // 60 if delta else 0
            if len(self.cache) > 200000:
                self.cache.clear()
            self.cache[u] = found
        return found

    def local(self, u: int) -> int:
        return u + self.offset(u)

    def _bucket(self, index: int) -> list[int]:
        found = self.buckets.get(index)
        if found is None:
            found = []
            a, end = index * self._BUCKET, (index + 1) * self._BUCKET
            while a < end:
                b = min(a + _SAMPLE, end)
                if self.offset(a) != self.offset(b):
                    lo, hi = a, b  # the change lies in (lo, hi]
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        if self.offset(mid) == self.offset(lo):
                            lo = mid
                        else:
                            hi = mid
                    found.append(hi)
                a = b
            self.buckets[index] = found
        return found

    def transitions(self, start: int, end: int) -> list[int]:
        """UTC minutes T in (start, end] where the offset at T differs from the one at T-1."""
        found: list[int] = []
        for index in range(start // self._BUCKET, end // self._BUCKET + 1):
            found.extend(t for t in self._bucket(index) if start < t <= end)
        return found


_CLOCKS: dict[str, _Clock] = {}


def _clock(tz: str) -> _Clock:
    found = _CLOCKS.get(tz)
    if found is None:
        found = _CLOCKS[tz] = _Clock(zone(tz))
    return found


def _broken_down(c: int) -> tuple[int, int, int, int, int]:
    """gmtime() of a local minute: minute, hour, mday, month (1-12), wday (0 = Sunday)."""
    t = _EPOCH + timedelta(minutes=c)
    return t.minute, t.hour, t.day, t.month, (t.weekday() + 1) % 7


def _match_minute(entry: Entry, c: int) -> bool:
    return entry.matches(*_broken_down(c))


def _next_local(entry: Entry, c: int, limit: int) -> int | None:
    """The first local minute m with c <= m < limit that the entry's fields match."""
    t = _EPOCH + timedelta(minutes=c)
    day = t.date()
    first = True
    hours, minutes = sorted(entry.hours), sorted(entry.minutes)
    while True:
        base = (datetime(day.year, day.month, day.day) - _EPOCH) // timedelta(minutes=1)
        if base >= limit:
            return None
        if day.month not in entry.months:
            # on to the first day of the next month
            day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
            first = False
            continue
        if entry.day_matches(day.day, day.month, (day.weekday() + 1) % 7):
            for hour in hours:
                for minute in minutes:
                    m = base + hour * 60 + minute
                    if first and m < c:
                        continue
                    return m if m < limit else None
        day += timedelta(days=1)
        first = False


def _prev_local(entry: Entry, c: int, floor: int) -> int | None:
    """The last local minute m with floor <= m <= c that the entry's fields match."""
    t = _EPOCH + timedelta(minutes=c)
    day = t.date()
    first = True
    hours, minutes = sorted(entry.hours, reverse=True), sorted(entry.minutes, reverse=True)
    while True:
        base = (datetime(day.year, day.month, day.day) - _EPOCH) // timedelta(minutes=1)
        if base + 24 * 60 <= floor:
            return None
        if day.month not in entry.months:
            day = day.replace(day=1) - timedelta(days=1)  # the last day of the previous month
            first = False
            continue
        if entry.day_matches(day.day, day.month, (day.weekday() + 1) % 7):
            for hour in hours:
                for minute in minutes:
                    m = base + hour * 60 + minute
                    if first and m > c:
                        continue
                    return m if m >= floor else None
        day -= timedelta(days=1)
        first = False


class _Special:
    """What the daemon does at the UTC minutes right after a zone transition."""

    def __init__(self, start: int, end: int, fires: list[int]) -> None:
        self.start, self.end, self.fires = start, end, fires


def _special_window(entry: Entry, clock: _Clock, t: int) -> _Special:
    """Replay cron.c's main loop from the minute before the transition at UTC minute t
    until the daemon is back in its ordinary one-minute step."""
    before, after = clock.local(t - 1), clock.local(t)
    if entry.flavour == "busybox":
        # flag_starting_jobs: every UTC minute is matched against its local time, no catch-up.
        return _Special(t, t + 1, [t] if _match_minute(entry, after) else [])
    virtual = before
    fires: list[int] = []
    u = t
    while True:
        running = clock.local(u)
        diff = running - virtual
        fired = False
        if diff == 1:
            if u > t:  # caught up: the ordinary step takes over from here
                return _Special(t, u, fires)
            virtual = running
            fired = _match_minute(entry, running)
        elif 0 < diff <= 5:  # woke up late: every missed minute, all jobs
            fired = any(_match_minute(entry, m) for m in range(virtual + 1, running + 1))
            virtual = running
        elif 5 < diff <= 180:  # clocks went forward: wildcard jobs now, fixed-time ones caught up
            fired = (entry.wildcard and _match_minute(entry, running)) or (
                not entry.wildcard and any(_match_minute(entry, m) for m in range(virtual + 1, running + 1)))
            virtual = running
        elif -180 < diff <= 0:  # clocks went back: wildcard jobs only, virtual time waits
            fired = entry.wildcard and _match_minute(entry, running)
        else:  # a jump of more than 3 hours: everything for the new minute
            virtual = running
            fired = _match_minute(entry, running)
        if fired:
            fires.append(u)
        u += 1
        if u - t > 24 * 60:  # cannot happen with a real zone; never loop for ever
            return _Special(t, u, fires)


def _windows(entry: Entry, clock: _Clock, start: int, end: int) -> list[_Special]:
    # look 4 hours back: a transition that shortly precedes ``start`` may still be in play
    found: list[_Special] = []
    for t in clock.transitions(start - 4 * 60, end):
        key = (id(clock), t)
        window = entry._specials.get(key)
        if window is None:
            window = entry._specials[key] = _special_window(entry, clock, t)
        found.append(window)
    return found


def _fires_forward(entry: Entry, clock: _Clock, start: int, span: int) -> Iterator[int]:
    """UTC minutes >= start at which the daemon starts the job, in order, for ``span`` minutes."""
    chunk = 60 * 24  # a day first (most schedules fire within it), growing to a year
    u = start
    stop = start + span
    while u < stop:
        end = min(u + chunk, stop)
        chunk = min(chunk * 8, 60 * 24 * 366)
        specials = [w for w in _windows(entry, clock, u, end) if w.end > u]
        for window in [*specials, _Special(end, end, [])]:
            # the ordinary stretch [u, window.start): one offset throughout
            while u < window.start:
                offset = clock.offset(u)
                m = _next_local(entry, u + offset, window.start + offset)
                if m is None:
                    break
                yield m - offset
                u = m - offset + 1
            u = max(u, window.start)
            for fire in window.fires:
                if fire >= u:
                    yield fire
            u = max(u, window.end)
        u = max(u, end)


def _ordinary_backward(entry: Entry, clock: _Clock, low: int, high: int) -> Iterator[int]:
    """Fires in the ordinary stretch [low, high] (one offset throughout), latest first."""
    u = high
    while u >= low:
        offset = clock.offset(u)
        m = _prev_local(entry, u + offset, low + offset)
        if m is None:
            return
        yield m - offset
        u = m - offset - 1


def _iter_backward(entry: Entry, clock: _Clock, start: int, span: int) -> Iterator[int]:
    chunk = 60 * 24
    u = start
    stop = start - span
    while u > stop:
        begin = max(u - chunk, stop)
        chunk = min(chunk * 8, 60 * 24 * 366)
        specials = [w for w in _windows(entry, clock, begin, u + 1) if w.start <= u]
        for window in reversed(specials):
            if window.end <= u:
                yield from _ordinary_backward(entry, clock, window.end, u)
                u = window.end - 1
            for fire in reversed(window.fires):
                if fire <= u:
                    yield fire
            u = min(u, window.start - 1)
        if u >= begin:
            yield from _ordinary_backward(entry, clock, begin, u)
        u = begin - 1


def _minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _instant(u: int) -> datetime:
    return datetime.fromtimestamp(u * 60, UTC)


def fires_after(entry: Entry, moment: datetime, tz: str, count: int,
                until: datetime | None = None) -> list[datetime]:
    """The next ``count`` instants strictly after ``moment`` (and before ``until``, if given)
    at which cron starts the job, in UTC."""
    if entry.reboot or not entry.ever_fires():
        return []
    clock = _clock(tz)
    start = _minute_of(moment) + 1
    span = _HORIZON_DAYS * 24 * 60 if until is None else max(0, -(-int(until.timestamp()) // 60) - start)
    found = []
    for u in _fires_forward(entry, clock, start, span):
        if until is not None and u * 60 >= until.timestamp():
            break
        found.append(_instant(u))
        if len(found) >= count:
            break
    return found


def next_fire(entry: Entry, moment: datetime, tz: str) -> datetime | None:
    found = fires_after(entry, moment, tz, 1)
    return found[0] if found else None


def previous_fire(entry: Entry, moment: datetime, tz: str) -> datetime | None:
    """The last instant at or before ``moment`` at which cron started the job (UTC)."""
    if entry.reboot or not entry.ever_fires():
        return None
    clock = _clock(tz)
    for u in _iter_backward(entry, clock, _minute_of(moment), _HORIZON_DAYS * 24 * 60):
        return _instant(u)
    return None
