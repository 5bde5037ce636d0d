"""The payment state machine: every transition, and illegal ones refused."""

import itertools

import pytest
import sqlalchemy as sa

from billvend import payments
from billvend.extensions import db
from billvend.models import (FAILED, PAYMENT_STATUSES, PENDING, REVERSED, SUCCESSFUL, UNKNOWN,
                             VENDING, Payment, PaymentEvent)
from billvend.providers.base import VendResult
from tests.helpers import assert_books_balance, make_payment, make_user

LEGAL = {(PENDING, VENDING), (VENDING, SUCCESSFUL), (VENDING, FAILED), (VENDING, UNKNOWN),
         (UNKNOWN, SUCCESSFUL), (UNKNOWN, FAILED), (FAILED, REVERSED)}


@pytest.mark.parametrize("from_status,to_status", sorted(itertools.product(PAYMENT_STATUSES, repeat=2)))
def test_transition_table(app, from_status, to_status):
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(status=from_status))
    db.session.commit()
    if (from_status, to_status) in LEGAL:
        assert payments.transition(payment.id, from_status, to_status)
        db.session.commit()
        assert db.session.get(Payment, payment.id).status == to_status
        event = db.session.scalars(sa.select(PaymentEvent).order_by(PaymentEvent.id.desc())).first()
        assert (event.from_status, event.to_status) == (from_status, to_status)
    else:
        with pytest.raises(payments.IllegalTransition):
            payments.transition(payment.id, from_status, to_status)
        db.session.rollback()
        assert db.session.get(Payment, payment.id).status == from_status


def test_transition_from_wrong_status_is_a_no_op(app):
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    assert payments.claim(payment.id)
    assert not payments.claim(payment.id)  # a second worker does not get it
    assert not payments.transition(payment.id, UNKNOWN, SUCCESSFUL)
    db.session.rollback()
    assert db.session.get(Payment, payment.id).status == VENDING


def test_reference_is_a_vtpass_request_id(app):
    from datetime import datetime, timezone

    ref = payments.new_reference(datetime(2026, 1, 31, 23, 30, tzinfo=timezone.utc))
    assert ref.startswith("202602010030")  # Lagos is UTC+1
    assert len(ref) == 24 and ref.isalnum()


def test_apply_pending_then_delivered(app):
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    payments.claim(payment.id)
    follow = payments.apply_result(payment.id, VENDING, VendResult("pending", "TIMEOUT", "slow"))
    assert follow.action == "requery" and follow.delay_seconds > 0
    paid = db.session.get(Payment, payment.id)
    assert paid.status == UNKNOWN and paid.next_requery_at is not None and not paid.needs_attention
    follow = payments.apply_result(payment.id, UNKNOWN, VendResult("pending", "PROCESSING", "still"))
    assert follow.action == "requery"
    follow = payments.apply_result(payment.id, UNKNOWN, VendResult("delivered", token="1" * 20, units_kwh="4.5"))
    assert follow.action is None
    db.session.expire_all()
    paid = db.session.get(Payment, payment.id)
    assert (paid.status, paid.token, paid.units_kwh) == (SUCCESSFUL, "1" * 20, "4.5")
    assert paid.token_groups == "1111-1111-1111-1111-1111"
    assert [(e.from_status, e.to_status) for e in paid.events] == [
        (None, PENDING), (PENDING, VENDING), (VENDING, UNKNOWN), (UNKNOWN, UNKNOWN), (UNKNOWN, SUCCESSFUL)]
    assert_books_balance()


def test_old_unknown_payment_is_flagged_not_refunded(app):
    app.config["UNKNOWN_ALERT_AGE_SECONDS"] = 0
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    payments.claim(payment.id)
    follow = payments.apply_result(payment.id, VENDING, VendResult("pending", "TIMEOUT"))
    assert follow.action == "requery"
    paid = db.session.get(Payment, payment.id)
    assert paid.status == UNKNOWN and paid.needs_attention
    assert_books_balance()


def test_idempotent_create(app):
    user = make_user(balance_kobo=500_000)
    first = make_payment(user, key="k" * 20)
    again = make_payment(user, key="k" * 20)
    assert again.id == first.id
    with pytest.raises(payments.IdempotencyConflict):
        make_payment(user, key="k" * 20, amount_kobo=100_001)
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 1
    db.session.refresh(user.wallet)
    assert user.wallet.balance_kobo == 400_000
    assert_books_balance()
