"""The double-entry ledger: the only code that changes a wallet balance.

Every movement is a ``Transfer`` of ``amount_kobo > 0`` from a debit wallet to
a credit wallet, written as two ``LedgerEntry`` rows (``-amount`` and
``+amount``) that carry the balance and wallet version each produced. The
model follows TigerBeetle's and Modern Treasury's ledgers: balances are a
cache of the entries, kept in step inside the same database transaction.

Concurrency (DESIGN.md, Money): a debit is never read-check-write in Python.
The balance check and the change are one conditional UPDATE: on PostgreSQL
the whole transfer (insert the transfer, lock and change both wallets in
descending id order with the debit's ``WHERE balance_kobo >= :amount``,
bump both versions, insert the entries) is one call of a PL/pgSQL function
(``billvend_post_transfer``, see ``billvend.ledger.pg_transfer``); on SQLite
a conditional ``UPDATE ... WHERE balance_kobo >= :amount RETURNING
balance_kobo, version`` per wallet. The database serialises writers on the
row, so no update can be lost and no user wallet can go negative (the CHECK
constraint backs this up).

Functions here flush but never commit: the caller's unit of work
(``billvend.platform.transactions.unit_of_work``, also reachable as
``ledger.unit_of_work``) owns the transaction, so a transfer commits or rolls
back together with whatever caused it (a payment, a funding, a reversal),
and a transaction that lost a race is rerun whole.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Optional

import sqlalchemy as sa
from sqlalchemy.orm import attributes

from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.ledger.models import (
    BILLER_CLEARING_WALLET, SYSTEM_WALLETS, LedgerEntry, Transfer, TRANSFER_KINDS, Wallet,
)
from billvend.accounts.models import User
from billvend.platform.models import utcnow

log = logging.getLogger(__name__)


#: The largest single transfer the ledger posts: 10**15 kobo (N10 trillion),
#: about 9,000 times below what a BIGINT balance holds (2**63 - 1). Without a
#: ceiling one transfer near 2**62 kobo fits its own column but overflows the
#: balances it moves: SQLite then turns the balance into a REAL (a float)
#: without an error, PostgreSQL raises on every retry. Nothing legitimate comes
#: near it (card funding and payments have far lower form limits).
MAX_TRANSFER_KOBO = 10 ** 15


class LedgerError(Exception):
    """A transfer that cannot be posted (bad amount, unknown wallet)."""


class InsufficientFunds(LedgerError):
    """The debit wallet's balance is below the transfer amount."""

    def __init__(self, wallet_id: int, amount_kobo: int):
        super().__init__(f"wallet {wallet_id} cannot cover {amount_kobo} kobo")
        self.wallet_id = wallet_id
        self.amount_kobo = amount_kobo


# The unit-of-work boundary lives in billvend.platform.transactions; these names stay
# here for callers that knew them as the ledger's (the same objects).
TRANSIENT_SQLSTATES = transactions.TRANSIENT_SQLSTATES
is_transient = transactions.is_transient
unit_of_work = transactions.unit_of_work


def ensure_system_wallets() -> None:
    """Create any missing system wallet, committed on its own connection.

    The initial migration seeds them; this covers databases built with
    ``create_all`` (tests) and is safe to race (UNIQUE(system_code)).
    """
    table = Wallet.__table__
    for code in SYSTEM_WALLETS:
        try:
            with db.engine.begin() as conn:
                exists = conn.scalar(sa.select(table.c.id).where(table.c.system_code == code))
                if exists is None:
                    conn.execute(sa.insert(table).values(
                        system_code=code, balance_kobo=0, version=0, created_at=utcnow()))
        except sa.exc.IntegrityError:
            pass  # a concurrent caller created it


def system_wallet_id(code: str) -> int:
    """The primary key of system wallet ``code`` (``funding`` or ``biller_clearing``).

    Call it before the transaction writes anything: on a database without
    system wallets it creates them on a separate connection.

    :raises LedgerError: for a code that is not a system wallet.
    """
    if code not in SYSTEM_WALLETS:
        raise LedgerError(f"unknown system wallet {code!r}")
    query = sa.select(Wallet.id).where(Wallet.system_code == code)
    wallet_id = db.session.scalar(query)
    if wallet_id is None:
        ensure_system_wallets()
        wallet_id = db.session.scalar(query)
    return wallet_id


def open_wallet(user: User) -> Wallet:
    """Give ``user`` their wallet, at zero balance and version 0."""
    wallet = Wallet(user=user, balance_kobo=0, version=0)
    db.session.add(wallet)
    return wallet


def _sync_loaded_wallet(wallet_id: int, balance_kobo: int, version: int) -> None:
    # Keep any loaded Wallet object truthful without another SELECT; the
    # ORM's version check then compares against the version we produced.
    session = db.session()
    loaded = session.identity_map.get(session.identity_key(Wallet, wallet_id))
    if loaded is not None:
        attributes.set_committed_value(loaded, "balance_kobo", balance_kobo)
        attributes.set_committed_value(loaded, "version", version)


def _refusal(wallet_id: int, delta_kobo: int) -> LedgerError:
    """Why the conditional UPDATE of ``wallet_id`` matched no row."""
    if delta_kobo < 0 and db.session.get(Wallet, wallet_id) is not None:
        return InsufficientFunds(wallet_id, -delta_kobo)
    return LedgerError(f"no wallet {wallet_id}")


def _move(wallet_id: int, delta_kobo: int) -> tuple[int, int]:
    """Apply ``delta_kobo`` to one wallet atomically; returns (balance, version).

    A negative delta on a user wallet only applies if the balance covers it.
    """
    wallet = Wallet.__table__
    stmt = (
        sa.update(wallet)
        .where(wallet.c.id == wallet_id)
        .values(
            balance_kobo=wallet.c.balance_kobo + delta_kobo,
            version=wallet.c.version + 1,
        )
        .returning(wallet.c.balance_kobo, wallet.c.version)
    )
    if delta_kobo < 0:
        # System wallets may run negative: ``funding`` is the mirror image of
        # all money that ever arrived from outside.
        stmt = stmt.where(
            sa.or_(wallet.c.user_id.is_(None), wallet.c.balance_kobo >= -delta_kobo)
        )
    row = db.session.execute(stmt).one_or_none()
    if row is None:
        raise _refusal(wallet_id, delta_kobo)
    balance_kobo, version = row
    _sync_loaded_wallet(wallet_id, balance_kobo, version)
    return balance_kobo, version


# The whole transfer as ONE call of a PL/pgSQL function (billvend.
# pg_transfer.TRANSFER_FUNCTION_SQL, created by the migrations and by
# create_all).
#
# Why one call: a wallet row stays locked from its UPDATE until COMMIT, and
# every client round trip in between is time that other writers of a hot
# wallet spend waiting. Here the locks are held for the end of one call plus
# the commit, as for a bare conditional UPDATE (see bench/hot_wallet.py).
# The statement is in the driver's paramstyle because it runs on a DBAPI
# cursor (see _call_transfer_function).
_TRANSFER_DRIVER_SQL = """
SELECT found_wallets, transfer_id, debit_balance_kobo, debit_version,
       credit_balance_kobo, credit_version
  FROM billvend_post_transfer(
       %(kind)s::varchar, %(debit_id)s::integer, %(credit_id)s::integer,
       %(amount)s::bigint, %(payment_id)s::integer, %(funding_id)s::integer,
       %(description)s::varchar, %(now)s::timestamptz)
"""


def _call_transfer_function(connection: sa.Connection, params: dict) -> tuple:
    """Run ``billvend_post_transfer`` on the session's connection; its one row.

    A plain DBAPI cursor on the same connection (so in the caller's
    transaction), not ``connection.execute``: building SQLAlchemy's
    ``CursorResult`` takes about 45 us of Python per call, and the result
    arrives while the hot wallet is locked, so that time is added to every
    waiter (bench/hot_wallet.py measures it; README has the figures). Errors are wrapped as SQLAlchemy would wrap them
    (``sqlalchemy.exc.IntegrityError``, ``OperationalError``, ...), and a
    lost connection is invalidated, so callers and :func:`is_transient` see
    no difference.
    """
    dbapi = connection.dialect.loaded_dbapi
    dbapi_connection = connection.connection
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_TRANSFER_DRIVER_SQL, params)
        return cursor.fetchone()
    except dbapi.Error as exc:
        invalidated = connection.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if invalidated:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            _TRANSFER_DRIVER_SQL, params, exc, dbapi.Error,
            connection_invalidated=invalidated, dialect=connection.dialect) from exc
    finally:
        try:
            cursor.close()
        except dbapi.Error:  # the connection is already gone; reported above
            pass


class PostedTransfer(NamedTuple):
    """What :func:`post_transfer` wrote: the transfer's primary key and the
    balance (kobo) and version each wallet now has. Load the ``Transfer``
    with ``db.session.get(Transfer, posted.transfer_id)`` if you need it."""

    transfer_id: int
    debit_balance_kobo: int
    debit_version: int
    credit_balance_kobo: int
    credit_version: int


def post_transfer(
    *,
    kind: str,
    debit_wallet_id: int,
    credit_wallet_id: int,
    amount_kobo: int,
    payment_id: Optional[int] = None,
    funding_id: Optional[int] = None,
    description: Optional[str] = None,
) -> PostedTransfer:
    """Move ``amount_kobo`` from one wallet to another, with two ledger entries.

    Runs inside the caller's transaction: it first flushes the session (so
    the caller's own rows are written before any wallet is locked), then
    writes the transfer; the caller commits, and should commit soon, since
    both wallet rows stay locked until then. A refused transfer (the errors
    below) writes nothing; on any other exception the caller must roll back.

    On PostgreSQL the transfer is one call of a server-side function
    (``billvend.ledger.pg_transfer``) on the session's connection, without
    ORM objects: between the hot wallet's lock and the caller's COMMIT there
    is as little work as possible (see bench/hot_wallet.py). On SQLite,
    which serialises all writers with one database lock, a few statements
    in the same order.

    :param kind: one of ``models.TRANSFER_KINDS``.
    :param amount_kobo: a positive ``int`` number of kobo, at most
        :data:`MAX_TRANSFER_KOBO`.
    :returns: a :class:`PostedTransfer` (the new transfer's id, both wallets'
        new balances and versions); any ``Wallet`` already loaded in the
        session is updated to match, without a SELECT.
    :raises InsufficientFunds: the debit wallet is a user wallet whose balance
        is below ``amount_kobo``.
    :raises LedgerError: bad kind or amount (not a positive int, or above
        :data:`MAX_TRANSFER_KOBO`), same wallet twice, no such wallet.
    :raises sqlalchemy.exc.IntegrityError: a second transfer of the same
        ``kind`` for one payment (``UNIQUE(payment_id, kind)``), or a second
        transfer for one funding.
    """
    if kind not in TRANSFER_KINDS:
        raise LedgerError(f"unknown transfer kind {kind!r}")
    if not isinstance(amount_kobo, int) or isinstance(amount_kobo, bool) or amount_kobo <= 0:
        raise LedgerError(f"amount_kobo must be a positive int, got {amount_kobo!r}")
    if amount_kobo > MAX_TRANSFER_KOBO:
        raise LedgerError(f"amount_kobo {amount_kobo} is above the ledger's ceiling "
                          f"{MAX_TRANSFER_KOBO} (MAX_TRANSFER_KOBO)")
    if debit_wallet_id == credit_wallet_id:
        raise LedgerError("a transfer needs two different wallets")

    session = db.session()
    session.flush()  # returns at once when nothing is pending
    connection = session.connection()
    now = utcnow()
    if connection.dialect.name == "postgresql":
        # No ORM objects here: the result arrives while a hot wallet is
        # locked, waiting for our COMMIT.
        (found, transfer_id, debit_balance, debit_version, credit_balance,
         credit_version) = _call_transfer_function(connection, {
            "debit_id": debit_wallet_id, "credit_id": credit_wallet_id, "amount": amount_kobo,
            "kind": kind, "payment_id": payment_id, "funding_id": funding_id,
            "description": description, "now": now,
        })
        if transfer_id is None:
            if found == 2:
                raise InsufficientFunds(debit_wallet_id, amount_kobo)
            missing = [w for w in (debit_wallet_id, credit_wallet_id)
                       if session.get(Wallet, w) is None]
            raise LedgerError(f"no wallet {missing[0] if missing else credit_wallet_id}")
        if session.identity_map:
            _sync_loaded_wallet(debit_wallet_id, debit_balance, debit_version)
            _sync_loaded_wallet(credit_wallet_id, credit_balance, credit_version)
        return PostedTransfer(transfer_id, debit_balance, debit_version,
                              credit_balance, credit_version)

    # SQLite, in the function's order: the transfer row first (a duplicate
    # payment or funding fails before any wallet moves), then the debit
    # (conditional), then the credit and both entries. The credit wallet is
    # looked up before the debit so that a missing one cannot leave an
    # applied debit behind (wallets are never deleted, and SQLite serialises
    # writers, so the check holds); a refused debit deletes the transfer row.
    # Either way a refusal leaves the caller's transaction as it was.
    wallets = Wallet.__table__
    if session.execute(sa.select(wallets.c.id).where(wallets.c.id == credit_wallet_id)).first() is None:
        raise LedgerError(f"no wallet {credit_wallet_id}")
    transfers = Transfer.__table__
    transfer_id = session.execute(sa.insert(transfers).values(
        kind=kind, debit_wallet_id=debit_wallet_id, credit_wallet_id=credit_wallet_id,
        amount_kobo=amount_kobo, payment_id=payment_id, funding_id=funding_id,
        description=description, created_at=now,
    ).returning(transfers.c.id)).scalar_one()
    try:
        debit_balance, debit_version = _move(debit_wallet_id, -amount_kobo)
    except LedgerError:
        session.execute(sa.delete(transfers).where(transfers.c.id == transfer_id))
        raise
    credit_balance, credit_version = _move(credit_wallet_id, amount_kobo)
    session.execute(sa.insert(LedgerEntry.__table__).values([
        dict(transfer_id=transfer_id, wallet_id=wallet_id, delta_kobo=delta_kobo,
             balance_after_kobo=balance_after_kobo, wallet_version=wallet_version,
             created_at=now)
        for wallet_id, delta_kobo, balance_after_kobo, wallet_version in sorted([
            (debit_wallet_id, -amount_kobo, debit_balance, debit_version),
            (credit_wallet_id, amount_kobo, credit_balance, credit_version)])
    ]))
    return PostedTransfer(transfer_id, debit_balance, debit_version,
                          credit_balance, credit_version)


# --- Invariants (DESIGN.md, Money) -------------------------------------------


class Violation(NamedTuple):
    """One broken ledger invariant.

    ``invariant`` is a short key (``transfer_balanced``, ``balance_matches``,
    ``versions_gapless``, ``user_wallet_negative``, ``payment_debits``,
    ``payment_reversals``, ``reversal_amount``, ``biller_clearing_reconciles``, ...: every key
    of :data:`INVARIANTS`);
    ``subject`` names what is wrong (``wallet``, ``transfer`` or ``payment``)
    and ``subject_id`` its primary key.
    """

    invariant: str
    subject: str
    subject_id: int
    detail: str


INVARIANTS: dict[str, str] = {
    "transfer_balanced": "Every transfer has two entries that sum to zero, on its debit and credit wallets",
    "balance_matches": "Each wallet's balance equals the sum of its entries and its last balance_after",
    "versions_gapless": "Each wallet's entries are numbered 1..version with no gap",
    "user_wallet_negative": "No user wallet is below zero",
    "payment_debits": "Each payment has exactly one debit",
    "payment_debit_wallet": "Each payment's debit moves its amount from the wallet of the payment's "
                            "own user to biller_clearing",
    "payment_reversals": "A reversed payment has exactly one reversal; any other payment none",
    "reversal_amount": "Each reversal moves exactly its payment's amount from biller_clearing "
                       "back to the payment's own wallet",
    "biller_clearing_reconciles": "biller_clearing's balance equals the amounts of all payments "
                                  "not reversed (less settlements: none yet)",
    "funding_credits": "Every funding credit has one verified gateway success (a succeeded funding, "
                       "its amount, exactly one credit, from the funding wallet into the wallet "
                       "of the funding's own user)",
    "dedicated_account_owner": "Every dedicated-account (bank transfer) credit lands in the wallet of "
                               "the owner of the dedicated account the gateway names",
    "funding_wallet_reconciles": "The funding wallet's balance is minus the credited fundings "
                                 "(the money that came in through the gateway)",
    "adjustment_approved": "Each adjustment has an approval by a second admin (none can be recorded "
                           "yet, so every adjustment is reported)",
    "unexplained_movement": "Every movement into or out of a user wallet is explained by its kind's "
                            "rule: a funding credit, a payment's debit or a payment's reversal",
}

#: The rule (an :data:`INVARIANTS` key) that explains each transfer kind
#: (DESIGN.md: every kind of transfer has a rule). A new kind without an
#: entry here fails tests/test_ledger.py.
TRANSFER_RULES: dict[str, str] = {
    "funding": "funding_credits",
    "bill_payment": "payment_debit_wallet",
    "reversal": "reversal_amount",
    "adjustment": "adjustment_approved",
}


def check_invariants() -> list[Violation]:
    """Check every ledger invariant of DESIGN.md over the whole database.

    Read-only; each check is one aggregate query, so it scales with the
    database, not with Python loops over rows.

    :returns: every violation found (an empty list when the books balance).
    """
    from billvend.vending.models import REVERSED, Payment
    from billvend.ledger.models import KIND_BILL_PAYMENT, KIND_REVERSAL

    violations: list[Violation] = []
    session = db.session
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
    rows = session.execute(
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
    for transfer_id, amount_kobo, count, total, credit in rows:
        violations.append(Violation(
            "transfer_balanced", "transfer", transfer_id,
            f"{count} entries summing to {total} kobo (credit {credit}, amount {amount_kobo}),"
            " or not on the transfer's debit and credit wallets"))

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
    rows = session.execute(
        sa.select(Wallet.id, Wallet.balance_kobo, Wallet.version,
                  sa.func.coalesce(totals.c.total, 0), sa.func.coalesce(totals.c.count, 0),
                  totals.c.first_version, totals.c.last_version, last_entry.balance_after_kobo)
        .outerjoin(totals, totals.c.wallet_id == Wallet.id)
        .outerjoin(last_entry, sa.and_(last_entry.wallet_id == Wallet.id,
                                       last_entry.wallet_version == Wallet.version))
    )
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

    for wallet_id, balance in session.execute(
        sa.select(Wallet.id, Wallet.balance_kobo)
        .where(Wallet.user_id.is_not(None), Wallet.balance_kobo < 0)
    ):
        violations.append(Violation("user_wallet_negative", "wallet", wallet_id, f"balance {balance} kobo"))

    def transfers_of(kind: str):
        return (
            sa.select(Transfer.payment_id, sa.func.count(Transfer.id).label("n"),
                      sa.func.sum(Transfer.amount_kobo).label("amount"))
            .where(Transfer.kind == kind, Transfer.payment_id.is_not(None))
            .group_by(Transfer.payment_id)
            .subquery()
        )

    debits = transfers_of(KIND_BILL_PAYMENT)
    for payment_id, n, amount, expected in session.execute(
        sa.select(Payment.id, sa.func.coalesce(debits.c.n, 0), debits.c.amount, Payment.amount_kobo)
        .outerjoin(debits, debits.c.payment_id == Payment.id)
        .where(sa.or_(sa.func.coalesce(debits.c.n, 0) != 1, debits.c.amount != Payment.amount_kobo))
    ):
        violations.append(Violation(
            "payment_debits", "payment", payment_id,
            f"{n} debits totalling {amount} kobo for a {expected} kobo payment"))

    # DESIGN.md invariants 4 and 5 assume the debit came from the payer: a
    # debit from another wallet, or a payment whose wallet is not its user's,
    # would make a refund return money to the wrong person.
    clearing_id = session.scalar(
        sa.select(Wallet.id).where(Wallet.system_code == BILLER_CLEARING_WALLET))
    for transfer_id, payment_id, debit_id, credit_id, wallet_id, owner_id, user_id in session.execute(
        sa.select(Transfer.id, Payment.id, Transfer.debit_wallet_id, Transfer.credit_wallet_id,
                  Payment.wallet_id, Wallet.user_id, Payment.user_id)
        .join(Payment, Payment.id == Transfer.payment_id)
        .outerjoin(Wallet, Wallet.id == Payment.wallet_id)
        .where(Transfer.kind == KIND_BILL_PAYMENT)
        .where(sa.or_(Transfer.debit_wallet_id != Payment.wallet_id,
                      Wallet.user_id.is_(None), Wallet.user_id != Payment.user_id,
                      Transfer.credit_wallet_id != clearing_id if clearing_id is not None
                      else sa.true()))
    ):
        violations.append(Violation(
            "payment_debit_wallet", "payment", payment_id,
            f"debit transfer {transfer_id} from wallet {debit_id} to wallet {credit_id}; the payment "
            f"names wallet {wallet_id} (of user {owner_id}) and user {user_id} "
            f"(biller_clearing is wallet {clearing_id})"))

    reversals = transfers_of(KIND_REVERSAL)
    expected_reversals = sa.case((Payment.status == REVERSED, 1), else_=0)
    for payment_id, status, n in session.execute(
        sa.select(Payment.id, Payment.status, sa.func.coalesce(reversals.c.n, 0))
        .outerjoin(reversals, reversals.c.payment_id == Payment.id)
        .where(sa.func.coalesce(reversals.c.n, 0) != expected_reversals)
    ):
        violations.append(Violation(
            "payment_reversals", "payment", payment_id, f"{status} payment with {n} reversals"))

    # DESIGN.md invariant 5: a refund returns exactly what was taken, to
    # whoever it was taken from, out of the money held for the provider.
    for transfer_id, payment_id, amount, debit_id, credit_id, expected_amount, wallet_id in session.execute(
        sa.select(Transfer.id, Transfer.payment_id, Transfer.amount_kobo, Transfer.debit_wallet_id,
                  Transfer.credit_wallet_id, Payment.amount_kobo, Payment.wallet_id)
        .outerjoin(Payment, Payment.id == Transfer.payment_id)
        .where(Transfer.kind == KIND_REVERSAL)
        .where(sa.or_(Payment.id.is_(None), Transfer.amount_kobo != Payment.amount_kobo,
                      Transfer.credit_wallet_id != Payment.wallet_id,
                      Transfer.debit_wallet_id != clearing_id if clearing_id is not None
                      else sa.true()))
    ):
        violations.append(Violation(
            "reversal_amount", "transfer", transfer_id,
            f"reversal of {amount} kobo from wallet {debit_id} to wallet {credit_id} for payment "
            f"{payment_id} of {expected_amount} kobo from wallet {wallet_id} "
            f"(biller_clearing is wallet {clearing_id})"))

    # DESIGN.md invariant 6: biller_clearing holds exactly the money of
    # payments not refunded (settlements to the provider would come off it;
    # there are none yet).
    # One statement, so both sides come from one snapshot: on a live system
    # (READ COMMITTED, or SQLite reading outside a transaction) a payment
    # committed between two separate reads would look like missing money.
    if clearing_id is not None:
        owed_now = (sa.select(sa.func.coalesce(sa.func.sum(Payment.amount_kobo), 0))
                    .where(Payment.status != REVERSED).scalar_subquery())
        balance, owed = session.execute(
            sa.select(Wallet.balance_kobo, owed_now).where(Wallet.id == clearing_id)).one()
        if balance != owed:
            violations.append(Violation(
                "biller_clearing_reconciles", "wallet", clearing_id,
                f"balance {balance} kobo, but payments not reversed total {owed} kobo"))

    from billvend.funding.models import FUNDING_SUCCEEDED, Funding
    from billvend.ledger.models import FUNDING_WALLET, KIND_ADJUSTMENT, KIND_FUNDING

    funding_wallet_id = session.scalar(sa.select(Wallet.id).where(Wallet.system_code == FUNDING_WALLET))
    # DESIGN.md invariant 6: the funding wallet mirrors the outside world,
    # so it is minus every credited funding (no payouts yet). One statement,
    # one snapshot, as for biller_clearing.
    if funding_wallet_id is not None:
        credited_now = (sa.select(sa.func.coalesce(sa.func.sum(Funding.amount_kobo), 0))
                        .where(Funding.status == FUNDING_SUCCEEDED).scalar_subquery())
        balance, credited = session.execute(
            sa.select(Wallet.balance_kobo, credited_now).where(Wallet.id == funding_wallet_id)).one()
        if balance != -credited:
            violations.append(Violation(
                "funding_wallet_reconciles", "wallet", funding_wallet_id,
                f"balance {balance} kobo, but credited fundings total {credited} kobo "
                f"(expected {-credited})"))

    # DESIGN.md invariant 7: an adjustment needs a second admin's approval.
    # billvend records no approvals yet (four-eyes adjustments are not
    # built), so no adjustment is explained.
    for transfer_id, amount, debit_id, credit_id in session.execute(
        sa.select(Transfer.id, Transfer.amount_kobo, Transfer.debit_wallet_id, Transfer.credit_wallet_id)
        .where(Transfer.kind == KIND_ADJUSTMENT)
    ):
        violations.append(Violation(
            "adjustment_approved", "transfer", transfer_id,
            f"adjustment of {amount} kobo from wallet {debit_id} to wallet {credit_id} has no "
            "approval by a second admin"))

    # The catch-all (DESIGN.md, Money): a movement into or out of a user
    # wallet is explained only by its kind's rule, checked here on the
    # transfer itself; the checks above start from payments and fundings and
    # so cannot see a transfer that names neither.
    debit_wallet, credit_wallet = sa.orm.aliased(Wallet), sa.orm.aliased(Wallet)
    explained = sa.or_(
        sa.and_(Transfer.kind == KIND_FUNDING, Funding.id.is_not(None),
                Transfer.debit_wallet_id == funding_wallet_id,
                Transfer.credit_wallet_id == Funding.wallet_id),
        sa.and_(Transfer.kind == KIND_BILL_PAYMENT, Payment.id.is_not(None),
                Transfer.debit_wallet_id == Payment.wallet_id,
                Transfer.credit_wallet_id == clearing_id),
        sa.and_(Transfer.kind == KIND_REVERSAL, Payment.id.is_not(None),
                Transfer.debit_wallet_id == clearing_id,
                Transfer.credit_wallet_id == Payment.wallet_id),
    ) if funding_wallet_id is not None and clearing_id is not None else sa.false()
    for transfer_id, kind, amount, debit_id, credit_id in session.execute(
        sa.select(Transfer.id, Transfer.kind, Transfer.amount_kobo, Transfer.debit_wallet_id,
                  Transfer.credit_wallet_id)
        .join(debit_wallet, debit_wallet.id == Transfer.debit_wallet_id)
        .join(credit_wallet, credit_wallet.id == Transfer.credit_wallet_id)
        .outerjoin(Funding, Funding.id == Transfer.funding_id)
        .outerjoin(Payment, Payment.id == Transfer.payment_id)
        .where(sa.or_(debit_wallet.user_id.is_not(None), credit_wallet.user_id.is_not(None)))
        .where(sa.not_(explained))
    ):
        violations.append(Violation(
            "unexplained_movement", "transfer", transfer_id,
            f"{kind} of {amount} kobo from wallet {debit_id} to wallet {credit_id}: no rule of "
            f"its kind explains it (rule: {TRANSFER_RULES.get(kind, 'none for this kind')})"))

    from billvend.funding import services as funding  # invariant 6, funding part (issue 15)

    violations.extend(Violation("funding_credits", subject, subject_id, detail)
                      for subject, subject_id, detail in funding.check_invariants())
    violations.extend(Violation("dedicated_account_owner", subject, subject_id, detail)
                      for subject, subject_id, detail in funding.check_dedicated_account_credits())
    return violations
