"""Review of the money code (money in and money out), as an attacker, a
payday crowd or a flaky network would try it: each test here failed before
the fix committed with it."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from billvend import funding, ledger, transactions
from billvend.extensions import db
from billvend.funding import gateways
from billvend.models import (FUNDING_SUCCEEDED, FUNDING_WALLET, KIND_FUNDING, DedicatedAccount, Funding,
                             GatewayEvent, Transfer, Wallet)
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
    return funding.store_event("paystack", "charge.success", reference,
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
        funding.process_event(_arrival(gw, reference, 500_000, "CUS_long"), gw)
    assert _balance(wallet_id) == 1_000_000
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.kind == KIND_FUNDING)) == 2
    assert all(e.processed_at is not None and not e.needs_attention
               for e in db.session.scalars(sa.select(GatewayEvent)))
    # A redelivery of either is still one credit.
    funding.process_event(_arrival(gw, prefix + "0002", 500_000, "CUS_long"), gw)
    assert _balance(wallet_id) == 1_000_000
    assert_books_balance()
