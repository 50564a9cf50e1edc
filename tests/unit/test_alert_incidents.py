"""The incident state machine (deployer/remote/alerts.py ``decide``) and the metrics file's
text (deployer/remote/metrics.py), pure; the atomic write on a real folder, a planted link
refused. The channels against real servers are in tests/alerts/."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from deployer.remote import alerts, metrics

CONFIG: dict[str, Any] = {"project": "shop", "env": "prod", "job": "backup", "grace": 300,
                          "rules": {"when": list(alerts.EVENTS), "after": 1, "quiet": 3600}}


def _run(outcome: str, at: float, code: int | None = None, **extra: Any) -> dict[str, Any]:
    exit_code = code if code is not None else {"success": 0, "failure": 1, "timeout": 124}.get(outcome)
    return {"outcome": outcome, "at": at, "start": at - 5, "duration": 5.0, "exit_code": exit_code, "host": "db1",
            "run_id": f"run{int(at)}", "output_tail": ["connecting", "pg_dump: error: connection refused"], **extra}


def _replay(events: list[dict[str, Any]], config: dict[str, Any] = CONFIG) -> tuple[list[alerts.Message], dict[str, Any]]:
    state: dict[str, Any] | None = None
    sent: list[alerts.Message] = []
    for event in events:
        decision = alerts.decide(config, state, event)
        json.dumps(decision.state)  # the state must survive its file
        sent += decision.messages
        state = decision.state
    assert state is not None
    return sent, state


def test_a_job_failing_every_minute_sends_one_message_and_one_recovery() -> None:
    events = [_run("failure", 1000 + 60 * i) for i in range(1440)] + [_run("success", 1000 + 60 * 1440)]
    sent, state = _replay(events)
    assert [m.event for m in sent] == ["failure", "recovered"]
    first, recovered = sent
    assert first.subject == "[shop/prod] backup failed on db1 (exit 1)"
    assert "pg_dump: error: connection refused" in first.text and "Host:    db1" in first.text
    assert first.body["exit_code"] == 1 and first.body["output_tail"][-1] == "pg_dump: error: connection refused"
    assert recovered.subject == "[shop/prod] backup recovered on db1 (down 1d)"
    assert state["consecutive_failures"] == 0 and state["incident"] is None


def test_after_n_failures_in_a_row() -> None:
    config = {**CONFIG, "rules": {**CONFIG["rules"], "after": 3}}
    sent, _ = _replay([_run("failure", 10), _run("failure", 20), _run("success", 30), _run("failure", 40),
                       _run("failure", 50)], config)
    assert sent == []  # never three in a row: no incident, so no recovery either
    sent, state = _replay([_run("failure", 10), _run("timeout", 20), _run("failure", 30)], config)
    assert [m.event for m in sent] == ["failure"] and state["consecutive_failures"] == 3
    assert sent[0].body["consecutive_failures"] == 3


def test_timeout_and_crash_have_their_own_words_and_rules() -> None:
    sent, _ = _replay([_run("timeout", 100)])
    assert sent[0].event == "timeout" and "timed out on db1" in sent[0].subject
    sent, _ = _replay([_run("crashed", 100, code=-9)])
    assert sent[0].event == "crash" and "crashed on db1" in sent[0].subject
    only_failures = {**CONFIG, "rules": {"when": ["failure"], "after": 1, "quiet": 0}}
    sent, _ = _replay([_run("timeout", 100), _run("success", 200)], only_failures)
    assert sent == []  # neither told nor, since it was never told, recovered


def test_the_quiet_period_bounds_a_flapping_job_and_counts_what_it_held_back() -> None:
    # fails, succeeds, fails... every minute for two hours: one incident told per hour
    events = [_run("failure" if i % 2 == 0 else "success", 60 * i) for i in range(120)]
    sent, _ = _replay(events)
    assert [m.event for m in sent] == ["failure", "recovered", "failure", "recovered"]
    assert sent[2].body["untold_incidents"] == 29  # minutes 2..58 opened 29 incidents not told
    assert "Incidents not told during the quiet period before this one: 29" in sent[2].text


def test_an_incident_opened_in_the_quiet_period_is_told_once_it_is_over() -> None:
    sent, _ = _replay([_run("failure", 0), _run("success", 60), _run("failure", 120)]
                      + [_run("failure", 120 + 600 * i) for i in range(1, 8)])
    assert [(m.event, m.body["ended_at"]) for m in sent] == [
        ("failure", "1970-01-01T00:00:00.000Z"), ("recovered", "1970-01-01T00:01:00.000Z"),
        ("failure", "1970-01-01T01:02:00.000Z")]  # the first run after the hour; once
    assert sent[2].body["untold_incidents"] == 0


def test_late_opens_an_incident_a_run_closes_it() -> None:
    late = {"outcome": "late", "at": 5000, "due": 4000, "host": "db1"}
    sent, state = _replay([_run("success", 100), late, dict(late, at=5300), _run("success", 5400)])
    assert [m.event for m in sent] == ["late", "recovered"]
    assert sent[0].subject == "[shop/prod] backup is late on db1 (due 1970-01-01T01:06:40.000Z, no start since)"
    assert state["last_success"] == 5400


def test_skipped_runs_change_nothing_and_a_state_from_elsewhere_is_not_trusted_blindly() -> None:
    decision = alerts.decide(CONFIG, None, {"outcome": "skipped-locked", "at": 10})
    assert decision.messages == [] and decision.state == alerts.initial_state()
    decision = alerts.decide(CONFIG, None, {"outcome": "something-new", "at": 10})
    assert decision.messages == []


def test_output_tail_is_bounded_masked_and_printable() -> None:
    data = b"x" * 100_000 + b"\nline one\npassword=hunter2-secret\n\x1b[31mred\x07\n"
    lines = alerts.tail(data, secrets=["hunter2-secret"])
    assert lines[-2:] == ["password=***", "\x1b[31mred\x07"]
    message = alerts.decide(CONFIG, None, _run("failure", 1, output_tail=lines)).messages[0]
    assert message.body["output_tail"][-1] == "\\x1b[31mred\\x07" and "\x1b" not in message.text
    assert all(len(line) <= alerts.TAIL_CHARS for line in lines) and len(lines) <= alerts.TAIL_LINES


def test_ping_urls_carry_a_stable_run_uuid() -> None:
    url = alerts.ping_url("https://hc.example.org/ping/abc/?x=1", "start", "3f9c0d1e2a4b5c6d")
    rid = alerts.run_uuid("3f9c0d1e2a4b5c6d")
    assert url == f"https://hc.example.org/ping/abc/start?x=1&rid={rid}"
    assert alerts.ping_url("https://hc.example.org/ping/abc", "0", "3f9c0d1e2a4b5c6d").endswith(f"/abc/0?rid={rid}")
    assert alerts.ping({"ping": None}, "start", "r") is None


def test_metrics_text_has_help_type_escaped_labels_and_leaves_unknowns_out() -> None:
    m = metrics.JobMetrics(project="shop", env='pr"od', job="a\\b\nc", last_run=1700000000.5, last_success=None,
                           last_duration=4.25, last_exit_code=1, consecutive_failures=2, next_run=1700000300.0, running=False)
    text = metrics.render(m)
    labels = 'project="shop",env="pr\\"od",job="a\\\\b\\nc"'
    assert f"deployer_job_last_run_timestamp_seconds{{{labels}}} 1700000000.5" in text.splitlines()
    assert f"deployer_job_last_exit_code{{{labels}}} 1" in text.splitlines()
    assert f"deployer_job_running{{{labels}}} 0" in text.splitlines()
    assert "deployer_job_last_success_timestamp_seconds{" not in text  # never succeeded: no sample, not 0
    assert text.count("# TYPE ") == 7 and text.count("# HELP ") == 7


def test_next_run_uses_the_cron_engine() -> None:
    assert metrics.next_run("*/5 * * * *", "UTC", 1700000000.0) == 1700000100.0
    assert metrics.next_run("@reboot", "UTC", 1700000000.0) is None


def test_the_metrics_file_is_replaced_atomically_and_a_planted_link_is_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    m = metrics.JobMetrics("shop", "prod", "backup", last_run=1.0, consecutive_failures=0)
    assert metrics.write(str(folder), m) is None
    written = folder / "deployer_shop_prod_backup.prom"
    assert written.read_text() == metrics.render(m)
    assert oct(written.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in folder.iterdir()) == ["deployer_shop_prod_backup.prom"]  # no temp file left
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tmp_path / "link")
    if os.geteuid() != 0:
        pytest.skip("without root, the deploying user's own links are followed (the user is the boundary)")
    os.lchown(tmp_path / "link", 65534, 65534)  # planted by another user (nobody)
    problem = metrics.write(str(tmp_path / "link"), m)
    assert problem is not None and "cannot be written" in problem
    assert list(elsewhere.iterdir()) == []


def test_alert_state_round_trip_and_garbage(tmp_path: Path) -> None:
    path = str(tmp_path / "alert-state.json")
    state, problem = alerts.read_state(path)
    assert (state, problem) == (alerts.initial_state(), None)
    state["consecutive_failures"] = 4
    assert alerts.write_state(path, state) is None
    assert alerts.read_state(path) == (state, None)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    Path(path).write_text("[1, 2]")
    state, problem = alerts.read_state(path)
    assert state == alerts.initial_state() and problem is not None and "not an alert state" in problem
