"""``flask`` commands: ``flask ledger check``, ``flask create-admin EMAIL``."""

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


@click.command("create-admin")
@click.argument("email")
def create_admin(email: str) -> None:
    """Make EMAIL an admin: promote an existing account, or create one
    (asking for its password twice, 8 to 128 characters, never echoed)."""
    import sqlalchemy as sa
    from email_validator import EmailNotValidError, validate_email

    from billvend import ledger
    from billvend.extensions import db
    from billvend.models import User

    email = email.strip().lower()
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    user = db.session.scalar(sa.select(User).where(User.email == email))
    if user is not None:
        if user.is_admin:
            click.echo(f"{email} is already an admin")
            return
        user.is_admin = True
        db.session.commit()
        click.echo(f"promoted {email} to admin")
        return

    def check_password(value: str) -> str:
        if not 8 <= len(value) <= 128:
            raise click.BadParameter("use 8 to 128 characters")
        return value

    password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                            value_proc=check_password)
    user = User(email=email, is_admin=True)
    user.set_password(password)
    db.session.add(user)
    ledger.open_wallet(user)  # every account has a wallet; pages rely on it
    db.session.commit()
    click.echo(f"created admin {email}")


def register_cli(app: Flask) -> None:
    """Attach billvend's commands to ``app.cli``."""
    app.cli.add_command(ledger_cli)
    app.cli.add_command(create_admin)
    from billvend.funding.cli import funding_cli

    app.cli.add_command(funding_cli)
