"""``verify --notify`` for people: what was sent, a line per delivery. The state file and the
sending are engine/notify.py's, shared with the Ansible ``deployer_verify`` task."""

from __future__ import annotations

from rich.text import Text

from deployer.cli.output import Output
from deployer.engine.notify import LOCK_WAIT, NotifyReport, StateFile, default_state_path, open_state, prepare, run, state_path
from deployer.report.words import notify_delivery_line

__all__ = ["LOCK_WAIT", "StateFile", "default_state_path", "open_state", "prepare", "run", "show", "state_path"]


def show(output: Output, report: NotifyReport) -> None:
    """What was sent, for people: a line per delivery; a dead channel in red (verify's exit
    code does not change: the next run tries it again)."""
    for warning in report["warnings"]:
        output.err.print(Text(output.safe(f"notify: warning: {warning}"), style="yellow"))
    if not report["channels"]:
        output.print("notify: the environment's alert route has no channel: nothing to send", style="yellow")
    for item in report["sent"]:
        output.print(notify_delivery_line(item), style="green" if item["ok"] else "red")
    if not report["sent"]:
        opened = len(report["open"])
        output.print(f"notify: nothing new to tell ({opened} incident{'s' if opened != 1 else ''} open, already told)"
                     if opened else "notify: nothing new to tell")
