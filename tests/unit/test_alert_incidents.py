"""The incident state machine (deployer/remote/alerts.py ``decide``) and the metrics file's
text (deployer/remote/metrics.py), pure; the atomic write on a real folder, a planted link
refused. The channels against real servers are in tests/alerts/."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployer.remote import alerts, metrics

# decide() reads only the channels' names; send() is tested against real servers in tests/alerts/
CONFIG: dict[str, Any] = {"project": "shop", "env": "prod", "job": "backup", "grace": 300,
                          "rules": {"when": list(alerts.EVENTS), "after": 1, "quiet": 3600},
                          "channels": [{"name": "oncall", "type": "mail"}, {"name": "team", "type": "webhook"}]}
Works = Callable[[str, float], bool]  # (channel, when) -> whether a delivery to it works then
Sent = list[tuple[float, str, tuple[str, ...]]]  # (when, event, channels) of each message sent


def everything_works(channel: str, at: float) -> bool:
    return True


def _run(outcome: str, at: float, code: int | None = None, **extra: Any) -> dict[str, Any]:
    exit_code = code if code is not None else {"success": 0, "failure": 1, "timeout": 124}.get(outcome)
    return {"outcome": outcome, "at": at, "start": at - 5, "duration": 5.0, "exit_code": exit_code, "host": "db1",
            "run_id": f"run{int(at)}", "output_tail": ["connecting", "pg_dump: error: connection refused"], **extra}


def _deliver(config: dict[str, Any], messages: list[alerts.Message], works: Works, at: float) -> list[alerts.Delivery]:
    """What send() would give back, each channel working or not as ``works`` says."""
    names = [str(c["name"]) for c in config.get("channels") or []]
    return [alerts.Delivery(name, m.event, works(name, at), None if works(name, at) else "Connection refused")
            for m in messages for name in names if m.channels is None or name in m.channels]


def _replay(events: list[dict[str, Any]], config: dict[str, Any] = CONFIG, works: Works = everything_works,
            log: Sent | None = None) -> tuple[list[alerts.Message], dict[str, Any]]:
    """Each event as the wrapper (or the watchdog) takes it: decide, send, then note what was
    delivered (the second turn under the lock), the state going through its file each time."""
    state: dict[str, Any] | None = None
    sent: list[alerts.Message] = []
    for event in events:
        decision = alerts.decide(config, state, event)
        deliveries = _deliver(config, decision.messages, works, event["at"])
        if deliveries:
            alerts.note_deliveries(decision.state, deliveries, event["at"], decision.messages)
        state = json.loads(json.dumps(decision.state))  # the state must survive its file
        sent += decision.messages
        if log is not None:
            log += [(event["at"], m.event, m.channels or ()) for m in decision.messages]
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


# ----------------------------------------------------------------------------- told per channel


def dead_until(channel: str, until: float) -> Works:
    """``channel`` fails before ``until``; every other channel works."""
    return lambda name, at: name != channel or at >= until


def test_a_channel_that_failed_is_told_by_a_later_run_once_and_only_it() -> None:
    log: Sent = []
    # fails every minute for an hour, the webhook answering 500 for its first 7 minutes, then a success
    events = [_run("failure", 60 * i) for i in range(60)] + [_run("success", 3600)]
    sent, state = _replay(events, works=dead_until("team", 7 * 60), log=log)
    assert log == [(0, "failure", ("oncall", "team")),  # team failed: owed it
                   (300, "failure", ("team",)),  # tried again 5 minutes later (still dead)
                   (840, "failure", ("team",)),  # the wait doubled: 9 minutes (a tenth early is on time)
                   (3600, "recovered", ("oncall", "team"))]
    repeat = sent[2]
    assert repeat.subject == ("[shop/prod] backup failed on db1 (exit 1) (repeated: incident since "
                              "1970-01-01T00:00:00.000Z, 14 failed runs since)")
    assert ("Repeated: this incident opened 1970-01-01T00:00:00.000Z and its message did not reach this channel "
            "then (try 3 of at most 10); 14 failed runs since.") in repeat.text
    assert repeat.body["attempt"] == 3 and sent[0].body["attempt"] == 1
    assert state["incident"] is None and state["last_told"] == 0  # the quiet period runs from the first delivery


def test_the_state_says_who_was_told_who_is_owed_and_the_quiet_period_starts_at_a_delivery() -> None:
    _, state = _replay([_run("failure", 0)], works=lambda name, at: False)  # every channel dead
    incident = state["incident"]
    assert (incident["told"], incident["told_to"], incident["owed"], incident["tries"]) == (False, [], ["oncall", "team"], 1)
    assert state["last_told"] is None and state["last_alert"]["failed"] == ["oncall", "team"]
    _, state = _replay([_run("failure", 0), _run("failure", 300)], works=lambda name, at: name == "team" and at >= 300)
    incident = state["incident"]
    assert (incident["told"], incident["told_to"], incident["owed"], incident["tries"]) == (True, ["team"], ["oncall"], 2)
    assert state["last_told"] == 300  # told at last (team took the second try), not when it was first sent
    assert state["last_alert"] == {"at": 300, "event": "failure", "channels": ["oncall", "team"], "failed": ["oncall"]}


def test_an_incident_no_channel_took_ends_without_a_recovery() -> None:
    sent, state = _replay([_run("failure", 0), _run("success", 60)], works=lambda name, at: False)
    assert [(m.event, m.channels) for m in sent] == [("failure", ("oncall", "team"))]
    assert state["incident"] is None and state["last_told"] is None
    # and the next incident is told at once: nothing was told, so no quiet period holds it
    sent, _ = _replay([_run("failure", 0), _run("success", 60), _run("failure", 120)], works=lambda name, at: at >= 100)
    assert [(m.event, m.channels, m.body["untold_incidents"]) for m in sent] == [
        ("failure", ("oncall", "team"), 0), ("failure", ("oncall", "team"), 0)]


def test_a_relay_down_for_the_failure_gets_no_recovery_of_it() -> None:
    log: Sent = []
    _replay([_run("failure", 0), _run("success", 60)], works=dead_until("oncall", 30), log=log)
    assert log == [(0, "failure", ("oncall", "team")), (60, "recovered", ("team",))]


def test_retries_are_bounded_and_then_given_up() -> None:
    log: Sent = []
    events = [_run("failure", 60 * i) for i in range(24 * 60)]  # a day of failing minutes, the webhook dead all along
    _, state = _replay(events, works=dead_until("team", float("inf")), log=log)
    # 5 minutes, doubling, never more than the quiet period (1h), each a tenth early at most
    assert [int(at) // 60 for at, _, _ in log] == [0, 5, 14, 32, 68, 122, 176, 230, 284, 338]
    assert [channels for _, _, channels in log] == [("oncall", "team")] + [("team",)] * 9
    incident = state["incident"]
    assert (incident["tries"], incident["told_to"], incident["owed"]) == (alerts.RETRY_TRIES, ["oncall"], ["team"])
    assert alerts.next_try(incident, 3600) is None and not alerts.retry_due(incident, 3600, 10 ** 9)


def test_a_short_quiet_period_retries_at_the_next_event() -> None:
    config = {**CONFIG, "rules": {**CONFIG["rules"], "quiet": 1}}
    log: Sent = []
    _replay([_run("failure", 0), _run("failure", 2), _run("failure", 4), _run("success", 6)], config,
            works=dead_until("team", 1), log=log)
    assert log == [(0, "failure", ("oncall", "team")), (2, "failure", ("team",)), (6, "recovered", ("oncall", "team"))]


def test_the_watchdog_retries_a_late_message_and_runs_do_not() -> None:
    late = {"outcome": "late", "at": 5000, "due": 4000, "host": "db1"}
    log: Sent = []
    works = dead_until("team", 5200)
    sent, _ = _replay([_run("success", 100), late, dict(late, at=5300), dict(late, at=5600), _run("success", 5700)],
                      works=works, log=log)
    assert log == [(5000, "late", ("oncall", "team")), (5300, "late", ("team",)), (5700, "recovered", ("oncall", "team"))]
    assert sent[1].subject == ("[shop/prod] backup is late on db1 (due 1970-01-01T01:06:40.000Z, no start since) "
                               "(repeated: incident since 1970-01-01T01:23:20.000Z)")
    # a failing run does not repeat a late message (it has no due time to tell), nor a late round a run's failure
    log.clear()
    _replay([_run("success", 100), late, _run("failure", 5400), _run("failure", 6000)], works=works, log=log)
    assert log == [(5000, "late", ("oncall", "team"))]
    log.clear()
    _replay([_run("failure", 100), dict(late, at=1000), dict(late, at=5400)], works=dead_until("team", 500), log=log)
    assert log == [(100, "failure", ("oncall", "team"))]


def test_a_message_never_noted_is_sent_again_and_a_note_for_a_closed_incident_is_dropped() -> None:
    # the wrapper killed between sending and noting: the channels are owed it still (a repeat rather than a loss)
    first = alerts.decide(CONFIG, None, _run("failure", 0))
    again = alerts.decide(CONFIG, first.state, _run("failure", 300))
    assert [(m.event, m.channels, m.body["attempt"]) for m in again.messages] == [("failure", ("oncall", "team"), 2)]
    # a run closed the incident while its message was being sent: what was sent is not pinned on another incident
    closed = alerts.decide(CONFIG, first.state, _run("success", 10))
    assert closed.messages == []  # nobody had been told yet
    reopened = alerts.decide(CONFIG, closed.state, _run("failure", 20)).state
    alerts.note_deliveries(reopened, [alerts.Delivery("oncall", "failure", True)], 30, first.messages)
    assert reopened["incident"]["told_to"] == [] and reopened["last_told"] is None
    assert reopened["last_alert"]["channels"] == ["oncall"]  # what was sent is still said


def test_a_state_from_before_channels_were_kept_reads_as_told_to_every_channel() -> None:
    old = {"version": 1, "consecutive_failures": 2, "incident": {"opened": 0, "event": "failure", "told": True,
                                                                 "counted": False, "run_id": "r1"},
           "last_told": 0, "untold": 0, "last_success": None, "last_run": 0, "last_exit_code": 1, "last_duration": 1.0}
    decision = alerts.decide(CONFIG, old, _run("failure", 600))
    assert decision.messages == []  # told, as that version sent it: never repeated
    decision = alerts.decide(CONFIG, decision.state, _run("success", 660))
    assert [(m.event, m.channels) for m in decision.messages] == [("recovered", ("oncall", "team"))]


def test_a_job_routed_to_no_channel_tells_nothing() -> None:
    sent, state = _replay([_run("failure", 0), _run("failure", 600), _run("success", 700)], {**CONFIG, "channels": []})
    assert sent == [] and state["last_told"] is None


def test_send_goes_to_the_message_s_channels_only() -> None:
    config = {**CONFIG, "channels": [{"name": "oncall", "type": "nowhere"}, {"name": "team", "type": "nowhere"}]}
    message = alerts.decide(config, None, _run("failure", 0)).messages[0]
    assert [d.channel for d in alerts.send(config, [message], "db1")] == ["oncall", "team"]
    only = alerts.Message(message.event, message.subject, message.text, message.body, ("team",), message.opened)
    [delivery] = alerts.send(config, [only], "db1")
    assert (delivery.channel, delivery.ok, delivery.error) == ("team", False, "unknown channel type 'nowhere'")
