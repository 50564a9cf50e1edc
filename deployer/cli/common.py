"""What every command shares: its context, its options, its session, its guard, and how
it reads the hosts that answered. Below the command modules, which all import it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Concatenate, NoReturn, ParamSpec

import click
from rich.text import Text

from deployer.cli.output import Output
from deployer.core.redaction import secret_values
from deployer.engine.outcome import TargetStatus, exit_code_of
from deployer.engine.session import Session, TargetState, default_parallel
from deployer.errors import EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, InvalidInput, Problem
from deployer.transport import ConnectOptions

P = ParamSpec("P")


class Context:
    """What every command gets from the group's options: the declaration, the output, SSH trust."""

    def __init__(self, file: str, json_mode: bool, color: bool | None) -> None:
        self.file = file
        self.output = Output(json_mode, color)
        self.accept_new_host_keys = False


def guarded(command: Callable[Concatenate[Context, P], int]) -> Callable[Concatenate[Context, P], None]:
    """A command whose body returns its exit code: exit with it; invalid input becomes a
    person's message and exit 2, Ctrl-C exit 130, the same for every command."""

    @functools.wraps(command)
    def run(ctx: Context, /, *args: P.args, **kwargs: P.kwargs) -> NoReturn:
        try:
            code = command(ctx, *args, **kwargs)
        except InvalidInput as exc:
            ctx.output.invalid(exc)
            sys.exit(EXIT_INVALID)
        except KeyboardInterrupt:
            ctx.output.err.print("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code)

    return run


def open_session(ctx: Context, env: str, limit: str | None, parallel: int) -> Session:
    """The environment's targets, rendered (no host contacted yet); their secrets are redacted from all output."""
    options = ConnectOptions(accept_new_host_keys=ctx.accept_new_host_keys)
    session = Session.load(ctx.file, env, limit, parallel, connect_options=options)
    if len(session.states) > 1 and not ctx.output.json_mode and ctx.output.err.is_terminal:
        session.progress = ctx.output.progress_line
    for state in session.states:
        ctx.output.secrets.update(secret_values(state.desired.jobs))
    return session


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


# ---------------------------------------------------------------------- the hosts that answered


def check_job(session: Session, job: str | None) -> None:
    """Refuse (invalid input) a job id that none of these hosts gets."""
    declared = {j.id for s in session.states for j in s.desired.jobs}
    if job is not None and job not in declared:
        known = ", ".join(sorted(declared)) or "none"
        raise InvalidInput([Problem(f"no job '{job}' is deployed to these hosts (jobs: {known})", file=session.project.file)])


def reachable(ctx: Context, session: Session, job: str | None = None) -> list[TargetState]:
    """The hosts that answered; for the others, why not. Files of the answering hosts that
    could not be read (or lines that are not run records) are said once, as warnings."""
    for state in session.states:
        if state.facts is None:
            ctx.output.err.print(Text(ctx.output.safe(f"{state.name}: {state.error}"), style="red"))
            continue
        problems = list(state.facts.problems)
        for job_id, info in state.facts.jobs.items():
            if job is None or job_id == job:
                problems += info.get("problems") or []
        for problem in problems:
            ctx.output.err.print(Text(ctx.output.safe(f"{state.name}: warning: {problem}"), style="yellow"))
    return [s for s in session.states if s.facts is not None]


def unanswered_statuses(session: Session) -> list[TargetStatus]:
    """The statuses of the hosts without facts: unreachable, or failed when reached but their
    probe failed there (never "unreachable" for a host that answered)."""
    return [s.status for s in session.states if s.facts is None]


def unanswered(session: Session) -> int:
    """The exit code the hosts without facts make (engine/outcome.py): 4 when one could not
    be reached, 1 when one was reached but its probe failed there."""
    return exit_code_of(unanswered_statuses(session))


# ---------------------------------------------------------------------- options


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
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (for CI).")
