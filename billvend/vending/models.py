"""Database tables (SQLAlchemy 2 typed models).

Money columns are integer kobo and say so in their names. Balances change only
through ``billvend.ledger``; payment statuses only through
``billvend.payments``.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask_login import UserMixin
from werkzeug.security import check_password_hash, generate_password_hash

from billvend.extensions import db, login_manager
from billvend.pg_transfer import DROP_TRANSFER_FUNCTION_SQL, TRANSFER_FUNCTION_SQL


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
    #: Base32 TOTP secret (RFC 6238), set once the second factor is confirmed.
    totp_secret: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    totp_enabled_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    #: The last accepted TOTP time step: a code is never accepted twice.
    totp_last_step: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)

    wallet: so.Mapped[Optional["Wallet"]] = so.relationship(back_populates="user")

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password`` (werkzeug's scrypt default)."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)

    @property
    def has_second_factor(self) -> bool:
        return self.totp_secret is not None and self.totp_enabled_at is not None

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


# Funding statuses (DESIGN.md, Money in). ``initiated``: our row is committed,
# the gateway may not know it yet; ``pending``: the gateway knows it and has
# not said success or failure; ``succeeded``: credited (exactly once);
# ``failed``: the gateway said failed/abandoned, nothing credited (a later
# verified success still moves it to ``succeeded``).
FUNDING_INITIATED = "initiated"
FUNDING_PENDING = "pending"
FUNDING_SUCCEEDED = "succeeded"
FUNDING_FAILED = "failed"
FUNDING_STATUSES = (FUNDING_INITIATED, FUNDING_PENDING, FUNDING_SUCCEEDED, FUNDING_FAILED)
FUNDING_OPEN_STATUSES = (FUNDING_INITIATED, FUNDING_PENDING)


class Funding(db.Model):
    """Money arriving from outside through a payment gateway.

    ``reference`` is ours; ``gateway_reference`` is the gateway's (for a card
    checkout the same string: we hand our reference to ``initialize``; for a
    bank transfer into a dedicated account, the reference the gateway gave the
    arrival). UNIQUE (gateway, gateway_reference) makes one funding per
    gateway reference, and ``transfers.funding_id`` UNIQUE one credit per
    funding, so the database itself allows one credit per gateway reference.
    """

    __tablename__ = "fundings"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "idempotency_key"),
        sa.UniqueConstraint("gateway", "gateway_reference"),
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint(_in("status", FUNDING_STATUSES), name="status_known"),
        sa.Index("ix_fundings_status_next_verify_at", "status", "next_verify_at"),
        sa.Index("ix_fundings_created_at", "created_at"),
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
    #: ``card`` (hosted checkout) or ``bank_transfer`` (dedicated account).
    method: so.Mapped[str] = so.mapped_column(sa.String(16), default="card", server_default="card")
    #: The hosted checkout page the customer is sent to (single use).
    authorization_url: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    #: What the gateway charged us for it (``data.fees``): our cost, never
    #: taken from the customer's credit.
    fees_kobo: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    channel: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32))
    #: A bank transfer's: the gateway customer whose dedicated account the
    #: money went into, as the gateway's verify names it (never a webhook's
    #: word); the credit goes to that account's owner.
    customer_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    #: The gateway's last word on it (``success``, ``abandoned``, ...).
    gateway_status: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32))
    gateway_message: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    paid_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    credited_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    verify_attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    #: When the sweep verifies an open funding again (database clock).
    next_verify_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    needs_attention: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    attention_reason: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    updated_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    user: so.Mapped[User] = so.relationship()

    def __repr__(self) -> str:
        return f"<Funding {self.reference} {self.status}>"


class DedicatedAccount(db.Model):
    """A customer's dedicated virtual bank account at the gateway: money sent
    to it arrives only as a webhook and is credited to ``user_id``'s wallet."""

    __tablename__ = "dedicated_accounts"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), unique=True)
    gateway: so.Mapped[str] = so.mapped_column(sa.String(32))
    customer_code: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    account_number: so.Mapped[str] = so.mapped_column(sa.String(20), unique=True)
    account_name: so.Mapped[str] = so.mapped_column(sa.String(200))
    bank_name: so.Mapped[str] = so.mapped_column(sa.String(100))
    bank_slug: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    user: so.Mapped[User] = so.relationship()


class GatewayEvent(db.Model):
    """A webhook the gateway sent us, stored once per (gateway, event,
    reference, body) whatever the number of deliveries (the gateway has no
    event id: Paystack's docs say to de-duplicate on event and reference).
    The body's digest is part of the key so that a delivery saying something
    else about the same reference (one naming another customer, say) is its
    own row, processed on its own: a flagged one never hides the genuine one
    (issue 20)."""

    __tablename__ = "gateway_events"
    __table_args__ = (
        sa.UniqueConstraint("gateway", "event", "reference", "payload_sha256"),
        sa.Index("ix_gateway_events_received_at", "received_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    gateway: so.Mapped[str] = so.mapped_column(sa.String(32))
    event: so.Mapped[str] = so.mapped_column(sa.String(64))
    reference: so.Mapped[str] = so.mapped_column(sa.String(100))
    #: The raw body of the first delivery, as signed.
    payload: so.Mapped[str] = so.mapped_column(sa.Text)
    #: Hex SHA-256 of the raw body.
    payload_sha256: so.Mapped[str] = so.mapped_column(sa.String(64))
    deliveries: so.Mapped[int] = so.mapped_column(default=1, server_default="1")
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("fundings.id"), index=True)
    #: What processing it did (``credited``, ``already credited``, ``unknown reference``...).
    outcome: so.Mapped[Optional[str]] = so.mapped_column(sa.String(300))
    needs_attention: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    last_received_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    processed_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())

    funding: so.Mapped[Optional[Funding]] = so.relationship()


class ReconciliationRun(db.Model):
    """One comparison of the gateway's transactions for a day (Africa/Lagos)
    with our fundings."""

    __tablename__ = "reconciliation_runs"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    day: so.Mapped[date] = so.mapped_column(sa.Date, index=True)
    gateway: so.Mapped[str] = so.mapped_column(sa.String(32))
    gateway_transactions: so.Mapped[int] = so.mapped_column(default=0)
    matched: so.Mapped[int] = so.mapped_column(default=0)
    credited: so.Mapped[int] = so.mapped_column(default=0)
    flagged: so.Mapped[int] = so.mapped_column(default=0)
    error: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    started_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    finished_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())

    items: so.Mapped[list["ReconciliationItem"]] = so.relationship(
        back_populates="run", order_by="ReconciliationItem.id")


class ReconciliationItem(db.Model):
    """Something a reconciliation run did or found: ``credited`` (a gateway
    success we had not credited), or a flag for an admin
    (``unknown_reference``, ``amount_mismatch``, ``credit_without_success``)."""

    __tablename__ = "reconciliation_items"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    run_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("reconciliation_runs.id"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(32))
    gateway_reference: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("fundings.id"), index=True)
    gateway_amount_kobo: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    detail: so.Mapped[str] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    run: so.Mapped[ReconciliationRun] = so.relationship(back_populates="items")
    funding: so.Mapped[Optional[Funding]] = so.relationship()


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
    # What the disco returned with a delivery, when it did (reference/vtpass-api.md,
    # "pay / requery, prepaid, extra fields"): shown to the customer on success.
    tariff: so.Mapped[Optional[str]] = so.mapped_column(sa.String(100))
    #: Arrears the disco deducted from this purchase before computing units.
    debt_kobo: so.Mapped[Optional[int]] = so.mapped_column(sa.BigInteger)
    #: Key-change tokens (STS KCT): entered on the meter, in order, before the token.
    kct1: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    kct2: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    #: The disco's own reference for the order (VTpass ``exchangeReference``), for disputes.
    exchange_reference: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    provider_code: so.Mapped[Optional[str]] = so.mapped_column(sa.String(40))
    provider_message: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    vend_attempts: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    requery_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    needs_attention: so.Mapped[bool] = so.mapped_column(
        default=False, server_default=sa.false()
    )
    claimed_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    # The last moment a ``pay`` for this reference could still be in flight:
    # claim time + the call's hard deadline, or when the call returned
    # (database clock). A "never received" requery answer is trusted only
    # PROVIDER_NOT_FOUND_GRACE_SECONDS after it (payments.not_found_trusted).
    pay_in_flight_until: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    next_requery_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    #: The pay request was fully sent and the provider's answer had begun to
    #: arrive when the call ended (a deadline mid-answer): the provider had
    #: the order, so a "never received" (015) is never believed for it.
    pay_answer_began: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    # Refunded while the outcome was uncertain (on "never received", or an
    # admin's refund of an ``unknown`` payment): the provider is asked again
    # REQUERY_AFTER_REFUND_DELAYS_SECONDS after the refund, by the sweep.
    #: When the next such requery is due (None: none left).
    recheck_after_refund_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime(), index=True)
    #: How many of those requeries were made.
    rechecks_after_refund: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    #: A delivery was reported after the refund: the customer holds the
    #: money back AND (unknowingly) a token; an admin must settle it.
    delivered_after_refund: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    #: The proof of that late delivery, for admins only: never on a page,
    #: receipt, search or statement of the customer's.
    late_token: so.Mapped[Optional[str]] = so.mapped_column(sa.String(20))
    late_receipt_reference: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
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
    def shows_delivery(self) -> bool:
        """May the customer see this payment's proof of delivery (token,
        key-change tokens, units, the disco's reference)? Only once it is
        ``successful``: a proof the provider reported after the payment
        failed or was refunded is for admins to settle, never shown to the
        customer (issue 20), so no one holds the money back AND a token."""
        return self.status == SUCCESSFUL

    @property
    def token_groups(self) -> Optional[str]:
        """The 20-digit token as five groups of four (``1234-5678-...``)."""
        return group_digits(self.token)

    @property
    def late_token_groups(self) -> Optional[str]:
        """The token reported after a refund, grouped (admin pages only)."""
        return group_digits(self.late_token)

    @property
    def kct_groups(self) -> list[str]:
        """The key-change tokens in the order they are entered, grouped in fours."""
        return [group_digits(kct) for kct in (self.kct1, self.kct2) if kct]

    def __repr__(self) -> str:
        return f"<Payment {self.reference} {self.status}>"


def group_digits(digits: Optional[str]) -> Optional[str]:
    """A 20-digit STS token as five groups of four (``1234-5678-...``), as
    meters and receipts print it (reference/vtpass-api.md, Tokens)."""
    if not digits:
        return None
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


class SavedMeter(db.Model):
    """A meter a customer has bought for (a beneficiary), saved on a successful
    purchase only. One row per (user, disco, meter number)."""

    __tablename__ = "saved_meters"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "service_id", "meter_number"),
        sa.CheckConstraint(_in("meter_type", METER_TYPES), name="meter_type_known"),
        sa.Index("ix_saved_meters_user_id_last_paid_at", "user_id", "last_paid_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    service_id: so.Mapped[str] = so.mapped_column(sa.String(40))
    meter_type: so.Mapped[str] = so.mapped_column(sa.String(16))
    meter_number: so.Mapped[str] = so.mapped_column(sa.String(20))
    #: The name on the meter as the disco verified it.
    customer_name: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    #: The customer's own name for it ("Mum's flat"); None until they set one.
    nickname: so.Mapped[Optional[str]] = so.mapped_column(sa.String(60))
    last_amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    last_phone: so.Mapped[str] = so.mapped_column(sa.String(20))
    purchase_count: so.Mapped[int] = so.mapped_column(default=1, server_default="1")
    last_paid_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    @property
    def label(self) -> str:
        """What the customer calls this meter: the nickname, else the name on it."""
        return self.nickname or self.customer_name or self.meter_number

    def __repr__(self) -> str:
        return f"<SavedMeter {self.service_id} {self.meter_number}>"


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
    # Deferred to COMMIT: see billvend.pg_transfer (no KEY SHARE on a hot
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


# create_all / drop_all (tests, benchmarks) make and drop the PostgreSQL
# transfer function (billvend.pg_transfer) with the tables.
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
    #: Set for an admin action on a funding (issue 15).
    funding_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("fundings.id"), index=True
    )
    action: so.Mapped[str] = so.mapped_column(sa.String(40))
    reason: so.Mapped[str] = so.mapped_column(sa.String(500))
    result: so.Mapped[str] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    admin: so.Mapped[User] = so.relationship()
    payment: so.Mapped[Optional[Payment]] = so.relationship()
    funding: so.Mapped[Optional[Funding]] = so.relationship()


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


class Lease(db.Model):
    """A named lease one process holds until ``expires_at`` (database clock):
    the sweep's "one sweeper at a time" lock (``billvend.leases``). A holder
    that dies simply stops renewing; the lease then expires by itself."""

    __tablename__ = "leases"

    name: so.Mapped[str] = so.mapped_column(sa.String(40), primary_key=True)
    holder: so.Mapped[Optional[str]] = so.mapped_column(sa.String(120))
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())


class UserSession(db.Model):
    """One browser session (billvend.sessions): the cookie holds a random id,
    this row holds its SHA-256 and the session's data. Deleting the row ends
    the session wherever its cookie is replayed."""

    __tablename__ = "user_sessions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    id_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    #: The signed-in account; NULL for an anonymous visitor (CSRF token, flashes).
    user_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    data: so.Mapped[str] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    last_seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    #: Idle deadline, pushed forward as the session is used.
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)
    #: Hard deadline from the sign-in, never pushed forward.
    absolute_expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    ip_address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(45))
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    #: The selector of the device's remember token this session belongs to
    #: (started with it, or restored from it): logging out on that device
    #: ends every session of the token, a copy's included.
    remember_selector: so.Mapped[Optional[str]] = so.mapped_column(sa.String(32), index=True)
    #: Password or code re-entries this session has used up (a right one is
    #: given back); counted here, with one UPDATE each, so requests sent in
    #: parallel cannot each see the same count (billvend.security.reentry).
    reauth_failures: so.Mapped[int] = so.mapped_column(sa.Integer, default=0, server_default="0")


class SecurityEvent(db.Model):
    """Something the account's owner should know happened to it: a session
    ended after too many wrong password or code re-entries
    (``reauth_locked``), a copied remember token noticed (``remember_theft``).
    ``notified_at`` is set once the owner has been told at a sign-in."""

    __tablename__ = "security_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    ip_address: so.Mapped[Optional[str]] = so.mapped_column(sa.String(45))
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    notified_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())


class RememberToken(db.Model):
    """"Keep me signed in" on one device: the cookie holds ``selector.validator``;
    this row holds the selector and the validator's SHA-256. Rotated each time
    it starts a session, deleted at logout and on password change."""

    __tablename__ = "remember_tokens"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    selector: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64))
    #: The validator before the last rotation, accepted for a few seconds so
    #: two requests racing on one old cookie do not sign the device out.
    previous_token_hash: so.Mapped[Optional[str]] = so.mapped_column(sa.String(64))
    rotated_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    user_agent: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))


class RecoveryCode(db.Model):
    """A one-time second-factor recovery code, stored as its SHA-256 (the
    codes are random, 50 bits, so a fast hash is enough)."""

    __tablename__ = "recovery_codes"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    used_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())


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
    #: On ``invalid`` because the meter is of the other type: that type (the
    #: pay page's one-tap switch needs it from the cache too).
    other_meter_type: so.Mapped[Optional[str]] = so.mapped_column(sa.String(16))
    verified_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), index=True)


class WorkerHeartbeat(db.Model):
    """The last sign of life of each worker process (admin overview, /metrics),
    written by the consumer's scheduler with the database clock."""

    __tablename__ = "worker_heartbeats"

    name: so.Mapped[str] = so.mapped_column(sa.String(200), primary_key=True)
    concurrency: so.Mapped[int] = so.mapped_column()
    seen_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
