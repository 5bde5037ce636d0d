"""Service-level helpers for tests that do not go through the forms."""

from __future__ import annotations

import secrets

from billvend.funding import seed
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.accounts.models import User


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
        phone="08031234567", amount_kobo=amount_kobo, idempotency_key=key or secrets.token_urlsafe(16),
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
