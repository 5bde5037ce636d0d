"""The outbox's steps around one send, each its own unit of work (services
never commit: the caller runs them with ``transactions.run``), and the
queries of the sweep and the admin pages."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.notifications.models import FAILED, PENDING, SENT, Message
from billvend.notifications.services import queue_after_commit
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.text import clean_text

#: Most messages one sweep hands over (the rest wait for the next sweep).
SWEEP_BATCH = 2000


def claim(message_id: int) -> Optional[Message]:
    """Take a due ``pending`` message for one send: count the attempt and
    move ``next_attempt_at`` ``NOTIFY_CLAIM_SECONDS`` ahead, so no other
    sender takes it meanwhile and a dead sender's claim expires by itself.

    :returns: the message (its columns loaded, detached from the session so
        the send reads it outside the transaction), or None when it is not
        pending, not due, or another sender claimed it first.
    """
    now = db_now()
    taken = db.session.execute(
        sa.update(Message)
        .where(Message.id == message_id, Message.status == PENDING, Message.next_attempt_at <= now)
        .values(attempts=Message.attempts + 1,
                next_attempt_at=now + timedelta(seconds=current_app.config["NOTIFY_CLAIM_SECONDS"]))
        .execution_options(synchronize_session=False)).rowcount
    if taken != 1:
        return None
    message = db.session.get(Message, message_id, populate_existing=True)
    db.session.expunge(message)
    return message


#: Context values under keys with this prefix (a one-time code, a reset
#: link) are needed only until the message is sent: :func:`record_sent`
#: blanks them, so the outbox keeps no usable secret past its sending.
SECRET_PREFIX = "secret_"


def without_secrets(context: dict) -> dict:
    """``context`` with every ``secret_*`` value blanked ("")."""
    return {key: ("" if key.startswith(SECRET_PREFIX) else value) for key, value in (context or {}).items()}


def record_sent(message_id: int, provider_message_id: str) -> None:
    """Mark a claimed message ``sent`` with the gateway's id for it, its
    ``secret_*`` context values blanked (:data:`SECRET_PREFIX`)."""
    values = dict(status=SENT, sent_at=db_now(), last_error=None,
                  provider_message_id=clean_text(str(provider_message_id), 200))
    context = db.session.scalar(sa.select(Message.context).where(Message.id == message_id))
    if context and any(key.startswith(SECRET_PREFIX) for key in context):
        values["context"] = without_secrets(context)
    db.session.execute(
        sa.update(Message).where(Message.id == message_id, Message.status == PENDING)
        .values(**values).execution_options(synchronize_session=False))


def retry_delay_seconds(attempts: int) -> float:
    """Backoff after the ``attempts``-th failed try: ``NOTIFY_RETRY_BASE_SECONDS``
    doubling, at most ``NOTIFY_RETRY_MAX_SECONDS``."""
    config = current_app.config
    return min(config["NOTIFY_RETRY_MAX_SECONDS"], config["NOTIFY_RETRY_BASE_SECONDS"] * 2 ** (attempts - 1))


def record_failure(message_id: int, error: str, *, permanent: bool) -> str:
    """Record a failed try: ``failed`` for good when ``permanent`` or out of
    ``NOTIFY_ATTEMPTS``, else due again after :func:`retry_delay_seconds`.

    :returns: "failed" or "retry".
    """
    message = db.session.get(Message, message_id, populate_existing=True)
    if message is None or message.status != PENDING:
        return "failed"
    message.last_error = clean_text(error, 500)
    if permanent or message.attempts >= current_app.config["NOTIFY_ATTEMPTS"]:
        message.status = FAILED
        return "failed"
    message.next_attempt_at = db_now() + timedelta(seconds=retry_delay_seconds(message.attempts))
    return "retry"


def due_message_ids(limit: int = SWEEP_BATCH) -> list[int]:
    """Ids of ``pending`` messages due now (database clock), oldest first."""
    return list(db.session.scalars(
        sa.select(Message.id).where(Message.status == PENDING, Message.next_attempt_at <= db_now())
        .order_by(Message.id).limit(limit)))


def oldest_unsent_created_at() -> Optional[datetime]:
    """When the oldest ``pending`` message was queued (the admin overview
    shows its age: mail not leaving shows there first); None when none is."""
    return db.session.scalar(sa.select(sa.func.min(Message.created_at)).where(Message.status == PENDING))


def retry(message_id: int) -> Optional[str]:
    """Put a ``failed`` message back in line now with a fresh set of
    attempts, in the caller's unit of work; its send is enqueued after that
    unit commits (an admin's "retry").

    :returns: None when done, else why not: "not found"; "already sent" (a
        second copy is the customer's "send again", not an admin retry);
        "still pending" (its sender tries it again by itself, and one may be
        sending it now: a retry could send it twice).
    """
    message = db.session.get(Message, message_id, populate_existing=True, with_for_update=True)
    if message is None:
        return "not found"
    if message.status != FAILED:
        return "already sent" if message.status == SENT else "still pending"
    message.status = PENDING
    message.attempts = 0
    message.next_attempt_at = db_now()
    db.session.flush()
    queue_after_commit(message_id)
    return None
