"""Operating the deployed jobs: status, logs, run now, history export.

Each command is one probe per host (plus, for ``run``, the run itself), reading what the
run wrapper records on the target: the ledger, the running markers, the lock, the log.
"""

from __future__ import annotations

import shlex
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table
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
    unanswered_statuses,
)
from deployer.cli.output import shown
from deployer.core import crontab
from deployer.core.alertstate import alert_summary, alert_view
from deployer.core.health import ago, consecutive_failures, parse_time
from deployer.core.outcomes import CRASHED, FAILURE, SKIPPED_LOCKED, SUCCESS, TIMEOUT
from deployer.core.timing import cron_rules, in_words, next_fire
from deployer.engine.outcome import FAILED, OK, TargetStatus, exit_code_of
from deployer.engine.remote import isolated
from deployer.engine.session import Reads, TargetState
from deployer.errors import EXIT_OK
from deployer.remote.messages import RunLog

OUTCOME_STYLE: dict[str, str] = {SUCCESS: "green", FAILURE: "red", TIMEOUT: "red", CRASHED: "red", SKIPPED_LOCKED: "yellow"}


class LineStream:
    """A job's output as it arrives, whole lines at a time so a secret is never split
    between two chunks and slips past redaction."""

    def __init__(self, redact: Any) -> None:
        self.redact = redact
        self.pending = b""
        self.terminal = sys.stdout.isatty()  # escape sequences are shown escaped there, not obeyed

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        if b"\n" in self.pending:
            ready, self.pending = self.pending.rsplit(b"\n", 1)
            self._write(ready + b"\n")

    def close(self) -> None:
        if self.pending:
            self._write(self.pending)
            self.pending = b""

    def _write(self, data: bytes) -> None:
        text = self.redact(data.decode("utf-8", "replace"))
        sys.stdout.write(shown(text, newlines=True) if self.terminal else text)
        sys.stdout.flush()


def _status_rows(state: TargetState) -> list[dict[str, Any]]:
    assert state.facts is not None and state.release is not None
    facts = state.facts
    now = datetime.fromtimestamp(facts.now, UTC)
    rules = cron_rules(state.release.cron_flavour, facts.cron_flavour)
    rows = []
    for job in state.release.jobs:
        info = facts.runtime(job.id)
        runs = info.get("runs", [])
        last = runs[-1] if runs else None
        success = info.get("last_success")
        following = next_fire(job.schedule, now, facts.timezone, rules.flavour)
        running = [r for r in info.get("running", []) if r.get("alive")]
        rows.append({
            "host": state.name,
            "job": job.id,
            "schedule": job.schedule,
            "schedule_words": in_words(job.schedule),
            "last_run": last and {"start": last.get("start"), "outcome": last.get("outcome"),
                                  "duration": last.get("duration"), "exit_code": last.get("exit_code")},
            "last_success": success.get("start") if success else None,
            "last_success_ago": ago(parse_time(success.get("start")) if success else None, now),
            "next_run": following.isoformat() if following else None,
            "cron_flavour": rules.flavour,  # whose rules next_run follows (timing.cron_rules)
            "consecutive_failures": consecutive_failures(runs),
            "running": [{"pid": r.get("pid"), "since": r.get("start"), "run_id": r.get("run_id")} for r in running],
            "alerts": alert_view(job, info, facts.now),  # None: the job has no alerts
        })
    return rows


@click.command()
@env_argument
@click.argument("job", required=False)
@limit_option
@parallel_option
@accept_new_option
@json_option
@click.pass_obj
@guarded
def status(ctx: Context, env: str, job: str | None, limit: str | None, parallel: int) -> int:
    """One row per job and host: schedule, last run, last success, next run, failures, running."""
    session = open_session(ctx, env, limit, parallel)
    check_job(session, job)
    try:
        session.observe()
    finally:
        session.close()
    rows = [r for s in reachable(ctx, session, job) for r in _status_rows(s) if job is None or r["job"] == job]
    if ctx.output.json_mode:
        ctx.output.emit_json({"project": session.project.name, "env": session.env.name, "jobs": rows})
    else:
        table = Table(title=f"status {session.project.name}/{session.env.name}", title_justify="left", show_edge=False)
        alerting = any(r["alerts"] is not None for r in rows)  # the alerts column, when a job has alerts
        for column in ("host", "job", "schedule", "last run", "last success", "next run", "fails", "running",
                       *(("alerts",) if alerting else ())):
            table.add_column(column)
        now = datetime.now(UTC)
        for r in rows:
            last = r["last_run"]
            last_text = Text("never", style="dim")
            if last:
                when = ago(parse_time(last["start"]), now)
                last_text = Text(f"{when} ") + Text(str(last["outcome"]), style=OUTCOME_STYLE.get(str(last["outcome"]), ""))
                if last.get("duration") is not None:
                    last_text += Text(f" {last['duration']:.1f}s")
            following = datetime.fromisoformat(r["next_run"]) if r["next_run"] else None
            next_text = f"in {ago(now, following).removesuffix(' ago')}" if following and following > now else "-"
            running = ", ".join(f"pid {x['pid']} since {ago(parse_time(x['since']), now)}" for x in r["running"]) or "-"
            fails = Text(str(r["consecutive_failures"]), style="red" if r["consecutive_failures"] else "")
            alerts = (Text(ctx.output.safe(alert_summary(r["alerts"], now)),
                           style="red" if r["alerts"] and (r["alerts"]["incident"] or r["alerts"]["channel_errors"]) else ""),
                      ) if alerting else ()
            table.add_row(r["host"], r["job"], f"{r['schedule']} ({r['schedule_words']})", last_text,
                          r["last_success_ago"], next_text, fails, running, *alerts)
        ctx.output.out.print(table)
    return unanswered(session)


@click.command()
@env_argument
@click.argument("job")
@click.option("--host", "-H", "host", metavar="HOST", help="Only this host (or group).")
@click.option("-n", "--lines", "lines", type=click.IntRange(1, 100000), default=50, show_default=True)
@click.option("--run", "run", metavar="RUN",
              help="One run's own log instead: 'last', 'failed' (the last run that did not succeed) or a run id "
                   "(its first characters will do). Needs retention.run_logs on the job.")
@parallel_option
@accept_new_option
@json_option
@click.pass_obj
@guarded
def logs(ctx: Context, env: str, job: str, host: str | None, lines: int, run: str | None, parallel: int) -> int:
    """The end of a job's log on each host, each line prefixed by its host."""
    session = open_session(ctx, env, host, parallel)
    check_job(session, job)
    try:
        session.observe(Reads(log_tail=0 if run else lines,
                              run_log={"job": job, "run": run, "lines": lines} if run else None))
    finally:
        session.close()
    jobs = {state.name: state.facts.jobs[job] for state in reachable(ctx, session, job)
            if state.facts is not None and job in state.facts.jobs}
    if run:
        return _show_run_logs(ctx, job, run, {name: info.get("run_log") or {} for name, info in jobs.items()},
                              unanswered_statuses(session))
    result = {name: info.get("log_tail", []) for name, info in jobs.items()}
    if ctx.output.json_mode:
        ctx.output.emit_json({"job": job, "hosts": result})
    else:
        _print_prefixed(ctx, result)
    return unanswered(session)


def _print_prefixed(ctx: Context, result: dict[str, list[str]]) -> None:
    width = max((len(h) for h in result), default=0)
    for name, tail in result.items():
        for line in tail:
            ctx.output.print(f"{name:<{width}} | {line}")


def _show_run_logs(ctx: Context, job: str, selector: str, found: dict[str, RunLog],
                   missing: list[TargetStatus]) -> int:
    """``logs --run``: the run's ledger line as a header, then its own log's last lines. Exit
    code (engine/outcome.py): the hosts that did not answer first; else a failure when no
    host had that run's log."""
    if ctx.output.json_mode:
        ctx.output.emit_json({"job": job, "run": selector, "hosts": found})
    else:
        for name, info in found.items():
            record = info.get("run")
            if record:
                outcome = record.get("outcome") or "running"
                took = f", {record['duration']:.1f}s" if isinstance(record.get("duration"), (int, float)) else ""
                ctx.output.out.print(Text(ctx.output.safe(f"── {name}: run {record.get('run_id')} of {job}, started "
                                                          f"{record.get('start')}, {outcome}{took} ({record.get('trigger', '?')})"),
                                          style="bold"))
            if info.get("error"):
                ctx.output.err.print(Text(ctx.output.safe(f"{name}: {info['error']}"), style="red"))
            _print_prefixed(ctx, {name: info.get("lines", [])})
    shown_one: TargetStatus = OK if any(info.get("lines") is not None for info in found.values()) else FAILED
    return exit_code_of([*missing, shown_one])


@click.command(name="run")
@env_argument
@click.argument("job")
@click.option("--host", "-H", "host", metavar="HOST", help="Only this host (or group).")
@accept_new_option
@click.pass_obj
@guarded
def run_now(ctx: Context, env: str, job: str, host: str | None) -> int:
    """Run a job now, through its wrapper (lock, timeout, log, ledger with trigger: manual).

    The output is shown as it is written to the log; the exit code is the job's, unless a host
    could not run it: then the hosts' (engine/outcome.py), 4 when one was unreachable, else 1.
    """
    session = open_session(ctx, env, host, 1)
    check_job(session, job)
    not_run: list[TargetStatus] = []  # hosts reached where the job could not be run
    job_code = EXIT_OK  # the first failing run's exit code
    try:
        session.observe()
        for state in reachable(ctx, session):
            assert state.facts is not None and state.transport is not None and state.release is not None
            spec = next((j for j in state.release.jobs if j.id == job), None)
            current = state.facts.current
            if spec is None:
                continue
            if current is None or f"jobs/{job}.json" not in state.facts.releases.get(current, {}):
                ctx.output.err.print(Text(f"{state.name}: job {job} is not deployed there yet: run deployer apply {env} first",
                                          style="red"))
                not_run.append(FAILED)
                continue
            who = state.facts.identity
            user = spec.run_as or who.user
            # Started by root's cron, root starts it here too: its wrapper keeps the records
            # and runs the job as its user. A release whose entry is in the user's crontab
            # (from before) has a wrapper that must run as that user.
            blocks = state.facts.release_blocks.get(current) or {}
            if who.uid == 0 and job in crontab.block_jobs(blocks.get(who.user)):
                user = who.user
            known = state.facts.users.get(user)
            home = (known.get("home") if known else None) or who.home
            # The environment cron gives a job, not ours: what runs by hand is what cron runs.
            # The wrapper isolated (-I: nothing of the job user's Python site runs in it); no
            # terminal reaches it: the transport gives it none, its output comes through a pipe.
            argv = ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", f"LOGNAME={user}", f"USER={user}", "SHELL=/bin/sh",
                    *isolated(state.desired.python, f"{state.facts.deploy_home}/releases/{current}/run", job,
                              "--trigger", "manual", "--tee")]
            if user != who.user:
                argv = ["runuser", "-u", user, "--", *argv]
            if len(session.states) > 1:
                ctx.output.out.print(Text(f"── {state.name}: {shlex.join(argv)}", style="bold"))
            shown = LineStream(ctx.output.redact)
            result = state.transport.run(argv, timeout=spec.timeout + 60, on_stdout=shown.feed)
            shown.close()
            if result.stderr:
                ctx.output.err.print(Text(ctx.output.safe(result.stderr.decode("utf-8", "replace").rstrip(), newlines=True)))
            job_code = job_code or result.exit_code
    finally:
        session.close()
    return exit_code_of([*unanswered_statuses(session), *not_run]) or job_code


@click.command()
@env_argument
@click.option("--export", "export", type=click.Path(dir_okay=False), required=True, help="SQLite file to write (merged if it exists).")
@limit_option
@parallel_option
@accept_new_option
@click.pass_obj
@guarded
def history(ctx: Context, env: str, export: str, limit: str | None, parallel: int) -> int:
    """Every run recorded on every host, into a SQLite file for statistics."""
    session = open_session(ctx, env, limit, parallel)
    try:
        session.observe(Reads(ledger_all=True))
    finally:
        session.close()
    db = sqlite3.connect(export)
    with db:
        db.execute("""create table if not exists runs (
            host text not null, project text, env text, job text not null, run_id text not null,
            start text, "end" text, duration real, exit_code integer, outcome text, pid integer,
            user text, revision text, trigger text, primary key (host, run_id))""")
        count = 0
        for state in reachable(ctx, session):
            assert state.facts is not None
            for info in state.facts.jobs.values():
                for e in info.get("ledger", []):  # run records, their fields typed by the probe
                    db.execute("insert or ignore into runs values (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                        state.name, e.get("project"), e.get("env"), e.get("job"), e.get("run_id"), e.get("start"),
                        e.get("end"), e.get("duration"), e.get("exit_code"), e.get("outcome"), e.get("pid"),
                        e.get("user"), e.get("revision"), e.get("trigger")))
                    count += 1
    db.close()
    ctx.output.print(f"{count} runs from {len(reachable(ctx, session))} hosts written to {Path(export)}")
    return unanswered(session)

