"""The managed block: spliced in and out of a crontab without touching a foreign byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployer.core.crontab import CrontabConflict, escape_percent, splice, split

BLOCK = "# BEGIN deployer shop/dev rev=abc\n*/5 * * * * python3 /x/run a\n# END deployer shop/dev\n"
OTHER = "# BEGIN deployer shop/prod rev=def\n0 * * * * python3 /y/run b\n# END deployer shop/prod\n"


@pytest.mark.parametrize(("before", "after"), [
    ("", BLOCK),
    ("MAILTO=me\n", "MAILTO=me\n" + BLOCK),
    ("0 1 * * * backup  # no newline at the end", "0 1 * * * backup  # no newline at the end\n" + BLOCK),
    (OTHER, OTHER + BLOCK),  # another environment's block is foreign to this one
])
def test_a_new_block_goes_at_the_end(before: str, after: str) -> None:
    assert splice(before, "shop", "dev", BLOCK) == after


def test_an_existing_block_is_replaced_in_place() -> None:
    old = "top\n" + BLOCK.replace("/x/", "/old/") + "bottom\n"
    assert splice(old, "shop", "dev", BLOCK) == "top\n" + BLOCK + "bottom\n"


def test_removing_the_block_leaves_the_rest() -> None:
    assert splice("top\n" + BLOCK + "bottom\n", "shop", "dev", None) == "top\nbottom\n"
    assert splice("top\n", "shop", "dev", None) == "top\n"


@pytest.mark.parametrize(("text", "message"), [
    ("# BEGIN deployer shop/dev rev=1\nx\n",
     "the crontab has '# BEGIN deployer shop/dev' without its END marker (line 1); repair or remove the block by hand (crontab -e) and run again"),
    ("x\n# END deployer shop/dev\n",
     "the crontab has '# END deployer shop/dev' without its BEGIN marker (line 2); repair or remove the block by hand (crontab -e) and run again"),
    (BLOCK + BLOCK,
     "the crontab holds 2 '# BEGIN deployer shop/dev' blocks; keep one (crontab -e) and run again"),
])
def test_broken_markers_are_refused(text: str, message: str) -> None:
    with pytest.raises(CrontabConflict) as caught:
        split(text, "shop", "dev")
    assert str(caught.value) == message


def test_a_marker_of_a_longer_name_is_not_ours() -> None:
    text = "# BEGIN deployer shop/dev2 rev=1\nx\n# END deployer shop/dev2\n"
    assert split(text, "shop", "dev").block is None


def test_percent_is_escaped_for_cron() -> None:
    assert escape_percent("date +%s 100%") == "date +\\%s 100\\%"


foreign_line = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\r"), max_size=60).filter(
    lambda line: "deployer shop/dev" not in line)


@given(st.lists(foreign_line, max_size=12), st.lists(foreign_line, max_size=12))
def test_foreign_lines_survive_add_replace_remove(top: list[str], bottom: list[str]) -> None:
    """Arbitrary foreign content around our block comes back byte for byte."""
    original = "".join(line + "\n" for line in top)
    with_block = splice(original, "shop", "dev", BLOCK)
    assert with_block == original + BLOCK
    hand_added = with_block + "".join(line + "\n" for line in bottom)
    replaced = splice(hand_added, "shop", "dev", BLOCK.replace("/x/", "/new/"))
    assert replaced.startswith(original) and replaced.endswith("".join(line + "\n" for line in bottom))
    assert splice(replaced, "shop", "dev", None) == original + "".join(line + "\n" for line in bottom)
