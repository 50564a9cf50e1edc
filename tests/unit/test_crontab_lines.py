"""A crontab is bytes, and its lines are cron's (split on \\n only): properties of the pure
splitter and splicer over arbitrary bytes, and the refusal of every control or
line-separating character in what we render (issue 12, class 4).

The real crontab binary and spool are in tests/cron/test_crontab_bytes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from deployer.config.inventory import Target
from deployer.config.load import load_project
from deployer.core.crontab import CrontabConflict, UnsafeBlock, block_of, check_block, lines, splice, split
from deployer.core.render import render
from deployer.errors import InvalidInput

BLOCK = "# BEGIN deployer shop/dev rev=abc\n# a: Say hi\n*/5 * * * * python3 /x/run a\n# END deployer shop/dev\n"
NEW = BLOCK.replace("/x/", "/new/").replace("rev=abc", "rev=def")

# Every character some reader takes for the end of a line, besides cron's own \n.
SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
MARKERS = ["# BEGIN deployer shop/dev rev=x", "# END deployer shop/dev", "# BEGIN deployer shop/dev"]


def decoded(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encoded(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# A foreign line: any bytes but \n, often a separator followed by one of our markers (the
# attack: a line that looks like two to str.splitlines, the second one ours).
separator_bytes = st.sampled_from([encoded(s) for s in SEPARATORS])
marker_bytes = st.sampled_from([encoded(m) for m in MARKERS])
any_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
disguised = st.tuples(any_bytes, separator_bytes, marker_bytes, any_bytes).map(lambda t: b"".join(t))
foreign_line = st.one_of(any_bytes, disguised)
foreign = st.lists(foreign_line, max_size=8).map(lambda ls: b"".join(line + b"\n" for line in ls))


@given(st.binary(max_size=200).map(decoded))
@example("a\r\nb\x85c\u2028d\x1ce\n\nf")
def test_lines_are_cut_at_newlines_only(text: str) -> None:
    rows = lines(text)
    assert "".join(rows) == text
    assert all(row.count("\n") == (1 if row.endswith("\n") else 0) for row in rows)
    assert all(row.endswith("\n") for row in rows[:-1])
    assert len(rows) == text.count("\n") + (0 if text.endswith("\n") or not text else 1)


@given(foreign, foreign)
@example(b"0 1 * * * backup.sh #\x85# BEGIN deployer shop/dev rev=x\nkeep me\n", b"#\x1c# END deployer shop/dev\n")
@example(b"MAILTO=a\r\n*/5 * * * * cmd\r\n\xff\xfe\n", b"x\xe2\x80\xa8# END deployer shop/dev\n")
def test_foreign_bytes_survive_apply_change_and_destroy(top: bytes, bottom: bytes) -> None:
    """Whatever bytes surround our block, with markers hidden behind any separator, add,
    replace and remove touch our block's lines only."""
    before = decoded(top)
    added = splice(before, "shop", "dev", BLOCK)
    assert encoded(added) == top + encoded(BLOCK)
    hand = added + decoded(bottom)
    assert block_of(hand, "shop", "dev") == BLOCK  # no disguised marker counts as ours
    changed = splice(hand, "shop", "dev", NEW)
    assert encoded(changed) == top + encoded(NEW) + bottom
    assert encoded(splice(changed, "shop", "dev", None)) == top + bottom


@pytest.mark.parametrize("separator", SEPARATORS)
def test_a_disguised_marker_neither_opens_nor_closes_a_block(separator: str) -> None:
    # Before: str.splitlines saw a block from line 2 to line 4 here, and an apply replaced it,
    # deleting 'B' and cutting lines 2 and 4 in half.
    text = f"A\n#{separator}# BEGIN deployer shop/dev rev=x\nB\n#{separator}# END deployer shop/dev\nC\n"
    assert split(text, "shop", "dev").block is None
    assert splice(text, "shop", "dev", BLOCK) == text + BLOCK
    assert splice(text + BLOCK, "shop", "dev", None) == text


@pytest.mark.parametrize("char", [*SEPARATORS, "\x00", "\t", "\x1b", "\x7f", "\u202e", "\u200b", "\udcff"])
def test_a_block_with_any_control_character_is_never_spliced(char: str) -> None:
    bad = BLOCK.replace("Say hi", f"Say{char}hi")
    with pytest.raises(UnsafeBlock) as caught:
        splice("x\n", "shop", "dev", bad)
    assert str(caught.value).startswith(f"line 2 of the block deployer would install holds the character U+{ord(char):04X}")
    assert isinstance(caught.value, CrontabConflict)  # reported like every crontab refusal: no change


@pytest.mark.parametrize("block", [
    BLOCK + "*/5 * * * * id\n",  # a line after the END
    BLOCK.replace("# a: Say hi\n", "# END deployer shop/dev\n# BEGIN deployer shop/dev rev=abc\n"),
    BLOCK.rstrip("\n"),
    BLOCK.replace("shop/dev rev", "shop/prod rev"),
])
def test_a_block_must_be_one_block_between_its_markers(block: str) -> None:
    with pytest.raises(UnsafeBlock):
        check_block(block, "shop", "dev")


def _project(tmp_path: Path, description: str = "fine", python: str = "python3") -> InvalidInput | None:
    (tmp_path / "inv").mkdir(exist_ok=True)
    (tmp_path / "inv" / "hosts.yml").write_text("all: {hosts: {h1: {ansible_connection: local}}}\n")
    import json

    (tmp_path / "deployer.yml").write_text(
        f"project: p\ndefaults:\n  python: {json.dumps(python)}\njobs:\n  a:\n    command: /bin/true\n"
        f"    description: {json.dumps(description)}\n    schedule: '@hourly'\n"
        "environments:\n  dev:\n    inventory: inv\n")
    try:
        project = load_project(tmp_path / "deployer.yml")
    except InvalidInput as exc:
        return exc
    env = project.environment("dev")
    target = Target("h1", "local")
    try:
        render(project, env, target, [target])
    except InvalidInput as exc:
        return exc
    return None


@pytest.mark.parametrize("char", [*SEPARATORS, "\x00", "\x1b", "\t", "\u202e", "\u200b"])
def test_a_description_with_a_separator_is_refused(tmp_path: Path, char: str) -> None:
    """The would-be description of the attack: text, a separator, then our END marker and a
    line of the attacker's. It never reaches a crontab: a located error, exit 2 (from the
    declaration's validation, or, for what that lets through, from render's crontab check)."""
    error = _project(tmp_path, description=f"Say hi{char}# END deployer p/dev")
    assert error is not None
    [problem] = error.problems
    assert problem.key_path == "jobs.a.description" and problem.line == 7
    assert "must be a single line" in problem.message or f"U+{ord(char):04X}" in problem.message


@pytest.mark.parametrize("char", ["\u202e", "\u200b", "\u2066"])
def test_render_refuses_format_characters_in_a_crontab_field(tmp_path: Path, char: str) -> None:
    """Bidi overrides and zero-width characters pass the declaration's checks (they are not
    control characters) but make a crontab line read differently from what cron runs."""
    error = _project(tmp_path, description=f"Say hi{char}")
    assert error is not None
    [problem] = error.problems
    assert problem.key_path == "jobs.a.description" and problem.line == 7
    assert f"holds the character U+{ord(char):04X}, which must not reach a crontab" in problem.message


def test_python_with_a_line_of_its_own_is_refused_at_render(tmp_path: Path) -> None:
    error = _project(tmp_path, python="python3\u2028* * * * * id")
    assert error is not None
    [problem] = error.problems
    assert problem.key_path == "defaults.python" and "U+2028" in problem.message


def test_ordinary_text_renders(tmp_path: Path) -> None:
    assert _project(tmp_path, description="Envoie la file de courriels — 50 % max, déjà ☃") is None
