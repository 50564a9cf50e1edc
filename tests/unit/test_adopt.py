"""Adoption as data: which hand-made lines run a declared job, and their byte-exact removal."""

from __future__ import annotations

import dataclasses

import pytest
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
                args=(), run_as=None, log_file="/l", lock_file="/k", state_dir="/s", timeout=60, concurrency="forbid",
                workdir=None, env=(), secret_names=frozenset())
# A command job as a declaration makes it: one program, its arguments apart (the wrapper runs
# [command, *args]; validation refuses a command with spaces).
TRUE = dataclasses.replace(EMAIL, id="noop", script=None, command="/usr/local/bin/purge", args=("--days", "30"))

HAND_KEPT = (
    "MAILTO=ops@example.com\n"
    "# the queue, by hand since 2019\n"
    "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php >> /srv/shop/logs/email_queue.log 2>&1\n"
    "#*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php   (commented out: does not run)\n"
    "0 3 * * * /usr/local/bin/purge --days 30 >> /var/log/purge.log 2>&1\n"
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
    # Issue 12: "the same command line" is the job's argv exactly; an extra argument is another run
    # (this line was claimed when a line "containing" the command counted).
    assert not runs_job("/usr/local/bin/purge --days 30 --verbose", TRUE)
    assert hand_made("root", "MAILTO=x\n# */5 * * * * process_email_queue.py\n", (EMAIL,)) == []
    assert hand_made("root", None, (EMAIL,)) == []


@given(st.lists(st.sampled_from(["a\n", "b\r\n", "\n", "# c\n", "x=y\n", "é ☃\n"]), max_size=12), st.data())
def test_removal_keeps_every_other_byte(lines: list[str], data: st.DataObject) -> None:
    text = "".join(lines)
    drop = data.draw(st.sets(st.integers(1, max(len(lines), 1))))
    kept = without_lines(text, drop)
    assert kept == "".join(line for n, line in enumerate(text.splitlines(keepends=True), start=1) if n not in drop)


def declaring(release: Release, *scripts: str) -> Release:  # noqa: F811
    """The release with its job declaring the hand-made scripts it replaces (legacy_scripts)."""
    return dataclasses.replace(release, jobs=tuple(dataclasses.replace(j, legacy_scripts=scripts) for j in release.jobs))


def test_plan_warns_and_adopt_removes_the_line_in_the_same_change(release: Release) -> None:  # noqa: F811
    script_line = "*/5 * * * * /usr/bin/python3 /srv/old/a.py >> /tmp/a.log 2>&1\n"  # the job's script is tasks/a.py
    release = declaring(release, "/srv/old/a.py")  # ... which replaces the hand-made /srv/old/a.py
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


# ----------------------------------------------------------------------------- issue 12, class 4
# Lines that only mention a job's files, as a hand-kept crontab has them around the job's own
# line: apply --adopt deleted them all. Each must be left alone.

PHP = dataclasses.replace(EMAIL, id="php-queue", script=None, command="/usr/bin/php",
                          args=("/srv/shop/process_email_queue.php", "--max", "50"))


@pytest.mark.parametrize("line", [
    "*/5 * * * * rm -f /tmp/email-queue.lock",
    "@reboot chmod +x /srv/shop/process_email_queue.py",
    "0 0 * * * gzip /var/log/shop-cron/email-queue.log",
    "0 0 * * * cp /srv/shop/process_email_queue.py /backup/",
    "0 0 * * * grep -c sent /srv/shop/logs/process_email_queue.php.log",
    "*/5 * * * * /usr/bin/php -r 'include \"/srv/shop/process_email_queue.php\";'",
    "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php | mail -s queue ops",  # more than the job
    "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php --dry-run",  # other arguments
    "*/5 * * * * /usr/bin/php $SHOP/process_email_queue.php",  # an expansion: not read for certain
    "*/5 * * * * python3 /srv/shop/process_email_queue.py.bak",
    "#*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php",
    "SCRIPT=/srv/shop/process_email_queue.php",
])
def test_lines_that_only_mention_the_job_are_not_claimed(line: str) -> None:
    assert hand_made("www-data", line + "\n", (EMAIL,)) == []


def test_an_interpreter_command_claims_only_its_exact_argv() -> None:
    """``command: /usr/bin/php`` with the script in args: every other php line is someone else's."""
    text = (
        "*/5 * * * * /usr/bin/php /srv/blog/cron.php\n"
        "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php --max 10\n"
        "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php --max 50 --verbose\n"
        "*/5 * * * * php /srv/shop/process_email_queue.php --max 50\n"  # another program (PATH lookup)
        "*/5 * * * * cd /srv/shop && /usr/bin/php /srv/shop/process_email_queue.php --max 50 >/dev/null 2>&1\n"
        "*/5 * * * * /usr/bin/php '/srv/shop/process_email_queue.php' --max 50 % stdin text\n"
    )
    assert [(d.line_number, d.job) for d in hand_made("www-data", text, (PHP,))] == [(5, "php-queue"), (6, "php-queue")]


def test_another_apps_script_of_the_same_name_is_never_adopted(release: Release) -> None:  # noqa: F811
    """The shop's job is tasks/a.py; the blog has its own a.py in the same user's crontab.
    Which hand-made line the job replaces is not something a file name can tell: both are
    reported, neither is removed, and the plan says to do it by hand."""
    shop = "*/5 * * * * /usr/bin/python3 /srv/shop/a.py\n"
    blog = "0 * * * * /usr/bin/python3 /srv/blog/a.py\n"
    facts = in_place(release, crontab=shop + blog)
    adopted = plan(release, facts, adopt=True)
    assert [d.ambiguous for d in adopted.hand_made] == [True, True]
    assert adopted.crontab_changes == [] and adopted.empty
    assert any("cannot tell which one the job replaces: remove it by hand" in w for w in adopted.warnings)
    duplicates = [c for c in checks(adopted) if c.name == "duplicate"]
    assert [c.status for c in duplicates] == ["fail", "fail"]
    assert all("remove the one it replaces by hand (crontab -e)" in c.detail for c in duplicates)


def test_only_the_crontab_the_job_goes_to_is_searched(release: Release) -> None:  # noqa: F811
    """Job 'a' runs as alice: root's line running a script of that name is root's business."""
    facts = in_place(release, crontab="")
    root_line = "*/5 * * * * /usr/bin/python3 /root/a.py\n"
    facts = dataclasses.replace(facts, crontabs={**facts.crontabs, "root": CrontabFact(root_line)})
    adopted = plan(release, facts, adopt=True)
    assert adopted.hand_made == [] and all(c.user != "root" for c in adopted.crontab_changes)


@pytest.mark.parametrize("separator", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_a_separator_inside_a_line_neither_splits_it_nor_ends_a_block(separator: str) -> None:
    """cron splits on \\n only: 'x<sep>*/5 * * * * php job.php' is one line that runs x (a
    comment here), and an END marker after a separator is no END marker."""
    hidden = f"# note{separator}*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php\n"
    assert hand_made("www-data", hidden, (EMAIL,)) == []
    inside = (f"# BEGIN deployer other/prod rev=1\n# x{separator}# END deployer other/prod\n"
              "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php\n# END deployer other/prod\n")
    assert hand_made("www-data", inside, (EMAIL,)) == []  # still inside the other block
    real = "*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php\n"
    kept = f"0 1 * * * echo a{separator}b\n"
    assert without_lines(kept + real + kept, {2}) == kept + kept


@given(st.text(max_size=120), st.sampled_from([EMAIL, TRUE, PHP]))
def test_any_crontab_text_is_read_without_a_crash(text: str, job: JobSpec) -> None:
    """Whatever a crontab holds (it is the job user's to write), reading it never raises."""
    for found in hand_made("www-data", text, (job,)):
        assert found.line in text


# ----------------------------------------------------------------------------- issue 12, class 4
# Another app's script of the job's file name, alone in the crontab (no line of the job's own
# beside it to make it ambiguous): adopted and deleted on main. A file name is not the job.


@pytest.mark.parametrize("line", [
    "*/5 * * * * /usr/bin/php /var/www/otherapp/process_email_queue.php",
    "*/5 * * * * python3 /srv/other/process_email_queue.py",
    "*/5 * * * * cd /srv/other && ./process_email_queue.py >/dev/null 2>&1",
])
def test_another_apps_script_of_the_same_file_name_is_reported_never_adopted(release: Release, line: str) -> None:  # noqa: F811
    job = dataclasses.replace(release.jobs[0], script="process_email_queue.py", args=())
    release = dataclasses.replace(release, jobs=(job,))
    facts = in_place(release, crontab="MAILTO=me\n" + line + "\n")
    [found] = hand_made("alice", facts.crontabs["alice"].text, release.jobs)
    assert found.undeclared and not found.ambiguous
    adopted = plan(release, facts, adopt=True)
    assert adopted.crontab_changes == [] and adopted.empty
    assert any(f"line 2 of the crontab of alice runs a script of its name ({line}); apply --adopt leaves it" in w
               for w in adopted.warnings), adopted.warnings
    [check] = [c for c in checks(adopted) if c.name == "duplicate"]
    assert check.status == "warn" and "declare legacy_scripts: [" in check.detail

    # Declared as the script the job replaces, the same line is the job's: adopted.
    declared = declaring(release, found.script if found.script.startswith("/") else "/srv/other/process_email_queue.py")
    if found.script.startswith("/"):
        [cc] = plan(declared, in_place(declared, crontab="MAILTO=me\n" + line + "\n"), adopt=True).crontab_changes
        assert cc.after == "MAILTO=me\n" + declared.crontab_blocks["alice"]
    else:  # a relative script path is never taken for a declared absolute one
        assert plan(declared, in_place(declared, crontab="MAILTO=me\n" + line + "\n"), adopt=True).crontab_changes == []


def test_a_declared_legacy_script_is_adopted_only_at_that_path() -> None:
    job = dataclasses.replace(EMAIL, legacy_scripts=("/srv/shop/process_email_queue.php",))
    text = ("*/5 * * * * /usr/bin/php /srv/shop/process_email_queue.php\n"
            "*/5 * * * * /usr/bin/php /srv/shop//process_email_queue.php\n")  # the same path, as the kernel reads it
    assert [(d.line_number, d.undeclared) for d in hand_made("www-data", text, (job,))] == [(1, False), (2, False)]
    other = "*/5 * * * * /usr/bin/php /var/www/otherapp/process_email_queue.php\n"
    assert [(d.undeclared, d.script) for d in hand_made("www-data", other, (job,))] == [
        (True, "/var/www/otherapp/process_email_queue.php")]
