"""``flask messages send-test ADDRESS``: queue a test email, to check SMTP_URL
and MAIL_FROM from the operator's side (and for the fault tests)."""

from __future__ import annotations

import uuid

import click
from flask.cli import AppGroup

from billvend.notifications.services import notify
from billvend.platform.transactions import run

messages_cli = AppGroup("messages", help="The outbox of customer messages.")


@messages_cli.command("send-test")
@click.argument("address")
def send_test(address: str) -> None:
    """Queue one test email to ADDRESS; the worker sends it (see /admin/messages)."""
    check = uuid.uuid4().hex[:12]
    try:
        message = run(notify, f"test:{check}", "email", address, "test_email", {"check": check})
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"queued message {message.id} to {address} (check {check})")
