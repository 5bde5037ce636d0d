"""Issue 23, end to end over real sockets: a payment's messages leave the
outbox and arrive, each exactly once, at a real SMTP server (aiosmtpd) and
the sandbox's Termii API: a successful vend's token email and SMS (also when
the vend is run again, when the sweep re-drives a lost vend, when the send
task is lost), a refund's email and SMS, and a "send token again".

The SIGKILL case (a real huey_consumer dying between the commit and the
send) is tests/test_faults.py's."""

from __future__ import annotations

import pytest
import requests
import sqlalchemy as sa

from billvend.notifications import services
from billvend.notifications.models import SENT, Message
from billvend.notifications.tasks import message_sweep_once, wait_until_idle
from billvend.platform.extensions import db
from billvend.platform.transactions import run
from billvend.vending import tasks as vending_tasks
from billvend.vending.models import Payment
from billvend.vending.resend import resend_token
from tests.conftest import base_config, fresh_app
from tests.helpers import make_payment, make_user
from tests.servers import MailServer


@pytest.fixture
def app(database_url, smtp, termii):
    """An app whose outbox sends: email to ``smtp``, SMS to the sandbox."""
    requests.post(f"{termii}/sandbox/sms/reset", timeout=5)
    config = base_config(database_url) | {
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "NOTIFY_CONCURRENCY": 2, "SMTP_DEADLINE_SECONDS": 2.0,
        "SMS_BASE_URL": termii, "SMS_DEADLINE_SECONDS": 2.0, "SMS_READ_TIMEOUT_SECONDS": 1.0}
    with fresh_app(config) as app:
        yield app


def sms_received(termii: str) -> list[dict]:
    """Every SMS the sandbox got, newest first."""
    return requests.get(f"{termii}/sandbox/sms/messages", timeout=5).json()["messages"]


def settle() -> None:
    """Let the sender threads finish, then run the message sweep until it
    hands over nothing (what a dead or lost sender left is sent now)."""
    assert wait_until_idle()
    while message_sweep_once():
        assert wait_until_idle()


def rows_of(event_key: str) -> list[tuple[str, str, str]]:
    """(channel, recipient, status) of the outbox rows of ``event_key``."""
    db.session.rollback()
    return [tuple(r) for r in db.session.execute(
        sa.select(Message.channel, Message.recipient, Message.status)
        .where(Message.event_key == event_key).order_by(Message.channel))]


def token_mails(smtp: MailServer, payment: Payment) -> list:
    return [m for m in smtp.inbox.messages if payment.token_groups in m.get_body(("plain",)).get_content()]


def assert_token_delivered_once(smtp: MailServer, termii: str, payment: Payment) -> None:
    """One token email row and one token SMS row, both sent; one email and
    one SMS with the token arrived."""
    assert rows_of(f"payment:{payment.id}:token") == [
        ("email", "ada@example.com", SENT), ("sms", "+2348031234567", SENT)]
    [mail] = token_mails(smtp, payment)
    assert mail["To"] == "ada@example.com" and payment.reference in mail.get_body(("html",)).get_content()
    spaced = " ".join(payment.token[i:i + 4] for i in range(0, 20, 4))
    [sms] = [m for m in sms_received(termii) if spaced in m["sms"]]
    assert (sms["to"], sms["channel"]) == ("2348031234567", "dnd")


def delivered_payment(pay) -> Payment:
    response = pay()
    assert response.status_code == 303
    db.session.rollback()
    payment = db.session.scalar(sa.select(Payment).where(
        Payment.reference == response.headers["Location"].rsplit("/", 1)[-1]))
    assert payment.status == "successful" and payment.token
    return payment


def test_a_successful_payment_delivers_one_token_email_and_one_sms(smtp, termii, client, customer, pay):
    payment = delivered_payment(pay)
    settle()
    assert_token_delivered_once(smtp, termii, payment)


def test_the_vend_run_again_and_requeried_sends_nothing_more(smtp, termii, client, customer, pay):
    payment = delivered_payment(pay)
    settle()
    vending_tasks.vend(payment.id)  # a duplicate vend task (the sweep's, a retry)
    vending_tasks.requery(payment.id, include_vending=True, force=True)
    settle()
    assert_token_delivered_once(smtp, termii, payment)


def test_a_lost_vend_re_driven_by_the_sweep_delivers_the_token_once(app, smtp, termii, customer):
    payment = make_payment(customer)  # committed; its vend task never ran
    assert payment.status == "pending"
    app.config["PENDING_GRACE_SECONDS"] = 0
    assert vending_tasks.sweep_once()["pending"] == 1
    assert vending_tasks.sweep_once()["pending"] == 0
    settle()
    db.session.rollback()
    assert_token_delivered_once(smtp, termii, db.session.get(Payment, payment.id))


def test_messages_whose_send_task_was_lost_are_sent_once_by_the_sweep(smtp, termii, client, customer, pay,
                                                                     monkeypatch):
    monkeypatch.setattr(services, "after_commit_hook", None)  # the queue lost the send task
    payment = delivered_payment(pay)
    assert wait_until_idle() and token_mails(smtp, payment) == []
    monkeypatch.undo()
    settle()
    assert_token_delivered_once(smtp, termii, payment)


def test_a_refund_delivers_its_email_and_sms(smtp, termii, app):
    from billvend.vending import lifecycle
    from billvend.vending.models import FAILED, PENDING, VENDING

    user = make_user("ada@example.com", balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=250_000)
    run(lifecycle.transition, payment.id, PENDING, VENDING)
    run(lifecycle.transition, payment.id, VENDING, FAILED, code="SERVICE_UNAVAILABLE")
    assert run(lifecycle.stage_reversal, payment.id)
    settle()
    assert rows_of(f"payment:{payment.id}:refund") == [
        ("email", "ada@example.com", SENT), ("sms", "+2348031234567", SENT)]
    [mail] = [m for m in smtp.inbox.messages if payment.reference in m.get_body(("plain",)).get_content()]
    assert "₦2,500.00" in mail.get_body(("plain",)).get_content()
    assert "vending service was unavailable" in mail.get_body(("plain",)).get_content()
    [sms] = [m for m in sms_received(termii) if payment.reference in m["sms"]]
    assert "NGN 2,500.00" in sms["sms"]


def test_send_token_again_arrives_once_by_each_channel(smtp, termii, client, customer, pay):
    payment = delivered_payment(pay)
    settle()
    assert run(resend_token, payment.id, customer.id, "email").sent
    assert run(resend_token, payment.id, customer.id, "payment_phone").sent
    settle()
    assert rows_of(f"payment:{payment.id}:resend:1") == [("email", "ada@example.com", SENT)]
    assert rows_of(f"payment:{payment.id}:resend:2") == [("sms", "+2348031234567", SENT)]
    assert len(token_mails(smtp, payment)) == 2  # the first, and the one sent again
    spaced = " ".join(payment.token[i:i + 4] for i in range(0, 20, 4))
    assert len([m for m in sms_received(termii) if spaced in m["sms"]]) == 2
