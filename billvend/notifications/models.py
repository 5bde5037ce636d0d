"""The outbox table: one row per message to one recipient on one channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.platform.extensions import db
from billvend.platform.models import UTCDateTime, _in, utcnow

# Message statuses.
PENDING = "pending"
SENT = "sent"
FAILED = "failed"
MESSAGE_STATUSES = (PENDING, SENT, FAILED)

#: Context keys with this prefix (a reset or verification link) are erased
#: from the row once it is sent or given up (:func:`erase_secrets`), and
#: never shown to admins.
SECRET_PREFIX = "secret_"

EMAIL = "email"
SMS = "sms"
CHANNELS = (EMAIL, SMS)


class Message(db.Model):
    """A message to send (``pending``), delivered to its gateway (``sent``,
    with the gateway's id) or given up on (``failed``, with the last error).

    ``event_key`` names the event that caused it ("payment:42:token"); with
    ``channel`` and ``recipient`` it is unique, so a retried unit of work or a
    re-driven vend never queues the same message twice. ``context`` holds
    only plain JSON values the template needs; a value under a ``secret_``
    key (a one-time code) is blanked once the message is sent
    (``billvend.notifications.outbox.record_sent``). ``next_attempt_at`` is when a
    sender may next take it: a sender claims the row by moving it forward by
    its deadline (a dead sender's claim simply expires), a failure by the backoff.
    """

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("event_key", "channel", "recipient"),
        sa.CheckConstraint(_in("status", MESSAGE_STATUSES), name="status_known"),
        sa.CheckConstraint(_in("channel", CHANNELS), name="channel_known"),
        sa.Index("ix_messages_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    event_key: so.Mapped[str] = so.mapped_column(sa.String(120))
    channel: so.Mapped[str] = so.mapped_column(sa.String(10))
    recipient: so.Mapped[str] = so.mapped_column(sa.String(254))
    template: so.Mapped[str] = so.mapped_column(sa.String(60))
    context: so.Mapped[dict[str, Any]] = so.mapped_column(sa.JSON, default=dict)
    secret: so.Mapped[bool] = so.mapped_column(sa.Boolean, default=False)
    user_id: so.Mapped[Optional[int]] = so.mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL"), index=True)
    status: so.Mapped[str] = so.mapped_column(sa.String(10), default=PENDING)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    next_attempt_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    last_error: so.Mapped[Optional[str]] = so.mapped_column(sa.String(500))
    provider_message_id: so.Mapped[Optional[str]] = so.mapped_column(sa.String(200))
    created_at: so.Mapped[datetime] = so.mapped_column(UTCDateTime(), default=utcnow)
    sent_at: so.Mapped[Optional[datetime]] = so.mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return f"<Message {self.id} {self.event_key} {self.channel} {self.status}>"


def has_secrets(context: Optional[dict[str, Any]]) -> bool:
    """True when ``context`` has a ``secret_`` key (erased or not)."""
    return any(key.startswith(SECRET_PREFIX) for key in (context or {}))


def erase_secrets(context: dict[str, Any]) -> dict[str, Any]:
    """``context`` with every ``secret_`` value blanked ("")."""
    return {key: ("" if key.startswith(SECRET_PREFIX) else value) for key, value in context.items()}
