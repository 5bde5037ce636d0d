"""Transfers between customers under real concurrency, on PostgreSQL (issue 27).

Real threads, each with its own app context and connection (the fixtures of
tests/test_concurrency.py). Crossing transfers A->B and B->A lock both wallets
in the ledger's one order, so none deadlocks (no unit of work is retried);
the daily limit is checked under the sender's row lock, so parallel transfers
cannot pass it together.
"""

from __future__ import annotations

import logging
import secrets

import pytest

from billvend.accounts.models import User
from billvend.ledger import limits
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from billvend.transfers import services as transfers
from tests.helpers import assert_books_balance, make_user
from tests.test_concurrency import app, run_threads, wallet_balance  # noqa: F401 - the fixture

pytestmark = pytest.mark.postgresql


def customer(email: str, balance_kobo: int) -> int:
    user = make_user(email, balance_kobo=balance_kobo)
    user.full_name = email.split("@")[0].title() + " Test"
    user.email_verified_at = user.phone_verified_at = utcnow()
    user.verified_phone = user.phone = "+23480" + str(abs(hash(email)) % 10**8).zfill(8)
    db.session.commit()
    return user.id


def send(sender_id: int, recipient_id: int, amount_kobo: int):
    sender, recipient = db.session.get(User, sender_id), db.session.get(User, recipient_id)
    try:
        return transfers.send(sender, recipient, amount_kobo, None, secrets.token_urlsafe(16)).created
    except limits.DailyLimitExceeded:
        return "limit"


def test_100_crossing_transfers_never_deadlock_and_balances_are_exact(app, caplog):  # noqa: F811
    a = customer("ada@example.com", 1_000_000)
    b = customer("bola@example.com", 1_000_000)
    caplog.set_level(logging.INFO, logger="billvend.platform.transactions")

    def one(index: int):
        return send(a, b, 1_000) if index % 2 == 0 else send(b, a, 700)

    results = run_threads(app, 100, one)
    assert results == [True] * 100
    retries = [r.getMessage() for r in caplog.records if "transient conflict" in r.getMessage()]
    assert retries == [], retries  # no deadlock, nothing rerun
    assert wallet_balance(a) == 1_000_000 - 50 * 1_000 + 50 * 700
    assert wallet_balance(b) == 1_000_000 + 50 * 1_000 - 50 * 700
    assert_books_balance()


def test_20_parallel_transfers_pass_the_daily_limit_exactly_as_often_as_it_allows(app):  # noqa: F811
    app.config["TRANSFER_DAILY_LIMIT_KOBO"] = 10_000_00
    a = customer("ada@example.com", 1_000_000_00)
    recipients = [customer(f"r{n}@example.com", 0) for n in range(4)]

    results = run_threads(app, 20, lambda index: send(a, recipients[index % 4], 1_500_00))
    assert results.count(True) == 6 and results.count("limit") == 14  # 6 x 1,500 <= 10,000 < 7 x 1,500
    assert wallet_balance(a) == 1_000_000_00 - 6 * 1_500_00
    assert sum(wallet_balance(r) for r in recipients) == 6 * 1_500_00
    assert_books_balance()
