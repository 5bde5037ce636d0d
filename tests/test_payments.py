"""The payment state machine: every transition, and illegal ones refused."""

import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.vending.models import (
    FAILED, PAYMENT_STATUSES, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment,
    PaymentEvent,
)
from billvend.platform.models import utcnow
from billvend.vending.providers.base import VendResult
from tests.helpers import assert_books_balance, make_payment, make_user

LEGAL = {(PENDING, VENDING), (VENDING, SUCCESSFUL), (VENDING, FAILED), (VENDING, UNKNOWN),
         (UNKNOWN, SUCCESSFUL), (UNKNOWN, FAILED), (FAILED, REVERSED),
         (FAILED, SUCCESSFUL)}  # an admin resolving a failed payment whose delivery came late


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


# --- Requery discipline (one requery at a time, never inside the vend lease) -----


class CountingProvider:
    """Answers every requery with ``result`` and counts the calls."""

    name = "counting"

    def __init__(self, result):
        self.result = result
        self.calls = 0

    def requery(self, request_id, meter_type=None):
        self.calls += 1
        return self.result


def unknown_payment(app):
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    payments.claim(payment.id)
    payments.apply_result(payment.id, VENDING, VendResult("pending", "TIMEOUT"))
    return db.session.get(Payment, payment.id)


def test_requery_of_a_vending_payment_waits_for_its_lease(app):
    user = make_user(balance_kobo=100_000)
    payment = make_payment(user)
    payments.claim(payment.id)
    provider = CountingProvider(VendResult("failed", "NOT_FOUND"))
    # A worker's pay call may still be in flight: "not found" now would refund too early.
    assert payments.requery_payment(payment.id, provider, include_vending=True).action is None
    assert provider.calls == 0 and db.session.get(Payment, payment.id).status == VENDING
    lease = timedelta(seconds=app.config["VENDING_LEASE_SECONDS"])
    stale = utcnow() - lease - timedelta(seconds=1)
    # As the claim would have recorded it a lease and a second ago.
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id)
                       .values(claimed_at=stale, pay_in_flight_until=stale + lease))
    db.session.commit()
    assert payments.requery_payment(payment.id, provider, include_vending=True).action == "reverse"
    assert provider.calls == 1


def test_a_requery_that_is_not_due_is_skipped_unless_forced(app):
    payment = unknown_payment(app)
    provider = CountingProvider(VendResult("pending", "PROCESSING"))
    assert payment.next_requery_at > utcnow()  # backoff: not due yet
    assert payments.requery_payment(payment.id, provider).action is None and provider.calls == 0
    assert payments.requery_payment(payment.id, provider, force=True).action == "requery"
    assert provider.calls == 1


def test_a_requery_in_flight_is_not_started_twice(app):
    """The sweep (or a racing task) finds the payment mid-requery: nothing."""
    payment = unknown_payment(app)
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id)
                       .values(next_requery_at=utcnow() - timedelta(seconds=5)))
    db.session.commit()
    inner_results = []

    class Reentrant(CountingProvider):
        def requery(self, request_id, meter_type=None):
            # A second requery while the first one is talking to the provider.
            inner_results.append(payments.requery_payment(payment.id, self))
            return super().requery(request_id, meter_type)

    provider = Reentrant(VendResult("delivered", token="2" * 20))
    assert payments.requery_payment(payment.id, provider).action is None
    assert inner_results == [payments.NOTHING] and provider.calls == 1
    assert db.session.get(Payment, payment.id).status == SUCCESSFUL


def test_a_delivery_after_a_refund_is_flagged_never_dropped(app):
    payment = unknown_payment(app)
    assert payments.transition(payment.id, UNKNOWN, FAILED, code="NOT_FOUND")
    db.session.commit()
    assert payments.reverse_payment(payment.id)
    follow = payments.apply_result(payment.id, UNKNOWN, VendResult("delivered", token="3" * 20))
    assert follow.action is None
    db.session.expire_all()
    late = db.session.get(Payment, payment.id)
    assert late.status == REVERSED and late.needs_attention and late.token is None
    # The proof is kept for admins (issue 20), never in the timeline's text.
    assert (late.delivered_after_refund, late.late_token) == (True, "3" * 20)
    assert "3" * 20 not in late.events[-1].message and "needs an admin" in late.events[-1].message
    assert_books_balance()
