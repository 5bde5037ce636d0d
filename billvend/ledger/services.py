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
from datetime import datetime
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

    The migrations seed them (0001: ``funding``, ``biller_clearing``; 0020:
    ``adjustments``, ``promotions``); this covers databases built with
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
    """The primary key of system wallet ``code`` (one of ``models.SYSTEM_WALLETS``).

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


def lock_wallets(*wallet_ids: int) -> None:
    """Lock the rows of ``wallet_ids`` until the caller's transaction ends, in
    the ledger's one order (descending id, as ``billvend_post_transfer`` takes
    them), so two callers locking crossing pairs cannot deadlock.

    For a check that must hold until the debit commits (a daily limit): call
    it first in the unit of work, then read, then :func:`post_transfer` (whose
    UPDATEs find the rows already held). On PostgreSQL ``SELECT ... FOR NO KEY
    UPDATE`` (the lock an UPDATE takes, so foreign-key checks of other rows
    are not blocked); SQLite has one writer at a time, and a no-op UPDATE
    makes this transaction that writer now, before anything is read.
    """
    ids = sorted(set(wallet_ids), reverse=True)
    if not ids:
        return
    wallets = Wallet.__table__
    session = db.session()
    if session.connection().dialect.name == "postgresql":
        session.execute(sa.select(wallets.c.id).where(wallets.c.id.in_(ids))
                        .order_by(wallets.c.id.desc()).with_for_update(key_share=True))
        return
    session.execute(sa.update(wallets).where(wallets.c.id.in_(ids))
                    .values(version=wallets.c.version))


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
    waiter (bench/hot_wallet.py measures it; docs/benchmarks.md has the figures). Errors are wrapped as SQLAlchemy would wrap them
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
    p2p_transfer_id: Optional[int] = None,
    adjustment_id: Optional[int] = None,
    description: Optional[str] = None,
    created_at: Optional[datetime] = None,
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
    :param adjustment_id: the approved adjustment an ``adjustment`` or ``bonus`` transfer
        posts (``billvend.adjustments``); on PostgreSQL see :func:`_link_on_postgresql`.
    :param amount_kobo: a positive ``int`` number of kobo, at most
        :data:`MAX_TRANSFER_KOBO`.
    :param p2p_transfer_id: the customer-to-customer transfer a ``p2p`` transfer posts.
    :param created_at: the transfer's and its entries' time (aware UTC); default
        ``utcnow()``. A caller that counts a daily limit by it passes the database
        clock it checked the limit at (``billvend.ledger.limits``).
    :returns: a :class:`PostedTransfer` (the new transfer's id, both wallets'
        new balances and versions); any ``Wallet`` already loaded in the
        session is updated to match, without a SELECT.
    :raises InsufficientFunds: the debit wallet is a user wallet whose balance
        is below ``amount_kobo``.
    :raises LedgerError: bad kind or amount (not a positive int, or above
        :data:`MAX_TRANSFER_KOBO`), same wallet twice, no such wallet.
    :raises sqlalchemy.exc.IntegrityError: a second transfer of the same
        ``kind`` for one payment or adjustment (``UNIQUE(..., kind)``), a second
        transfer for one funding or one customer-to-customer transfer.
    """
    _check_transfer(kind, debit_wallet_id, credit_wallet_id, amount_kobo)
    session = db.session()
    session.flush()  # returns at once when nothing is pending
    connection = session.connection()
    row = dict(kind=kind, debit_wallet_id=debit_wallet_id, credit_wallet_id=credit_wallet_id,
               amount_kobo=amount_kobo, payment_id=payment_id, funding_id=funding_id,
               adjustment_id=adjustment_id, p2p_transfer_id=p2p_transfer_id,
               description=description, created_at=created_at or utcnow())
    if connection.dialect.name == "postgresql":
        return _link_on_postgresql(session, _post_on_postgresql(session, connection, row),
                                   adjustment_id=adjustment_id, p2p_transfer_id=p2p_transfer_id)
    return _post_on_sqlite(session, row)


def _link_on_postgresql(session: sa.orm.Session, posted: PostedTransfer,
                        **links: Optional[int]) -> PostedTransfer:
    """PostgreSQL: name the adjustment or the customer-to-customer transfer on
    the transfer the function just inserted (its signature, frozen in
    migrations 0003/0004 and shared by every kind, has no such argument). The
    row is this transaction's alone until COMMIT, and ``UNIQUE(adjustment_id,
    kind)`` / ``UNIQUE(p2p_transfer_id)`` refuse a second posting here; the
    caller rolls back."""
    values = {column: value for column, value in links.items() if value is not None}
    if values:
        transfers = Transfer.__table__
        session.execute(sa.update(transfers).where(transfers.c.id == posted.transfer_id).values(**values))
    return posted


def _check_transfer(kind: str, debit_wallet_id: int, credit_wallet_id: int,
                    amount_kobo: int) -> None:
    """Refuse, before anything is written, what :func:`post_transfer` never posts.

    :raises LedgerError: unknown ``kind``; ``amount_kobo`` not a positive ``int`` (a ``bool``
        is refused too) or above :data:`MAX_TRANSFER_KOBO`; the same wallet on both sides.
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


def _post_on_postgresql(session: sa.orm.Session, connection: sa.Connection,
                        row: dict) -> PostedTransfer:
    """:func:`post_transfer` on PostgreSQL: one call of ``billvend_post_transfer``.

    ``row`` holds the ``transfers`` columns (kobo, UTC ``created_at``). Raises as
    :func:`post_transfer` does.
    """
    # No ORM objects here: the result arrives while a hot wallet is
    # locked, waiting for our COMMIT.
    debit_wallet_id, credit_wallet_id = row["debit_wallet_id"], row["credit_wallet_id"]
    (found, transfer_id, debit_balance, debit_version, credit_balance,
     credit_version) = _call_transfer_function(connection, {
        "debit_id": debit_wallet_id, "credit_id": credit_wallet_id,
        "amount": row["amount_kobo"], "kind": row["kind"], "payment_id": row["payment_id"],
        "funding_id": row["funding_id"], "description": row["description"],
        "now": row["created_at"],
    })
    if transfer_id is None:
        if found == 2:
            raise InsufficientFunds(debit_wallet_id, row["amount_kobo"])
        missing = [w for w in (debit_wallet_id, credit_wallet_id)
                   if session.get(Wallet, w) is None]
        raise LedgerError(f"no wallet {missing[0] if missing else credit_wallet_id}")
    if session.identity_map:
        _sync_loaded_wallet(debit_wallet_id, debit_balance, debit_version)
        _sync_loaded_wallet(credit_wallet_id, credit_balance, credit_version)
    return PostedTransfer(transfer_id, debit_balance, debit_version,
                          credit_balance, credit_version)


def _post_on_sqlite(session: sa.orm.Session, row: dict) -> PostedTransfer:
    """:func:`post_transfer` on SQLite: a few statements in the PostgreSQL function's order.

    ``row`` holds the ``transfers`` columns (kobo, UTC ``created_at``). Raises as
    :func:`post_transfer` does.
    """
    # The transfer row first (a duplicate payment or funding fails before
    # any wallet moves), then the debit (conditional), then the credit and
    # both entries. The credit wallet is looked up before the debit so that
    # a missing one cannot leave an applied debit behind (wallets are never
    # deleted, and SQLite serialises writers, so the check holds); a refused
    # debit deletes the transfer row. Either way a refusal leaves the
    # caller's transaction as it was.
    debit_wallet_id, credit_wallet_id = row["debit_wallet_id"], row["credit_wallet_id"]
    amount_kobo, now = row["amount_kobo"], row["created_at"]
    wallets = Wallet.__table__
    if session.execute(sa.select(wallets.c.id).where(wallets.c.id == credit_wallet_id)).first() is None:
        raise LedgerError(f"no wallet {credit_wallet_id}")
    transfers = Transfer.__table__
    transfer_id = session.execute(
        sa.insert(transfers).values(**row).returning(transfers.c.id)).scalar_one()
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
