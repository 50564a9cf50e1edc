"""The report layer (deployer/report) and the one source of secret values (core/redaction.py):
the CLI and the Ansible results say the same words and mask the same secrets, a multi-line
one line by line. Pure: a project on disk, rendered; no host is contacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.ansible import host as hosts
from deployer.cli.common import Context, open_session
from deployer.cli.output import Output
from deployer.core.check import FAIL, PASS, WARN, Check
from deployer.core.redaction import REDACTED, Redactor, redaction_patterns, secret_values
from deployer.core.release import Identity, materialize
from deployer.engine.outcome import CHANGED, FAILED, OK
from deployer.engine.session import Session
from deployer.errors import InvalidInput, Problem
from deployer.report import words
from deployer.report.data import host_checks, host_plan

PEM = ("-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n"
       "q2VYk3jIbJkq8sW0Z1\nabc\n-----END PRIVATE KEY-----")
TOKEN = 'pa"ss\\wörd'  # JSON escapes the quote, the backslash and the ö

DECLARATION = """project: demo
jobs:
  hello:
    command: /bin/true
    schedule: "*/5 * * * *"
    env:
      KEY: {secret: {file: secrets/key.pem}}
      TOKEN: {secret: {env: DEMO_TOKEN}}
      PLAIN: not a secret
environments:
  dev:
    inventory: inventories/dev
"""


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / "inventories" / "dev").mkdir(parents=True)
    (root / "inventories" / "dev" / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    (root / "secrets").mkdir()
    (root / "secrets" / "key.pem").write_text(PEM + "\n")
    (root / "deployer.yml").write_text(DECLARATION)
    monkeypatch.setenv("DEMO_TOKEN", TOKEN)
    monkeypatch.setenv("DEPLOYER_PROJECT_CACHE", "0")
    monkeypatch.setenv("DEPLOYER_INVENTORY_CACHE", "0")
    return root


def _cli(root: Path) -> tuple[Output, Session]:
    ctx = Context(str(root / "deployer.yml"), json_mode=False, color=False)
    return ctx.output, open_session(ctx, "dev", None, 1)


def _ansible(root: Path) -> hosts.Host:
    return hosts.load_host(str(root / "deployer.yml"), None, "localhost", [str(root / "inventories" / "dev")])


def test_the_secret_values_come_from_one_place(project: Path) -> None:
    output, session = _cli(project)
    host = _ansible(project)
    jobs = session.states[0].desired.jobs
    assert secret_values(jobs) == {PEM, TOKEN}  # PLAIN is no secret
    assert output.secrets == {PEM, TOKEN}
    assert host.redactor.secrets == {PEM, TOKEN}
    release = materialize(session.states[0].desired, Identity("root", 0, "/root"))
    assert release.secret_values == {PEM, TOKEN}  # verify's check that no crontab holds one


def test_a_multi_line_secret_is_masked_alike_by_the_cli_and_the_ansible_results(project: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    output, _session = _cli(project)
    host = _ansible(project)
    lines = [line.strip() for line in PEM.replace("\r", "\n").split("\n") if line.strip()]
    texts = [f"web1 | {line}" for line in lines] + [f"whole: {PEM}!", f"token {TOKEN} end", "nothing here", "abc"]
    for text in texts:
        cli = output.redact(text)
        assert hosts.redacted(host, {"msg": text})["msg"] == cli
        assert host.redactor.text(text) == cli
    assert output.redact("web1 | MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7") == f"web1 | {REDACTED}"
    assert output.redact("abc") == "abc"  # too short a line of a key to mask alone
    # JSON: masked before encoding, keys too, identically
    data = {"crontab_diffs": {TOKEN: lines[1]}, "warnings": [f"see {TOKEN}", PEM]}
    ansible = hosts.redacted(host, {"changed": False, "deployer": data})
    assert ansible["changed"] is False
    output.emit_json(data)
    assert json.loads(capsys.readouterr().out) == ansible["deployer"] == {
        "crontab_diffs": {REDACTED: REDACTED}, "warnings": [f"see {REDACTED}", REDACTED]}


def test_redaction_patterns_longest_first_and_each_long_line() -> None:
    patterns = redaction_patterns(frozenset({PEM, "hunter2", ""}))
    assert patterns[0] == PEM
    assert list(patterns) == sorted(patterns, key=len, reverse=True)
    assert "-----BEGIN PRIVATE KEY-----" in patterns  # a CRLF line, stripped
    assert "abc" not in patterns and "" not in patterns
    assert Redactor(frozenset({"hunter2"})).data({"a": ("hunter2", 1, None)}) == {"a": [REDACTED, 1, None]}


def test_the_cli_prints_the_check_lines_the_ansible_results_say(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output, session = _cli(project)
    host = _ansible(project)
    checks = [Check("crontab", PASS, "the crontab of root holds the declared block (1 job)"),
              Check("success", WARN, f"last run failed: token {TOKEN}", job="hello"),
              Check("freshness", FAIL, "should have run since the deploy but has no run", job="a-much-longer-job")]
    state = session.states[0]
    state.checks, state.status = checks, FAILED
    output.checks(session)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "── localhost (local) failed"
    assert printed[1:] == ["   pass crontab      the crontab of root holds the declared block (1 job)",
                           f"   warn success hello last run failed: token {REDACTED}",
                           "   fail freshness a-much-longer-job should have run since the deploy but has no run"]
    said = [hosts.redacted(host, {"msg": str(words.CheckLine(c))})["msg"] for c in checks]
    assert ["   " + line for line in said] == printed[1:]
    data = host_checks(state)
    assert [c["name"] for c in data["checks"]] == ["crontab", "success", "freshness"]
    # the order --json has always had, then the jobs' alert state (issue 15: after the old keys)
    assert list(data) == ["status", "error", "checks", "counters", "alerts"]
    assert data["alerts"] == {}  # no job of this release has alerts


def test_summary_words_and_plan_data(project: Path) -> None:
    _output, session = _cli(project)
    state = session.states[0]
    state.status, state.applied = CHANGED, ["wrote a", "wrote b"]
    assert words.summary_row(state, "apply") == ("localhost", CHANGED, "changed", "2 steps, revision ?")
    assert words.summary_row(state, "rollback").detail == "2 steps"
    state.status = OK
    assert words.summary_row(state, "apply").detail == words.NOTHING_TO_CHANGE == "nothing to change"
    assert words.summary_row(state, "verify").detail == "in sync"
    assert list(host_plan(state)) == ["status", "error", "revision", "changes", "crontab_diffs", "drift_diffs",
                                      "warnings", "applied", "counters", "seconds"]
    assert host_plan(state)["applied"] == [] and host_plan(state, applied=True)["applied"] == ["wrote a", "wrote b"]
    assert [words.counted(n, "host") for n in (0, 1, 2)] == ["0 hosts", "1 host", "2 hosts"]


def test_invalid_input_reads_the_same_in_both(capsys: pytest.CaptureFixture[str]) -> None:
    exc = InvalidInput([Problem("unknown key 'shedule'", file="deployer.yml", key_path="jobs.backup.shedule", line=21),
                        Problem("no such environment 'prd'")])
    Output(color=False).invalid(exc)
    assert capsys.readouterr().err.rstrip("\n") == hosts.invalid_message(exc) == (
        "error: deployer.yml:21: jobs.backup.shedule: unknown key 'shedule'\n"
        "error: no such environment 'prd'\n"
        "2 problems found; nothing was changed on any target.")


def test_the_ansible_front_does_not_import_the_cli() -> None:
    code = ("import sys, deployer.ansible.host, deployer.ansible.plugin; "
            "print(sorted(m for m in sys.modules if m.startswith(('deployer.cli', 'rich', 'click'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"
