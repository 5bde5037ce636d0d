"""``flask funding reconcile --date YYYY-MM-DD`` and ``flask funding sweep``."""

from __future__ import annotations

from datetime import date

import click
from flask.cli import AppGroup

funding_cli = AppGroup("funding", help="Money in: reconciliation with the gateway.")


@funding_cli.command("reconcile")
@click.option("--date", "day", required=True, metavar="YYYY-MM-DD",
              help="The day to reconcile, in Africa/Lagos time.")
def reconcile_command(day: str) -> None:
    """Compare the gateway's transactions for a day with our fundings: credit
    verified successes we missed, flag the rest. Exit 1 when anything was
    flagged or the gateway could not be asked."""
    from billvend.funding import reconciliation

    try:
        when = date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter("use YYYY-MM-DD, e.g. 2026-03-01", param_hint="--date") from None
    run = reconciliation.reconcile(when)
    click.echo(f"reconciled {run.day} ({run.gateway}): {run.gateway_transactions} gateway transactions, "
               f"{run.matched} matched, {run.credited} credited, {run.flagged} flagged")
    for item in run.items:
        click.echo(f"  {item.kind}: {item.gateway_reference or '-'} {item.detail}")
    if run.error:
        click.echo(f"ERROR {run.error}", err=True)
    if run.error or run.flagged:
        raise SystemExit(1)


@funding_cli.command("sweep")
def sweep_command() -> None:
    """Verify every open funding that is due now (what the worker does every minute)."""
    from billvend.funding.tasks import funding_sweep_once

    click.echo(f"verified {funding_sweep_once()} fundings")
