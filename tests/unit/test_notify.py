"""verify --notify's incidents (core/notify.py): findings + state -> messages + state. Pure."""

from __future__ import annotations

import json
from typing import Any

from deployer.core import notify
from deployer.core.check import FAIL, PASS, Check
from deployer.core.facts import CrontabFact, Facts
from deployer.core.release import Identity

BLOCK = "# BEGIN deployer shop/prod rev=abc (managed by deployer: edit deployer.yml, not these lines)\n* * * * * run hello\n# END deployer shop/prod\n"
RULES: dict[str, Any] = {"when": ["failure", "late", "recovered"], "quiet": 3600}
CHANNELS = ["oncall", "team"]


def facts(cron: bool = True, tab: str | None = BLOCK) -> Facts:
    return Facts(hostname="h1", identity=Identity("root", 0, "/root"), python="python3", python_version="3.11",
                 deploy_home="/var/lib/deployer/shop-prod", users={}, crontabs={"root": CrontabFact(tab)}, paths={},
                 releases={"abc": {}}, current="abc", cron_running=cron, release_blocks={"abc": {"root": BLOCK}})


def report(host: str = "h1", cron: bool = True, late: tuple[str, ...] = (), tab: str | None = BLOCK,
           unalerted: dict[str, tuple[str, ...]] | None = None, checks: list[Check] | None = None) -> notify.HostReport:
    found = list(checks or [])
    if not cron:
        found.append(Check("cron-daemon", FAIL, "no cron daemon is running: no job will run (start cron)"))
    found += [Check("freshness", FAIL, "should have run at 10:00", job) for job in late]
    return notify.host_report(host, unreachable=False, error=None, checks=found, facts=facts(cron, tab),
                              project="shop", env="prod", unalerted=unalerted or {})


def down(host: str = "h1") -> notify.HostReport:
    return notify.host_report(host, unreachable=True, error="connection refused", checks=[], facts=None,
                              project="shop", env="prod", unalerted={})


def run(state: dict[str, Any], reports: list[notify.HostReport], now: float, dead: frozenset[str] = frozenset(),
        channels: list[str] = CHANNELS, rules: dict[str, Any] = RULES) -> tuple[list[notify.Outgoing], dict[str, Any]]:
    """One verify --notify: the step, every channel but ``dead`` taking its message, the state recorded."""
    step = notify.step(state, "shop", "prod", reports, channels, rules, now)
    sent = [(o, [(c, c not in dead) for c in o.channels]) for o in step.outgoing]
    state = notify.record(step.state, "shop", "prod", sent, now)
    assert notify.is_state(json.loads(json.dumps(state)))  # it goes to a JSON file, and is read back next run
    return step.outgoing, state


def told(outgoing: list[notify.Outgoing]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(o.key, o.message.event, o.channels) for o in outgoing]


def test_a_stopped_cron_is_told_once_naming_the_late_jobs_then_its_recovery_once() -> None:
    out, state = run(notify.empty_state(), [report(cron=False, late=("hello",))], 1000)
    assert told(out) == [("h1 cron-stopped", "cron-stopped", ("oncall", "team"))]
    message = out[0].message
    assert message.subject == "[shop/prod] no cron daemon runs on h1: hello late"
    assert message.body["late_jobs"] == ["hello"] and message.body["host"] == "h1" and message.body["job"] is None
    assert message.body["event"] == "cron-stopped" and message.body["version"] == 1 and message.body["source"] == "verify"
    out, state = run(state, [report(cron=False, late=("hello",))], 1300)
    assert out == []
    out, state = run(state, [report()], 1600)
    assert told(out) == [("h1 cron-stopped", "recovered", ("oncall", "team"))]
    assert out[0].message.subject == "[shop/prod] cron runs again on h1 (stopped 10m)"
    assert out[0].message.body["incident"] == "cron-stopped"
    out, state = run(state, [report()], 1900)
    assert out == []


def test_a_dead_channel_is_tried_again_next_run_and_only_it() -> None:
    out, state = run(notify.empty_state(), [down()], 1000, dead=frozenset({"team"}))
    assert told(out) == [("h1 unreachable", "unreachable", ("oncall", "team"))]
    out, state = run(state, [down()], 1100, dead=frozenset({"team"}))
    assert told(out) == [("h1 unreachable", "unreachable", ("team",))]
    out, state = run(state, [down()], 1200)
    assert told(out) == [("h1 unreachable", "unreachable", ("team",))]
    out, state = run(state, [down()], 1300)
    assert out == []
    # The recovery: both were told; one fails to take it and gets it next time.
    out, state = run(state, [report()], 1400, dead=frozenset({"oncall"}))
    assert told(out) == [("h1 unreachable", "recovered", ("oncall", "team"))]
    out, state = run(state, [report()], 1500)
    assert told(out) == [("h1 unreachable", "recovered", ("oncall",))]
    out, state = run(state, [report()], 1600)
    assert out == []


def test_a_channel_that_never_took_the_incident_gets_no_recovery() -> None:
    _, state = run(notify.empty_state(), [down()], 1000, dead=frozenset({"team"}))
    out, _ = run(state, [report()], 1100)
    assert told(out) == [("h1 unreachable", "recovered", ("oncall",))]


def test_every_channel_dead_leaves_the_incident_untold() -> None:
    _, state = run(notify.empty_state(), [report(cron=False)], 1000, dead=frozenset(CHANNELS))
    out, state = run(state, [report()], 1100)
    assert out == []  # never told: no recovery either
    assert state["environments"]["shop/prod"] == {}


def test_an_unreachable_host_keeps_its_other_incidents_open() -> None:
    _, state = run(notify.empty_state(), [report(cron=False)], 1000)
    out, state = run(state, [down()], 1100)
    assert told(out) == [("h1 unreachable", "unreachable", ("oncall", "team"))]  # cron-stopped not "recovered"
    out, state = run(state, [report(cron=False)], 1200)
    assert told(out) == [("h1 unreachable", "recovered", ("oncall", "team"))]
    out, state = run(state, [report()], 1300)
    assert told(out) == [("h1 cron-stopped", "recovered", ("oncall", "team"))]


def test_hosts_left_out_by_limit_keep_their_incidents() -> None:
    _, state = run(notify.empty_state(), [down("h1"), down("h2")], 1000)
    out, state = run(state, [report("h2")], 1100)
    assert told(out) == [("h2 unreachable", "recovered", ("oncall", "team"))]
    keys = state["environments"]["shop/prod"]
    assert keys["h1 unreachable"]["incident"] is not None and keys["h2 unreachable"]["incident"] is None


def test_the_quiet_period_bounds_a_flapping_host_and_counts_what_it_did_not_tell() -> None:
    out, state = run(notify.empty_state(), [down()], 0)
    assert len(out) == 1
    out, state = run(state, [report()], 60)
    assert [o.message.event for o in out] == ["recovered"]
    out, state = run(state, [down()], 120)  # within the hour: not told
    assert out == []
    out, state = run(state, [report()], 180)
    assert out == []  # never told: no recovery
    out, state = run(state, [down()], 3700)
    assert [(o.message.body["untold_incidents"], o.channels) for o in out] == [(1, ("oncall", "team"))]


def test_no_recovery_message_without_recovered_in_when() -> None:
    rules = {"when": ["failure", "late"], "quiet": 3600}
    _, state = run(notify.empty_state(), [down()], 0, rules=rules)
    out, state = run(state, [report()], 60, rules=rules)
    assert out == []
    assert state["environments"]["shop/prod"]["h1 unreachable"]["incident"] is None


def test_our_block_removed_or_edited_is_drift_a_pending_deploy_is_not() -> None:
    gone = report(tab="MAILTO=x\n", late=("hello",))
    assert [(f.kind, f.late) for f in gone.findings] == [("drift", ("hello",))]
    assert "no longer holds deployer's block of release abc" in gone.findings[0].detail
    edited = report(tab=BLOCK.replace("* * * * *", "*/5 * * * *"))
    assert [f.kind for f in edited.findings] == ["drift"]
    assert "changed by hand" in edited.findings[0].detail
    assert report().findings == ()  # the live release's block: whatever the declaration says now


def test_a_job_nobody_on_the_target_tells_of_is_told_by_verify_unless_cron_explains_it() -> None:
    alone = report(late=("hello",), unalerted={"hello": ("late", "failure")},
                   checks=[Check("success", FAIL, "3 failed runs in a row", "hello"), Check("success", PASS, "ok", "other")])
    assert sorted((f.kind, f.job) for f in alone.findings) == [("failure", "hello"), ("late", "hello")]
    assert report(late=("hello",)).findings == ()  # the target's wrapper and watchdog tell it
    stopped = report(cron=False, late=("hello",), unalerted={"hello": ("late",)})
    assert [f.kind for f in stopped.findings] == ["cron-stopped"]
    out, state = run(notify.empty_state(), [alone], 0)
    assert {o.message.subject for o in out} == {"[shop/prod] hello is late on h1", "[shop/prod] hello keeps failing on h1"}
    out, _ = run(state, [report(unalerted={"hello": ("late", "failure")})], 600)
    assert sorted(o.message.subject for o in out) == ["[shop/prod] hello recovered on h1 (failing 10m)",
                                                      "[shop/prod] hello runs again on h1 (late 10m)"]


def test_a_state_not_ours_is_refused_by_shape() -> None:
    assert notify.is_state(notify.empty_state())
    bad: object
    for bad in [None, [], {"version": 2, "environments": {}}, {"version": 1, "environments": []},
                {"version": 1, "environments": {"shop/prod": {"k": {"incident": {"kind": 1}}}}},
                {"version": 1, "environments": {"shop/prod": {"k": {"incident": {"kind": "x", "host": "h", "opened": 1,
                                                                                  "told": [3]}}}}},
                {"version": 1, "environments": {"shop/prod": {"k": {"last_told": "yesterday"}}}},
                json.loads('{"version": 1, "environments": {"shop/prod": {"k": {"last_told": NaN}}}}'),
                {"version": 1, "environments": {"shop/prod": {"k": {"recovery": {"kind": "x", "host": "h", "opened": 1,
                                                                                  "late": []}}}}},
                {"version": 1, "environments": {"shop/prod": {"k": {"incident": {"kind": "x", "host": "h", "opened": 1,
                                                                                  "told": [], "late": [], "job": {}}}}}}]:
        assert not notify.is_state(bad), bad
    out, _ = run({"version": 1, "environments": []}, [down()], 0)  # step itself starts afresh
    assert len(out) == 1


def test_hostile_text_in_a_finding_stays_on_one_line() -> None:
    out, _ = run(notify.empty_state(), [notify.HostReport("h1", (notify.Finding("h1", "drift", "edited: 'x\nSubject: y'"),),
                                                          frozenset({"drift"}))], 0)
    message = out[0].message
    assert "\n" not in message.subject and "\n" not in message.body["detail"]
    assert not any(line.startswith("Subject:") for line in message.text.splitlines())
