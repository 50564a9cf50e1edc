"""``deployer explain ENV [JOB]``: each job's schedule in words and its next fire instants,
as the target's cron will really run them (its zone, its flavour, DST nights included).

The zone comes from the host's probe, or from ``--tz`` without contacting any host; the
flavour of cron from the inventory variable ``deployer_cron_flavour`` when set, else from
the probe (the daemon the host runs; not with ``--tz``), else debian (timing.cron_rules).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from rich.text import Text

from deployer.cli.common import (
    Context,
    accept_new_option,
    check_job,
    env_argument,
    guarded,
    json_option,
    limit_option,
    open_session,
    parallel_option,
    reachable,
    unanswered,
)
from deployer.core.timing import cron_rules, entry_of, fires_after, in_words
from deployer.errors import EXIT_OK, InvalidInput, Problem
from deployer.remote.cronengine import FLAVOUR_NAMES


def _moment(text: str | None, tz: str) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput([Problem(f"--from: '{text}' is not a time; write ISO 8601 such as 2026-10-25T01:00 "
                                    "(read in the host's zone) or 2026-10-25T01:00+02:00")]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(tz))


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput([Problem(f"--tz: '{name}' is not a zone of this machine's tz database; "
                                    "write one such as Europe/Paris or UTC")]) from None
    return name


def _probed_zone(ctx: Context, host: str, name: str) -> str:
    """The zone the host's probe reported; like everything read from a target, it may be
    anything: a name this machine's tz database does not know is said, and UTC used."""
    try:
        ZoneInfo(name)
        return name
    except (ZoneInfoNotFoundError, ValueError):
        ctx.output.err.print(Text(ctx.output.safe(f"{host}: warning: its zone '{name}' is unknown here; times in UTC "
                                                  "(give it with --tz)"), style="yellow"))
        return "UTC"


def _note(schedule: str, flavour: str, fire: datetime, tz: str) -> str:
    """Why a fire is not where the schedule's fields alone put it (DST nights)."""
    entry = entry_of(schedule, flavour)
    local = fire.astimezone(ZoneInfo(tz))
    if not entry.matches(local.minute, local.hour, local.day, local.month, local.isoweekday() % 7):
        return "clocks went forward: cron runs what the skipped time held at the jump"
    if local.fold:
        return "clocks went back: this hour comes twice, cron runs wildcard jobs again"
    return ""


def _day_rule(schedule: str, flavour: str) -> str:
    entry = entry_of(schedule, flavour)
    if entry.reboot or flavour == "busybox" or len(entry.doms) == 31 or len(entry.dows) == 7:
        return ""
    if entry.dom_star or entry.dow_star:
        return "days matching BOTH the day-of-month and the day-of-week (one of them starts with '*')"
    return "days matching EITHER the day-of-month or the day-of-week"


@click.command()
@env_argument
@click.argument("job", required=False)
@click.option("--from", "start", metavar="TIME", help="Start after this time (ISO 8601; default now).")
@click.option("--count", "-n", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many fire times.")
@click.option("--tz", "tz", metavar="ZONE", help="The hosts' zone (e.g. Europe/Paris): no host is contacted.")
@limit_option
@parallel_option
@accept_new_option
@json_option
@click.pass_obj
@guarded
def explain(ctx: Context, env: str, job: str | None, start: str | None, count: int, tz: str | None,
            limit: str | None, parallel: int) -> int:
    """Each job's schedule in words and its next fire times, as the host's cron runs them."""
    zone_given = _check_zone(tz) if tz else None
    session = open_session(ctx, env, limit, parallel)
    check_job(session, job)
    if zone_given is None:
        try:
            session.observe()
        finally:
            session.close()
        states = reachable(ctx, session, job)
    else:
        states = session.states
    hosts: list[dict[str, Any]] = []
    for state in states:
        # --tz: no probe, so the inventory's flavour or the default
        rules = cron_rules(state.desired.cron_flavour, state.facts.cron_flavour if state.facts else None)
        flavour = rules.flavour
        host_tz = zone_given or _probed_zone(ctx, state.name, state.facts.timezone if state.facts else "UTC")
        moment = _moment(start, host_tz)
        jobs = []
        for spec in state.desired.jobs:
            if job is not None and spec.id != job:
                continue
            fires = fires_after(spec.schedule, moment, host_tz, count, flavour)
            jobs.append({
                "job": spec.id, "schedule": spec.schedule, "words": in_words(spec.schedule),
                "days": _day_rule(spec.schedule, flavour),
                "fires": [f.astimezone(ZoneInfo(host_tz)).isoformat() for f in fires],
                "notes": [_note(spec.schedule, flavour, f, host_tz) for f in fires],
            })
        hosts.append({"host": state.name, "timezone": host_tz, "flavour": flavour, "flavour_from": rules.source,
                      "from": moment.astimezone(ZoneInfo(host_tz)).replace(microsecond=0).isoformat(), "jobs": jobs})
    if ctx.output.json_mode:
        ctx.output.emit_json({"project": session.project.name, "env": session.env.name, "hosts": hosts})
    else:
        for host in hosts:
            ctx.output.out.print(Text(ctx.output.safe(f"── {host['host']} ({host['timezone']}, "
                                                      f"{FLAVOUR_NAMES[host['flavour']]}) after {host['from']}"),
                                      style="bold"))
            for j in host["jobs"]:
                ctx.output.out.print(Text(f"   {j['job']}  {j['schedule']}  ({j['words']})"))
                if j["days"]:
                    ctx.output.out.print(Text(f"      on {j['days']}", style="dim"))
                if not j["fires"]:
                    ctx.output.out.print(Text("      no fire time: runs at boot only", style="dim"))
                for fire, note in zip(j["fires"], j["notes"], strict=True):
                    ctx.output.out.print(Text(f"      {fire}") + Text(f"  {note}" if note else "", style="yellow"))
    return EXIT_OK if zone_given else unanswered(session)

