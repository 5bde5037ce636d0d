"""Database tables (SQLAlchemy 2 typed models).

Money columns are integer kobo and say so in their names. Balances change only
through ``billvend.ledger``; payment statuses only through
``billvend.payments``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from billvend.extensions import db, login_manager


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no offset, so a naive value read back is UTC by construction.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None:
            if value.tzinfo is None:
                raise ValueError("naive datetime; use billvend.models.utcnow()")
            value = value.astimezone(timezone.utc)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


# Payment statuses (DESIGN.md, Vending).
PENDING = "pending"
VENDING = "vending"
SUCCESSFUL = "successful"
FAILED = "failed"
REVERSED = "reversed"
UNKNOWN = "unknown"
PAYMENT_STATUSES = (PENDING, VENDING, SUCCESSFUL, FAILED, REVERSED, UNKNOWN)
FINAL_STATUSES = frozenset({SUCCESSFUL, REVERSED})

PREPAID = "prepaid"
POSTPAID = "postpaid"
METER_TYPES = (PREPAID, POSTPAID)

# Transfer kinds.
KIND_FUNDING = "funding"
KIND_BILL_PAYMENT = "bill_payment"
KIND_REVERSAL = "reversal"
KIND_ADJUSTMENT = "adjustment"
TRANSFER_KINDS = (KIND_FUNDING, KIND_BILL_PAYMENT, KIND_REVERSAL, KIND_ADJUSTMENT)

# System wallets (no user).
FUNDING_WALLET = "funding"
BILLER_CLEARING_WALLET = "biller_clearing"
SYSTEM_WALLETS = (FUNDING_WALLET, BILLER_CLEARING_WALLET)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    email: so.Mapped[str] = so.mapped_column(sa.String(254), unique=True)
    password_hash: so.Mapped[str] = so.mapped_column(sa.String(256))
    # Nullable: accounts made before signup asked for them are asked once.
    full_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(120))
    #: Nigerian mobile number the tokens are sent to, as the customer typed it.
    phone: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    is_admin: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    wallet: so.Mapped[Optional["Wallet"]] = so.relationship(back_populates="user")

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password`` (werkzeug's scrypt default)."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.email}>"


@login_manager.user_loader
def load_user(user_id: str) -> Optional[User]:
    return db.session.get(User, int(user_id))


class Wallet(db.Model):
    """A balance: a user's wallet, or a system wallet named by ``system_code``.

    ``version`` increments with every ledger entry on the wallet; it is the
    ORM's optimistic-locking column and the sequence number of the wallet's
    statement (UNIQUE with the wallet on ``ledger_entries``).
    """

    __tablename__ = "wallets"
    __table_args__ = (
        sa.CheckConstraint(
            "user_id IS NULL OR balance_kobo >= 0", name="user_wallet_not_negative"
        ),
        sa.CheckConstraint(
            "(user_id IS NULL) <> (system_code IS NULL)", name="owner_xor_system_code"
        ),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id"), unique=True
    )
    system_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32), unique=True)
    balance_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger, default=0)
    version: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    user: so.Mapped[Optional[User]] = so.relationship(back_populates="wallet")

    # version_generator=False: the ledger bumps ``version`` itself, in the same
    # conditional UPDATE that moves the balance; the ORM still checks it on
    # any ORM flush of a loaded wallet, so a stale object can never overwrite.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}

    @property
    def label(self) -> str:
        return self.system_code or (self.user.email if self.user else f"wallet {self.id}")

    def __repr__(self) -> str:
        return f"<Wallet {self.id} {self.label} {self.balance_kobo}>"


class Funding(db.Model):
    """Money arriving from outside through a payment gateway."""

    __tablename__ = "fundings"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "idempotency_key"),
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    reference: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    gateway: so.Mapped[str] = so.mapped_column(sa.String(32))
    gateway_reference: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    status: so.Mapped[str] = so.mapped_column(sa.String(16))
    idempotency_key: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    user: so.Mapped[User] = so.relationship()


class Payment(db.Model):
    """One electricity purchase. ``reference`` is the provider ``request_id``."""

    __tablename__ = "payments"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "idempotency_key"),
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint(_in("status", PAYMENT_STATUSES), name="status_known"),
        sa.CheckConstraint(_in("meter_type", METER_TYPES), name="meter_type_known"),
        sa.Index("ix_payments_status_updated_at", "status", "updated_at"),
        sa.Index("ix_payments_user_id_created_at", "user_id", "created_at"),
        sa.Index("ix_payments_created_at", "created_at"),
        sa.Index("ix_payments_meter_number", "meter_number"),
        # Admin list filters, each ending in the list's order (created_at).
        sa.Index("ix_payments_status_created_at", "status", "created_at"),
        sa.Index("ix_payments_service_id_created_at", "service_id", "created_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    reference: so.Mapped[str] = so.mapped_column(sa.String(40), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    service_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    meter_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    meter_number: so.Mapped[str] = so.mapped_column(sa.String(20))
    phone: so.Mapped[str] = so.mapped_column(sa.String(20))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default=PENDING)
    idempotency_key: so.Mapped[str] = so.mapped_column(sa.String(64))
    customer_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    customer_address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    token: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    units_kwh: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    receipt_reference: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    provider_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(40))
    provider_message: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    vend_attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    requery_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    needs_attention: so.Mapped[bool] = so.mapped_column(
        default=False, server_default=sa.false()
    )
    claimed_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    next_requery_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    finalized_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    # The id of the web request that created the payment (billvend.logs), so
    # the logs of its vend, requery and reverse tasks carry it too.
    request_id: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))

    user: so.Mapped[User] = so.relationship()
    events: so.Mapped[list["PaymentEvent"]] = so.relationship(
        back_populates="payment", order_by="PaymentEvent.id"
    )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def token_groups(self) -> Optional[str]:
        """The 20-digit token as five groups of four (``1234-5678-...``)."""
        if not self.token:
            return None
        return "-".join(self.token[i : i + 4] for i in range(0, len(self.token), 4))

    def __repr__(self) -> str:
        return f"<Payment {self.reference} {self.status}>"


class PaymentEvent(db.Model):
    """One status change (or attempt) of a payment: the payment's timeline."""

    __tablename__ = "payment_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    payment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("payments.id"), index=True)
    from_status: so.Mapped[Optional[str]] = so.mapped_column(sa.String(16))
    to_status: so.Mapped[str] = so.mapped_column(sa.String(16))
    provider_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(40))
    message: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    payment: so.Mapped[Payment] = so.relationship(back_populates="events")


class Transfer(db.Model):
    """One movement of money between two wallets (two ledger entries)."""

    __tablename__ = "transfers"
    __table_args__ = (
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint("debit_wallet_id <> credit_wallet_id", name="distinct_wallets"),
        sa.CheckConstraint(_in("kind", TRANSFER_KINDS), name="kind_known"),
        # At most one debit and one reversal per payment, enforced by the
        # database as well as by the state machine (DESIGN.md invariant 4).
        sa.UniqueConstraint("payment_id", "kind"),
        sa.UniqueConstraint("funding_id"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(20))
    # Deferred to COMMIT: see TRANSFER_FUNCTION_SQL (no KEY SHARE on a hot
    # wallet before the transfer holds it).
    debit_wallet_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("wallets.id", deferrable=True, initially="DEFERRED"))
    credit_wallet_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("wallets.id", deferrable=True, initially="DEFERRED"))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    payment_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("payments.id"))
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("fundings.id"))
    description: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    entries: so.Mapped[list["LedgerEntry"]] = so.relationship(
        back_populates="transfer", order_by="LedgerEntry.id"
    )
    payment: so.Mapped[Optional[Payment]] = so.relationship()
    funding: so.Mapped[Optional[Funding]] = so.relationship()


class LedgerEntry(db.Model):
    """One wallet's side of a transfer; a wallet's entries are its statement."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        sa.UniqueConstraint("wallet_id", "wallet_version"),
        sa.CheckConstraint("delta_kobo <> 0", name="delta_nonzero"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    transfer_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("transfers.id"), index=True)
    wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    delta_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    balance_after_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    wallet_version: so.Mapped[int] = so.mapped_column()
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    transfer: so.Mapped[Transfer] = so.relationship(back_populates="entries")
    wallet: so.Mapped[Wallet] = so.relationship()


# The PostgreSQL transfer as one server-side function (billvend.ledger.
# post_transfer calls it; SQLite has no functions and runs the steps from
# Python). Migrations 0003_transfer_function and 0004_transfer_lock_order
# create the same function, so a change here needs a new migration too
# (tests/test_migrations.py compares the bodies).
#
# The shape comes from one rule: a wallet row stays locked from its UPDATE
# until COMMIT, and other writers of a hot wallet queue for exactly that
# long, so do as little as possible while holding the hot row
# (bench/hot_wallet.py measures it against a bare conditional UPDATE):
#
# 1. The transfer row goes in first, before any wallet is locked. Its UNIQUE
#    checks (one debit and one reversal per payment, one transfer per
#    funding) run there, so a duplicate fails without touching a wallet.
#    Its two wallet foreign keys are DEFERRABLE INITIALLY DEFERRED: checked
#    at COMMIT, when this transaction holds both rows, because an immediate
#    check takes KEY SHARE on a wallet another transfer may hold, which
#    PostgreSQL records as a MultiXact on the hottest row there is.
# 2. Each wallet is locked by its own UPDATE, in DESCENDING id order. One
#    fixed order means crossing transfers cannot deadlock; descending means
#    the system wallets (funding, biller_clearing: made first, so the lowest
#    ids, and touched by every funding and payment) are locked last and held
#    for the shortest time. The debit is a conditional UPDATE (balance check
#    and change in one statement; the CHECK constraint backs it).
# 3. The two ledger entries, carrying the balances and versions the UPDATEs
#    returned: the only writes left under the last lock.
#
# A refusal (the debit wallet cannot cover the amount, or a wallet does not
# exist) leaves nothing behind: a wallet already credited or debited is put
# back (balance and version) and the transfer row deleted, so the caller may
# still commit its transaction. Then ``transfer_id`` is NULL and
# ``found_wallets`` says how many of the two wallets exist (2: insufficient
# funds). Earlier shapes, measured (bench/hot_wallet.py, ledger /
# ceiling-core at 8 threads): data-modifying CTEs in one statement
# (EvalPlanQual re-fetch of every row after a lock wait: 0.42), PERFORM ...
# FOR NO KEY UPDATE of both wallets in ascending order, then everything
# (0.60); this shape, with the call on a DBAPI cursor: 0.75.
TRANSFER_FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION billvend_post_transfer(
    p_kind VARCHAR, p_debit_id INTEGER, p_credit_id INTEGER, p_amount_kobo BIGINT,
    p_payment_id INTEGER, p_funding_id INTEGER, p_description VARCHAR, p_now TIMESTAMPTZ,
    OUT found_wallets INTEGER, OUT transfer_id INTEGER,
    OUT debit_balance_kobo BIGINT, OUT debit_version INTEGER,
    OUT credit_balance_kobo BIGINT, OUT credit_version INTEGER)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO transfers (kind, debit_wallet_id, credit_wallet_id, amount_kobo,
                           payment_id, funding_id, description, created_at)
    VALUES (p_kind, p_debit_id, p_credit_id, p_amount_kobo,
            p_payment_id, p_funding_id, p_description, p_now)
    RETURNING id INTO transfer_id;

    IF p_debit_id > p_credit_id THEN
        -- System wallets may run negative: funding mirrors all money that came in.
        UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo, version = version + 1
         WHERE id = p_debit_id AND (user_id IS NULL OR balance_kobo >= p_amount_kobo)
        RETURNING balance_kobo, version INTO debit_balance_kobo, debit_version;
        IF FOUND THEN
            UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo, version = version + 1
             WHERE id = p_credit_id
            RETURNING balance_kobo, version INTO credit_balance_kobo, credit_version;
            IF NOT FOUND THEN
                UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo,
                                   version = version - 1
                 WHERE id = p_debit_id;
            END IF;
        END IF;
    ELSE
        UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo, version = version + 1
         WHERE id = p_credit_id
        RETURNING balance_kobo, version INTO credit_balance_kobo, credit_version;
        IF FOUND THEN
            UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo, version = version + 1
             WHERE id = p_debit_id AND (user_id IS NULL OR balance_kobo >= p_amount_kobo)
            RETURNING balance_kobo, version INTO debit_balance_kobo, debit_version;
            IF NOT FOUND THEN
                UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo,
                                   version = version - 1
                 WHERE id = p_credit_id;
            END IF;
        END IF;
    END IF;

    IF debit_version IS NULL OR credit_version IS NULL THEN
        DELETE FROM transfers WHERE id = transfer_id;
        SELECT count(*) INTO found_wallets FROM wallets WHERE id IN (p_debit_id, p_credit_id);
        transfer_id := NULL;
        debit_balance_kobo := NULL;
        debit_version := NULL;
        credit_balance_kobo := NULL;
        credit_version := NULL;
        RETURN;
    END IF;
    found_wallets := 2;

    INSERT INTO ledger_entries (transfer_id, wallet_id, delta_kobo, balance_after_kobo,
                                wallet_version, created_at)
    VALUES (transfer_id, p_debit_id, -p_amount_kobo, debit_balance_kobo, debit_version, p_now),
           (transfer_id, p_credit_id, p_amount_kobo, credit_balance_kobo, credit_version, p_now);
END
$$
"""
DROP_TRANSFER_FUNCTION_SQL = "DROP FUNCTION IF EXISTS billvend_post_transfer"

# create_all / drop_all (tests, benchmarks) make and drop it with the tables.
sa.event.listen(LedgerEntry.__table__, "after_create",
                sa.DDL(TRANSFER_FUNCTION_SQL.replace("%", "%%")).execute_if(dialect="postgresql"))
sa.event.listen(LedgerEntry.__table__, "before_drop",
                sa.DDL(DROP_TRANSFER_FUNCTION_SQL).execute_if(dialect="postgresql"))


class AdminAction(db.Model):
    """An admin's action on a payment: append-only audit log."""

    __tablename__ = "admin_actions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    admin_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    payment_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("payments.id"), index=True
    )
    action: so.Mapped[str] = so.mapped_column(sa.String(40))
    reason: so.Mapped[str] = so.mapped_column(sa.String(500))
    result: so.Mapped[str] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    admin: so.Mapped[User] = so.relationship()
    payment: so.Mapped[Optional[Payment]] = so.relationship()


class SimulatorOrder(db.Model):
    """The simulated provider's own order book, keyed by ``request_id``.

    It belongs to the simulator, not to billvend's books: it lets a requery
    from any worker process see what an earlier ``vend`` call did, as a real
    provider's records would.
    """

    __tablename__ = "simulator_orders"

    request_id: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True)
    service_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    meter_number: so.Mapped[str] = so.mapped_column(sa.String(20))
    meter_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    status: so.Mapped[str] = so.mapped_column(sa.String(16))
    code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(40))
    token: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    units_kwh: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    pay_calls: so.Mapped[int] = so.mapped_column(default=1)
    requery_calls: so.Mapped[int] = so.mapped_column(default=0)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)


class MeterVerificationCache(db.Model):
    """What the provider said about a meter, reused until ``expires_at``
    (billvend.meter_verification). Shared by every web process; it decides
    nothing about money (the vend does), it only spares the customer a
    second wait for the name on the meter."""

    __tablename__ = "meter_verifications"
    __table_args__ = (
        sa.CheckConstraint("status IN ('valid', 'invalid')", name="status_known"),
    )

    service_id: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True)
    meter_type: so.Mapped[str] = so.mapped_column(sa.String(16), primary_key=True)
    meter_number: so.Mapped[str] = so.mapped_column(sa.String(20), primary_key=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(16))
    customer_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    min_purchase_kobo: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    message: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    verified_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)


class WorkerHeartbeat(db.Model):
    """The last sign of life of each worker process (admin overview, /metrics),
    written by the consumer's scheduler with the database clock."""

    __tablename__ = "worker_heartbeats"

    name: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    concurrency: so.Mapped[int] = so.mapped_column()
    seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
