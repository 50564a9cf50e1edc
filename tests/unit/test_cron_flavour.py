"""Which cron's rules a host's fire times follow: the one choice (inventory, else probe, else
Debian's), the probe's answer read as hostile input, and verify's freshness under each."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from deployer.core.checks import cron_daemon_check
from deployer.core.facts import parse_facts
from deployer.core.health import job_checks
from deployer.core.timing import CronRules, cron_rules
from deployer.remote.messages import ProbeAnswer
from tests.unit.test_health import facts, job


@pytest.mark.parametrize(("declared", "probed", "expected"), [
    ("cronie", "busybox", CronRules("cronie", "inventory")),  # the operator's word wins
    ("debian", None, CronRules("debian", "inventory")),
    (None, "busybox", CronRules("busybox", "probe")),
    (None, "cronie", CronRules("cronie", "probe")),
    (None, None, CronRules("debian", "default")),  # no daemon deployer knows, no variable
])
def test_one_choice_of_flavour(declared: str | None, probed: str | None, expected: CronRules) -> None:
    assert cron_rules(declared, probed) == expected


def test_the_rules_say_where_they_come_from() -> None:
    assert str(cron_rules(None, "busybox")) == "the rules of busybox crond, probed"
    assert str(cron_rules("cronie", "busybox")) == "the rules of cronie, as deployer_cron_flavour in the inventory says"
    assert str(cron_rules(None, None)) == ("the rules of Debian/Ubuntu cron (Vixie cron 3.0pl1), the default: "
                                           "no cron daemon deployer knows was seen")


def probe_answer(cron: Any) -> ProbeAnswer:
    # What came over the wire: a hostile or older target may send any shape (hence the cast).
    return cast(ProbeAnswer, {"hostname": "h", "user": "root", "uid": 0, "home": "/root", "python": "/usr/bin/python3",
            "python_version": "3.11", "deploy_home": "/d", "cron": cron})


@pytest.mark.parametrize("flavour", ["busybox", "debian", "cronie"])
def test_the_probed_flavour_reaches_the_facts(flavour: str) -> None:
    f = parse_facts(probe_answer({"running": True, "process": "crond", "pid": 7, "flavour": flavour}), "p", "dev")
    assert (f.cron_running, f.cron_flavour) == (True, flavour)


@pytest.mark.parametrize("cron", [
    # a flavour that is none of the three, in every shape a target could send
    {"running": True, "process": "crond", "flavour": "fcron"},
    {"running": True, "process": "crond", "flavour": "BUSYBOX"},
    {"running": True, "process": "crond", "flavour": "busybox\n"},
    {"running": True, "process": "crond", "flavour": ""},
    {"running": True, "process": "crond", "flavour": 3},
    {"running": True, "process": "crond", "flavour": ["busybox"]},
    {"running": True, "process": "crond", "flavour": {"busybox": True}},
    {"running": True, "process": "crond", "flavour": None},
    {"running": True, "process": "crond"},  # an older probe: no flavour at all
    # a flavour without a running daemon says nothing
    {"running": False, "process": None, "flavour": "busybox"},
])
def test_a_flavour_the_engine_does_not_know_is_unknown(cron: dict[str, Any]) -> None:
    f = parse_facts(probe_answer(cron), "p", "dev")
    assert f.cron_flavour is None
    assert cron_rules(None, f.cron_flavour) == CronRules("debian", "default")


@pytest.mark.parametrize("cron", ["busybox", ["busybox"], 1, None])
def test_a_cron_answer_that_is_not_a_mapping_is_no_daemon(cron: Any) -> None:
    f = parse_facts(probe_answer(cron), "p", "dev")
    assert (f.cron_running, f.cron_process, f.cron_flavour) == (False, None, None)


def freshness(flavour: str | None, rules: CronRules | None = None) -> tuple[str, str]:
    # '0 0 */2 * 1' on Thursday 2026-06-04 at noon, deployed Monday at noon, no run since.
    # Debian: '*/2' starts with '*', so odd days AND Mondays: next due 2026-06-15, not due.
    # busybox: '*/2' is every even day (its '*' counts from 0), not complete, so ORed with
    # Mondays: due 2026-06-04 00:00, which has no run.
    f = dataclasses.replace(facts("2026-06-04T12:00:00", "2026-06-01T12:00:00"), cron_flavour=flavour)
    check = next(c for c in job_checks(job("0 0 */2 * 1", timeout=30), f, rules=rules) if c.name == "freshness")
    return check.status, check.detail


def test_freshness_follows_the_probed_cron() -> None:
    assert freshness(None) == ("pass", "not due since the deploy 3d ago")
    assert freshness("debian") == ("pass", "not due since the deploy 3d ago")
    assert freshness("busybox") == ("fail", "should have run at 2026-06-04 00:00 UTC since the deploy 3d ago but has no run")


def test_freshness_follows_the_inventory_over_the_probe() -> None:
    assert freshness("busybox", cron_rules("debian", "busybox")) == ("pass", "not due since the deploy 3d ago")
    assert freshness(None, cron_rules("busybox", None))[0] == "fail"


def test_verify_says_whose_rules_and_warns_when_the_inventory_disagrees() -> None:
    f = dataclasses.replace(facts("2026-06-04T12:00:00", None), cron_process="busybox", cron_flavour="busybox")
    assert cron_daemon_check(f, cron_rules(None, "busybox")).detail == (
        "busybox is running; fire times by the rules of busybox crond, probed")
    disagree = cron_daemon_check(f, cron_rules("debian", "busybox"))
    assert (disagree.status, disagree.detail) == (
        "warn", "busybox is running (busybox crond), but fire times follow the rules of Debian/Ubuntu cron "
                "(Vixie cron 3.0pl1), as deployer_cron_flavour in the inventory says: fix or remove that variable")
    agree = cron_daemon_check(f, cron_rules("busybox", "busybox"))
    assert agree.status == "pass"
