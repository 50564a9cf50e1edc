"""The managed block inside a user's crontab. Pure text surgery, byte-exact.

Everything outside our BEGIN/END markers is kept exactly as it was: comments, blank
lines, ``VAR=`` lines, other tools' blocks (``#Ansible:`` entries), even odd spacing. We
never parse foreign lines, so we cannot re-render them differently.
"""

from __future__ import annotations

from dataclasses import dataclass


def begin_marker(project: str, env: str) -> str:
    return f"# BEGIN deployer {project}/{env}"


def end_marker(project: str, env: str) -> str:
    return f"# END deployer {project}/{env}"


class CrontabConflict(ValueError):
    """Our markers are broken (missing END, duplicated block): a person must look."""


@dataclass(frozen=True)
class Split:
    before: str
    block: str | None  # the block, markers included, with its final newline
    after: str


def _is_marker(line: str, marker: str) -> bool:
    # The BEGIN line carries more after the name (revision, a warning); match the name exactly.
    return line == marker or line.startswith(marker + " ")


def split(text: str, project: str, env: str) -> Split:
    """Cut a crontab into (foreign before, our block, foreign after)."""
    begin, end = begin_marker(project, env), end_marker(project, env)
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _is_marker(line.rstrip("\n"), begin)]
    ends = [i for i, line in enumerate(lines) if line.rstrip("\n") == end]
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
    return Split("".join(lines[:s]), "".join(lines[s:e + 1]), "".join(lines[e + 1:]))


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


def splice(text: str, project: str, env: str, block: str | None) -> str:
    """``text`` with our block replaced by ``block`` (or removed when None).

    A new block goes at the end. The one change we may make outside it: a final newline
    after the last foreign line when we append after it (cron refuses a crontab whose
    last line has none, so such a crontab cannot have been installed with ``crontab``).
    """
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
