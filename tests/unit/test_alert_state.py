"""The alert state, as status and verify show it: kept by the wrapper (remote/alerts.py
``note_deliveries``), read back by the probe as hostile input (targetlib.alert_state, and the
probe's reading of the file on a real folder), and shown (core/alertstate.py). Pure but for
the file read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from deployer.core.alertstate import alert_checks, alert_summary, alert_view
from deployer.core.desired import JobSpec
from deployer.remote import alerts, probe, targetlib
from deployer.remote.messages import JobRuntime

CONFIG: dict[str, Any] = {"project": "shop", "env": "prod", "job": "backup", "grace": 300,
                          "rules": {"when": list(alerts.EVENTS), "after": 1, "quiet": 3600},
                          "channels": [{"name": "oncall", "type": "mail"}, {"name": "team", "type": "webhook"}]}
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def _run(outcome: str, at: float, code: int) -> dict[str, Any]:
    return {"outcome": outcome, "at": at, "start": at - 5, "duration": 5.0, "exit_code": code, "host": "db1",
            "run_id": f"run{int(at)}", "output_tail": []}


def job(alerts_public: str | None = json.dumps(CONFIG)) -> JobSpec:
    return JobSpec(id="backup", description="", schedule="0 3 * * *", script="b.py", command=None, args=(), run_as=None,
                   log_file="/l", lock_file="/k", state_dir="/s", timeout=60, concurrency="forbid", workdir=None, env=(),
                   secret_names=frozenset(), alerts_public=alerts_public)


def told_failure_with_a_dead_webhook() -> dict[str, Any]:
    decision = alerts.decide(CONFIG, None, _run("failure", T0, 2))
    state = decision.state
    alerts.note_deliveries(state, [alerts.Delivery("ping", "ping-start", True),
                                   alerts.Delivery("oncall", "failure", True),
                                   alerts.Delivery("team", "failure", False, "Connection refused", 3, 1.5),
                                   alerts.Delivery("ping", "ping-2", True)], T0, decision.messages)
    return state


def test_the_wrapper_keeps_the_last_alert_and_each_channels_last_delivery() -> None:
    state = told_failure_with_a_dead_webhook()
    assert state["last_alert"] == {"at": T0, "event": "failure", "channels": ["oncall", "team"], "failed": ["team"]}
    assert state["deliveries"] == {"oncall": {"at": T0, "event": "failure", "ok": True, "error": None},
                                   "team": {"at": T0, "event": "failure", "ok": False, "error": "Connection refused"},
                                   "ping": {"at": T0, "event": "ping-2", "ok": True, "error": None}}
    # a run that sends no message leaves last_alert; a delivery that works again clears the channel's error
    later = alerts.decide(CONFIG, state, _run("success", T0 + 60, 0)).state
    alerts.note_deliveries(later, [alerts.Delivery("team", "recovered", True)], T0 + 60)
    assert later["last_alert"]["event"] == "recovered" and later["deliveries"]["team"]["ok"] is True
    alerts.note_deliveries(later, [alerts.Delivery("ping", "ping-0", True)], T0 + 120)
    assert later["last_alert"]["event"] == "recovered"


def test_a_state_file_from_before_reads_with_the_new_keys_empty(tmp_path: Path) -> None:
    old = {"version": 1, "consecutive_failures": 2, "incident": {"opened": T0, "event": "failure", "told": True,
                                                                 "counted": False, "run_id": "r1"},
           "last_told": T0, "untold": 0, "last_success": None, "last_run": T0, "last_exit_code": 1, "last_duration": 1.0}
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps(old))
    state, problem = alerts.read_state(str(path))
    assert problem is None and state["last_alert"] is None and state["deliveries"] == {}
    problems: list[str] = []
    found = probe._alert_state(str(path), problems)
    assert problems == [] and found is not None
    # told, by a version that kept no channels: it went to every channel, once
    assert found["incident"] == {"event": "failure", "opened": T0, "told": True, "run_id": "r1", "told_to": [], "owed": [],
                                 "tries": 1, "last_try": None}
    assert found["last_alert"] is None and found["deliveries"] == {} and found["consecutive_failures"] == 2


@pytest.mark.parametrize(("change", "why"), [
    ({"version": 2}, "not an alert state"),
    ({"consecutive_failures": -1}, "consecutive_failures is not a count"),
    ({"consecutive_failures": True}, "consecutive_failures is not a count"),
    ({"last_told": float("nan")}, "last_told is not a time"),
    ({"incident": {"event": "failure", "opened": T0, "told": "yes"}}, "incident.told is not true or false"),
    ({"incident": {"event": "x" * 5000, "opened": T0, "told": True}}, "incident.event is a string of 5000 characters"),
    ({"incident": {"event": "failure", "opened": T0, "told": True, "told_to": "team"}}, "incident.told_to is not a list"),
    ({"incident": {"event": "failure", "opened": T0, "told": True, "owed": [1]}}, "incident.owed is a JSON number"),
    ({"incident": {"event": "failure", "opened": T0, "told": True, "tries": -2}}, "incident.tries is not a count"),
    ({"incident": {"event": "failure", "opened": T0, "told": True, "last_try": "now"}}, "incident.last_try is not a time"),
    ({"last_alert": {"at": T0, "event": "failure", "channels": "oncall"}}, "last_alert.channels is not a list"),
    ({"deliveries": {f"c{i}": {"at": T0, "event": "e", "ok": True, "error": None} for i in range(65)}},
     "more than 64 channels"),
    ({"deliveries": {"team": {"at": T0, "event": "e", "ok": 1, "error": None}}}, "deliveries.team.ok is not true or false"),
    ({"deliveries": []}, "deliveries is a JSON array"),
])
def test_a_damaged_or_forged_state_is_refused_and_said(change: dict[str, Any], why: str) -> None:
    found, problem = targetlib.alert_state({**told_failure_with_a_dead_webhook(), **change})
    assert found is None and problem is not None and why in problem


def test_the_probe_reads_the_state_file_safely(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    problems: list[str] = []
    assert probe._alert_state(str(path), problems) is None and problems == []  # no run kept one yet
    path.write_text(json.dumps(told_failure_with_a_dead_webhook()))
    found = probe._alert_state(str(path), problems)
    assert found is not None and found["deliveries"]["team"]["error"] == "Connection refused"
    if os.geteuid() == 0:  # as root: a state of another user's (planted) is not read; not root, the user is the boundary
        os.chown(path, 65534, 65534)
        assert probe._alert_state(str(path), problems) is None
        assert problems == [f"{path}: belongs to uid 65534, not to the user it is for; deployer will not use it: "
                            "remove it: not read"]
        problems.clear()
        os.chown(path, 0, 0)
    path.write_text(" " * (targetlib.ALERT_STATE_LIMIT + 1))
    assert probe._alert_state(str(path), problems) is None
    assert problems == [f"{path} is larger than {targetlib.ALERT_STATE_LIMIT} bytes: not read"]
    path.unlink()
    os.mkfifo(path)  # a FIFO nobody writes: never waited on
    problems.clear()
    assert probe._alert_state(str(path), problems) is None and "not a regular file" in problems[0]
    path.unlink()
    (tmp_path / "elsewhere.json").write_text(json.dumps(told_failure_with_a_dead_webhook()))
    path.symlink_to(tmp_path / "elsewhere.json")
    problems.clear()
    assert probe._alert_state(str(path), problems) is None and problems == [f"{path} is a symlink: not followed, not read"]


def runtime(state: dict[str, Any] | None) -> JobRuntime:
    info: JobRuntime = {"runs": [], "last_success": None, "running": [], "lock": {"holders": [], "content": ""},
                        "legacy_locks": {}, "problems": []}
    if state is not None:
        found, problem = targetlib.alert_state(state)
        assert found is not None, problem
        info["alerts"] = found
    return info


def test_status_and_verify_show_an_open_told_incident_and_the_dead_channel() -> None:
    info = runtime(told_failure_with_a_dead_webhook())
    view = alert_view(job(), info, T0 + 600)
    assert view == {
        "incident": {"event": "failure", "since": "2027-01-15T08:00:00Z", "told": True, "told_to": ["oncall"],
                     "owed": ["team"], "tries": 1, "next_try": None, "gave_up": False},
        "last_alert": {"at": "2027-01-15T08:00:00Z", "event": "failure", "channels": ["oncall", "team"], "failed": ["team"]},
        "silenced_until": "2027-01-15T09:00:00Z", "consecutive_failures": 1, "untold": 0,
        "channel_errors": [{"channel": "team", "event": "failure", "error": "Connection refused", "at": "2027-01-15T08:00:00Z"}],
    }
    checks = [(c.name, c.status, c.detail, c.job) for c in alert_checks(job(), info, T0 + 600)]
    assert checks == [
        ("alerts", "warn", "open incident: failure since 10m ago (1 failed run in a row), told: failure 10m ago to "
                           "oncall, team (failed: team); owed to team: tried again by the job's next failing run", "backup"),
        ("alerts", "warn", "the last delivery to team failed 10m ago (failure): Connection refused", "backup"),
    ]
    from datetime import UTC, datetime
    assert alert_summary(view, datetime.fromtimestamp(T0 + 600, UTC)) == (
        "failure since 10m ago, told; owed to team: tried again by the job's next failing run; last failure 10m ago "
        "to oncall, team (failed: team); quiet until 09:00 UTC, in 50m; team failed: Connection refused")


def test_an_incident_held_by_the_quiet_period_and_a_quiet_job() -> None:
    decision = alerts.decide(CONFIG, None, _run("failure", T0, 1))
    alerts.note_deliveries(decision.state, [alerts.Delivery("oncall", "failure", True)], T0, decision.messages)
    state = alerts.decide(CONFIG, decision.state, _run("success", T0 + 60, 0)).state  # recovered: told
    alerts.note_deliveries(state, [alerts.Delivery("oncall", "recovered", True)], T0 + 60)
    assert [c.detail for c in alert_checks(job(), runtime(state), T0 + 120)] == [
        "no open incident; last alert: recovered 1m ago to oncall; quiet until 09:00 UTC, in 58m"]
    state = alerts.decide(CONFIG, state, _run("timeout", T0 + 180, 124)).state
    assert [(c.status, c.detail) for c in alert_checks(job(), runtime(state), T0 + 240)] == [
        ("warn", "open incident: timeout since 1m ago (1 failed run in a row), not told: the quiet period holds it "
                 "until 09:00 UTC, in 56m")]
    assert [c.detail for c in alert_checks(job(), runtime(None), T0)] == ["no open incident; nothing told yet"]
    assert alert_checks(job(None), runtime(state), T0) == [] and alert_view(job(None), runtime(state), T0) is None


def test_status_and_verify_show_a_channel_still_owed_the_message_and_one_given_up_on() -> None:
    from datetime import UTC, datetime
    decision = alerts.decide(CONFIG, None, _run("failure", T0, 2))
    state = decision.state
    dead = [alerts.Delivery("oncall", "failure", False, "Connection refused"), alerts.Delivery("team", "failure", False, "HTTP 500")]
    alerts.note_deliveries(state, dead, T0, decision.messages)
    view = alert_view(job(), runtime(state), T0 + 60)
    assert view is not None and view["incident"] is not None
    assert (view["incident"]["told"], view["incident"]["owed"], view["incident"]["next_try"]) == (
        False, ["oncall", "team"], "2027-01-15T08:04:30Z")  # 5 minutes, a tenth early at most
    assert view["silenced_until"] is None  # told to nobody: no quiet period started
    checks = [(c.status, c.detail) for c in alert_checks(job(), runtime(state), T0 + 60)]
    assert checks[0] == ("warn", "open incident: failure since 1m ago (1 failed run in a row), not told: its message reached "
                                 "no channel (1 try); owed to oncall, team: tried again by the job's next failing run after "
                                 "08:04 UTC, in 3m")
    assert [d for _, d in checks[1:]] == ["the last delivery to oncall failed 1m ago (failure): Connection refused",
                                          "the last delivery to team failed 1m ago (failure): HTTP 500"]
    state["incident"]["tries"] = alerts.RETRY_TRIES  # every try spent
    view = alert_view(job(), runtime(state), T0 + 60)
    assert view is not None and view["incident"] is not None and view["incident"]["gave_up"] is True
    assert alert_summary(view, datetime.fromtimestamp(T0 + 60, UTC)).startswith(
        "failure since 1m ago, not told; oncall, team never got it: given up after 10 tries; ")


def test_a_late_incident_is_tried_again_by_the_watchdog() -> None:
    decision = alerts.decide(CONFIG, None, {"outcome": "late", "at": T0, "due": T0 - 600, "host": "db1"})
    state = decision.state
    alerts.note_deliveries(state, [alerts.Delivery("oncall", "late", True), alerts.Delivery("team", "late", False, "x")], T0,
                           decision.messages)
    [check, _] = alert_checks(job(), runtime(state), T0 + 60)
    assert check.detail.endswith("; owed to team: tried again by the watchdog's next round after 08:04 UTC, in 3m")
