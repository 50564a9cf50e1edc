"""Declaring and deploying: validate, render, plan, apply, verify.

validate and render contact no host; plan, apply and verify probe each host once, and
apply sends each host that has changes one bundle.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import click

from deployer.cli import notify
from deployer.cli.checks import exit_code_with_checks, open_api, show_checks, with_checks
from deployer.cli.common import (
    Context,
    accept_new_option,
    adopt_option,
    confirm,
    env_argument,
    guarded,
    json_option,
    limit_option,
    open_session,
    parallel_option,
    yes_option,
)
from deployer.cli.output import render_text
from deployer.config.inventory import load_inventory
from deployer.core.check import FAIL, WARN
from deployer.core.render import check_job_hosts
from deployer.core.render import render as render_target
from deployer.engine import healthchecks
from deployer.engine.outcome import CHANGED
from deployer.engine.session import Session
from deployer.errors import EXIT_OK, InvalidInput, Problem
from deployer.report.data import checks_report, plan_report
from deployer.report.words import counted


@click.command()
@json_option
@click.pass_obj
@guarded
def validate(ctx: Context) -> int:
    """Check the declaration and every environment's inventory; touch no target."""
    from deployer.config.load import load_project  # validate always validates: no cache

    project = load_project(ctx.file)
    problems: list[Problem] = []
    hosts = 0
    for env in project.environments.values():
        try:
            targets = load_inventory(env.inventory, env.inventory_shown)
            check_job_hosts(project, env, targets)
            hosts += len(targets)
            for target in targets:  # templates too; secrets are plan's business
                try:
                    render_target(project, env, target, targets, resolve_secrets=False)
                except InvalidInput as exc:
                    problems.extend(exc.problems)
        except InvalidInput as exc:
            problems.extend(exc.problems)
    problems = list(dict.fromkeys(problems))
    if problems:
        raise InvalidInput(problems)
    jobs = {job.id for env in project.environments.values() for job in env.jobs}
    if ctx.output.json_mode:
        ctx.output.emit_json({"ok": True, "project": project.name, "environments": list(project.environments),
                              "jobs": sorted(jobs), "hosts": hosts})
    else:
        ctx.output.print(f"{ctx.file}: valid — project {project.name}, {counted(len(jobs), 'job')}, "
                         f"environments {', '.join(project.environments)} ({counted(hosts, 'host')})", style="green")
    return EXIT_OK


@click.command()
@env_argument
@limit_option
@json_option
@click.pass_obj
@guarded
def render(ctx: Context, env: str, limit: str | None) -> int:
    """Print what would be installed on each host, without contacting any."""
    session = open_session(ctx, env, limit, 1)
    if ctx.output.json_mode:
        ctx.output.emit_json({"hosts": {s.name: {"jobs": [j.id for j in s.desired.jobs],
                                                 "skipped": dict(s.desired.skipped)} for s in session.states}})
    else:
        ctx.output.print(render_text(session))
    return EXIT_OK


@click.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 3 when there are changes to apply (0 when none).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan, to apply exactly it with apply --plan.")
@adopt_option
@json_option
@click.pass_obj
@guarded
def plan(ctx: Context, env: str, limit: str | None, parallel: int, detailed_exitcode: bool, out_file: str | None,
         adopt: bool) -> int:
    """Show what apply would change on each host (nothing is written)."""
    session = open_session(ctx, env, limit, parallel)
    api = open_api(ctx, session)
    try:
        session.observe(adopt=adopt)
    finally:
        session.close()
    # The checks' list is read, never written: plan creates nothing.
    checks = healthchecks.sync_session(api, session, apply=False, every_host=limit is None) if api else None
    code = exit_code_with_checks(session.exit_code(changes_pending=detailed_exitcode), checks, detailed_exitcode)
    if ctx.output.json_mode:
        ctx.output.emit_json(with_checks(dict(plan_report(session)), checks, code))
    else:
        ctx.output.plan(session)
        show_checks(ctx, checks)
    if out_file:
        Path(out_file).write_text(json.dumps(session.saved_plan(), indent=2) + "\n")
    return code


@click.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@yes_option
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False),
              help="Apply only if nothing changed since this saved plan (plan --out).")
@adopt_option
@json_option
@click.pass_obj
@guarded
def apply(ctx: Context, env: str, limit: str | None, parallel: int, yes: bool, plan_file: str | None, adopt: bool) -> int:
    """Make every host match the declaration (a second apply changes nothing)."""
    expected = None
    if plan_file:
        try:
            expected = json.loads(Path(plan_file).read_text())["targets"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput([Problem(f"not a saved plan ({exc})", file=plan_file)]) from None
    session = open_session(ctx, env, limit, parallel)
    api = open_api(ctx, session)
    try:
        session.observe(adopt=adopt)
        pending = [s for s in session.states if s.status == CHANGED]
        if not ctx.output.json_mode:
            ctx.output.plan(session)
        if expected is None and (refused := confirm(ctx, len(pending), yes, "apply", "applied",
                                                      f"Apply these changes to {counted(len(pending), 'host')}?")) is not None:
            return refused
        session.apply(expected)
    finally:
        session.close()
    # After the hosts: the jobs are what is deployed, their checks watch them; an API that is
    # down must not hold back a deploy, and the next apply creates what this one could not.
    checks = healthchecks.sync_session(api, session, apply=True, every_host=limit is None) if api else None
    code = exit_code_with_checks(session.exit_code(), checks)
    if ctx.output.json_mode:
        ctx.output.emit_json(with_checks(dict(plan_report(session, applied=True)), checks, code))
    else:
        ctx.output.summary(session, "apply")
        show_checks(ctx, checks)
    return code


@click.command()
@env_argument
@limit_option
@parallel_option
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), help="Also write the checks as JUnit XML, for CI.")
@click.option("--notify", "notify_flag", is_flag=True,
              help="The dead-man: tell the environment's alert channels what the hosts cannot say themselves (host "
                   "unreachable, cron stopped, our crontab block gone or edited), once per incident, and its recovery.")
@click.option("--notify-state", "notify_state", metavar="FILE",
              help="Where --notify keeps its incidents (default: $XDG_STATE_HOME/deployer/notify.json, "
                   "else ~/.local/state/deployer/notify.json).")
@accept_new_option
@json_option
@click.pass_obj
@guarded
def verify(ctx: Context, env: str, limit: str | None, parallel: int, strict: bool, junit_file: str | None,
           notify_flag: bool, notify_state: str | None) -> int:
    """Audit every host and job: crontab, files, cron daemon, runs, freshness, locks, disk."""
    if notify_state is not None and not notify_flag:
        raise InvalidInput([Problem("--notify-state is the state of --notify: add --notify, or leave it out")])
    session = open_session(ctx, env, limit, parallel)
    with contextlib.ExitStack() as held:
        # The state file and the channels' secrets are checked before any host is contacted (exit 2).
        state = held.enter_context(notify.open_state(notify_state)) if notify_flag else None
        channels = notify.prepare(session, ctx.output.secrets) if notify_flag else None
        try:
            session.observe()
            session.verify(strict=strict)
        finally:
            session.close()
        # What was sent never changes verify's exit code: a dead channel is said, and tried again next run.
        told = notify.run(session, ctx.output.redact, state, channels) if state is not None and channels is not None else None
    if junit_file:
        Path(junit_file).write_text(junit_xml(session, lambda text: ctx.output.safe(text, newlines=True)), encoding="utf-8")
    if ctx.output.json_mode:
        report = checks_report(session)
        if told is not None:
            report["notify"] = told
        ctx.output.emit_json(report)
    else:
        ctx.output.checks(session)
        ctx.output.summary(session, "verify")
        if told is not None:
            notify.show(ctx.output, told)
    return session.exit_code()


def junit_xml(session: Session, clean: Callable[[str], str] = str) -> str:
    """One testsuite per host, one testcase per check; fail is a failure, warn a skipped-with-message.

    ``clean`` redacts each text and escapes control characters (XML 1.0 cannot hold most of
    them: one in a check's detail would make the whole file unreadable to CI)."""
    from xml.etree import ElementTree as ET

    suites = ET.Element("testsuites", name=f"deployer verify {session.project.name}/{session.env.name}")
    for state in session.states:
        suite = ET.SubElement(suites, "testsuite", name=state.name, tests=str(max(1, len(state.checks))),
                              failures=str(sum(c.status == FAIL for c in state.checks)), errors="0",
                              time=f"{state.seconds:.3f}")
        if not state.checks:
            case = ET.SubElement(suite, "testcase", classname=state.name, name="reach")
            ET.SubElement(case, "error", message=clean(state.error or "no result")).text = clean(state.error or "")
            suite.set("errors", "1")
            continue
        for check in state.checks:
            name = f"{check.name} {check.job}" if check.job else check.name
            case = ET.SubElement(suite, "testcase", classname=state.name, name=name)
            detail = clean(check.detail)
            if check.status == FAIL:
                ET.SubElement(case, "failure", message=detail).text = detail
            elif check.status == WARN:
                ET.SubElement(case, "system-out").text = f"warning: {detail}"
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"
