"""Review of issue 15's money-in code: attacks that found a defect."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import requests
import sqlalchemy as sa

from billvend.funding import checkout, events, reconciliation, verification
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.funding.tasks import funding_sweep_once
from billvend.funding.models import DedicatedAccount, Funding, GatewayEvent
from tests.conftest import KEY_RE
from tests.helpers import assert_books_balance
from tests.stack import free_port
from tests.test_funding import (SECRET, back_from_checkout, balance_of, choose, credits_for,  # noqa: F401
                                customer, funding_row, live, signed_post, start_checkout, tokens)


def test_a_non_ascii_signature_header_is_401_not_500(live):
    base, sandbox = live
    body = json.dumps({"event": "charge.success", "data": {"reference": "T_1", "status": "success"}}).encode()
    for signature in ("\u00e9" * 128, gateways.sign(SECRET, body)[:-1] + "\u00ff"):
        r = requests.post(base + "/webhooks/paystack", data=body, timeout=10,
                          headers={"Content-Type": "application/json",
                                   "x-paystack-signature": signature.encode("latin-1")})
        assert r.status_code == 401, r.text
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0


def test_a_late_success_webhook_while_the_gateway_is_unreachable_is_not_lost(live, app):
    """Abandoned (failed), then the bank confirms: the webhook's verify cannot
    reach the gateway. The funding is closed, so the funding sweep never looks
    at it again; the event must stay open for the sweep to retry it."""
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    back_from_checkout(s, choose(s, checkout_url, "abandoned"))
    assert funding_row(reference).status == "failed"
    sandbox.set_status(reference, "success")
    body = json.dumps({"event": "charge.success", "data": sandbox.transaction(reference)["transaction"]
                       | {"status": "success", "amount": 500_000, "currency": "NGN"}}).encode()
    app.config["PAYSTACK_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # verify cannot get through
    assert signed_post(base, body).status_code == 200
    assert credits_for(reference) == 0
    app.config["PAYSTACK_BASE_URL"] = sandbox.url
    db.session.rollback()
    for event in db.session.scalars(sa.select(GatewayEvent)):
        event.received_at -= timedelta(minutes=5)  # the sweep retries events older than a minute
    db.session.commit()
    funding_sweep_once()
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    funding_sweep_once()
    assert credits_for(reference) == 1
    db.session.rollback()
    assert db.session.scalar(sa.select(GatewayEvent.processed_at)) is not None
    assert_books_balance()


def test_try_again_after_the_gateway_was_unreachable_reaches_the_checkout(live, app):
    """The 503 page says "please try again"; submitting that page again must
    not hang on the first (dead) attempt and refuse."""
    base, sandbox = live
    s = customer(base)
    app.config["PAYSTACK_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens
    first = tokens(s, base + "/wallet/fund")
    r = s.post(base + "/wallet/fund", data=first | {"amount": "5000"}, allow_redirects=False, timeout=20)
    assert r.status_code == 503
    app.config["PAYSTACK_BASE_URL"] = sandbox.url
    key = KEY_RE.search(r.text).group(1)
    assert key != first["idempotency_key"]
    again = s.post(base + "/wallet/fund", data={"csrf_token": first["csrf_token"], "idempotency_key": key,
                                                 "amount": "5000"}, allow_redirects=False, timeout=20)
    assert again.status_code == 303 and "/checkout/" in again.headers["Location"]
    db.session.rollback()
    refs = db.session.scalars(sa.select(Funding.reference).order_by(Funding.id)).all()
    assert len(refs) == 2
    assert sandbox.transaction(refs[0])["initializations"] == 0
    assert sandbox.transaction(refs[1])["initializations"] == 1


def test_gateway_amounts_in_unicode_digits_are_unusable_not_a_crash():
    for raw in ("\u00b2", "\u0661\u0662", "5\u00b2", "9" * 5000, str(2 ** 63), 2 ** 63, -2 ** 64):
        tx = gateways.transaction_from({"reference": "R", "status": "success", "amount": raw,
                                        "fees": raw})
        assert tx.amount_kobo is None and tx.fees_kobo is None
    assert gateways.transaction_from({"reference": "R", "status": "success", "amount": "500"}).amount_kobo == 500


class _StubGateway:
    """Answers verify with a fixed transaction (no HTTP)."""

    name = "paystack"

    def __init__(self, tx):
        self.tx = tx

    def verify(self, reference):
        return self.tx


def test_a_bank_transfer_arrival_too_large_for_the_database_is_flagged_not_retried_for_ever(app):
    from tests.helpers import make_user

    user = make_user("big@example.com")
    db.session.add(DedicatedAccount(user_id=user.id, gateway="paystack", customer_code="CUS_big",
                                    account_number="9900000001", account_name="BIG", bank_name="Test Bank"))
    db.session.commit()
    huge = 2 ** 63  # one more than BIGINT holds
    data = {"reference": "DVA_huge", "status": "success", "amount": huge, "currency": "NGN",
            "channel": "dedicated_nuban", "customer": {"customer_code": "CUS_big"},
            "authorization": {"channel": "dedicated_nuban"}}
    stored = events.store_event("paystack", "charge.success", "DVA_huge",
                                json.dumps({"event": "charge.success", "data": data}).encode())
    gw = _StubGateway(gateways.transaction_from(data))
    events.process_event(stored.event_id, gw)  # no exception
    db.session.rollback()
    event = db.session.get(GatewayEvent, stored.event_id)
    assert event.processed_at is not None and event.needs_attention
    assert "usable amount" in event.outcome
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0


def test_verifying_a_funding_asked_about_many_times_still_backs_off(app):
    """Every callback visit counts a verify attempt; the backoff is
    2**attempts: past 1024 attempts the float overflowed and every verify of
    the funding raised (a 500 on the callback, an error in every sweep, and
    no next_verify_at, so the sweep asked the gateway every minute)."""
    from tests.helpers import make_user

    user = make_user()
    start = checkout.begin_checkout(user, 100_000, "many-attempts-key-1", "http://x/cb",
                                    gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    row.verify_attempts = 1100
    db.session.commit()
    for status in ("ongoing", None):
        if status is None:  # the gateway could not be asked
            class Down(_StubGateway):
                def verify(self, reference):
                    raise gateways.GatewayError("down")
            gw = Down(None)
        else:
            gw = _StubGateway(gateways.GatewayTransaction(reference=start.reference, status=status))
        result = verification.verify_funding(row.id, gw)
        assert result.outcome in ("pending", "unknown")
        db.session.rollback()
        row = db.session.get(Funding, row.id)
        assert row.next_verify_at is not None
        assert row.next_verify_at - db_now() <= timedelta(
            seconds=app.config["FUNDING_VERIFY_MAX_DELAY_SECONDS"] + 5)


class _ListsButCannotVerify:
    """A gateway whose list works and whose verify times out."""

    name = "simulated"

    def __init__(self, txs):
        self.txs = txs

    def transactions(self, start, end):
        return self.txs

    def verify(self, reference):
        raise gateways.GatewayError("verify: no answer within 12 s")


def test_a_reconciliation_that_cannot_verify_an_open_funding_leaves_it_to_the_sweep(app):
    """The customer paid, the webhook was lost, the funding is open: the
    sweep would credit it. A reconciliation whose verify times out must not
    flag it (flagged fundings are skipped by the sweep and refused by the
    admin's "verify now"), turning an automatic credit into manual work."""
    from tests.helpers import make_user

    user = make_user()
    start = checkout.begin_checkout(user, 100_000, "reconcile-timeout-1", "http://x/cb",
                                    gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    paid = gateways.GatewayTransaction(reference=start.reference, status="success", amount_kobo=100_000,
                                       currency="NGN")
    run = reconciliation.reconcile(db_now().date(), _ListsButCannotVerify([paid]))
    assert run.credited == 0 and len(run.items) == 1  # reported in the run
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.status == "pending" and not row.needs_attention and row.next_verify_at is not None
    # Once due, the sweep credits it.
    row.next_verify_at = db_now() - timedelta(seconds=1)
    db.session.commit()
    assert verification.due_fundings() == [row.id]
    assert verification.verify_funding(row.id, gateways.SimulatedGateway()).outcome == "credited"


def test_a_checkout_never_answered_ends_abandoned_and_a_late_payment_is_still_credited(live):
    """A customer who opens the checkout and walks away: Paystack then
    verifies the transaction as ``abandoned``. The sandbox kept it
    ``ongoing`` for ever, so the funding stayed pending and the sweep asked
    the gateway about it every hour, for ever."""
    import time

    base, sandbox = live
    sandbox.settings(abandon_after_seconds=0.5)
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    row = funding_row(reference)
    assert verification.verify_funding(row.id).outcome == "pending"  # still on the checkout page
    time.sleep(0.7)
    assert sandbox.transaction(reference)["transaction"]["status"] == "ongoing"  # the page still works
    result = verification.verify_funding(row.id)
    assert (result.outcome, result.detail) == ("failed", "abandoned")
    db.session.rollback()
    assert db.session.get(Funding, row.id).next_verify_at is None  # the sweep stops asking
    # The customer comes back to the open page and pays after all: credited once.
    back_from_checkout(s, choose(s, checkout_url, "success"))
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_a_funding_the_gateway_never_settles_is_closed_after_FUNDING_EXPIRE_SECONDS(app):
    """A gateway that says ``ongoing`` (or ``pending``, ``queued``...) for ever
    must not be asked every hour for ever: past ``FUNDING_EXPIRE_SECONDS``
    the funding is closed as failed. Nothing was credited, and a late
    success still credits it through the webhook or the reconciliation."""
    from tests.helpers import make_user

    user = make_user()
    start = checkout.begin_checkout(user, 100_000, "never-settles-key-1", "http://x/cb",
                                    gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    ongoing = _StubGateway(gateways.GatewayTransaction(reference=start.reference, status="ongoing"))
    assert verification.verify_funding(row.id, ongoing).outcome == "pending"
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    row.created_at = db_now() - timedelta(seconds=app.config["FUNDING_EXPIRE_SECONDS"] + 1)
    db.session.commit()
    result = verification.verify_funding(row.id, ongoing)
    assert result.outcome == "failed" and "no final answer" in result.detail
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.status == "failed" and row.next_verify_at is None and row.id not in verification.due_fundings()
    paid = gateways.GatewayTransaction(reference=start.reference, status="success", amount_kobo=100_000,
                                       currency="NGN")
    assert verification.verify_funding(row.id, _StubGateway(paid)).outcome == "credited"
    assert_books_balance()


def test_a_sweep_stops_asking_once_the_gateway_is_unreachable(app, monkeypatch):
    """During a gateway outage every stored webhook still waiting was
    verified again at every sweep, each waiting out its deadline (12 s):
    a hundred of them made one sweep outlast its lease. The first
    unreachable answer ends the sweep; the next one tries again."""
    from tests.helpers import make_user

    user = make_user()
    for n in range(3):
        start = checkout.begin_checkout(user, 100_000, f"outage-key-{n:04d}-x", "http://x/cb",
                                        gateways.SimulatedGateway())
        body = {"event": "charge.success", "data": {"reference": start.reference, "status": "success",
                                                   "amount": 100_000, "currency": "NGN"}}
        events.store_event("simulated", "charge.success", start.reference, json.dumps(body).encode())
    db.session.execute(sa.update(GatewayEvent).values(
        received_at=db_now() - timedelta(seconds=600)))
    db.session.execute(sa.update(Funding).values(next_verify_at=db_now() - timedelta(seconds=1)))
    db.session.commit()
    calls = []

    class Down:
        name = "simulated"

        def verify(self, reference):
            calls.append(reference)
            raise gateways.GatewayError("no answer within 12 s")

    monkeypatch.setattr(gateways, "gateway", lambda: Down())
    funding_sweep_once()
    assert len(calls) == 1
    monkeypatch.setattr(gateways, "gateway", lambda: gateways.SimulatedGateway())
    funding_sweep_once()  # the gateway is back: everything is credited
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id)).where(Funding.status == "succeeded")) == 3
    assert_books_balance()


def test_an_abandoned_checkout_paid_later_without_a_webhook_is_credited_by_reconciliation(live):
    """Failed as abandoned, then paid after all; the webhook never came and
    the customer closed the tab before the redirect: only the
    reconciliation can find it, and it credits it once."""
    import time

    base, sandbox = live
    sandbox.settings(abandon_after_seconds=0.3, webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    row = funding_row(reference)
    time.sleep(0.4)
    assert verification.verify_funding(row.id).outcome == "failed"
    choose(s, checkout_url, "success")  # paid; the redirect back is never followed
    today = datetime.now(reconciliation.LAGOS).date()
    run = reconciliation.reconcile(today)
    assert run.credited == 1
    reconciliation.reconcile(today)  # a second night's run of the same day credits nothing more
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()
