"""Characters that have no place in what a declaration's field becomes (a file name, a user,
a program, a crontab line). Kept free of pydantic: render uses it on every rendered path."""

from __future__ import annotations

import unicodedata

# Control characters (C0, DEL, C1), line and paragraph separators, lone surrogates: none of
# them belongs in a file name, a user name, a program or a crontab line, and several split
# or fake lines (cron splits on "\n" only, Python's splitlines on \x1c, \x85, \u2028...).
_CONTROL_CATEGORIES = {"Cc", "Zl", "Zp", "Cs"}
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines() splits on each


def control_character(value: str) -> str | None:
    """The first control character of ``value`` as U+XXXX, or None."""
    for char in value:
        if unicodedata.category(char) in _CONTROL_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None
