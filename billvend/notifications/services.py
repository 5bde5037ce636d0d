"""The outbox: :func:`notify` queues a message in the caller's unit of work,
:func:`render` turns a row into its text, and the send steps (claim, record)
that ``billvend.notifications.tasks`` runs around the outside call.

A message is sent at least once and, unless a sender dies between the
gateway's answer and the record of it, exactly once: the row is unique per
(event_key, channel, recipient), a sender claims it before the call (moving
``next_attempt_at`` past its deadline, so two senders never hold it at once
and a dead sender's claim expires by itself) and records the answer after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

import sqlalchemy as sa
from flask import current_app
from jinja2 import TemplateNotFound
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billvend.notifications.models import CHANNELS, FAILED, PENDING, SENT, Message
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.text import clean_text
from billvend.platform.transactions import TransactionRuleError, in_unit_of_work

log = logging.getLogger(__name__)

_COMMITTED_IDS = "billvend.notifications.queued"
#: Called with the ids of messages whose unit just committed (the tasks module
#: sets it to enqueue their send); None: the sweep finds them.
after_commit_hook: Optional[Callable[[list[int]], None]] = None


@dataclass(frozen=True)
class Rendered:
    """A message's text: ``subject`` (one line), ``text`` and ``html`` (the
    email's two parts) and ``sms``; a part the template lacks is ""."""

    subject: str
    text: str
    html: str
    sms: str


def _insert(values: dict[str, Any]):
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (insert(Message).values(**values)
            .on_conflict_do_nothing(index_elements=["event_key", "channel", "recipient"])
            .returning(Message.id))


def notify(event_key: str, channel: str, recipient: str, template: str, context: dict[str, Any], *,
           user_id: Optional[int] = None, secret: bool = False) -> Optional[Message]:
    """Queue one message in the caller's unit of work (no commit).

    :param event_key: the event that causes it, e.g. "payment:42:token"; with
        ``channel`` and ``recipient`` it names the message, so a repeat (a
        retried unit, a re-driven vend) inserts nothing.
    :param channel: "email" or "sms".
    :param recipient: an email address, or an E.164 phone ("+234...").
    :param template: the name under templates/messages/.
    :param context: plain JSON values (str, int, lists, dicts) the template needs.
    :param secret: admins see "(hidden)" instead of the content (tokens, codes).
    :returns: the new row (flushed, with its id), or None for a repeat.
    :raises TransactionRuleError: when called outside a unit of work.
    :raises ValueError: for an unknown channel or an empty recipient.
    """
    if not in_unit_of_work():
        raise TransactionRuleError("notify() belongs inside the unit of work of the event it reports")
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    recipient = clean_text(recipient or "").strip()
    if not recipient:
        raise ValueError("a message needs a recipient")
    values = dict(event_key=event_key, channel=channel, recipient=recipient, template=template,
                  context=context, secret=secret, user_id=user_id, status=PENDING, attempts=0,
                  next_attempt_at=db_now(), created_at=db_now())
    message_id = db.session.execute(_insert(values)).scalar()
    if message_id is None:
        return None
    queue_after_commit(message_id)
    return db.session.get(Message, message_id)


def queue_after_commit(message_id: int) -> None:
    """Enqueue the send of ``message_id`` once the current unit of work
    commits (nothing if it rolls back)."""
    db.session.info.setdefault(_COMMITTED_IDS, []).append(message_id)


@event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    ids = session.info.pop(_COMMITTED_IDS, None)
    if ids and after_commit_hook is not None:
        try:
            after_commit_hook(ids)
        except Exception:  # noqa: BLE001 - the sweep sends what was not enqueued
            log.exception("could not enqueue messages %s; the sweep will send them", ids)


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction) -> None:
    session.info.pop(_COMMITTED_IDS, None)


def _part(name: str, context: dict[str, Any]) -> str:
    try:
        template = current_app.jinja_env.get_template(f"messages/{name}")
    except TemplateNotFound:
        return ""
    return template.render(**context)


def render(message: Message) -> Rendered:
    """The text of ``message`` from templates/messages/<template>.subject.txt,
    .txt, .html and .sms.txt (each optional; HTML autoescaped), rendered
    with its ``context``. The subject is one line (a newline in it could
    add a mail header)."""
    context = dict(message.context or {})
    subject = " ".join(_part(f"{message.template}.subject.txt", context).split())
    return Rendered(subject=subject,
                    text=_part(f"{message.template}.txt", context),
                    html=_part(f"{message.template}.html", context),
                    sms=_part(f"{message.template}.sms.txt", context).strip())
