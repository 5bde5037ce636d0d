"""Tables of admin adjustments (issue 27): one row per proposed credit, debit or bonus
to a customer's wallet, decided by a second admin (four eyes)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.accounts.models import User
from billvend.ledger.models import Wallet
from billvend.platform.extensions import db
from billvend.platform.models import UTCDateTime, _in

# Directions: what the adjustment does to the customer's wallet.
#: ``adjustments`` -> customer (kind ``adjustment``): a correction in the customer's favour.
CREDIT = "credit"


#: customer -> ``adjustments`` (kind ``adjustment``): a correction against the customer.
DEBIT = "debit"


#: ``promotions`` -> customer (kind ``bonus``): goodwill.
BONUS = "bonus"


DIRECTIONS = (CREDIT, DEBIT, BONUS)


# Statuses. ``proposed``: waiting for a second admin (until ``expires_at``, database
# clock); ``approved``: posted through the ledger, exactly once; ``rejected``: a second
# admin said no; ``expired``: nobody decided within the window (set when someone tries
# to decide it late; until then a proposal past ``expires_at`` is shown as expired).
PROPOSED = "proposed"


APPROVED = "approved"


REJECTED = "rejected"


EXPIRED = "expired"


STATUSES = (PROPOSED, APPROVED, REJECTED, EXPIRED)


class Adjustment(db.Model):
    """A credit, debit or bonus an admin proposes for one customer's wallet.

    Only a second admin's approval posts it (``billvend.adjustments.services``); the
    ledger transfer names it in ``transfers.adjustment_id`` (UNIQUE with the kind, so
    the database posts it once) and it names the transfer in ``transfer_id``.
    """

    __tablename__ = "adjustments"
    __table_args__ = (
        sa.CheckConstraint("amount_kobo > 0", name="amount_positive"),
        sa.CheckConstraint(_in("direction", DIRECTIONS), name="direction_known"),
        sa.CheckConstraint(_in("status", STATUSES), name="status_known"),
        # Four eyes in the schema too: the decider is never the proposer.
        sa.CheckConstraint("decided_by_id IS NULL OR decided_by_id <> proposed_by_id",
                           name="four_eyes"),
        # An approval has its posting; nothing else has one.
        sa.CheckConstraint("(status = 'approved') = (transfer_id IS NOT NULL)",
                           name="posted_iff_approved"),
        sa.Index("ix_adjustments_status_expires_at", "status", "expires_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    wallet_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("wallets.id"))
    direction: so.Mapped[str] = so.mapped_column(sa.String(10))
    amount_kobo: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    reason: so.Mapped[str] = so.mapped_column(sa.String(500))
    status: so.Mapped[str] = so.mapped_column(sa.String(10), default=PROPOSED)
    proposed_by_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    proposed_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    #: ``proposed_at`` + ``ADJUSTMENT_TTL_SECONDS`` (24 h), both on the database clock.
    expires_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime())
    decided_by_id: so.Mapped[Optional[int]] = so.mapped_column(sa.ForeignKey("users.id"))
    decided_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())
    decision_reason: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    #: The ledger transfer that posted it (set with ``approved``). Not a foreign key:
    #: ``transfers.adjustment_id`` is the one the database enforces (a pair of foreign
    #: keys both ways would make a cycle the tables cannot be created or dropped in).
    transfer_id: so.Mapped[Optional[int]] = so.mapped_column(unique=True)

    user: so.Mapped[User] = so.relationship(foreign_keys=[user_id])
    wallet: so.Mapped[Wallet] = so.relationship()
    proposed_by: so.Mapped[User] = so.relationship(foreign_keys=[proposed_by_id])
    decided_by: so.Mapped[Optional[User]] = so.relationship(foreign_keys=[decided_by_id])

    def shown_status(self, now: datetime) -> str:
        """The status to show at ``now`` (database clock): a proposal past its
        ``expires_at`` is ``expired`` even before anyone tried to decide it."""
        if self.status == PROPOSED and self.expires_at <= now:
            return EXPIRED
        return self.status

    def __repr__(self) -> str:
        return f"<Adjustment {self.id} {self.direction} {self.amount_kobo} {self.status}>"
