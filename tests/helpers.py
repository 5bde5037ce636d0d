"""Service-level helpers for tests that do not go through the forms."""

from __future__ import annotations

import secrets
import threading

import sqlalchemy as sa

from billvend.funding import seed
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.accounts.models import User
from billvend.ledger.models import Wallet


def make_user(email: str | None = None, balance_kobo: int = 0) -> User:
    user = User(email=email or f"user-{secrets.token_hex(4)}@example.com")
    user.set_password("correct horse 1")
    db.session.add(user)
    ledger.open_wallet(user)
    db.session.commit()
    if balance_kobo:
        seed.fund_wallet(user, balance_kobo, secrets.token_urlsafe(16))
    return user


def make_payment(user: User, meter_number: str = "1111111111111", amount_kobo: int = 100_000,
                 meter_type: str = "prepaid", key: str | None = None):
    payment, _ = payments.create_payment(
        user, service_id="ikeja-electric", meter_type=meter_type, meter_number=meter_number,
        phone="+2348031234567", amount_kobo=amount_kobo, idempotency_key=key or secrets.token_urlsafe(16),
    )
    return payment


def assert_books_balance():
    violations = ledger_invariants.check_invariants()
    assert violations == [], violations


#: The invariants of the ledger itself (entries, balances, versions), which
#: hold whatever the transfers mean.
LEDGER_STRUCTURE = frozenset({"transfer_balanced", "balance_matches", "versions_gapless",
                              "user_wallet_negative"})


def assert_ledger_consistent():
    """The ledger's own bookkeeping holds, for tests that move money with bare
    ``adjustment`` transfers to exercise the ledger: such a transfer has no
    approval and so breaks the rules about what money means
    (``adjustment_approved``, ``unexplained_movement``, the system wallets'
    reconciliation), by design."""
    violations = [v for v in ledger_invariants.check_invariants() if v.invariant in LEDGER_STRUCTURE]
    assert violations == [], violations


def wallet_balance(wallet_id: int) -> int:
    """The wallet's balance in kobo as committed (the session is rolled back first)."""
    db.session.rollback()
    return db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.id == wallet_id))


def in_other_worker(app, fn) -> None:
    """Run ``fn()`` to completion in another thread with its own app
    context (another worker or admin), and wait for it."""
    errors = []

    def run():
        with app.app_context():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


class Interleave:
    """Call ``action()`` once, right after the ``n``-th statement of this
    thread that ``matches``; the statement has already run, nothing after
    it has."""

    def __init__(self, matches, n, action):
        self.matches, self.n, self.action = matches, n, action
        self.seen, self.fired, self.thread = 0, False, threading.get_ident()

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.fired or threading.get_ident() != self.thread or not self.matches(statement):
            return
        self.seen += 1
        if self.seen == self.n:
            self.fired = True
            self.action()


def payment_read(statement: str) -> bool:
    """Whether ``statement`` is the lifecycle's read of one payment by id (an ``interleave`` matcher)."""
    text = " ".join(statement.split())
    return text.startswith("SELECT payments.id") and "FROM payments WHERE payments.id =" in text
