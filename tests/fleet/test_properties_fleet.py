"""Properties checked for real on a test host, with a handful of hypothesis examples each.

- Foreign crontab lines around our block survive apply, rollback and destroy byte for byte,
  whatever they are (anything the real ``crontab`` accepts), above the block and below it.
- Whatever strings are declared as args reach the job as exactly that argv: the job, run
  through the real wrapper by ``deployer run``, writes its ``sys.argv`` as JSON.

Each example costs real applies (about a second each), hence few examples; the pure splice
property has many more in tests/unit/test_crontab_block.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from tests.fleet.conftest import FleetProject, make_project

pytestmark = pytest.mark.fleet

FEW = settings(max_examples=6, deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

printable = st.characters(blacklist_categories=["Cs", "Cc"])
free_text = st.text(alphabet=printable, max_size=40)
# Lines the real crontab accepts. Job lines are scheduled on Feb 30: they never fire.
comment = free_text.map(lambda t: "#" + t)
blank = st.sampled_from(["", " ", "\t", "  \t "])
variable = st.tuples(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True), free_text).map(lambda v: f"{v[0]}={v[1]}")
job = st.tuples(st.sampled_from(["0 0 30 2 *", "59 23 30 2 *", "*/7 1-3 30 2 mon-fri"]),
                st.text(alphabet=printable, min_size=1, max_size=40).filter(lambda c: c.strip() != "")).map(
    lambda j: f"{j[0]} {j[1]}")
foreign_line = st.one_of(comment, blank, variable, job).filter(lambda line: "deployer" not in line)
foreign = st.lists(foreign_line, max_size=6).map(lambda lines: "".join(line + "\n" for line in lines))


def declare(p: FleetProject, args: list[str], script: str = "tasks/argv.py") -> None:
    doc = {"project": "demo", "defaults": {"timeout": "1m"},
           "jobs": {"argv": {"script": script, "args": args, "schedule": "*/5 * * * *",
                             "env": {"ARGV_OUT": "/tmp/argv.json"}}},
           "environments": {"dev": {"inventory": "inventories/dev"}}}
    p.write("deployer.yml", yaml.safe_dump(doc, allow_unicode=False, sort_keys=False))


ARGV_TASK = """\
import json, os, sys
with open(os.environ["ARGV_OUT"], "w", encoding="utf-8") as f:
    json.dump(sys.argv[1:], f)
"""


@pytest.fixture
def host(fleet_factory: Any, tmp_path: Path) -> FleetProject:
    th = fleet_factory(["h1"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1")})
    p.write("tasks/argv.py", ARGV_TASK)
    return p


def install(p: FleetProject, text: str) -> bool:
    return p.th.exec_on("h1", ["crontab", "-"], input=text.encode(), text=False).returncode == 0


def test_foreign_crontab_lines_survive_apply_rollback_destroy_byte_for_byte(host: FleetProject) -> None:
    p = host
    versions = iter(range(1000))

    @FEW
    @given(above=foreign, below=foreign)
    @example(above="MAILTO=\"\"\n# 50% off\n0 0 30 2 * echo 'a  b' % c \\% d\n\n", below="\t\n#END deployer demo/dev\n")
    def roundtrip(above: str, below: str) -> None:
        assume(install(p, above))  # the real crontab refuses some texts: those cannot be on a host
        declare(p, [f"v{next(versions)}"])
        first = p.deployer("apply", "dev", "--yes")
        assert first.exit_code == 0, first
        with_block = p.crontab("h1")
        assert with_block.startswith(above), with_block
        block = with_block[len(above):]
        assert block.startswith("# BEGIN deployer demo/dev rev=") and block.endswith("# END deployer demo/dev\n"), with_block
        # Someone adds their own lines below our block by hand; then the block changes.
        assume(install(p, above + block + below))
        declare(p, [f"v{next(versions)}"])
        second = p.deployer("apply", "dev", "--yes")
        assert second.exit_code == 0, second
        now = p.crontab("h1")
        assert now.startswith(above) and now.endswith(below), now
        new_block = now[len(above):len(now) - len(below)]
        assert new_block != block and new_block.startswith("# BEGIN deployer demo/dev rev="), now
        assert new_block.endswith("# END deployer demo/dev\n") and new_block.count("# BEGIN deployer") == 1, now
        # rollback puts the first block back between the same foreign bytes; destroy leaves only them.
        back = p.deployer("rollback", "dev", "--yes")
        assert back.exit_code == 0, back
        assert p.crontab("h1") == above + block + below
        gone = p.deployer("destroy", "dev", "--yes")
        assert gone.exit_code == 0, gone
        assert p.crontab("h1") == above + below

    roundtrip()


# Any text but NUL (refused as input), with Jinja's own markers left out: args are templates.
arg = st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=24).filter(
    lambda a: not any(m in a for m in ("{{", "{%", "{#")))


def run_and_read_argv(p: FleetProject) -> list[str]:
    p.th.exec_on("h1", ["rm", "-f", "/tmp/argv.json"])
    applied = p.deployer("apply", "dev", "--yes")
    assert applied.exit_code == 0, applied
    ran = p.deployer("run", "dev", "argv")
    assert ran.exit_code == 0, ran
    argv: list[str] = json.loads(p.th.exec_on("h1", ["cat", "/tmp/argv.json"], check=True).stdout)
    return argv


def test_declared_args_reach_the_job_as_exactly_that_argv(host: FleetProject) -> None:
    p = host

    @FEW
    @given(args=st.lists(arg, max_size=5))
    @example(args=["$(touch /tmp/pwned)", "; touch /tmp/pwned", "`touch /tmp/pwned`", "a b", "'\"", "50%", "%%",
                   "line\nbreak", "", "-c", "*", "~", "~/x", "\\", "{x}", "} {", "\t", " lead", "trail ", "é ☃ 𝄞"])
    def roundtrip(args: list[str]) -> None:
        declare(p, args)
        assert run_and_read_argv(p) == args
        assert p.th.exec_on("h1", ["test", "-e", "/tmp/pwned"]).returncode != 0, "an argument was run by a shell"

    roundtrip()


def test_a_carriage_return_in_an_arg_with_a_brace(host: FleetProject) -> None:
    """Found by the property above: an arg with a '{' goes through Jinja, which rewrites its
    \\r and \\r\\n to \\n; the job then gets another argv than the one declared."""
    p = host
    args = ["{x}\r\n", "a{b\rc"]
    declare(p, args)
    assert run_and_read_argv(p) == args
