"""What people and machines read, on a terminal: plans, summaries, check reports, in colour.

The data and the words are the report layer's (deployer/report), shared with the Ansible
results; which values are secret and how they are masked, core/redaction.py's. This module
only styles and prints them. No logic lives here."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from deployer.core.check import FAIL, PASS, WARN
from deployer.core.desired import show_home
from deployer.core.plan import Change, CrontabChange
from deployer.core.redaction import REDACTED, redact, redact_data
from deployer.engine.outcome import CHANGED, FAILED, OK, UNREACHABLE
from deployer.engine.session import Session, TargetState
from deployer.errors import InvalidInput
from deployer.report import words

STATUS_STYLE = {OK: "green", CHANGED: "yellow", FAILED: "red", UNREACHABLE: "magenta"}
CHECK_STYLE = {PASS: "green", WARN: "yellow", FAIL: "red"}
PROGRESS_MARK = {OK: "✓", CHANGED: "~", FAILED: "✗", UNREACHABLE: "✗"}


def shown(text: str, newlines: bool = False) -> str:
    """Text that came from a target (a job's log, a ledger field, a crontab line) as a
    terminal or an XML file may carry it: escape sequences (ESC, CSI, OSC) and every other
    control or invisible character shown escaped (``\x1b``), so the text can neither drive
    the terminal nor pass for a line of ours. Tabs stay; newlines too if ``newlines``."""
    if text.isprintable():
        return text
    keep = " \t\n" if newlines else " \t"
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


class Output:
    def __init__(self, json_mode: bool = False, color: bool | None = None) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, no_color=color is False, force_terminal=color or None, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, no_color=color is False, force_terminal=color or None, soft_wrap=True)
        self.secrets: set[str] = set()  # the command's secret values (core/redaction.secret_values)

    # ------------------------------------------------------------------ safety
    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def safe(self, text: str, newlines: bool = False) -> str:
        """Redacted, then made safe for a terminal (see ``shown``)."""
        return shown(self.redact(text), newlines)

    def print(self, text: str | Text = "", style: str | None = None) -> None:
        if isinstance(text, str):
            text = Text(self.safe(text, newlines=True), style=style or "")
        self.out.print(text)

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(self.redact(json.dumps(redact_data(data, self.redact), indent=2, sort_keys=False)) + "\n")

    def invalid(self, exc: InvalidInput) -> None:
        if self.json_mode:
            self.emit_json({"ok": False, "exit_code": 2, "errors": [
                {"file": p.file, "line": p.line, "key_path": p.key_path, "message": p.message} for p in exc.problems]})
            return
        for problem in exc.problems:
            self.err.print(Text(words.ERROR_PREFIX, style="bold red") + Text(self.safe(str(problem))))
        self.err.print(Text(words.invalid_footer(len(exc.problems)), style="red"))

    def progress_line(self, phase: str, state: TargetState) -> None:
        """One line on stderr as each host finishes a phase (fleets only, terminals only)."""
        mark = PROGRESS_MARK[state.status]
        detail = f": {state.error}" if state.error and state.status in (FAILED, UNREACHABLE) else ""
        self.err.print(Text(f"{mark} {state.name} {phase} in {state.seconds:.2f}s", style=STATUS_STYLE[state.status])
                       + Text(self.safe(detail)))

    # ------------------------------------------------------------------ plans
    def diff(self, text: str) -> None:
        lines = self.redact(text).split("\n")  # a crontab's lines as cron splits them: on newlines only
        if lines and lines[-1] == "":
            lines.pop()
        for line in map(shown, lines):
            style = ""
            if line.startswith("+++") or line.startswith("---"):
                style = "bold"
            elif line.startswith("+"):
                style = "green"
            elif line.startswith("-"):
                style = "red"
            elif line.startswith("@@"):
                style = "cyan"
            self.out.print(Text(line, style=style))

    def changes(self, changes: list[Change], crontab_changes: list[CrontabChange]) -> None:
        """A plan's lines (apply, rollback, destroy): one per change, then each crontab's diff."""
        for change in changes:
            self.print(f"   {words.change_line(change)}")
        for cc in crontab_changes:
            self.diff(cc.diff())

    def host_header(self, state: TargetState) -> None:
        self.out.print(Text(words.host_heading(state), style="bold")
                       + Text(words.STATUS_LABEL[state.status], style=STATUS_STYLE[state.status]))

    def plan(self, session: Session) -> None:
        for state in session.states:
            self.host_header(state)
            if state.error:
                self.print(f"   {state.error}", style="red")
            p = state.plan
            if p is None:
                continue
            self.changes(p.changes, p.crontab_changes)
            for _where, diff in p.drift:
                self.diff(diff)
            for warning in p.warnings:
                self.print(f"   warning: {warning}", style="yellow")
            if p.empty and not p.errors:
                self.print(f"   release {p.release.revision} in place; crontab up to date", style="dim")

    # ------------------------------------------------------------------ summaries
    def summary(self, session: Session, verb: str) -> None:
        table = Table(title=f"{verb} {session.project.name}/{session.env.name}", title_justify="left", show_edge=False)
        for column in ("host", "result", "detail"):
            table.add_column(column)
        for row in (words.summary_row(s, verb) for s in session.states):
            table.add_row(row.host, Text(row.result, style=STATUS_STYLE.get(row.status, "")), Text(self.safe(row.detail)))
        self.out.print(table)

    def checks(self, session: Session) -> None:
        for state in session.states:
            self.host_header(state)
            if not state.checks and state.error:
                self.print(f"   {state.error}", style="red")
            for line in map(words.CheckLine, state.checks):
                self.out.print(Text(f"   {line.head}", style=CHECK_STYLE[line.status]) + Text(line.rest(self.safe(line.check.detail))))


def render_text(session: Session) -> str:
    """``deployer render``: what would be installed, per host, before any contact."""
    from deployer.core.release import crontab_block, local_identity, materialize

    lines: list[str] = []
    for state in session.states:
        d = state.desired
        if state.target.connection == "local" and not state.target.become:
            # This machine: who we are is known without a probe, so show the exact lines.
            release = materialize(d, local_identity())
            lines.append(f"# host {d.target} ({state.target.connection}), revision {release.revision}")
            lines.append(f"# deploy home: {release.deploy_home}")
            for user, block in release.crontab_blocks.items():
                lines.append(f"# crontab of {user}:")
                lines.append(block.rstrip("\n"))
        else:
            lines.append(f"# host {d.target} ({state.target.connection}); ~ = home of the connecting user on the target")
            lines.append(f"# deploy home: {show_home(d.deploy_home)}")
            users: dict[str, list[Any]] = {}
            for job in d.jobs:
                users.setdefault(job.run_as or "(connecting user)", []).append(job)
            for user, jobs in users.items():
                lines.append(f"# crontab of {user}:")
                block = show_home(crontab_block(d.project, d.env, "<revision>", jobs, d.python, f"{d.deploy_home}/releases/<revision>",
                                                  d.cron_flavour))
                lines.append(block.rstrip("\n"))
        for job in d.jobs:
            env = ", ".join(f"{n}={REDACTED if n in job.secret_names else show_home(v)}" for n, v in job.env) or "-"
            target = f"script {job.script}" if job.script else f"command {job.command}"
            lines.append(f"# job {job.id}: {target} args={list(show_home(a) for a in job.args)} timeout={job.timeout}s "
                         f"concurrency={job.concurrency} log={show_home(job.log_file)} env: {env}")
        for job_id, why in d.skipped:
            lines.append(f"# job {job_id}: not installed ({why})")
        lines.append("")
    return "\n".join(lines)
