"""``flask`` commands: ``flask ledger check``."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

ledger_cli = AppGroup("ledger", help="Inspect the double-entry ledger.")


@ledger_cli.command("check")
def ledger_check() -> None:
    """Check the ledger invariants; exit 1 and list violations if any."""
    from billvend.ledger import check_invariants

    violations = check_invariants()
    if not violations:
        click.echo("ledger ok: all invariants hold")
        return
    for v in violations:
        click.echo(f"VIOLATION {v.invariant}: {v.subject} {v.subject_id}: {v.detail}", err=True)
    raise SystemExit(1)


def register_cli(app: Flask) -> None:
    """Attach billvend's commands to ``app.cli``."""
    app.cli.add_command(ledger_cli)
