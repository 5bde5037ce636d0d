"""Tables of transfers between customers: ``p2p_transfers``."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.accounts.models import User
from billvend.platform.extensions import db
from billvend.platform.models import UTCDateTime, utcnow

#: The longest note a sender may add (shown to both sides and in messages).
NOTE_MAX_LENGTH = 140


def masked_name(user: Optional[User]) -> str:
    """What one customer sees of another: the first name and the initial of
    the last ("Ada Obi" -> "Ada O."); a one-word name as it is; no name: the
    email's first letter and its domain ("a***@example.com")."""
    if user is None:
        return "a billvend customer"
    parts = (user.full_name or "").split()
    if len(parts) >= 2:
        return f"{parts[0]} {parts[-1][0].upper()}."
    if parts:
        return parts[0]
    local, _, domain = user.email.partition("@")
    return f"{local[:1]}***@{domain}"


class P2PTransfer(db.Model):
    """One customer-to-customer transfer, written in the same unit of work as
    its ONE ledger transfer of kind ``p2p`` (``transfers.p2p_transfer_id``).

    UNIQUE (sender, idempotency key): a resubmitted form finds the first
    transfer instead of sending again. ``reference`` is what both sides quote
    (the receipt page ``/wallet/transfers/<reference>``).
    """

    __tablename__ = "p2p_transfers"
    __table_args__ = (
        sa.UniqueConstraint("sender_id", "idempotency_key"),
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint("sender_id <> recipient_id", name="distinct_users"),
        sa.Index("ix_p2p_transfers_sender_id_recipient_id", "sender_id", "recipient_id"),
        sa.Index("ix_p2p_transfers_recipient_id", "recipient_id"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    reference: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    sender_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    recipient_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    sender_wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    recipient_wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    note: so.Mapped[Optional[str]] = so.mapped_column(sa.String(NOTE_MAX_LENGTH))
    idempotency_key: so.Mapped[str] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)

    sender: so.Mapped[User] = so.relationship(foreign_keys=[sender_id])
    recipient: so.Mapped[User] = so.relationship(foreign_keys=[recipient_id])

    @property
    def sender_name(self) -> str:
        """The sender as the recipient sees them ("Ada O.")."""
        return masked_name(self.sender)

    @property
    def recipient_name(self) -> str:
        """The recipient as the sender sees them ("Bola A.")."""
        return masked_name(self.recipient)
