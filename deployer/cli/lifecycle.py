"""``deployer rollback`` and ``deployer destroy``: show the plan, confirm, one exec per host."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from deployer.cli.checks import exit_code_with_checks, open_api, show_checks, with_checks
from deployer.cli.common import Context, accept_new_option, confirm, env_argument, guarded, json_option, limit_option, open_session, parallel_option, yes_option
from deployer.core.lifecycle import LifecyclePlan, history
from deployer.engine import healthchecks
from deployer.engine.lifecycle import DESTROY, ROLLBACK, execute, prepare
from deployer.engine.outcome import CHANGED
from deployer.engine.session import Reads, Session
from deployer.report import words
from deployer.report.data import lifecycle_report


def _show(ctx: Context, session: Session, plans: dict[str, LifecyclePlan]) -> None:
    for state in session.states:
        ctx.output.host_header(state)
        if state.error:
            ctx.output.print(f"   {state.error}", style="red")
        lp = plans.get(state.name)
        if lp is None:
            continue
        ctx.output.changes(lp.changes, lp.crontab_changes)
        if lp.empty and not lp.errors:
            ctx.output.print(f"   {words.NOTHING_TO_DO}", style="dim")


def _run(ctx: Context, env: str, limit: str | None, parallel: int, yes: bool, kind: str, delete_checks: bool = False,
         **options: Any) -> int:
    session = open_session(ctx, env, limit, parallel)
    api = open_api(ctx, session)  # the key read before any host is contacted (a missing one: exit 2), as apply does
    try:
        plans = prepare(session, kind, **options)
        if not ctx.output.json_mode:
            _show(ctx, session, plans)
        pending = sum(s.status == CHANGED for s in session.states)
        if (refused := confirm(ctx, pending, yes, kind, "changed", f"{kind.capitalize()} {words.counted(pending, 'host')}?")) is not None:
            return refused
        execute(session, plans, kind)
    finally:
        session.close()
    # After the hosts, as apply: an API that is down must not hold back a destroy or a rollback.
    checks = None
    if api is not None and kind == DESTROY:
        checks = healthchecks.retire_destroyed(api, session, delete_checks, every_host=limit is None)
    elif api is not None:
        checks = healthchecks.resync_rolled_back(api, session, {host: lp.revision for host, lp in plans.items()})
    code = exit_code_with_checks(session.exit_code(), checks)
    if ctx.output.json_mode:
        ctx.output.emit_json(with_checks(dict(lifecycle_report(session, plans, done=True)), checks, code))
    else:
        ctx.output.summary(session, kind)
        show_checks(ctx, checks, after=_AFTER[kind])
    return code


_AFTER = {DESTROY: "the hosts are as the summary says; pause or delete their checks in healthchecks (or destroy again)",
          ROLLBACK: "the hosts are as the summary says; the checks may still watch the release rolled back from (rollback "
                    "again, or pause them in healthchecks)"}


@click.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@click.option("--to", "to", metavar="REVISION", help="Go back to this revision (a prefix is enough; see --list).")
@click.option("--list", "list_only", is_flag=True, help="Show the revisions each host can go back to; change nothing.")
@yes_option
@json_option
@click.pass_obj
@guarded
def rollback(ctx: Context, env: str, limit: str | None, parallel: int, to: str | None, list_only: bool, yes: bool) -> int:
    """Put back the previous release (or --to REVISION) from what each host kept: crontab entries,
    scripts, env files, manifest. Lines of the crontab that are not ours stay as they are now."""
    if list_only:
        return _list(ctx, env, limit, parallel)
    return _run(ctx, env, limit, parallel, yes, ROLLBACK, to=to)


def _list(ctx: Context, env: str, limit: str | None, parallel: int) -> int:
    session = open_session(ctx, env, limit, parallel)
    try:
        session.observe(Reads(backups=True))
    finally:
        session.close()
    rows = {s.name: history(s.facts) if s.facts else [] for s in session.states}
    if ctx.output.json_mode:
        ctx.output.emit_json({"hosts": {s.name: {"current": s.facts.current if s.facts else None, "error": s.error,
                                                 "history": rows[s.name]} for s in session.states}})
        return session.exit_code()
    table = Table(title=f"revisions of {session.project.name}/{session.env.name}", title_justify="left", show_edge=False)
    for column in ("host", "revision", "live until", "replaced by", "kept"):
        table.add_column(column)
    for s in session.states:
        if s.facts is None:
            table.add_row(s.name, Text(s.error or "unreachable", style="red"), "", "", "")
            continue
        table.add_row(s.name, Text(f"{s.facts.current or '-'} (live)", style="green"), "now", "", "yes")
        for h in rows[s.name]:
            table.add_row("", h["revision"], h["replaced_at"] or "?", f"{h['by'] or '-'} ({h['kind']})", "yes" if h["kept"] else "pruned")
    ctx.output.out.print(table)
    return session.exit_code()


@click.command()
@env_argument
@limit_option
@parallel_option
@accept_new_option
@click.option("--purge-logs", is_flag=True, help="Also remove the jobs' logs, run history and backups.")
@click.option("--delete-checks", is_flag=True,
              help="Delete the destroyed jobs' healthchecks checks (and their pings) instead of pausing them.")
@yes_option
@json_option
@click.pass_obj
@guarded
def destroy(ctx: Context, env: str, limit: str | None, parallel: int, purge_logs: bool, delete_checks: bool, yes: bool) -> int:
    """Remove this environment's jobs from every host: our crontab block, scripts, wrapper, env
    files. Logs and run history stay unless --purge-logs; lines we do not own stay byte for byte.
    The healthchecks checks of the destroyed hosts' jobs are paused (--delete-checks: deleted)."""
    return _run(ctx, env, limit, parallel, yes, DESTROY, delete_checks, purge_logs=purge_logs)

