"""Adoption as data: which hand-made lines run a declared job, and their byte-exact removal."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from deployer.core.adopt import hand_made, runs_job, without_lines
from deployer.core.checks import checks
from deployer.core.desired import JobSpec
from deployer.core.facts import CrontabFact
from deployer.core.plan import plan
from deployer.core.release import Release
from tests.unit.test_plan import in_place, release  # noqa: F401  (fixture)

EMAIL = JobSpec(id="email-queue", description="", schedule="*/5 * * * *", script="process_email_queue.py", command=None,
                args=(), run_as=None, log_file="/l", lock_file="/k", state_dir="/s", timeout=60, concurrency="skip",
                workdir=None, env=(), secret_names=frozenset())
TRUE = dataclasses.replace(EMAIL, id="noop", script=None, command="/usr/local/bin/purge --days 30")

HAND_KEPT = (
    "MAILTO=ops@example.com\n"
    "# the queue, by hand since 2019\n"
    "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php >> /srv/shop/logs/email_queue.log 2>&1\n"
    "#*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php   (commented out: does not run)\n"
    "0 3 * * * /usr/local/bin/purge --days 30 --verbose\n"
    "0 4 * * * /usr/local/bin/backup.sh\n"
    "# BEGIN deployer other/prod rev=abc\n"
    "*/5 * * * * python3 /var/lib/deployer/other-prod/releases/abc/run process_email_queue.py\n"
    "# END deployer other/prod\n"
)


def test_the_same_script_under_another_extension_and_the_same_command_are_found() -> None:
    found = hand_made("www-data", HAND_KEPT, (EMAIL, TRUE))
    assert [(d.line_number, d.job) for d in found] == [(3, "email-queue"), (5, "noop")]
    assert found[0].line.startswith("*/5 * * * * /usr/bin/php")


def test_what_is_not_a_duplicate() -> None:
    assert not runs_job("/usr/local/bin/backup.sh", EMAIL)
    assert not runs_job("/usr/bin/php /srv/email_queue_report.php", EMAIL)
    assert not runs_job("/usr/local/bin/purge --days 3", TRUE)
    assert hand_made("root", "MAILTO=x\n# */5 * * * * process_email_queue.py\n", (EMAIL,)) == []
    assert hand_made("root", None, (EMAIL,)) == []


@given(st.lists(st.sampled_from(["a\n", "b\r\n", "\n", "# c\n", "x=y\n", "é ☃\n"]), max_size=12), st.data())
def test_removal_keeps_every_other_byte(lines: list[str], data: st.DataObject) -> None:
    text = "".join(lines)
    drop = data.draw(st.sets(st.integers(1, max(len(lines), 1))))
    kept = without_lines(text, drop)
    assert kept == "".join(line for n, line in enumerate(text.splitlines(keepends=True), start=1) if n not in drop)


def test_plan_warns_and_adopt_removes_the_line_in_the_same_change(release: Release) -> None:  # noqa: F811
    script_line = "*/5 * * * * /usr/bin/python3 /srv/old/a.py >> /tmp/a.log 2>&1\n"  # the job's script is tasks/a.py
    facts = in_place(release, crontab="MAILTO=me\n" + script_line)
    p = plan(release, facts)
    assert p.empty and any("would run twice: line 2 of the crontab of alice" in w for w in p.warnings)
    [check] = [c for c in checks(p) if c.name == "duplicate"]
    assert check.status == "fail" and "apply --adopt" in check.detail

    adopted = plan(release, facts, adopt=True)
    [cc] = adopted.crontab_changes
    assert cc.before == "MAILTO=me\n" + script_line + release.crontab_blocks["alice"]
    assert cc.after == "MAILTO=me\n" + release.crontab_blocks["alice"]
    assert [c.summary for c in adopted.changes] == [f"adopt job 'a': remove hand-made line 2: {script_line.strip()}"]
    # once adopted, nothing is left to do or to warn about
    again = plan(release, dataclasses.replace(facts, crontabs={"alice": CrontabFact(cc.after)}))
    assert again.empty and not again.hand_made
