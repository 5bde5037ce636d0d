"""Review of today's changes (admin "credit the verified amount" for a flagged
bank-transfer arrival, the funding expiry, "resolve as delivered" on a
``vending`` payment): attacks on them, each a test that failed first."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.funding import admin_credit, invariants, verification
from billvend.vending import lifecycle as payments
from billvend.web.admin import services
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.vending.models import VENDING, Payment
from billvend.accounts.models import AdminAction, User
from billvend.funding.models import DedicatedAccount, Funding
from billvend.ledger.models import Transfer
from tests.conftest import selected_backend
from tests.helpers import assert_books_balance, make_payment, make_user
from tests.test_admin_funding import _Verifies, admin, csrf, flagged_arrival  # noqa: F401 - fixture
from tests.test_lifecycle_review import in_other_worker, interleave, payment_read  # noqa: F401


def _open_account(user_id: int, customer_code: str, account_number: str) -> None:
    db.session.add(DedicatedAccount(user_id=user_id, gateway="simulated", customer_code=customer_code,
                                    account_number=account_number, account_name="Test account",
                                    bank_name="Test Bank"))
    db.session.commit()


def _credit_verified_results(funding_id: int) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(AdminAction.result).where(
        AdminAction.funding_id == funding_id, AdminAction.action == "credit_verified")
        .order_by(AdminAction.id)))


def _credits(funding_id: int) -> list[int]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(Transfer.amount_kobo).where(Transfer.funding_id == funding_id)))


# --- credit_verified_arrival: whose money is it? ---------------------------------------


def test_credit_verified_refuses_a_verified_transfer_into_another_customers_account(
        client, admin, monkeypatch):
    """The arrival was recorded for Ada (the webhook named her customer
    code) at an amount the gateway's verify contradicts. The admin action
    trusts verify for the amount; verify also says whose dedicated account
    the money went into: Bob's. Crediting Ada's wallet with it is crediting
    the wrong wallet (the webhook was already wrong once about this
    arrival). It must be refused, nothing moves, the flag stays."""
    row = flagged_arrival()  # into Ada's account, CUS_ada
    bob = make_user("bob@example.com")
    _open_account(bob.id, "CUS_bob", "0000000002")
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_code="CUS_bob",
                                       customer_email="bob@example.com")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(path)
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "customer" in result, result
    assert db.session.get(Funding, row.id).needs_attention
    assert db.session.get(User, row.user_id).wallet.balance_kobo == 0
    assert invariants.check_invariants() == []
    assert_books_balance()


def test_credit_verified_refuses_a_verified_transfer_naming_another_customers_email(client, admin, monkeypatch):
    """Without a customer code, the gateway's customer email is the other
    way to say whose money it is (as ``_account_for`` reads a webhook)."""
    row = flagged_arrival()
    make_user("bob@example.com")
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_email="Bob@Example.com")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "customer" in result, result


def test_credit_verified_refuses_a_verified_card_payment(client, admin, monkeypatch):
    """The action exists because a bank transfer has no amount we asked
    for. If verify says this reference was paid by card, it is not that
    bank transfer (a card amount that differs is the tampering Paystack
    warns about): refused, whatever the funding row says."""
    row = flagged_arrival()
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="card")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "card" in result, result


def test_credit_verified_credits_when_the_gateway_names_the_fundings_own_customer(client, admin, monkeypatch):
    """The control: verify naming the funding's own customer (code and
    email) is credited once, at the verified amount."""
    row = flagged_arrival()  # into Ada's account, CUS_ada
    email = db.session.get(User, row.user_id).email
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_code="CUS_ada",
                                       customer_email=email.upper())
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == [300_000]
    [result] = _credit_verified_results(row.id)
    assert result.startswith("done:"), result
    assert db.session.get(User, row.user_id).wallet.balance_kobo == 300_000
    assert invariants.check_invariants() == []
    assert_books_balance()


# --- credit_verified_arrival racing itself and every other path that credits ----------


@pytest.mark.postgresql
def test_credit_verified_racing_itself_the_webhook_and_reconciliation_credits_once(app):
    """Four admins clicking at once, while the webhook task and "verify now"
    ask about the same funding: one credit, at the verified amount; the
    others are refused (or find it credited); both invariant checks clean."""
    row = flagged_arrival()
    admin_user = make_user("root@example.com")
    funding_id, admin_id = row.id, admin_user.id
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN")
    barrier = threading.Barrier(8)
    results, errors = [], []

    def click():
        with app.app_context():
            try:
                barrier.wait(10)
                results.append(admin_credit.credit_verified_arrival(funding_id, admin_id, "race", _Verifies(paid)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    def verify():
        with app.app_context():
            try:
                barrier.wait(10)
                results.append(verification.verify_funding(funding_id, _Verifies(paid)).outcome)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=click) for _ in range(4)] + [threading.Thread(target=verify)
                                                                    for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _credits(funding_id) == [300_000]
    assert sum(1 for r in results if r.startswith("done:")) == 1, results
    final = db.session.get(Funding, funding_id)
    assert (final.status, final.amount_kobo) == ("succeeded", 300_000)
    assert invariants.check_invariants() == []
    assert_books_balance()


@pytest.mark.skipif(selected_backend() == "postgresql",
                    reason="on PostgreSQL the funding's row lock makes this interleaving impossible")
def test_credit_verified_losing_the_race_after_its_check_is_a_refusal_not_a_500(client, admin, app,
                                                                               monkeypatch, interleave):
    """SQLite ignores ``FOR UPDATE``: two clicks served by two threads (or
    processes) can both find no credit, then both post one. UNIQUE
    (funding_id) stops the second credit, but the IntegrityError escaped:
    the second admin got the 500 page and no ``AdminAction`` recorded the
    attempt. It must be the ordinary "refused: already credited"."""
    row = flagged_arrival()
    funding_id, admin_id = row.id, admin.id
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))

    def credit_check(statement: str) -> bool:
        text = " ".join(statement.split())
        return text.startswith("SELECT transfers.id FROM transfers WHERE transfers.funding_id =")

    path = f"/admin/fundings/{row.reference}"
    token = csrf(client, path)
    hook = interleave(credit_check, 1, lambda: in_other_worker(app, lambda: admin_credit.credit_verified_arrival(
        funding_id, admin_id, "the other click", _Verifies(paid))))
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "bank confirmed", "credit-csrf_token": token})
    assert hook.fired
    assert response.status_code == 303, response.status_code
    assert _credits(funding_id) == [300_000]
    results = _credit_verified_results(funding_id)
    assert len(results) == 2 and results[0].startswith("done:"), results
    assert results[1].startswith("refused: already credited"), results
    assert invariants.check_invariants() == []
    assert_books_balance()


# --- resolve as delivered on a vending payment past its lease ----------------------------


def test_resolve_delivered_is_refused_when_a_requery_takes_the_vending_payment_meanwhile(app, interleave):
    """"Resolve as delivered" on a ``vending`` payment waits for its lease
    (today's change), but checks the lease in Python and then moves the
    payment with ``WHERE status = 'vending'`` alone. If the sweep takes the
    stale payment for a requery between that read and the UPDATE (a new
    ``claimed_at``: a provider call is in flight again), the admin's typed
    token still wins. The lease must be part of the conditional UPDATE."""
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=100_000)
    payment_id = payment.id
    app.config["VENDING_LEASE_SECONDS"] = 60
    db.session.execute(sa.update(Payment).where(Payment.id == payment_id).values(
        status=VENDING, claimed_at=db_now() - timedelta(seconds=120),
        pay_in_flight_until=db_now() - timedelta(seconds=100)))
    db.session.commit()
    admin_user = make_user("root@example.com")
    admin_user.is_admin = True
    db.session.commit()
    taken = []
    hook = interleave(payment_read, 2, lambda: in_other_worker(
        app, lambda: taken.append(payments._claim_requery(payment_id, True, False))))
    outcome = services.resolve_delivered(admin_user, payment_id, "found it in the provider's console",
                                         token="1" * 20, receipt_reference=None, units_kwh=None)
    assert hook.fired and taken and taken[0] is not None, taken
    db.session.rollback()
    final = db.session.get(Payment, payment_id)
    assert final.status == VENDING, "resolved while a requery of the payment was in flight"
    assert not outcome.ok and outcome.message.startswith("refused:"), outcome
    assert final.token is None
    assert_books_balance()
