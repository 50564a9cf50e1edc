"""The ``deployer`` command line. Thin: parse options, call the engine, print, exit.

Exit codes (stable, see deployer.errors): 0 ok, 1 a target failed, 2 invalid input,
3 changes pending (plan --detailed-exitcode), 4 a target unreachable.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from deployer import __version__
from deployer.cli.output import Output, render_text
from deployer.config.inventory import load_inventory
from deployer.core.render import check_job_hosts
from deployer.core.render import render as render_target
from deployer.core.check import FAIL, WARN
from deployer.engine.outcome import CHANGED
from deployer.engine.session import Session, default_parallel
from deployer.errors import EXIT_INVALID, EXIT_OK, InvalidInput, Problem
from deployer.transport import ConnectOptions


class Context:
    def __init__(self, file: str, json_mode: bool, color: bool | None) -> None:
        self.file = file
        self.output = Output(json_mode, color)
        self.accept_new_host_keys = False


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _exit(code: int) -> NoReturn:
    sys.exit(code)


def _session(ctx: Context, env: str, limit: str | None, parallel: int) -> Session:
    options = ConnectOptions(accept_new_host_keys=ctx.accept_new_host_keys)
    session = Session.load(ctx.file, env, limit, parallel, connect_options=options)
    if len(session.states) > 1 and not ctx.output.json_mode and ctx.output.err.is_terminal:
        session.progress = ctx.output.progress_line
    for state in session.states:
        for job in state.desired.jobs:
            ctx.output.secrets.update(v for n, v in job.env if n in job.secret_names and v)
    return session


def _guard(ctx: Context, work: Any) -> NoReturn:
    """Run a command body; turn input errors into exit 2 and a person's message."""
    try:
        code = work()
    except InvalidInput as exc:
        ctx.output.invalid(exc)
        _exit(EXIT_INVALID)
    except KeyboardInterrupt:
        ctx.output.err.print("interrupted")
        _exit(130)
    _exit(code)


def confirm(ctx: Context, pending: int, yes: bool, verb: str, past: str, question: str) -> int | None:
    """Ask before changing hosts: None to go on, else the exit code (no terminal and no
    --yes: 2, nothing written; the person said no: 0)."""
    if not pending or yes:
        return None
    if not sys.stdin.isatty():
        ctx.output.err.print(f"not a terminal and no --yes: nothing was {past} (pass --yes to {verb} without a prompt)")
        return EXIT_INVALID
    if not click.confirm(question, default=False):
        ctx.output.err.print(f"nothing was {past}")
        return EXIT_OK
    return None


def _json_flag(click_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        click_ctx.find_object(Context).output.json_mode = True  # type: ignore[union-attr]
    return value


# --json is accepted after the command too (`deployer plan dev --json`), as people type it.
json_option = click.option("--json", "json_late", is_flag=True, expose_value=False, callback=_json_flag,
                           help="Machine-readable output on stdout.")


def _accept_new_flag(click_ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        click_ctx.find_object(Context).accept_new_host_keys = True  # type: ignore[union-attr]
    return value


accept_new_option = click.option(
    "--accept-new-host-keys", is_flag=True, expose_value=False, callback=_accept_new_flag,
    help="Trust SSH hosts never seen before and record their keys in the known_hosts file in use "
         "($DEPLOYER_KNOWN_HOSTS, else ~/.ssh/known_hosts), like OpenSSH's accept-new. A changed key is always refused.")
adopt_option = click.option("--adopt", is_flag=True,
                             help="Remove hand-made crontab lines that already run a declared job, in the same atomic "
                                  "change (a copy stays in the target's backup), so no job runs twice.")
env_argument = click.argument("env", metavar="ENV")
limit_option = click.option("--limit", "-l", metavar="HOSTS", help="Only these hosts or groups (comma-separated).")
parallel_option = click.option("--parallel", "-p", type=click.IntRange(1, 256), default=default_parallel, show_default="10",
                               help="How many hosts at once.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--file", "-f", "file", default=lambda: os.environ.get("DEPLOYER_FILE", "deployer.yml"),
              show_default="deployer.yml", help="The declaration file (or set DEPLOYER_FILE).")
@click.option("--json", "json_mode", is_flag=True, help="Machine-readable output on stdout.")
@click.option("--color/--no-color", default=None, help="Force or disable colours (default: when a terminal).")
@click.version_option(__version__, prog_name="deployer")
@click.pass_context
def cli(click_ctx: click.Context, file: str, json_mode: bool, color: bool | None) -> None:
    """Declarative cron jobs: plan, apply and verify them on local, SSH and Incus targets."""
    click_ctx.obj = Context(file, json_mode, color)


@cli.command()
@json_option
@click.pass_obj
def validate(ctx: Context) -> None:
    """Check the declaration and every environment's inventory; touch no target."""

    def work() -> int:
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
            ctx.output.print(f"{ctx.file}: valid — project {project.name}, {_count(len(jobs), 'job')}, "
                             f"environments {', '.join(project.environments)} ({_count(hosts, 'host')})", style="green")
        return EXIT_OK

    _guard(ctx, work)


@cli.command()
@env_argument
@limit_option
@json_option
@click.pass_obj
def render(ctx: Context, env: str, limit: str | None) -> None:
    """Print what would be installed on each host, without contacting any."""

    def work() -> int:
        session = _session(ctx, env, limit, 1)
        if ctx.output.json_mode:
            ctx.output.emit_json({"hosts": {s.name: {"jobs": [j.id for j in s.desired.jobs],
                                                     "skipped": dict(s.desired.skipped)} for s in session.states}})
        else:
            ctx.output.print(render_text(session))
        return EXIT_OK

    _guard(ctx, work)


@cli.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@click.option("--detailed-exitcode", is_flag=True, help="Exit 3 when there are changes to apply (0 when none).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Save the plan, to apply exactly it with apply --plan.")
@adopt_option
@json_option
@click.pass_obj
def plan(ctx: Context, env: str, limit: str | None, parallel: int, detailed_exitcode: bool, out_file: str | None,
         adopt: bool) -> None:
    """Show what apply would change on each host (nothing is written)."""

    def work() -> int:
        session = _session(ctx, env, limit, parallel)
        try:
            session.observe(adopt=adopt)
        finally:
            session.close()
        if ctx.output.json_mode:
            ctx.output.emit_json(ctx.output.plan_json(session))
        else:
            ctx.output.plan(session)
        if out_file:
            Path(out_file).write_text(json.dumps(session.saved_plan(), indent=2) + "\n")
        return session.exit_code(changes_pending=detailed_exitcode)

    _guard(ctx, work)


@cli.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (for CI).")
@click.option("--plan", "plan_file", type=click.Path(exists=True, dir_okay=False),
              help="Apply only if nothing changed since this saved plan (plan --out).")
@adopt_option
@json_option
@click.pass_obj
def apply(ctx: Context, env: str, limit: str | None, parallel: int, yes: bool, plan_file: str | None, adopt: bool) -> None:
    """Make every host match the declaration (a second apply changes nothing)."""

    def work() -> int:
        expected = None
        if plan_file:
            try:
                expected = json.loads(Path(plan_file).read_text())["targets"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InvalidInput([Problem(f"not a saved plan ({exc})", file=plan_file)]) from None
        session = _session(ctx, env, limit, parallel)
        try:
            session.observe(adopt=adopt)
            pending = [s for s in session.states if s.status == CHANGED]
            if not ctx.output.json_mode:
                ctx.output.plan(session)
            if expected is None and (refused := confirm(ctx, len(pending), yes, "apply", "applied",
                                                          f"Apply these changes to {_count(len(pending), 'host')}?")) is not None:
                return refused
            session.apply(expected)
        finally:
            session.close()
        if ctx.output.json_mode:
            ctx.output.emit_json(ctx.output.plan_json(session, applied=True))
        else:
            ctx.output.summary(session, "apply")
        return session.exit_code()

    _guard(ctx, work)


@cli.command()
@env_argument
@limit_option
@parallel_option
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False), help="Also write the checks as JUnit XML, for CI.")
@accept_new_option
@json_option
@click.pass_obj
def verify(ctx: Context, env: str, limit: str | None, parallel: int, strict: bool, junit_file: str | None) -> None:
    """Audit every host and job: crontab, files, cron daemon, runs, freshness, locks, disk."""

    def work() -> int:
        session = _session(ctx, env, limit, parallel)
        try:
            session.observe()
            session.verify(strict=strict)
        finally:
            session.close()
        if junit_file:
            Path(junit_file).write_text(junit_xml(session, lambda text: ctx.output.safe(text, newlines=True)), encoding="utf-8")
        if ctx.output.json_mode:
            ctx.output.emit_json(ctx.output.checks_json(session))
        else:
            ctx.output.checks(session)
            ctx.output.summary(session, "verify")
        return session.exit_code()

    _guard(ctx, work)


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


def main() -> None:
    import deployer.cli.lifecycle  # noqa: F401  (registers rollback, destroy)
    import deployer.cli.ops  # noqa: F401  (registers status, logs, run, history)
    import deployer.cli.explain  # noqa: F401  (registers explain)

    cli(prog_name="deployer")
