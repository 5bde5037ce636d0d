"""Tables of vending: payments and their events (statuses change only through
billvend.vending.lifecycle), saved meters, the simulator's orders, the verification cache."""

from __future__ import annotations

from datetime import datetime
from typing import Optional
import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.platform.extensions import db
from billvend.platform.models import utcnow, UTCDateTime, _in
from billvend.accounts.models import User


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
    # claim time + the vending lease until the call reports its end, then
    # when the call returned (database clock; lifecycle._claim says why). A "never received" requery answer is trusted only
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
    # The id of the web request that created the payment (billvend.platform.logs), so
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
    def refund_unconfirmed(self) -> bool:
        """Refunded while the outcome was uncertain, and the last requery
        after the refund got no definite answer: flagged for an admin to
        confirm with the provider (lifecycle ``_record_recheck``)."""
        return self.status == REVERSED and self.needs_attention and not self.delivered_after_refund

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
    (billvend.vending.meter_verification). Shared by every web process; it decides
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
