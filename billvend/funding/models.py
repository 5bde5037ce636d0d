"""Tables of funding: fundings, dedicated accounts, gateway events, reconciliation runs."""

from __future__ import annotations

from datetime import date, datetime
from typing import Optional
import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.platform.extensions import db
from billvend.platform.models import utcnow, UTCDateTime, _in
from billvend.accounts.models import User


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
