"""The ``deployer`` command line. Thin: parse options, call the engine, print, exit.

This module assembles the command group from the command modules, which share what
cli/common.py holds. Exit codes (stable, see deployer.errors and engine/outcome.py): 0 ok,
1 a target failed, 2 invalid input, 3 changes pending (plan --detailed-exitcode), 4 a
target unreachable.
"""

from __future__ import annotations

import os

import click

from deployer import __version__
from deployer.cli import alerts, deploy, explain, lifecycle, ops
from deployer.cli.common import Context


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


for command in (deploy.validate, deploy.render, deploy.plan, deploy.apply, deploy.verify, ops.status, ops.logs,
                ops.run_now, ops.history, lifecycle.rollback, lifecycle.destroy, explain.explain, alerts.alerts):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="deployer")
