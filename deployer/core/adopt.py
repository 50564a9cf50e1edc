"""Adoption: hand-made crontab lines that already run a declared job. Pure text work.

Teams moving from hand-kept crontabs have lines like
``*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php >> .../email_queue.log 2>&1``.
Once deployer installs the same job, both would run. ``apply --adopt`` deletes such a line,
so the test is strict: a line "runs a declared job" only when the shell would run, as its
one command (after an optional ``cd DIR &&``, redirections aside):

- for a ``command:`` job, exactly the job's argv: its program and every argument, nothing
  more or less (``/usr/bin/php`` with its script in ``args`` claims only the lines running
  that script with those arguments, not every line that runs php);
- for a ``script:`` job, the script itself, or an interpreter (python, php, perl, ruby,
  node, sh...) running it, with the job's arguments: the script is the job's file name, or
  the same name under another extension (``process_email_queue.php`` for
  ``process_email_queue.py``).

A file name says which job a line may be, not that it is: ``/var/www/otherapp/
process_email_queue.php`` is another app's script of the same name. So a script job's line
is only *reported* (the job may run twice) unless the script it runs is one the job declares
it replaces (``legacy_scripts:``, absolute paths): only those lines are removed by ``apply
--adopt``. A command job's line is its exact argv, which says enough.

A line that merely names the job's files (``rm -f /tmp/<job>.lock``, ``chmod +x
.../<script>``, ``gzip .../<job>.log``) runs something else and is never claimed; nor is
a line we cannot read for certain (shell expansions, subshells, pipes, quotes left open).
Two lines running scripts of the job's name from different paths (another app's script of
the same file name beside the job's own) are ambiguous: both are reported, neither is
adopted. Only the crontab the job itself goes to (its run-as user's) is searched. Lines
are cron's lines (split on ``\\n`` only) and are removed byte-exactly.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from dataclasses import dataclass

from deployer.core import crontab
from deployer.core.desired import JobSpec

_BLOCK_BEGIN = "# BEGIN deployer "
_BLOCK_END = "# END deployer "
_INTERPRETER = re.compile(r"(python|php|php-cli|perl|ruby|node|nodejs|bash|sh|dash)[0-9.]*")
# Interpreter options that run code of their own instead of a script file.
_CODE_OPTIONS = set("cremE")
_BLANKS = " \t"


@dataclass(frozen=True)
class HandMade:
    """A foreign crontab line that runs a declared job."""

    user: str
    line_number: int  # 1-based, in the crontab as it is now
    line: str  # without its newline
    job: str
    # Another line also runs a script of this job's name from another path: which one the
    # job replaces is for a person to say, so neither is adopted.
    ambiguous: bool = False
    # A script job's line running a script of its name that the job does not declare in
    # legacy_scripts (``script``): perhaps another app's, so never removed.
    undeclared: bool = False
    script: str = ""


# ----------------------------------------------------------------------------- cron's view of a line

_ENV_LINE = re.compile(r"[ \t]*(\"[^\"]*\"|'[^']*'|[^ \t=]+)[ \t]*=")
_KEYWORDS = {"@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def command_of(line: str) -> str | None:
    """The command of an active cron entry (what cron hands to the shell, ``%`` still in),
    or None: a comment, a blank line, a ``NAME=value`` line, anything that is not an entry.
    As Debian's cron reads a line (entry.c, env.c): blanks are spaces and tabs."""
    body = line.removesuffix("\n").lstrip(_BLANKS)
    if not body or body.startswith("#") or _ENV_LINE.match(body):
        return None
    words = 1 if body.startswith("@") else 5
    rest = body
    for _ in range(words):
        field = re.match(r"[^ \t]+", rest)
        if field is None:
            return None
        if words == 1 and field.group() not in _KEYWORDS:
            return None
        if words == 5 and not re.fullmatch(r"[0-9A-Za-z*/,\-]+", field.group()):
            return None
        rest = rest[field.end():]
        if not rest or rest[0] not in _BLANKS:
            return None
        rest = rest.lstrip(_BLANKS)
    return rest or None


def _shell_text(command: str) -> str:
    """What cron gives ``/bin/sh -c``: up to the first unescaped ``%`` (the rest is stdin),
    ``\\%`` unescaped (do_command.c)."""
    out, i = [], 0
    while i < len(command):
        if command[i] == "\\" and command[i + 1:i + 2] == "%":
            out.append("%")
            i += 2
            continue
        if command[i] == "%":
            break
        out.append(command[i])
        i += 1
    return "".join(out)


class _Unread(Exception):
    """Shell we do not model: the line is not claimed."""


def _tokens(text: str) -> list[tuple[str, str]]:
    """The shell's words and operators: ("word", text) or ("op", text). Raises _Unread on
    anything whose meaning depends on the shell's state (expansions, globs, subshells,
    here-documents, open quotes)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
            continue
        if c == "#":
            break  # a comment, to the end of the line
        if c in ";&|<>" or (c.isdigit() and re.match(r"[0-9]+[<>]", text[i:])):
            op = re.match(r"[0-9]*(>>|>&|<&|>\||<<|<>|&>>|&>|&&|\|\||[;&|<>])", text[i:])
            assert op is not None
            if op.group(1) == "<<":
                raise _Unread
            out.append(("op", op.group()))
            i += op.end()
            continue
        word = []
        while i < n and text[i] not in " \t;&|<>":
            c = text[i]
            if c == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise _Unread
                word.append(text[i + 1:end])
                i = end + 1
            elif c == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] in "$`":
                        raise _Unread
                    if text[i] == "\\" and i + 1 < n and text[i + 1] in '$`"\\':
                        i += 1
                    word.append(text[i])
                    i += 1
                if i >= n:
                    raise _Unread
                i += 1
            elif c == "\\":
                if i + 1 >= n:
                    raise _Unread
                word.append(text[i + 1])
                i += 2
            elif c in "$`*?[(){}" or (c == "~" and not word):
                raise _Unread
            else:
                word.append(c)
                i += 1
        out.append(("word", "".join(word)))
    return out


def argv_of(command: str) -> list[str] | None:
    """The argv of the one program a cron command runs, or None when it runs something
    else or more: one simple command, after an optional ``cd DIR &&`` (or ``;``), with its
    redirections taken out."""
    try:
        tokens = _tokens(_shell_text(command))
    except _Unread:
        return None
    commands: list[list[str]] = [[]]
    separators: list[str] = []
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "op" and value.lstrip("0123456789") in (">", ">>", "<", ">&", "<&", ">|", "<>", "&>", "&>>"):
            if i + 1 >= len(tokens) or tokens[i + 1][0] != "word":
                return None
            i += 2  # a redirection and its target: where output goes, not what runs
            continue
        if kind == "op":
            separators.append(value)
            commands.append([])
        else:
            commands[-1].append(value)
        i += 1
    if commands and not commands[-1] and separators and separators[-1] == ";":
        commands.pop()
        separators.pop()
    if len(commands) == 2 and separators[0] in ("&&", ";") and len(commands[0]) == 2 and commands[0][0] == "cd":
        commands, separators = commands[1:], []
    if len(commands) != 1 or separators or not commands[0]:
        return None
    return commands[0]


# ----------------------------------------------------------------------------- the job's own lines


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name.strip(".") else name


def _is_script(path: str, script: str) -> bool:
    name = posixpath.basename(path)
    return name == script or (_stem(name) == _stem(script) and "." in name and len(_stem(script)) >= 4)


def script_run(argv: list[str], job: JobSpec) -> str | None:
    """The path of the job's script that ``argv`` runs with the job's arguments, or None."""
    if not job.script or not argv:
        return None
    if _is_script(argv[0], job.script):
        script_at = 0
    elif _INTERPRETER.fullmatch(posixpath.basename(argv[0])):
        script_at = 1
        while script_at < len(argv) and re.fullmatch(r"-[A-Za-z]+", argv[script_at]) \
                and not set(argv[script_at][1:]) & _CODE_OPTIONS:
            script_at += 1
        if script_at >= len(argv) or not _is_script(argv[script_at], job.script):
            return None
    else:
        return None
    return argv[script_at] if tuple(argv[script_at + 1:]) == job.args else None


def _declared(path: str, job: JobSpec) -> bool:
    """Whether the script a line runs is one the job says it replaces (the same absolute path)."""
    return path.startswith("/") and posixpath.normpath(path) in {posixpath.normpath(p) for p in job.legacy_scripts}


def runs_job(command: str, job: JobSpec) -> bool:
    """Whether a cron command runs ``job``: its exact argv (command jobs), or its script with
    its arguments (script jobs)."""
    argv = argv_of(command)
    if argv is None:
        return False
    if job.script:
        return script_run(argv, job) is not None
    return bool(job.command) and argv == [job.command, *job.args]


def hand_made(user: str, text: str | None, jobs: tuple[JobSpec, ...] | list[JobSpec]) -> list[HandMade]:
    """Lines outside every deployer block of the crontab of ``user`` whose command runs one
    of ``jobs`` (pass the jobs that go to this crontab)."""
    found: list[HandMade] = []
    scripts: dict[str, set[str]] = {}  # job -> the script paths its lines run
    inside = False
    for number, raw in enumerate(crontab.lines(text or ""), start=1):
        line = raw.removesuffix("\n")
        if line.startswith(_BLOCK_BEGIN):
            inside = True
        if not inside and (command := command_of(line)) is not None:
            argv = argv_of(command)
            for job in jobs:
                if argv is not None and runs_job(command, job):
                    path = script_run(argv, job) if job.script else None
                    found.append(HandMade(user, number, line, job.id, undeclared=path is not None and not _declared(path, job),
                                          script=path or ""))
                    if path is not None:
                        scripts.setdefault(job.id, set()).add(path)
                    break
        if line.startswith(_BLOCK_END):
            inside = False
    return [dataclasses.replace(d, ambiguous=True) if len(scripts.get(d.job, ())) > 1 else d for d in found]


def without_lines(text: str, numbers: set[int]) -> str:
    """``text`` without those lines (1-based, cron's lines); every other byte stays."""
    return "".join(line for n, line in enumerate(crontab.lines(text), start=1) if n not in numbers)
