"""Sending money to another customer: find the recipient, then ONE unit of
work that locks both wallets, checks the daily limit under that lock, writes
the ``p2p_transfers`` row and posts ONE ledger transfer of kind ``p2p``, and
queues both sides' messages.

Idempotent like payments (DESIGN.md, Money): UNIQUE (sender, idempotency
key); a repeat with the same recipient, amount and note returns the first
transfer, the same key with other fields is refused. Wallets are locked with
``billvend.ledger.services.lock_wallets`` (descending id, the order the
ledger's own transfer function takes them), so crossing transfers A->B and
B->A cannot deadlock, and the limit check and the debit see one state.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

import sqlalchemy as sa
from flask import current_app

from billvend.accounts.models import User
from billvend.ledger import limits
from billvend.ledger import services as ledger
from billvend.ledger.models import KIND_P2P, Wallet
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.transactions import unit_of_work
from billvend.transfers import messages
from billvend.transfers.models import P2PTransfer

#: The refusal for a recipient we cannot send to: the same words whether no
#: account has that address or number, it is not verified, or it is an admin.
UNKNOWN_RECIPIENT_MESSAGE = ("We could not find a billvend customer with that email address or "
                             "verified phone number. Check it with them and try again.")


class TransferError(Exception):
    """A transfer that cannot be made as asked; ``str()`` is for the customer."""


class ToYourself(TransferError):
    """The recipient is the sender."""

    def __init__(self):
        super().__init__("You cannot send money to yourself. Enter someone else's email or phone.")


class UnknownRecipient(TransferError):
    """No customer we may send to has that email or verified phone."""

    def __init__(self):
        super().__init__(UNKNOWN_RECIPIENT_MESSAGE)


class IdempotencyConflict(TransferError):
    """An idempotency key used again with a different recipient, amount or note."""

    def __init__(self):
        super().__init__("This form was already used for a different transfer. Please start a new one.")


@dataclass(frozen=True)
class Sent:
    """What :func:`send` did: the transfer, and whether this call made it
    (False: a repeat of the same form returned the first one)."""

    transfer: P2PTransfer
    created: bool


def find_recipient(*, email: Optional[str] = None, phone: Optional[str] = None) -> Optional[User]:
    """The customer who receives at ``email`` (already normalised) or at the
    E.164 ``phone`` their owner verified; None for no such customer, an
    unverified phone, an admin or an account without a wallet."""
    if email:
        where = User.email == email
    elif phone:
        where = User.verified_phone == phone
    else:
        return None
    user = db.session.scalar(sa.select(User).where(where))
    if user is None or user.is_admin or user.wallet is None:
        return None
    return user


def daily_limit_kobo(user: User) -> int:
    """``user``'s daily transfer limit (kobo): ``TRANSFER_DAILY_LIMIT_KOBO``, or
    ``UNVERIFIED_DAILY_LIMIT_KOBO`` while the email or the phone is not verified."""
    config = current_app.config
    return limits.applicable_limit_kobo(
        limit_kobo=config["TRANSFER_DAILY_LIMIT_KOBO"],
        unverified_limit_kobo=config["UNVERIFIED_DAILY_LIMIT_KOBO"],
        email_verified=user.email_verified_at is not None,
        phone_verified=user.phone_verified_at is not None and user.verified_phone is not None)


def todays_use(user: User, now: Optional[datetime] = None) -> limits.DailyUse:
    """What ``user`` has sent today, their limit and when it resets (a read for
    the page; the binding check runs under the wallet lock in :func:`send`)."""
    now = now or db_now()
    return limits.DailyUse(limit_kobo=daily_limit_kobo(user),
                           spent_kobo=limits.spent_kobo(user.wallet.id, (KIND_P2P,), now),
                           resets_at=limits.day_bounds(now)[1])


def has_sent_to(sender_id: int, recipient_id: int) -> bool:
    """True when ``sender_id`` has sent money to ``recipient_id`` before."""
    return db.session.scalar(sa.select(P2PTransfer.id).where(
        P2PTransfer.sender_id == sender_id, P2PTransfer.recipient_id == recipient_id).limit(1)) is not None


def find_by_key(sender_id: int, idempotency_key: str) -> Optional[P2PTransfer]:
    """The transfer ``sender_id`` made with ``idempotency_key``, if any."""
    return db.session.scalar(sa.select(P2PTransfer).where(
        P2PTransfer.sender_id == sender_id, P2PTransfer.idempotency_key == idempotency_key))


def for_party(reference: str, user_id: int) -> Optional[P2PTransfer]:
    """The transfer ``reference`` when ``user_id`` sent or received it; else None."""
    return db.session.scalar(sa.select(P2PTransfer).where(
        P2PTransfer.reference == reference,
        sa.or_(P2PTransfer.sender_id == user_id, P2PTransfer.recipient_id == user_id)))


def new_reference() -> str:
    """A fresh transfer reference: ``tr_`` and 20 lowercase hex characters."""
    return "tr_" + secrets.token_hex(10)


def send(sender: User, recipient: User, amount_kobo: int, note: Optional[str],
         idempotency_key: str) -> Sent:
    """Move ``amount_kobo`` from ``sender``'s wallet to ``recipient``'s: ONE unit
    of work (the row, the ledger transfer, both messages), or nothing.

    :param amount_kobo: a positive int, already within the form's bounds.
    :param note: the sender's note, already checked as plain text (or None).
    :raises ToYourself: ``recipient`` is ``sender``.
    :raises ledger.InsufficientFunds: the wallet cannot cover it.
    :raises limits.DailyLimitExceeded: over today's limit (its message says
        the limit, what is left and when it resets).
    :raises IdempotencyConflict: the key was used for another transfer.
    """
    if recipient.id == sender.id:
        raise ToYourself()
    details = {"recipient_id": recipient.id, "amount_kobo": amount_kobo, "note": note or None}
    limit_kobo = daily_limit_kobo(sender)
    try:
        return _send(sender.id, details, idempotency_key, limit_kobo)
    except sa.exc.IntegrityError:
        existing = find_by_key(sender.id, idempotency_key)
        if existing is None:
            raise
        return _repeat(existing, details)


def _repeat(existing: P2PTransfer, details: dict[str, Any]) -> Sent:
    if any(getattr(existing, name) != value for name, value in details.items()):
        raise IdempotencyConflict()
    return Sent(existing, False)


def _wallet_ids(*user_ids: int) -> dict[int, int]:
    return dict(db.session.execute(sa.select(Wallet.user_id, Wallet.id).where(Wallet.user_id.in_(user_ids))).all())


@unit_of_work
def _send(sender_id: int, details: dict[str, Any], idempotency_key: str, limit_kobo: int) -> Sent:
    wallets = _wallet_ids(sender_id, details["recipient_id"])
    sender_wallet_id, recipient_wallet_id = wallets[sender_id], wallets[details["recipient_id"]]
    # Both rows locked before anything is read for the limit: a parallel
    # transfer from this wallet waits here until this unit commits.
    ledger.lock_wallets(sender_wallet_id, recipient_wallet_id)
    # The key is looked up under the lock: a double submit that waited for
    # the first one gets its transfer, not a limit or balance refusal
    # about the money the first one just sent.
    existing = find_by_key(sender_id, idempotency_key)
    if existing is not None:
        return _repeat(existing, details)
    now = db_now()
    limits.check_daily_limit(sender_wallet_id, KIND_P2P, details["amount_kobo"], limit_kobo, now)
    transfer = P2PTransfer(reference=new_reference(), sender_id=sender_id,
                           sender_wallet_id=sender_wallet_id, recipient_wallet_id=recipient_wallet_id,
                           idempotency_key=idempotency_key, created_at=now, **details)
    db.session.add(transfer)
    db.session.flush()  # claims (sender, idempotency_key) first
    ledger.post_transfer(kind=KIND_P2P, debit_wallet_id=sender_wallet_id,
                         credit_wallet_id=recipient_wallet_id, amount_kobo=details["amount_kobo"],
                         p2p_transfer_id=transfer.id, description="Transfer", created_at=now)
    messages.transfer_made(transfer)
    return Sent(transfer, True)
