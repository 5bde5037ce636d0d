"""Review of the money code (money in and money out), as an attacker, a
payday crowd or a flaky network would try it: each test here failed before
the fix committed with it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from billvend.funding import checkout, events, verification
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.funding.models import FUNDING_SUCCEEDED, DedicatedAccount, Funding, GatewayEvent
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer, Wallet
from tests.helpers import assert_books_balance, make_user


class _StubGateway:
    """A gateway whose ``verify`` confirms each arrival as it was announced
    (no HTTP): the webhook and the server-side verify agree."""

    name = "paystack"

    def __init__(self):
        self.transactions: dict[str, gateways.GatewayTransaction] = {}

    def verify(self, reference):
        return self.transactions[reference]


def _dva_user(email: str, code: str, number: str):
    user = make_user(email)
    db.session.add(DedicatedAccount(user_id=user.id, gateway="paystack", customer_code=code,
                                    account_number=number, account_name="DVA", bank_name="Test Bank"))
    db.session.commit()
    return user


def _arrival(gw: _StubGateway, reference: str, amount_kobo: int, code: str) -> int:
    """Store a signed-and-verified ``charge.success`` for a bank transfer into
    the dedicated account ``code``; returns the event id."""
    data = {"reference": reference, "status": "success", "amount": amount_kobo, "currency": "NGN",
            "channel": "dedicated_nuban", "customer": {"customer_code": code},
            "authorization": {"channel": "dedicated_nuban"}}
    gw.transactions[reference] = gateways.transaction_from(data)
    return events.store_event("paystack", "charge.success", reference,
                              json.dumps({"event": "charge.success", "data": data}).encode()).event_id


def _balance(wallet_id: int) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.id == wallet_id))


def test_two_bank_transfers_with_long_references_sharing_a_prefix_are_both_credited(app):
    """Each arrival got the idempotency key ``nuban:`` + its reference cut to
    64 characters: two references (the gateway allows 64) that differ only
    after character 58 collided on UNIQUE (user, key), the second arrival's
    task raised IntegrityError on every retry and the customer's money never
    reached the wallet."""
    user = _dva_user("long@example.com", "CUS_long", "9900000002")
    wallet_id = user.wallet.id
    gw = _StubGateway()
    prefix = "NIP" + "7" * 57
    for reference in (prefix + "0001", prefix + "0002"):
        events.process_event(_arrival(gw, reference, 500_000, "CUS_long"), gw)
    assert _balance(wallet_id) == 1_000_000
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.kind == KIND_FUNDING)) == 2
    assert all(e.processed_at is not None and not e.needs_attention
               for e in db.session.scalars(sa.select(GatewayEvent)))
    # A redelivery of either is still one credit.
    events.process_event(_arrival(gw, prefix + "0002", 500_000, "CUS_long"), gw)
    assert _balance(wallet_id) == 1_000_000
    assert_books_balance()


def test_bank_transfers_too_large_for_a_balance_are_flagged_not_credited(app):
    """A verified arrival of 2**62 kobo fitted a BIGINT, so it was credited;
    a second one overflowed the wallet: on SQLite the balance silently became
    a float (9.2e18, REAL) and the invariant check itself crashed; on
    PostgreSQL the credit raised out of the task on every retry."""
    user = _dva_user("huge@example.com", "CUS_huge", "9900000003")
    wallet_id = user.wallet.id
    gw = _StubGateway()
    for n in range(2):
        event_id = _arrival(gw, f"DVA_HUGE_{n}", 2 ** 62, "CUS_huge")
        events.process_event(event_id, gw)  # no exception
        db.session.rollback()
        event = db.session.get(GatewayEvent, event_id)
        assert event.processed_at is not None and event.needs_attention
        assert "usable amount" in event.outcome
    assert _balance(wallet_id) == 0
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    assert_books_balance()


def test_the_ledger_refuses_a_transfer_larger_than_any_balance_can_hold(app):
    user = make_user("cap@example.com")
    funding_wallet, wallet_id = ledger.system_wallet_id(FUNDING_WALLET), user.wallet.id
    db.session.rollback()
    with pytest.raises(ledger.LedgerError):
        transactions.run(lambda: ledger.post_transfer(
            kind=KIND_FUNDING, debit_wallet_id=funding_wallet, credit_wallet_id=wallet_id,
            amount_kobo=ledger.MAX_TRANSFER_KOBO + 1))
    transactions.run(lambda: ledger.post_transfer(
        kind=KIND_FUNDING, debit_wallet_id=funding_wallet, credit_wallet_id=wallet_id,
        amount_kobo=ledger.MAX_TRANSFER_KOBO))
    assert _balance(wallet_id) == ledger.MAX_TRANSFER_KOBO


def test_a_funding_credited_to_another_customers_wallet_is_reported(app):
    """The invariant check looked at a funding credit's amount and status,
    never at where it went: a credit of Ada's card funding into Bob's wallet
    (or out of a wallet other than ``funding``) passed ``flask ledger check``
    and the audit page."""
    ada, bob = make_user("ada@example.com"), make_user("bob@example.com")
    start = checkout.begin_checkout(ada, 100_000, "review-money-key-01", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    bob_wallet, funding_wallet = bob.wallet.id, ledger.system_wallet_id(FUNDING_WALLET)
    db.session.rollback()

    def credit_the_wrong_wallet():
        ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=funding_wallet,
                             credit_wallet_id=bob_wallet, amount_kobo=100_000, funding_id=funding_id)
        db.session.get(Funding, funding_id).status = FUNDING_SUCCEEDED

    transactions.run(credit_the_wrong_wallet)
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_credits"]
    assert len(found) == 1 and found[0].subject == "transfer", found
    assert f"wallet {bob_wallet}" in found[0].detail


def test_a_funding_credit_out_of_a_user_wallet_is_reported(app):
    ada, bob = make_user("ada@example.com"), make_user("bob@example.com", balance_kobo=200_000)
    start = checkout.begin_checkout(ada, 100_000, "review-money-key-02", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    ada_wallet, bob_wallet = ada.wallet.id, bob.wallet.id
    db.session.rollback()

    def credit_from_bob():
        ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=bob_wallet,
                             credit_wallet_id=ada_wallet, amount_kobo=100_000, funding_id=funding_id)
        db.session.get(Funding, funding_id).status = FUNDING_SUCCEEDED

    transactions.run(credit_from_bob)
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_credits"]
    assert len(found) == 1 and f"from wallet {bob_wallet}" in found[0].detail, found


def test_honest_fundings_raise_no_funding_credit_violation(app):
    make_user("ada@example.com", balance_kobo=300_000)
    make_user("bob@example.com", balance_kobo=100_000)
    assert_books_balance()


def test_a_gateway_answer_with_a_nul_character_still_credits(app):
    """PostgreSQL refuses NUL in text: a verify answer whose
    ``gateway_response`` carried one made every verify of the funding raise
    (a 500 on the callback, an error in every sweep), so a paid funding was
    never credited. (SQLite stores NUL, so this failed on PostgreSQL only.)"""
    user = make_user("nul@example.com")
    wallet_id = user.wallet.id
    start = checkout.begin_checkout(user, 100_000, "review-money-key-03", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    db.session.rollback()
    gw = _StubGateway()
    gw.name = "simulated"
    gw.transactions[start.reference] = gateways.transaction_from({
        "reference": start.reference, "status": "success", "amount": 100_000, "currency": "NGN",
        "channel": "ca\u0000rd", "gateway_response": "Appro\u0000ved"})
    assert verification.verify_funding(funding_id, gw).outcome == "credited"
    assert _balance(wallet_id) == 100_000
    row = db.session.get(Funding, funding_id)
    assert row.gateway_message == "Approved" and row.channel == "card"
    assert_books_balance()
