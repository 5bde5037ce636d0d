"""The ledger's invariant checker (``flask ledger check``, the admin's invariants page).

Each domain registers the invariants of its own money with :func:`register` when it is
imported (the app factory imports every domain), so the ledger imports no domain: the
ledger's own four are below, vending's in ``billvend.vending.invariants``, funding's in
``billvend.funding.invariants``, adjustments' (``adjustment``, ``bonus``) in
``billvend.adjustments.invariants``. :data:`INVARIANTS` lists every registered name in
registration order; a domain whose registration was never imported is missing from it
(``tests/test_architecture.py`` asserts the exact set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple, Optional

import sqlalchemy as sa

from billvend.ledger.models import LedgerEntry, Transfer, Wallet
from billvend.platform.extensions import db


class Violation(NamedTuple):
    """One broken ledger invariant.

    ``invariant`` is a registered key (:data:`INVARIANTS`); ``subject`` names what is
    wrong (``wallet``, ``transfer``, ``payment``, ...) and ``subject_id`` its primary key.
    """

    invariant: str
    subject: str
    subject_id: int
    detail: str


#: Every registered invariant: key -> one-line description, in registration order.
INVARIANTS: dict[str, str] = {}
#: The registered checks: each returns the violations of the invariants it declared.
CHECKS: dict[str, Callable[[], Iterable[Violation]]] = {}


def register(invariants: dict[str, str]) -> Callable:
    """Decorator: register ``check`` (no arguments, returns an iterable of
    :class:`Violation`) for ``invariants`` (key -> description).

    Registering the same check again (a module imported twice) replaces it; a key
    registered by two different checks raises ``ValueError``.
    """
    def decorate(check: Callable[[], Iterable[Violation]]) -> Callable[[], Iterable[Violation]]:
        name = f"{check.__module__}.{check.__qualname__}"
        for key, description in invariants.items():
            owner = next((n for n, c in CHECKS.items() if key in getattr(c, "invariants", ())), None)
            if owner is not None and owner != name:
                raise ValueError(f"invariant {key!r} is already registered by {owner}")
            INVARIANTS[key] = description
        check.invariants = tuple(invariants)
        CHECKS[name] = check
        return check
    return decorate


def check_invariants() -> list[Violation]:
    """Check every registered invariant over the whole database.

    Read-only; each check is aggregate queries, so it scales with the database, not
    with Python loops over rows.

    :returns: every violation found (an empty list when the books balance).
    """
    violations: list[Violation] = []
    for check in CHECKS.values():
        violations.extend(check())
    return violations


@register({
    "transfer_balanced": "Every transfer has two entries that sum to zero, on its debit and credit wallets",
    "balance_matches": "Each wallet's balance equals the sum of its entries and its last balance_after",
    "versions_gapless": "Each wallet's entries are numbered 1..version with no gap",
    "user_wallet_negative": "No user wallet is below zero",
})
def check_ledger() -> list[Violation]:
    """The ledger's own invariants (DESIGN.md, Money 1-3): balanced transfers,
    balances that match their entries, gapless versions, no negative user wallet."""
    return [*_unbalanced_transfers(), *_wallets_off_their_entries(), *_negative_user_wallets()]


def _unbalanced_transfers() -> list[Violation]:
    """``transfer_balanced``: every transfer not made of exactly its debit wallet's
    ``-amount`` entry and its credit wallet's ``+amount`` entry (kobo)."""
    entry = LedgerEntry
    # An entry is "right" when it is the debit wallet's -amount or the credit
    # wallet's +amount; a balanced transfer has exactly two, one of each.
    right_entry = sa.case(
        (sa.and_(entry.wallet_id == Transfer.debit_wallet_id,
                 entry.delta_kobo == -Transfer.amount_kobo), 1),
        (sa.and_(entry.wallet_id == Transfer.credit_wallet_id,
                 entry.delta_kobo == Transfer.amount_kobo), 2),
        else_=100,
    )
    rows = db.session.execute(
        sa.select(Transfer.id, Transfer.amount_kobo,
                  sa.func.count(entry.id), sa.func.coalesce(sa.func.sum(entry.delta_kobo), 0),
                  sa.func.coalesce(sa.func.max(entry.delta_kobo), 0))
        .outerjoin(entry, entry.transfer_id == Transfer.id)
        .group_by(Transfer.id, Transfer.amount_kobo)
        .having(sa.or_(sa.func.count(entry.id) != 2,
                       sa.func.coalesce(sa.func.sum(entry.delta_kobo), 0) != 0,
                       sa.func.coalesce(sa.func.max(entry.delta_kobo), 0) != Transfer.amount_kobo,
                       sa.func.coalesce(sa.func.sum(right_entry), 0) != 3))
    )
    return [
        Violation("transfer_balanced", "transfer", transfer_id,
                  f"{count} entries summing to {total} kobo (credit {credit}, amount {amount_kobo}),"
                  " or not on the transfer's debit and credit wallets")
        for transfer_id, amount_kobo, count, total, credit in rows
    ]


def _wallets_off_their_entries() -> list[Violation]:
    """``balance_matches`` and ``versions_gapless``, per wallet in one query: the balance
    (kobo) against the sum and the last ``balance_after`` of its entries, the version
    against the entries' numbering."""
    entry = LedgerEntry
    totals = (
        sa.select(entry.wallet_id.label("wallet_id"),
                  sa.func.sum(entry.delta_kobo).label("total"),
                  sa.func.count(entry.id).label("count"),
                  sa.func.min(entry.wallet_version).label("first_version"),
                  sa.func.max(entry.wallet_version).label("last_version"))
        .group_by(entry.wallet_id)
        .subquery()
    )
    last_entry = sa.orm.aliased(entry)
    rows = db.session.execute(
        sa.select(Wallet.id, Wallet.balance_kobo, Wallet.version,
                  sa.func.coalesce(totals.c.total, 0), sa.func.coalesce(totals.c.count, 0),
                  totals.c.first_version, totals.c.last_version, last_entry.balance_after_kobo)
        .outerjoin(totals, totals.c.wallet_id == Wallet.id)
        .outerjoin(last_entry, sa.and_(last_entry.wallet_id == Wallet.id,
                                       last_entry.wallet_version == Wallet.version))
    )
    violations: list[Violation] = []
    for (wallet_id, balance, version, total, count, first_version, last_version,
         last_balance_after) in rows:
        expected_last = last_balance_after if count else 0
        if balance != total or (count and balance != expected_last):
            violations.append(Violation(
                "balance_matches", "wallet", wallet_id,
                f"balance {balance} kobo, entries sum {total}, last balance_after {last_balance_after}"))
        if count != version or (count and (first_version != 1 or last_version != version)):
            violations.append(Violation(
                "versions_gapless", "wallet", wallet_id,
                f"version {version} but {count} entries numbered {first_version}..{last_version}"))
    return violations


def _negative_user_wallets() -> list[Violation]:
    """``user_wallet_negative``: every user wallet below zero kobo."""
    return [
        Violation("user_wallet_negative", "wallet", wallet_id, f"balance {balance} kobo")
        for wallet_id, balance in db.session.execute(
            sa.select(Wallet.id, Wallet.balance_kobo)
            .where(Wallet.user_id.is_not(None), Wallet.balance_kobo < 0))
    ]


# --- Every transfer kind has a rule (DESIGN.md, Money) --------------------------------------

#: The rule (an :data:`INVARIANTS` key) that explains each transfer kind. The domain that
#: owns a kind registers it with :func:`register_transfer_rule`; a kind with no entry is
#: reported by ``unexplained_movement`` wherever it touches a user wallet.
TRANSFER_RULES: dict[str, str] = {}
#: kind -> a builder of the SQL condition (on :class:`Transfer`) under which a transfer of
#: that kind is explained; correlated subqueries, so the ledger joins no domain's table.
EXPLAINED: dict[str, Callable[[], sa.ColumnElement[bool]]] = {}


def register_transfer_rule(kind: str, rule: str,
                           explained: Callable[[], sa.ColumnElement[bool]]) -> None:
    """Declare that ``rule`` (an invariant key) explains transfers of ``kind``, and that a
    transfer of that kind into or out of a user wallet is explained when ``explained()``
    (a boolean SQL expression over :class:`Transfer`, built at check time) holds.

    :raises ValueError: ``kind`` is already claimed by another rule.
    """
    if TRANSFER_RULES.get(kind, rule) != rule:
        raise ValueError(f"transfer kind {kind!r} already has the rule {TRANSFER_RULES[kind]!r}")
    TRANSFER_RULES[kind] = rule
    EXPLAINED[kind] = explained


def system_wallet_id(code: str) -> Optional[int]:
    """The id of the system wallet ``code`` (``funding``, ``biller_clearing``, ...), or
    None before the system wallets are seeded."""
    return db.session.scalar(sa.select(Wallet.id).where(Wallet.system_code == code))


@register({
    "unexplained_movement": "Every movement into or out of a user wallet is explained by its kind's "
                            "rule: a funding credit, a payment's debit or reversal, a transfer "
                            "between customers, an approved adjustment or bonus",
})
def check_transfer_rules() -> list[Violation]:
    """The catch-all: a transfer touching a user wallet that no registered rule of its
    kind explains (a kind whose domain registered no rule explains nothing)."""
    violations: list[Violation] = []
    session = db.session
    # The domains' checks start from payments and fundings, so they cannot see a transfer
    # that names neither: this one starts from the transfers.
    debit_wallet, credit_wallet = sa.orm.aliased(Wallet), sa.orm.aliased(Wallet)
    explained = sa.or_(sa.false(), *(sa.and_(Transfer.kind == kind, build())
                                     for kind, build in EXPLAINED.items()))
    for transfer_id, kind, amount, debit_id, credit_id in session.execute(
        sa.select(Transfer.id, Transfer.kind, Transfer.amount_kobo, Transfer.debit_wallet_id,
                  Transfer.credit_wallet_id)
        .join(debit_wallet, debit_wallet.id == Transfer.debit_wallet_id)
        .join(credit_wallet, credit_wallet.id == Transfer.credit_wallet_id)
        .where(sa.or_(debit_wallet.user_id.is_not(None), credit_wallet.user_id.is_not(None)))
        .where(sa.not_(explained))
    ):
        violations.append(Violation(
            "unexplained_movement", "transfer", transfer_id,
            f"{kind} of {amount} kobo from wallet {debit_id} to wallet {credit_id}: no rule of "
            f"its kind explains it (rule: {TRANSFER_RULES.get(kind, 'none for this kind')})"))
    return violations

