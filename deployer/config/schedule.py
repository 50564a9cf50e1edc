"""Cron schedules: validation with messages that name the field and the bad value.

We check the expression ourselves (rather than letting a cron library throw) because the
operator needs to hear *which* field is wrong and what the allowed range is; the syntax
accepted is exactly what Debian's cron (vixie cron) accepts, so nothing that passes here is
rejected by ``crontab`` on the target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
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


class ScheduleError(ValueError):
    """The schedule is not a valid cron expression; the message says why."""


def _value(text: str, field: Field, spec: str) -> int:
    lowered = text.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.names_base
    if not (text.isascii() and text.isdigit()):  # cron reads ASCII digits only, not '٣' or '³'
        allowed = f"{field.low}-{field.high}"
        if field.names:
            allowed += f" or {field.names[0]}-{field.names[-1]}"
        raise ScheduleError(f"{field.name} field '{spec}': '{text}' is not a number ({allowed})")
    number = int(text)
    if not field.low <= number <= field.high:
        raise ScheduleError(f"{field.name} field '{spec}': {number} is out of range {field.low}-{field.high}")
    return number


def _check_field(spec: str, field: Field) -> None:
    if spec == "":
        raise ScheduleError(f"{field.name} field is empty")
    for part in spec.split(","):
        match = _STEP.match(part)
        if not match:
            raise ScheduleError(f"{field.name} field '{spec}': '{part}' is not valid")
        rng, step = match.group("range"), match.group("step")
        if step is not None:
            if not step.isdigit() or int(step) == 0:
                raise ScheduleError(f"{field.name} field '{spec}': step '{step}' must be a positive number")
        if rng == "*":
            continue
        if "-" in rng:
            first, _, last = rng.partition("-")
            low, high = _value(first, field, spec), _value(last, field, spec)
            if low > high:
                raise ScheduleError(f"{field.name} field '{spec}': range {first}-{last} goes backwards")
        else:
            _value(rng, field, spec)
            if step is not None:
                # vixie cron accepts "5/10" only as a range start; be as strict as it is.
                raise ScheduleError(f"{field.name} field '{spec}': a step needs a range or '*' (e.g. '*/{step}')")


def normalize(schedule: str) -> str:
    """Validate a schedule and return it in canonical form (single spaces).

    Accepts five fields or an alias such as ``@daily``; raises ScheduleError otherwise.
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
            f"'{schedule}' has {len(fields)} field{'s' if len(fields) != 1 else ''}; "
            "a schedule has 5 (minute hour day-of-month month day-of-week) or is an alias like @daily"
        )
    for spec, field in zip(fields, FIELDS):
        _check_field(spec, field)
    return text
