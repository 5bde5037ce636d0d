""""Send token again" (issue 23): a customer asks for a successful payment's
token once more, by email to the account's address or by SMS to the
account's phone or the phone on the payment.

Each resend is one outbox row (two for an SMS with key-change tokens) with
the event key ``payment:<id>:resend:<n>``, ``n`` counting that payment's
resends. The limits are counted from those rows, the database's truth, so
they hold across every web process: ``TOKEN_RESEND_HOURLY_LIMIT`` per payment
in any hour, ``TOKEN_RESEND_DAILY_LIMIT`` per customer per Africa/Lagos day.
A refusal says when the next one will be accepted.

Two requests at once (a double-click, a flood) cannot both pass the count:
:func:`resend_token` first writes the customer's row, which holds that row's
lock (PostgreSQL) or the database's write lock (SQLite) until the unit
commits, so the next request counts after this one's row is in. The UNIQUE
(event key, channel, recipient) is the backstop: two resends that computed
the same ``n`` for the same recipient insert one row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.accounts.models import User
from billvend.notifications.models import EMAIL, SMS, Message
from billvend.notifications.services import notify
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.phones import display, is_e164
from billvend.vending.lifecycle import LAGOS
from billvend.vending.messages import token_context
from billvend.vending.models import SUCCESSFUL, Payment

#: Where a resend may go: the account's email, the account's phone, the payment's phone.
TO_EMAIL, TO_ACCOUNT_PHONE, TO_PAYMENT_PHONE = "email", "account_phone", "payment_phone"
RESEND_TARGETS = (TO_EMAIL, TO_ACCOUNT_PHONE, TO_PAYMENT_PHONE)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class ResendResult:
    """What became of one "send again": ``sent`` (queued), ``message`` (one
    sentence for the customer) and, for a refusal by a limit, ``retry_at``
    (aware UTC: the first moment another one is accepted)."""

    sent: bool
    message: str
    retry_at: Optional[datetime] = None


def resend_targets(payment: Payment, user: User) -> list[tuple[str, str, str]]:
    """The places ``payment``'s token can be sent again, as (target, channel,
    recipient): the account's email, the account's phone, and the payment's
    phone when it differs; only E.164 mobiles for SMS."""
    targets = [(TO_EMAIL, EMAIL, user.email)]
    if is_e164(user.phone):
        targets.append((TO_ACCOUNT_PHONE, SMS, user.phone))
    if is_e164(payment.phone) and payment.phone != user.phone:
        targets.append((TO_PAYMENT_PHONE, SMS, payment.phone))
    return targets


def _resend_rows(*conditions) -> sa.Select:
    """Created times of resend token rows (the ``token`` template: a resend's
    key-change SMS is not counted twice) matching ``conditions``, oldest first."""
    return (sa.select(Message.created_at)
            .where(Message.event_key.like("payment:%:resend:%"), Message.template == "token", *conditions)
            .order_by(Message.created_at))


def _when(retry_at: datetime, now: datetime) -> str:
    """"at 14:32 (in 23 minutes)", Lagos time: ``retry_at`` rounded up to
    the whole minute, so the time said is never too early."""
    at = retry_at.replace(second=0, microsecond=0)
    if at < retry_at:
        at += timedelta(minutes=1)
    minutes = max(1, math.ceil((retry_at - now).total_seconds() / 60))
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes < 120 else \
        f"{minutes // 60} hours {minutes % 60} minutes"
    return f"at {at.astimezone(LAGOS):%H:%M} (in {wait})"


def limit_refusal(payment_id: int, user_id: int, now: datetime) -> Optional[ResendResult]:
    """The refusal when another resend of ``payment_id`` by ``user_id`` now
    would pass a limit, else None. Per payment: the oldest of the last
    ``TOKEN_RESEND_HOURLY_LIMIT`` resends in the hour leaves the window an
    hour after it was made. Per customer: the Lagos day ends at midnight."""
    config = current_app.config
    hourly, daily = config["TOKEN_RESEND_HOURLY_LIMIT"], config["TOKEN_RESEND_DAILY_LIMIT"]
    midnight = datetime.combine(now.astimezone(LAGOS).date(), time(0), tzinfo=LAGOS)
    today = db.session.scalar(sa.select(sa.func.count()).select_from(
        _resend_rows(Message.user_id == user_id, Message.created_at >= midnight).subquery()))
    if today >= daily:
        retry_at = midnight + timedelta(days=1)
        return ResendResult(False, f"You have sent tokens again {today} times today, the most in one day. "
                                   f"You can send this token again {_when(retry_at, now)}.", retry_at)
    recent = db.session.scalars(_resend_rows(
        Message.event_key.like(f"payment:{payment_id}:resend:%"), Message.created_at > now - HOUR)).all()
    if len(recent) >= hourly:
        retry_at = recent[len(recent) - hourly] + HOUR
        return ResendResult(False, f"This token was sent again {len(recent)} times in the last hour. "
                                   f"You can send it again {_when(retry_at, now)}.", retry_at)
    return None


def resend_token(payment_id: int, user_id: int, target: str) -> ResendResult:
    """Queue "send token again" for ``user_id``'s own ``payment_id`` to
    ``target`` (one of :data:`RESEND_TARGETS`), in the caller's unit of
    work; sent after it commits. The channel the customer picked is used
    whatever their ``token_channels`` choice (they asked for it).

    :returns: a :class:`ResendResult`; refused (nothing written) for a
        payment that is not this user's, is not ``successful``, has no token,
        for a target with no address, or past a limit (:func:`limit_refusal`).
    """
    user = db.session.get(User, user_id)
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if user is None or payment is None or payment.user_id != user_id:
        return ResendResult(False, "There is no such payment.")
    if payment.status != SUCCESSFUL or not payment.token:
        return ResendResult(False, "Only a successful payment with a token can be sent again.")
    found = [(channel, to) for name, channel, to in resend_targets(payment, user) if name == target]
    if not found:
        return ResendResult(False, "There is no phone number to send it to. Add one on your account page.")
    # A flood past a limit is refused here, with reads only. Otherwise write
    # the customer's row: it holds the lock that makes the count and the
    # insert one step (the module's note); then count again.
    refusal = limit_refusal(payment.id, user_id, db_now())
    if refusal is None:
        db.session.execute(sa.update(User).where(User.id == user_id)
                           .values(token_channels=User.token_channels)
                           .execution_options(synchronize_session=False))
        refusal = limit_refusal(payment.id, user_id, db_now())
    if refusal is not None:
        return refusal
    return _queue(payment, user_id, *found[0])


def _queue(payment: Payment, user_id: int, channel: str, recipient: str) -> ResendResult:
    """Insert resend number n+1 of ``payment`` (its key-change SMS first)."""
    n = 1 + db.session.scalar(sa.select(sa.func.count()).select_from(
        _resend_rows(Message.event_key.like(f"payment:{payment.id}:resend:%")).subquery()))
    key, context = f"payment:{payment.id}:resend:{n}", token_context(payment)
    if channel == SMS and payment.kct1:
        notify(f"{key}:kct", SMS, recipient, "token_kct", context, user_id=user_id, secret=True)
    if notify(key, channel, recipient, "token", context, user_id=user_id, secret=True) is None:
        return ResendResult(False, "That token is already on its way.")
    where = f"by email to {recipient}" if channel == EMAIL else f"by SMS to {display(recipient)}"
    return ResendResult(True, f"Your token is on its way {where}.")
