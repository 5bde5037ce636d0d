"""``flask`` commands: ``flask ledger check``, ``flask create-admin EMAIL``."""

from __future__ import annotations

from typing import Optional

import click
from flask import Flask
from flask.cli import AppGroup

ledger_cli = AppGroup("ledger", help="Inspect the double-entry ledger.")


@ledger_cli.command("check")
def ledger_check() -> None:
    """Check the ledger invariants, one line per invariant (including that
    each reversal moves exactly its payment's amount back to the payment's
    own wallet, and that biller_clearing reconciles with the payments); exit
    1 and list violations if any. Read-only: no unit of work, rolled back."""
    from billvend.platform.extensions import db
    from billvend.ledger.invariants import INVARIANTS, check_invariants

    try:
        violations = check_invariants()
    finally:
        db.session.rollback()  # read-only; end the read transaction
    broken = {v.invariant for v in violations}
    for key, description in INVARIANTS.items():
        click.echo(f"{'FAIL' if key in broken else 'ok  '} {key}: {description}")
    if not violations:
        click.echo("ledger ok: all invariants hold")
        return
    for v in violations:
        click.echo(f"VIOLATION {v.invariant}: {v.subject} {v.subject_id}: {v.detail}", err=True)
    raise SystemExit(1)


ENROLMENT_STEPS = """\
Next, {email} sets up the second factor (the admin area stays closed until then):
  1. Log in at /login as {email}.
  2. Open /admin: billvend asks for the password again, then shows a QR code
     (and the same secret as text) at /account/two-factor.
  3. Scan it with an authenticator app (Google Authenticator, Aegis, 1Password...)
     and type the 6-digit code it shows.
  4. Keep the 10 recovery codes shown once, offline: each one replaces a code once
     if the phone is lost.
Every new session asks for a current code before /admin opens."""


@click.command("create-admin")
@click.argument("email")
def create_admin(email: str) -> None:
    """Make EMAIL an admin: promote an existing account, or create one
    (asking for its password twice, never echoed; at least 10 characters,
    not a common password, not containing the email), then print the
    second-factor enrolment steps."""
    import sqlalchemy as sa
    from email_validator import EmailNotValidError, validate_email

    from billvend.ledger import services as ledger
    from billvend.platform.extensions import db
    from billvend.accounts.models import User
    from billvend.web.security import normalise_email, password_problem

    try:
        email = normalise_email(email)
        validate_email(email, check_deliverability=False)
    except (EmailNotValidError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="EMAIL") from None
    from billvend.platform.transactions import unit_of_work

    @unit_of_work
    def promote() -> Optional[bool]:
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if user is None:
            return None
        if user.is_admin:
            return False
        user.is_admin = True
        return True

    promoted = promote()
    if promoted is not None:
        click.echo(f"promoted {email} to admin" if promoted else f"{email} is already an admin")
        user = db.session.scalar(sa.select(User).where(User.email == email))
        if not user.has_second_factor:
            click.echo(ENROLMENT_STEPS.format(email=email))
        return

    def check_password(value: str) -> str:
        problem = password_problem(value, email)
        if problem:
            raise click.BadParameter(problem)
        return value

    password = click.prompt("Password", hide_input=True, confirmation_prompt=True,
                            value_proc=check_password)

    @unit_of_work
    def create() -> None:
        user = User(email=email, is_admin=True)
        user.set_password(password)
        db.session.add(user)
        ledger.open_wallet(user)  # every account has a wallet; pages rely on it

    create()
    click.echo(f"created admin {email}")
    click.echo(ENROLMENT_STEPS.format(email=email))


def register_cli(app: Flask) -> None:
    """Attach billvend's commands to ``app.cli``."""
    app.cli.add_command(ledger_cli)
    app.cli.add_command(create_admin)
    from billvend.funding.cli import funding_cli

    app.cli.add_command(funding_cli)
