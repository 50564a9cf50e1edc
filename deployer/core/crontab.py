r"""The managed block inside a user's crontab. Pure text surgery, byte-exact.

Everything outside our BEGIN/END markers is kept exactly as it was: comments, blank
lines, ``VAR=`` lines, other tools' blocks (``#Ansible:`` entries), even odd spacing. We
never parse foreign lines, so we cannot re-render them differently.

A crontab's text is its bytes decoded as UTF-8 with ``surrogateescape`` (the probe reads
it so, the applier encodes it back so): every byte, valid UTF-8 or not, CR included,
survives the round trip. Lines are what cron calls lines: cron reads a crontab with
``get_char`` up to ``'\n'`` and nothing else (misc.c/entry.c), so ``\r``, ``\x0b``,
``\x0c``, ``\x1c``-``\x1e``, ``\x85``, U+2028/U+2029, which ``str.splitlines`` also
breaks on, are bytes inside a line here. Splitting any other way would let a foreign
line hide or fake one of our markers.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from deployer.config.chars import control_character


def begin_marker(project: str, env: str) -> str:
    return f"# BEGIN deployer {project}/{env}"


def end_marker(project: str, env: str) -> str:
    return f"# END deployer {project}/{env}"


@dataclass(frozen=True)
class Split:
    before: str
    block: str | None  # the block, markers included, with its final newline
    after: str


class CrontabConflict(ValueError):
    """Our markers are broken (missing END, duplicated block): a person must look."""


def lines(text: str) -> list[str]:
    r"""The lines of a crontab as cron splits them: on ``\n`` only, each with its ``\n``
    (the last one may have none). ``"".join(lines(text)) == text`` always."""
    parts = text.split("\n")
    out = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        out.append(parts[-1])
    return out


def unsafe_character(value: str) -> str | None:
    """The first character of ``value`` that must never reach a crontab from a field we
    render, shown as ``U+XXXX``; None when there is none.

    Refused: what config.chars refuses everywhere (every control character, TAB and NEL
    included, the line and paragraph separators, undecodable bytes), and in a crontab also
    the format characters (bidi overrides, zero-width): they make a line read differently
    from what cron runs. cron itself splits on ``\\n`` only, but terminals, editors and other
    tools reading a crontab split on many of these, and a marker line must look the same
    to all of them.
    """
    found = control_character(value)
    if found is None:
        found = next((f"U+{ord(char):04X}" for char in value if unicodedata.category(char) == "Cf"), None)
    return found


class UnsafeBlock(CrontabConflict):
    """A block we were to install carries a character no rendered field may carry (a
    CrontabConflict, so that every caller reports it as one: a person's error, no change)."""


def check_block(block: str, project: str, env: str) -> None:
    """Our block must be lines of printable text only, first and last its markers: the last
    guard before any block reaches a crontab (apply, rollback)."""
    body = block[:-1] if block.endswith("\n") else block
    rows = body.split("\n")
    for number, row in enumerate(rows, start=1):
        if (bad := unsafe_character(row)) is not None:
            raise UnsafeBlock(f"line {number} of the block deployer would install holds the character {bad}; "
                              "nothing was changed: remove it from the declaration (description, python, home)")
    if not block.endswith("\n") or not _is_marker(rows[0], begin_marker(project, env)) or rows[-1] != end_marker(project, env) \
            or any(_is_marker(row, begin_marker(project, env)) or row == end_marker(project, env) for row in rows[1:-1]):
        raise UnsafeBlock("the block deployer would install is not one block between its markers; nothing was changed")


def _is_marker(line: str, marker: str) -> bool:
    # The BEGIN line carries more after the name (revision, a warning); match the name exactly.
    return line == marker or line.startswith(marker + " ")


def split(text: str, project: str, env: str) -> Split:
    """Cut a crontab into (foreign before, our block, foreign after)."""
    begin, end = begin_marker(project, env), end_marker(project, env)
    rows = lines(text)
    starts = [i for i, line in enumerate(rows) if _is_marker(line.removesuffix("\n"), begin)]
    ends = [i for i, line in enumerate(rows) if line.removesuffix("\n") == end]
    if not starts and not ends:
        return Split(text, None, "")
    if len(starts) > 1 or len(ends) > 1:
        raise CrontabConflict(
            f"the crontab holds {max(len(starts), len(ends))} '{begin}' blocks; keep one (crontab -e) and run again")
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        if starts and (not ends or ends[0] < starts[0]):
            found, missing, line = begin, "END", starts[0] + 1
        else:
            found, missing, line = end, "BEGIN", ends[0] + 1
        raise CrontabConflict(
            f"the crontab has '{found}' without its {missing} marker (line {line}); "
            "repair or remove the block by hand (crontab -e) and run again")
    s, e = starts[0], ends[0]
    return Split("".join(rows[:s]), "".join(rows[s:e + 1]), "".join(rows[e + 1:]))


def block_of(text: str | None, project: str, env: str) -> str | None:
    """Our block in a crontab (markers included), or None; CrontabConflict if broken."""
    return split(text or "", project, env).block


def block_revision(text: str | None, project: str, env: str) -> str | None:
    """The ``rev=`` our block's BEGIN line names: the release cron runs. None without a
    (readable) block."""
    try:
        block = block_of(text, project, env)
    except CrontabConflict:
        return None
    if block is None:
        return None
    first = block.split("\n", 1)[0][len(begin_marker(project, env)):].split()
    return next((word[4:] for word in first if word.startswith("rev=") and len(word) > 4), None)


def block_jobs(block: str | None) -> set[str]:
    """The job ids a block of ours starts: each job's entry ends with ``<release>/run <job id>``
    (the release path quoted or not). Other lines of the block (the watchdog's, which runs
    ``<release>/watchdog``) start no job."""
    ids = set()
    for line in lines(block or ""):
        words = line.rstrip("\n").split(" ")
        if words[0].startswith("#") or len(words) < 3:
            continue
        if words[-2].removesuffix("'").endswith("/run"):
            ids.add(words[-1])
    return ids


def splice(text: str, project: str, env: str, block: str | None) -> str:
    """``text`` with our block replaced by ``block`` (or removed when None).

    A new block goes at the end. The one change we may make outside it: a final newline
    after the last foreign line when we append after it (cron refuses a crontab whose
    last line has none, so such a crontab cannot have been installed with ``crontab``).
    UnsafeBlock (a CrontabConflict) when ``block`` is not plain lines between our markers.
    """
    if block is not None:
        check_block(block, project, env)
    parts = split(text, project, env)
    if parts.block is None:
        if block is None:
            return text
        before = text if text == "" or text.endswith("\n") else text + "\n"
        return before + block
    return parts.before + (block or "") + parts.after


def escape_percent(command: str) -> str:
    """cron turns an unescaped ``%`` into a newline and feeds the rest to stdin."""
    return command.replace("%", "\\%")
