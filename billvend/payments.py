"""The payment state machine (DESIGN.md, Vending).

::

    pending --claim--> vending --delivered--> successful            (final)
                          |----failed-------> failed --refund--> reversed (final)
                          '----no answer----> unknown --requery--> successful | failed

Every transition is one conditional ``UPDATE payments SET status = :to ...
WHERE id = :id AND status = :from``: if two workers race, exactly one UPDATE
matches a row and only that one goes on to act (call the provider, post the
refund). Each transition writes a ``PaymentEvent`` in the same transaction.

Functions that talk to the provider commit before the call, so no database
transaction or lock is held across network I/O, and they return a
``FollowUp`` telling the task layer what to enqueue; this module never
enqueues, so it stays free of queue concerns and enqueueing happens only after
commit.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import sqlalchemy as sa
from flask import current_app

from billvend import journey, ledger
from billvend.extensions import db
from billvend.models import (
    BILLER_CLEARING_WALLET,
    FAILED,
    KIND_BILL_PAYMENT,
    KIND_REVERSAL,
    PENDING,
    REVERSED,
    SUCCESSFUL,
    UNKNOWN,
    VENDING,
    FINAL_STATUSES,
    Payment,
    PaymentEvent,
    User,
    utcnow,
)
from billvend.providers import base as provider_base
from billvend.providers.base import Provider, VendResult

log = logging.getLogger(__name__)

#: Legal transitions; anything else is refused before touching the database.
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({VENDING}),
    VENDING: frozenset({SUCCESSFUL, FAILED, UNKNOWN}),
    UNKNOWN: frozenset({SUCCESSFUL, FAILED}),
    FAILED: frozenset({REVERSED}),
    SUCCESSFUL: frozenset(),
    REVERSED: frozenset(),
}

#: What :func:`new_reference` makes: Lagos ``YYYYMMDDHHII`` + 12 hex digits.
REFERENCE_RE = re.compile(r"[0-9]{12}[0-9a-f]{12}")
#: A prepaid (STS) token: 20 decimal digits (reference/vtpass-api.md, Tokens).
TOKEN_RE = re.compile(r"[0-9]{20}")

# Nigeria keeps West Africa Time all year (UTC+1, no daylight saving).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")


class PaymentError(Exception):
    """A payment request that cannot be carried out as asked."""


class IllegalTransition(PaymentError):
    """A status change the state machine does not allow."""


class IdempotencyConflict(PaymentError):
    """An idempotency key reused with different payment details."""


@dataclass(frozen=True)
class FollowUp:
    """What the task layer should do next for a payment.

    ``action`` is ``None`` (nothing), ``"reverse"`` or ``"requery"`` (after
    ``delay_seconds``).
    """

    action: Optional[str] = None
    delay_seconds: float = 0.0


NOTHING = FollowUp()
REVERSE = FollowUp("reverse")


def new_reference(now: Optional[datetime] = None) -> str:
    """A fresh payment reference, used as the provider ``request_id``.

    VTpass requires the ``request_id`` to start with the Africa/Lagos
    date-time as ``YYYYMMDDHHII`` (reference/vtpass-api.md, request_id),
    followed by any alphanumeric suffix; 12 random hex characters make it
    unique. Returns a 24-character string.
    """
    now = now or utcnow()
    return now.astimezone(LAGOS).strftime("%Y%m%d%H%M") + secrets.token_hex(6)


def transition(
    payment_id: int,
    from_status: str,
    to_status: str,
    *,
    code: Optional[str] = None,
    message: Optional[str] = None,
    **fields: Any,
) -> bool:
    """Move a payment from ``from_status`` to ``to_status`` if it is still there.

    Runs in the caller's transaction (flushes the event, does not commit).

    :param fields: other ``Payment`` columns to set in the same UPDATE.
    :returns: True if this call made the change; False if the payment was not
        in ``from_status`` (another worker got there first).
    :raises IllegalTransition: the state machine does not allow the change.
    """
    if to_status not in TRANSITIONS.get(from_status, ()):
        raise IllegalTransition(f"{from_status} -> {to_status} is not allowed")
    now = utcnow()
    values: dict[str, Any] = {"status": to_status, "updated_at": now, **fields}
    if code is not None:
        values["provider_code"] = code
    if message is not None:
        values["provider_message"] = message[:500]
    if to_status in FINAL_STATUSES:
        values["finalized_at"] = now
    result = db.session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == from_status)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    record_event(payment_id, from_status, to_status, code=code, message=message)
    # The UPDATE bypassed the identity map; reload on next access.
    loaded = db.session.identity_map.get(db.session.identity_key(Payment, payment_id))
    if loaded is not None:
        db.session.expire(loaded)
    return True


def record_event(
    payment_id: int,
    from_status: Optional[str],
    to_status: str,
    *,
    code: Optional[str] = None,
    message: Optional[str] = None,
) -> None:
    """Append a timeline entry for a payment (in the caller's transaction)."""
    db.session.add(
        PaymentEvent(
            payment_id=payment_id,
            from_status=from_status,
            to_status=to_status,
            provider_code=code,
            message=(message or "")[:500] or None,
        )
    )


def find_by_key(user_id: int, idempotency_key: str) -> Optional[Payment]:
    """The payment ``user_id`` made with ``idempotency_key``, if any."""
    return db.session.scalar(
        sa.select(Payment).where(
            Payment.user_id == user_id, Payment.idempotency_key == idempotency_key
        )
    )


def _same_order(payment: Payment, details: dict[str, Any]) -> bool:
    return all(getattr(payment, name) == value for name, value in details.items())


@ledger.unit_of_work
def create_payment(
    user: User,
    *,
    service_id: str,
    meter_type: str,
    meter_number: str,
    phone: str,
    amount_kobo: int,
    idempotency_key: str,
    customer_name: Optional[str] = None,
    customer_address: Optional[str] = None,
) -> tuple[Payment, bool]:
    """Debit the wallet and record a ``pending`` payment, in ONE transaction.

    Idempotent per (user, ``idempotency_key``): a repeat with the same details
    returns the first payment, also when the repeats race (the UNIQUE
    constraint decides the winner).

    :param amount_kobo: positive int, already validated against limits.
    :returns: ``(payment, created)``; ``created`` is False for a repeat. The
        caller enqueues the vend (after this commit) only when ``created``.
    :raises ledger.InsufficientFunds: the wallet cannot cover the amount;
        nothing is recorded.
    :raises IdempotencyConflict: the key was used for a different payment.
    """
    details = {
        "service_id": service_id,
        "meter_type": meter_type,
        "meter_number": meter_number,
        "phone": phone,
        "amount_kobo": amount_kobo,
    }

    def repeat(existing: Payment) -> tuple[Payment, bool]:
        if not _same_order(existing, details):
            raise IdempotencyConflict(
                "This form was already used for a different payment. Please start a new payment."
            )
        return existing, False

    existing = find_by_key(user.id, idempotency_key)
    if existing is not None:
        return repeat(existing)

    wallet_id = user.wallet.id
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    payment = Payment(
        reference=new_reference(),
        user_id=user.id,
        wallet_id=wallet_id,
        status=PENDING,
        idempotency_key=idempotency_key,
        customer_name=_clip(customer_name, 200),
        customer_address=_clip(customer_address, 300),
        **details,
    )
    try:
        db.session.add(payment)
        db.session.flush()  # claims (user, idempotency_key) first
        # Recorded before the debit: post_transfer flushes it before locking
        # the wallets, so nothing else is written while they are locked.
        record_event(payment.id, None, PENDING, message="Wallet debited; vend queued")
        ledger.post_transfer(
            kind=KIND_BILL_PAYMENT,
            debit_wallet_id=wallet_id,
            credit_wallet_id=clearing_id,
            amount_kobo=amount_kobo,
            payment_id=payment.id,
            description=f"Electricity {meter_number}",
        )
        db.session.commit()
    except sa.exc.IntegrityError:
        db.session.rollback()
        existing = find_by_key(user.id, idempotency_key)
        if existing is None:
            raise
        return repeat(existing)
    except Exception:
        db.session.rollback()
        raise
    return payment, True


def _requery_delay_seconds(requery_count: int) -> float:
    config = current_app.config
    base_delay = config["REQUERY_BASE_DELAY_SECONDS"]
    return min(base_delay * (2 ** requery_count), config["REQUERY_MAX_DELAY_SECONDS"])


def _is_overdue(payment: Payment, now: datetime) -> bool:
    age_seconds = (now - payment.created_at).total_seconds()
    return age_seconds >= current_app.config["UNKNOWN_ALERT_AGE_SECONDS"]


def apply_result(payment_id: int, from_status: str, result: VendResult) -> FollowUp:
    """Record what the provider said about a ``vending`` or ``unknown`` payment.

    ``delivered`` -> ``successful`` (token, units, receipt); ``failed`` ->
    ``failed`` (the caller then reverses); ``pending`` -> ``unknown`` with the
    next requery scheduled by exponential backoff, and flagged
    ``needs_attention`` once older than ``UNKNOWN_ALERT_AGE_SECONDS`` (never
    refunded on that account). Commits.

    :returns: the follow-up for the task layer.
    """
    now = utcnow()
    try:
        if result.status == provider_base.DELIVERED:
            token = result.token if result.token and TOKEN_RE.fullmatch(result.token) else None
            moved = transition(
                payment_id, from_status, SUCCESSFUL,
                code=result.code, message=result.message or "Delivered",
                token=token, units_kwh=_clip(result.units_kwh, 20),
                receipt_reference=_clip(result.receipt_reference, 64),
                needs_attention=False, next_requery_at=None,
            )
            if moved:
                journey.record_delivery(payment_id, result)
            else:
                _record_late_delivery(payment_id, from_status, result)
            db.session.commit()
            return NOTHING
        if result.status == provider_base.FAILED:
            moved = transition(
                payment_id, from_status, FAILED,
                code=result.code, message=result.message or "Failed",
                next_requery_at=None,
            )
            db.session.commit()
            return REVERSE if moved else NOTHING

        payment = db.session.get(Payment, payment_id)
        if payment is None or payment.status != from_status:
            db.session.rollback()
            return NOTHING
        delay_seconds = _requery_delay_seconds(payment.requery_count)
        fields = {
            "next_requery_at": now + timedelta(seconds=delay_seconds),
            "needs_attention": _is_overdue(payment, now),
        }
        if from_status == VENDING:
            moved = transition(
                payment_id, VENDING, UNKNOWN,
                code=result.code, message=result.message or "No definite answer", **fields,
            )
        else:
            # Still unknown: no status change, but the attempt goes on record.
            moved = db.session.execute(
                sa.update(Payment)
                .where(Payment.id == payment_id, Payment.status == UNKNOWN)
                .values(updated_at=now, provider_code=result.code,
                        provider_message=(result.message or "")[:500], **fields)
                .execution_options(synchronize_session=False)
            ).rowcount == 1
            if moved:
                record_event(payment_id, UNKNOWN, UNKNOWN, code=result.code,
                             message=f"Requery: {result.message or 'still pending'}")
        db.session.commit()
        return FollowUp("requery", delay_seconds) if moved else NOTHING
    except Exception:
        db.session.rollback()
        raise


def _clip(value: Optional[str], length: int) -> Optional[str]:
    """Provider text cut to its column, so an overlong answer cannot make
    every retry of a payment fail on the database."""
    return value[:length] if value else None


def _record_late_delivery(payment_id: int, expected_status: str, result: VendResult) -> None:
    """A delivery arrived for a payment that had already moved on from
    ``expected_status`` (another worker or an admin settled it). If it had
    been failed or refunded, the customer may now hold a token AND the money:
    never drop that silently. Keep the provider's proof on the timeline and
    flag the payment for an admin (in the caller's transaction)."""
    payment = db.session.get(Payment, payment_id)
    if payment is None or payment.status == SUCCESSFUL:
        return
    proof = result.token or result.receipt_reference or "no token"
    record_event(payment_id, payment.status, payment.status, code=result.code,
                 message=f"Provider reported delivery ({proof}) after the payment was "
                         f"{payment.status}: needs an admin")
    db.session.execute(
        sa.update(Payment).where(Payment.id == payment_id)
        .values(needs_attention=True, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    log.error("payment %s delivered after it became %s (expected %s)",
              payment_id, payment.status, expected_status)


def claim(payment_id: int) -> bool:
    """``pending`` -> ``vending`` for one worker; commits. True if we own it."""
    try:
        claimed = transition(
            payment_id, PENDING, VENDING,
            message="A worker is contacting the disco",
            claimed_at=utcnow(), vend_attempts=Payment.vend_attempts + 1,
        )
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return claimed


def vend_payment(payment_id: int, provider: Provider) -> FollowUp:
    """Claim a ``pending`` payment and vend it through ``provider``.

    Safe to call any number of times and concurrently: only the worker whose
    claim succeeds calls the provider, with the payment's ``reference`` as the
    ``request_id``.
    """
    if not claim(payment_id):
        return NOTHING
    payment = db.session.get(Payment, payment_id)
    order = dict(
        request_id=payment.reference,
        service_id=payment.service_id,
        meter_number=payment.meter_number,
        meter_type=payment.meter_type,
        amount_kobo=payment.amount_kobo,
        phone=payment.phone,
    )
    db.session.rollback()  # end the read transaction before network I/O
    try:
        result = provider.vend(**order)
    except Exception as exc:  # noqa: BLE001 - any crash mid-call is ambiguous
        result = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Provider call failed: {type(exc).__name__}")
    return apply_result(payment_id, VENDING, result)


def vending_lease_expired(payment: Payment, now: Optional[datetime] = None) -> bool:
    """True when a ``vending`` payment's claim is older than
    ``VENDING_LEASE_SECONDS``: the worker that claimed it is presumed dead.
    Before that its ``pay`` call may still be in flight, and a requery answer
    of "never received" would be premature."""
    if payment.claimed_at is None:
        return True
    now = now or utcnow()
    lease = timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    return payment.claimed_at < now - lease


def requery_payment(payment_id: int, provider: Provider, *, include_vending: bool = False,
                    force: bool = False) -> FollowUp:
    """Ask the provider about an ``unknown`` payment (or a ``vending`` one
    whose lease expired: the sweep and admins) and record the answer. Never
    places a new order.

    One requery at a time per payment: the requery is claimed by a
    compare-and-set on ``next_requery_at`` (and, for ``vending``, on
    ``claimed_at``) that also pushes it a lease into the future, so a sweep
    tick or a racing task that finds the payment mid-requery does nothing.
    An ``unknown`` payment is only requeried when due (``next_requery_at``
    reached, with a second of slack for the scheduler), so a task queued by
    the sweep that runs after the backoff chain already asked does not start
    a second chain; ``force`` (an admin's "requery now") skips that check.
    """
    payment = db.session.get(Payment, payment_id)
    allowed = {UNKNOWN, VENDING} if include_vending else {UNKNOWN}
    if payment is None or payment.status not in allowed:
        db.session.rollback()
        return NOTHING
    now = utcnow()
    if payment.status == VENDING and not vending_lease_expired(payment, now):
        db.session.rollback()
        return NOTHING
    due_at = payment.next_requery_at
    if (payment.status == UNKNOWN and not force and due_at is not None
            and due_at > now + timedelta(seconds=1)):
        db.session.rollback()
        return NOTHING
    from_status, reference, meter_type = payment.status, payment.reference, payment.meter_type
    lease_until = now + timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    claim_requery = (
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == from_status)
        .values(requery_count=Payment.requery_count + 1, next_requery_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    observed = payment.next_requery_at
    claim_requery = claim_requery.where(
        Payment.next_requery_at.is_(None) if observed is None else Payment.next_requery_at == observed)
    if from_status == VENDING:
        claim_requery = claim_requery.where(Payment.claimed_at == payment.claimed_at).values(claimed_at=now)
    claimed = db.session.execute(claim_requery).rowcount == 1
    db.session.commit()
    if not claimed:
        return NOTHING
    try:
        result = provider.requery(reference, meter_type=meter_type)
    except Exception as exc:  # noqa: BLE001
        result = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Requery failed: {type(exc).__name__}")
    return apply_result(payment_id, from_status, result)


@ledger.unit_of_work
def reverse_payment(payment_id: int, *, reason: str = "Vend failed; refunded to wallet") -> bool:
    """Refund a ``failed`` payment to its wallet: ``failed`` -> ``reversed`` and
    the reversal transfer in ONE transaction. Exactly once: a second call (or
    a racing worker) finds the payment no longer ``failed`` and does nothing.

    :returns: True if this call posted the refund.
    """
    try:
        payment = db.session.get(Payment, payment_id)
        if payment is None or payment.status != FAILED:
            db.session.rollback()
            return False
        wallet_id, amount_kobo = payment.wallet_id, payment.amount_kobo
        clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
        if not transition(payment_id, FAILED, REVERSED, message=reason):
            db.session.rollback()
            return False
        ledger.post_transfer(
            kind=KIND_REVERSAL,
            debit_wallet_id=clearing_id,
            credit_wallet_id=wallet_id,
            amount_kobo=amount_kobo,
            payment_id=payment_id,
            description=reason[:200],
        )
        db.session.commit()
        return True
    except Exception:
        db.session.rollback()
        raise


def payment_for_user(reference: str, user: User) -> Optional[Payment]:
    """The payment with ``reference`` if ``user`` owns it (or is an admin);
    None for anything else, including a string that is not a reference."""
    if not REFERENCE_RE.fullmatch(reference):
        return None
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    if payment is None or (payment.user_id != user.id and not user.is_admin):
        return None
    return payment
