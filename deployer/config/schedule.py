"""Cron schedules: validation with messages that name the field and the bad value.

Two layers. First our own field checks, for messages that say *which* field is wrong and
what its range is. Then the cron engine (deployer.remote.cronengine), which parses the
schedule exactly as the target's cron does (Debian's by default): whatever that cron's
``crontab`` refuses is refused here too, naming that cron; and what it would install but
never run, or run other than it reads (a step larger than the field), is refused with
what cron would really do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployer.remote.cronengine import ALIASES, DEFAULT_FLAVOUR, FLAVOUR_NAMES, CronSyntaxError, c_atoi, never_fires_reason, parse

__all__ = ["ALIASES", "SPECIAL", "ScheduleError", "normalize"]

# @reboot is valid for cron but has no period: freshness checks treat it specially.
SPECIAL = ("@reboot",)

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_base: int = 0


FIELDS = (
    Field("minute", 0, 59),
    Field("hour", 0, 23),
    Field("day-of-month", 1, 31),
    Field("month", 1, 12, tuple(MONTHS), 1),
    Field("day-of-week", 0, 7, tuple(DAYS), 0),
)

_STEP = re.compile(r"^(?P<range>[^/]+)(?:/(?P<step>[^/]+))?$")
# ASCII digits only: str.isdigit() also says yes to '\uff15' (fullwidth 5) and '²', which cron refuses.
_DIGITS = re.compile(r"[0-9]+")


class ScheduleError(ValueError):
    """The schedule is not a valid cron expression; the message says why."""


def _show(text: str) -> str:
    """A value as quoted in a message: a number of a thousand digits is cut short."""
    return text if len(text) <= 40 else text[:37] + "..."


def _number(text: str) -> int | None:
    if not _DIGITS.fullmatch(text):
        return None
    # cron reads at most 999 characters and then a C int: anything longer than 9 digits is
    # out of every range anyway, so never hand Python's int() a number of thousands of digits.
    return int(text) if len(text) <= 9 else 10**9


def _value(text: str, field: Field, spec: str) -> int:
    lowered = text.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.names_base
    number = _number(text)
    if number is None:
        allowed = f"{field.low}-{field.high}"
        if field.names:
            allowed += f" or {field.names[0]}-{field.names[-1]}"
        raise ScheduleError(f"{field.name} field '{_show(spec)}': '{_show(text)}' is not a number ({allowed})")
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name} field '{_show(spec)}': {_show(text)} is out of range {field.low}-{field.high}")
    return number


def _check_field(spec: str, field: Field) -> None:
    if spec == "":
        raise ScheduleError(f"{field.name} field is empty")
    for part in spec.split(","):
        match = _STEP.match(part)
        if not match:
            raise ScheduleError(f"{field.name} field '{_show(spec)}': '{_show(part)}' is not valid")
        rng, step = match.group("range"), match.group("step")
        if step is not None:
            number = _number(step)
            if number is None or number == 0:
                raise ScheduleError(f"{field.name} field '{_show(spec)}': step '{_show(step)}' must be a positive number")
            if len(step) > 9:
                read = c_atoi(step[:999])
                what = f"reads it as {read}" if read > 0 else "refuses it"
                raise ScheduleError(
                    f"{field.name} field '{_show(spec)}': step {_show(step)} is too large: cron reads numbers as 32-bit "
                    f"integers and {what}; write a step of at most {field.high - field.low}")
            if number > field.high - field.low:
                first = field.low if rng == "*" else rng.partition("-")[0]
                raise ScheduleError(
                    f"{field.name} field '{_show(spec)}': step {step} is larger than the field ({field.low}-{field.high}): "
                    f"cron would only ever use the first value, {first}; write that instead")
        if rng == "*":
            continue
        if "-" in rng:
            first, _, last = rng.partition("-")
            low, high = _value(first, field, spec), _value(last, field, spec)
            if low > high:
                raise ScheduleError(f"{field.name} field '{_show(spec)}': range {first}-{last} goes backwards, so cron would "
                                    f"match nothing in it; to wrap around write {first}-{field.high},{field.low}-{last}")
        else:
            _value(rng, field, spec)
            if step is not None:
                # vixie cron accepts "5/10" only as a range start; be as strict as it is.
                raise ScheduleError(f"{field.name} field '{_show(spec)}': a step needs a range or '*' (e.g. '*/{step}')")


def normalize(schedule: str, flavour: str = DEFAULT_FLAVOUR) -> str:
    """Validate a schedule and return it in canonical form (single spaces).

    Accepts five fields or an alias such as ``@daily``, as the ``flavour`` of cron on the
    target reads them (Debian's by default); raises ScheduleError otherwise.
    """
    text = " ".join(schedule.split())
    if text.startswith("@"):
        if text in ALIASES or text in SPECIAL:
            return text
        known = ", ".join([*ALIASES, *SPECIAL])
        raise ScheduleError(f"unknown schedule alias '{text}' (known: {known})")
    fields = text.split(" ")
    if len(fields) != 5:
        raise ScheduleError(
            f"'{_show(schedule)}' has {len(fields)} field{'s' if len(fields) != 1 else ''}; "
            "a schedule has 5 (minute hour day-of-month month day-of-week) or is an alias like @daily"
        )
    for spec, field in zip(fields, FIELDS, strict=True):  # 5 and 5: checked above
        _check_field(spec, field)
    try:
        entry = parse(text, flavour)
    except CronSyntaxError as exc:
        raise ScheduleError(f"{FLAVOUR_NAMES[flavour]}'s crontab refuses '{text}': {exc.reason}") from None
    why = never_fires_reason(entry)
    if why:
        raise ScheduleError(f"'{text}' never fires: {why}; {FLAVOUR_NAMES[flavour]} would install it and never run it")
    return text
