"""The healthchecks checks in the commands that sync them (plan, apply, destroy, rollback):
the API opened with its key masked, the checks shown, the exit code and the JSON they give."""

from __future__ import annotations

from deployer.cli.common import Context
from deployer.engine import healthchecks
from deployer.engine.session import Session
from deployer.errors import EXIT_CHANGES, EXIT_FAILED, EXIT_OK


def open_api(ctx: Context, session: Session) -> healthchecks.Api | None:
    """The environment's healthchecks API, its key read now (a missing one: exit 2, no host touched) and masked in all output."""
    api = healthchecks.open_api(session.project, session.env)
    if api is not None:
        ctx.output.secrets.add(api.key)
    return api


def exit_code_with_checks(code: int, checks: healthchecks.SyncReport | None, changes_pending: bool = False) -> int:
    """The hosts' exit code, made 1 when the checks could not be synced (the hosts' 4 stays 4),
    and 3 for plan --detailed-exitcode when checks are to be created or updated."""
    if checks is None:
        return code
    if checks.error is not None and code in (EXIT_OK, EXIT_CHANGES):
        return EXIT_FAILED
    if changes_pending and checks.pending and code == EXIT_OK:
        return EXIT_CHANGES
    return code


def with_checks(data: dict[str, object], checks: healthchecks.SyncReport | None, code: int) -> dict[str, object]:
    if checks is not None:
        data["healthchecks"] = checks.data()
        data["exit_code"] = code
    return data


AFTER_APPLY = "the hosts are as the summary says, and the next apply creates or updates what was not"


def show_checks(ctx: Context, checks: healthchecks.SyncReport | None, after: str = AFTER_APPLY) -> None:
    """One line per check and what became of it, then the API's error and what to do."""
    if checks is None:
        return
    ctx.output.print(checks.summary(), style="bold")
    for result in checks.results:
        spec = result.spec
        word = healthchecks.ACTION_WORDS.get(result.action, result.action)
        detail = f"{spec.schedule}, tz {spec.tz}, grace {spec.grace}s"
        if result.changed:
            detail += f"; changed: {', '.join(result.changed)}"
        if result.detail:
            detail = result.detail
        style = {"unchanged": "dim", "skipped": "yellow"}.get(result.action, "green")
        ctx.output.print(ctx.output.safe(f"   {word:<13} {spec.slug} ({detail})"), style=style)
    if checks.error is not None:
        ctx.output.err.print(ctx.output.safe(f"error: healthchecks: {checks.error}"), style="red")
        ctx.output.err.print(ctx.output.safe(f"   {checks.hint}; {after}"), style="red")
