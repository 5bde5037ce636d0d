"""The payment lifecycle: the ONE place that knows the payment state machine
(DESIGN.md, Vending; docs/vending.md).

::

    pending --claim--> vending --delivered--> successful                (final)
       |                  |----failed-------> failed --refund--> reversed (final)
       |                  '----no answer----> unknown --requery--> successful | failed
       '-- (sweep / admin "re-drive now": vend again; the claim makes a duplicate harmless)

This module holds the statuses' rules: :data:`TRANSITIONS` (the transition
table), what each status allows (:func:`may_vend`, :func:`may_requery`,
:func:`may_reverse`, :func:`sweep_candidates`) and which admin action applies
to which payment, with the refusal message when it does not
(:func:`admin_refusal`, :func:`admin_actions`). ``tasks.py`` and
``admin/services.py`` ask it and keep no rules of their own.

Transactions (``billvend.platform.transactions``): the functions here either only
stage work in the caller's unit of work (:func:`transition`,
:func:`stage_reversal`, :func:`record_event`) or ARE one unit of work
(:func:`create_payment`, :func:`claim`, :func:`apply_result`,
:func:`reverse_payment`). The two that talk to the provider
(:func:`vend_payment`, :func:`requery_payment`) are a sequence: commit the
intent (the claim, one unit), call the provider outside any transaction with
its hard deadline, record the answer (a second unit, safe to repeat). They
return a :class:`FollowUp` telling the task layer what to enqueue; this
module never enqueues.

Every transition is one conditional ``UPDATE payments SET status = :to ...
WHERE id = :id AND status = :from``: when two workers race, exactly one
UPDATE matches the row and only that one acts. Each writes a
``PaymentEvent``. Times that decide (leases, grace periods, requeries) are
the database's (``billvend.platform.clock.db_now``).

A delivery we have received is never refunded automatically: on ``vending``
or ``unknown`` it completes the payment; on ``failed`` it is kept on the
payment (token/receipt), blocks the reversal and flags the payment; on
``reversed`` it is flagged for an admin.
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
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from billvend.vending import journey, messages
from billvend.ledger import services as ledger
from billvend.platform.clock import db_now
from billvend.platform.config import vend_deadline_seconds
from billvend.platform.extensions import db
from billvend.ledger.models import BILLER_CLEARING_WALLET, KIND_BILL_PAYMENT, KIND_REVERSAL
from billvend.vending.models import (
    FAILED, FINAL_STATUSES, PENDING, PREPAID, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment, PaymentEvent,
)
from billvend.accounts.models import User
from billvend.platform.models import utcnow
from billvend.vending.providers import base as provider_base
from billvend.vending.providers.base import Provider, VendResult
from billvend.platform.transactions import unit_of_work

log = logging.getLogger(__name__)

# --- The state machine ---------------------------------------------------------

#: Legal transitions; anything else is refused before touching the database.
#: ``failed -> successful`` is only for an admin resolving a failed payment
#: whose delivery arrived late (see :func:`admin_refusal`).
TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({VENDING}),
    VENDING: frozenset({SUCCESSFUL, FAILED, UNKNOWN}),
    UNKNOWN: frozenset({SUCCESSFUL, FAILED}),
    FAILED: frozenset({REVERSED, SUCCESSFUL}),
    SUCCESSFUL: frozenset(),
    REVERSED: frozenset(),
}

#: Where an answer came from: ``pay`` (the vend call itself) or ``requery``.
SOURCE_PAY = "pay"
SOURCE_REQUERY = "requery"

#: The event note of a reversal the workers post.
REVERSAL_NOTE = "Refunded to the wallet"

#: Requery backoff doubles per requery up to this exponent; past it the delay
#: is the cap anyway, and 2**count of a week-old payment would overflow a float.
MAX_BACKOFF_EXPONENT = 32

#: What :func:`new_reference` makes: Lagos ``YYYYMMDDHHII`` + 12 hex digits.
REFERENCE_RE = re.compile(r"[0-9]{12}[0-9a-f]{12}")
#: A prepaid (STS) token: 20 decimal digits (reference/vtpass-api.md, Tokens).
TOKEN_RE = re.compile(r"[0-9]{20}")

# Nigeria keeps West Africa Time all year (UTC+1, no daylight saving).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")

#: Plain-language reasons a customer reads for a failed or refunded payment,
#: by provider-neutral code (providers/base.py, providers/vtpass.py). Admins
#: see the code and the provider's own text instead.
CUSTOMER_REASONS: dict[str, str] = {
    provider_base.CODE_NOT_FOUND: "The disco never received the order.",
    provider_base.CODE_INVALID_ACCOUNT: "The disco does not recognise this meter number.",
    provider_base.CODE_SERVICE_UNAVAILABLE: "The disco's vending service was unavailable.",
    provider_base.CODE_INSUFFICIENT_CREDIT: "Our provider could not vend electricity at that moment.",
    provider_base.CODE_TIMEOUT: "The disco did not answer in time.",
    provider_base.CODE_NO_RESPONSE: "The disco did not answer.",
    provider_base.CODE_UNEXPECTED_RESPONSE: "The disco's answer could not be understood.",
    "TRANSACTION_FAILED": "The disco declined the purchase.",
    "NOT_PROCESSED": "The disco did not process the purchase.",
    "REVERSED": "The disco reversed the purchase.",
    "DUPLICATE_TRANSACTION": "The disco refused it as a repeat of a purchase made moments before.",
    "INVALID_ARGUMENTS": "The disco rejected the purchase details.",
    "PRODUCT_NOT_FOUND": "The disco does not sell this product.",
    "BELOW_MINIMUM": "The amount is below the disco's minimum.",
    "ABOVE_MAXIMUM": "The amount is above the disco's maximum.",
}
DEFAULT_CUSTOMER_REASON = "The disco could not complete the purchase."


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


# --- What each status allows -----------------------------------------------------


def has_delivery(payment: Payment) -> bool:
    """True when the provider's proof of delivery (token or receipt) is on the
    payment: it must never be refunded automatically."""
    return bool(payment.token or payment.receipt_reference)


def may_vend(payment: Payment) -> bool:
    """Only a ``pending`` payment is sent to the provider (by its claim)."""
    return payment.status == PENDING


def vending_lease_expired(payment: Payment, now: datetime) -> bool:
    """True when a ``vending`` payment's claim is older than
    ``VENDING_LEASE_SECONDS`` (database time ``now``): the worker that
    claimed it is presumed dead. The lease outlasts the provider call's hard
    deadline (``config.check_timings``), so by then no ``pay`` is in flight."""
    if payment.claimed_at is None:
        return True
    lease = timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    return payment.claimed_at < now - lease


def vending_lease_expired_clause(now: datetime) -> sa.ColumnElement[bool]:
    """:func:`vending_lease_expired` as a SQL condition on ``payments``, for
    a conditional UPDATE (database time ``now``): a check in Python alone
    is stale once a requery re-stamps ``claimed_at`` before the UPDATE."""
    lease = timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    return sa.or_(Payment.claimed_at.is_(None), Payment.claimed_at < now - lease)


def may_requery(payment: Payment, now: datetime, *, include_vending: bool = False) -> bool:
    """``unknown`` payments are requeried; a ``vending`` one only when asked
    (the sweep, an admin) and once its lease expired."""
    if payment.status == UNKNOWN:
        return True
    return include_vending and payment.status == VENDING and vending_lease_expired(payment, now)


def may_reverse(payment: Payment) -> bool:
    """Only a ``failed`` payment without a reported delivery is refunded."""
    return payment.status == FAILED and not has_delivery(payment)


def pay_settled(payment: Payment, now: datetime) -> bool:
    """True once ``PROVIDER_NOT_FOUND_GRACE_SECONDS`` have passed since the
    last moment a ``pay`` for this reference could still have been in flight
    (``pay_in_flight_until``: claim time + the vending lease while the call
    has not reported its end, then the moment it returned), database time ``now``; before that the
    provider may simply not have recorded the order yet
    (reference/vtpass-api.md, requery). A payment that was never claimed was
    never sent: settled."""
    in_flight_until = payment.pay_in_flight_until or payment.claimed_at
    if in_flight_until is None:
        return True
    grace = timedelta(seconds=current_app.config["PROVIDER_NOT_FOUND_GRACE_SECONDS"])
    return now >= in_flight_until + grace


def not_found_trusted(payment: Payment, now: datetime) -> bool:
    """May a "never received" answer (VTpass ``015``) be believed at ``now``?

    Never for a pay whose answer had begun to arrive (``pay_answer_began``:
    the request was fully sent and the provider was answering it, so it had
    the order; issue 20: such an order was refunded on 015, then delivered).
    Otherwise only once :func:`pay_settled`.
    """
    if payment.pay_answer_began:
        return False
    return pay_settled(payment, now)


def uncertain_refund(payment: Payment) -> bool:
    """Was (or would) ``payment``'s refund be made while its outcome was
    uncertain? On "never received" (``NOT_FOUND``): the provider may still
    record the order. Such a refund is requeried again after it
    (``REQUERY_AFTER_REFUND_DELAYS_SECONDS``); an admin's refund of an
    ``unknown`` payment is one too (``stage_reversal(uncertain=True)``)."""
    return payment.provider_code == provider_base.CODE_NOT_FOUND


def customer_reason(payment: Payment) -> Optional[str]:
    """The plain-language reason a customer reads for a ``failed`` or
    ``reversed`` payment, from the provider's code; None otherwise."""
    if payment.status not in (FAILED, REVERSED):
        return None
    return CUSTOMER_REASONS.get(payment.provider_code or "", DEFAULT_CUSTOMER_REASON)


def sweep_candidates(now: datetime) -> dict[str, list[int]]:
    """The payments whose next step may have been lost, by what the sweep
    should do (database time ``now``):

    - ``pending``: created longer ago than ``PENDING_GRACE_SECONDS``: vend;
    - ``vending``: claimed longer ago than ``VENDING_LEASE_SECONDS``: requery
      (never a second ``pay``);
    - ``unknown``: ``next_requery_at`` due: requery;
    - ``failed``: without a reported delivery: reverse;
    - ``refunded``: ``reversed`` while uncertain, its next requery after the
      refund due (``recheck_after_refund_at``): :func:`requery_after_refund`.
    """
    config = current_app.config
    ids = lambda query: list(db.session.scalars(query))  # noqa: E731
    return {
        "pending": ids(sa.select(Payment.id).where(
            Payment.status == PENDING,
            Payment.created_at < now - timedelta(seconds=config["PENDING_GRACE_SECONDS"]))),
        "vending": ids(sa.select(Payment.id).where(
            Payment.status == VENDING,
            Payment.claimed_at < now - timedelta(seconds=config["VENDING_LEASE_SECONDS"]))),
        "unknown": ids(sa.select(Payment.id).where(
            Payment.status == UNKNOWN,
            sa.or_(Payment.next_requery_at.is_(None), Payment.next_requery_at <= now))),
        "failed": ids(sa.select(Payment.id).where(
            Payment.status == FAILED, Payment.token.is_(None),
            Payment.receipt_reference.is_(None))),
        "refunded": ids(sa.select(Payment.id).where(
            Payment.recheck_after_refund_at <= now, Payment.status == REVERSED)),
    }


# --- Admin actions: eligibility and refusals, from the rules above ---------------

ADMIN_REQUERY = "requery"
ADMIN_RESOLVE_DELIVERED = "resolve_delivered"
ADMIN_REFUND = "refund"
ADMIN_REDRIVE = "redrive"
ADMIN_ACTIONS = (ADMIN_REQUERY, ADMIN_RESOLVE_DELIVERED, ADMIN_REFUND, ADMIN_REDRIVE)

_ADMIN_REFUSALS: dict[str, dict[str, str]] = {
    ADMIN_REQUERY: {
        PENDING: "the payment has not been sent to the provider yet (re-drive it, or the sweep re-queues it)",
        VENDING: "a worker is vending this payment right now; requery it once its lease has "
                 "expired (the sweep will too)",
        SUCCESSFUL: "the payment is already successful",
        FAILED: "the provider already said the payment failed; refund it instead",
        REVERSED: "the payment is already refunded",
    },
    ADMIN_RESOLVE_DELIVERED: {
        PENDING: "the payment has not been sent to the provider yet",
        VENDING: "a worker is vending this payment right now and the provider's answer is on its way; "
                 "resolve it once its lease has expired",
        SUCCESSFUL: "the payment is already successful",
        FAILED: "the payment failed and its refund is due; a failed payment cannot become delivered",
        REVERSED: "the payment was refunded; it cannot become delivered",
    },
    ADMIN_REFUND: {
        PENDING: "the payment is still in flight; wait for the provider's answer or requery it",
        VENDING: "the payment is still in flight; wait for the provider's answer or requery it",
        UNKNOWN: "a pay for this payment may have reached the provider moments ago without being on "
                 "its records yet (PROVIDER_NOT_FOUND_GRACE_SECONDS have not passed); requery it, "
                 "or refund it after that",
        SUCCESSFUL: "the payment was delivered (successful); a delivered payment is never refunded",
        FAILED: "the provider reported a delivery for this payment after it failed; it is never "
                "refunded automatically: check the token with the provider and resolve it as delivered",
        REVERSED: "the payment is already refunded",
    },
    ADMIN_REDRIVE: {
        PENDING: "the payment was queued moments ago; its vend should still run "
                 "(re-drive it once PENDING_GRACE_SECONDS have passed)",
        VENDING: "a worker has already sent this payment to the provider; requery it instead",
        UNKNOWN: "the payment was already sent to the provider; requery it instead",
        SUCCESSFUL: "the payment is already successful",
        FAILED: "the payment was already sent to the provider and failed",
        REVERSED: "the payment is already refunded",
    },
}


def admin_refusal(action: str, payment: Payment, now: datetime) -> Optional[str]:
    """Why ``action`` does not apply to ``payment`` at database time ``now``,
    or None when it does. The admin pages offer exactly the actions with no
    refusal; ``admin/services`` records the refusal text when one is tried.

    - requery now: ``unknown``, or ``vending`` past its lease;
    - resolve delivered: ``unknown``, ``vending`` past its lease, or
      ``failed`` with a late delivery on record;
    - refund: ``unknown`` (after asking the provider) once no ``pay`` can
      still be on its way (:func:`pay_settled`), or ``failed`` without a
      delivery on record; the refund of an ``unknown`` payment is uncertain,
      so it is requeried again after (:func:`requery_after_refund`);
    - re-drive now: ``pending`` older than ``PENDING_GRACE_SECONDS``.

    :raises ValueError: for an unknown action.
    """
    if action not in _ADMIN_REFUSALS:
        raise ValueError(f"unknown admin action {action!r}")
    status = payment.status
    if action == ADMIN_REQUERY:
        allowed = may_requery(payment, now, include_vending=True)
    elif action == ADMIN_RESOLVE_DELIVERED:
        # Not while a worker's pay may be in flight: the provider's own
        # answer is seconds away, and a token typed now could differ from it.
        allowed = (status == UNKNOWN or (status == VENDING and vending_lease_expired(payment, now))
                   or (status == FAILED and has_delivery(payment)))
    elif action == ADMIN_REFUND:
        allowed = (status == UNKNOWN and pay_settled(payment, now)) or may_reverse(payment)
    else:
        grace = timedelta(seconds=current_app.config["PENDING_GRACE_SECONDS"])
        allowed = status == PENDING and payment.created_at <= now - grace
    if allowed:
        return None
    return _ADMIN_REFUSALS[action].get(status, f"not allowed from {status}")


def admin_actions(payment: Payment, now: datetime) -> list[str]:
    """The admin actions that apply to ``payment`` now (in display order)."""
    return [action for action in ADMIN_ACTIONS if admin_refusal(action, payment, now) is None]


# --- Staging (in the caller's unit of work) --------------------------------------


def new_reference(now: Optional[datetime] = None) -> str:
    """A fresh payment reference, used as the provider ``request_id``.

    VTpass requires the ``request_id`` to start with the Africa/Lagos
    date-time as ``YYYYMMDDHHII`` (reference/vtpass-api.md, request_id),
    followed by any alphanumeric suffix; 12 random hex characters make it
    unique. Returns a 24-character string.
    """
    now = now or utcnow()
    return now.astimezone(LAGOS).strftime("%Y%m%d%H%M") + secrets.token_hex(6)


def _expire_loaded(payment_id: int) -> None:
    # A bulk UPDATE bypasses the identity map; reload on next access.
    loaded = db.session.identity_map.get(db.session.identity_key(Payment, payment_id))
    if loaded is not None:
        db.session.expire(loaded)


def transition(
    payment_id: int,
    from_status: str,
    to_status: str,
    *,
    code: Optional[str] = None,
    message: Optional[str] = None,
    note: Optional[str] = None,
    now: Optional[datetime] = None,
    where: tuple = (),
    **fields: Any,
) -> bool:
    """Move a payment from ``from_status`` to ``to_status`` if it is still there.

    Stages in the caller's transaction (flushes the event, never commits).

    :param code: / ``message``: the provider's code and text, stored on the
        payment (``provider_code``, ``provider_message``) and on the event.
    :param note: the event's text when it is not the provider's (a
        reversal's or an admin's note); the payment's provider text is kept.
    :param now: database time (read with ``clock.db_now`` when omitted).
    :param where: extra conditions the row must meet for the change.
    :param fields: other ``Payment`` columns to set in the same UPDATE.
    :returns: True if this call made the change; False if the payment was not
        in ``from_status`` (another worker got there first).
    :raises IllegalTransition: the state machine does not allow the change.
    """
    if to_status not in TRANSITIONS.get(from_status, ()):
        raise IllegalTransition(f"{from_status} -> {to_status} is not allowed")
    now = now or db_now()
    values: dict[str, Any] = {"status": to_status, "updated_at": now, **fields}
    if code is not None:
        values["provider_code"] = code
    if message is not None:
        values["provider_message"] = message[:500]
    if to_status in FINAL_STATUSES:
        values["finalized_at"] = now
    result = db.session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == from_status, *where)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    record_event(payment_id, from_status, to_status, code=code,
                 message=note if note is not None else message, now=now)
    _expire_loaded(payment_id)
    return True


def record_event(
    payment_id: int,
    from_status: Optional[str],
    to_status: str,
    *,
    code: Optional[str] = None,
    message: Optional[str] = None,
    now: Optional[datetime] = None,
) -> None:
    """Append a timeline entry for a payment (staged in the caller's transaction)."""
    event = PaymentEvent(payment_id=payment_id, from_status=from_status, to_status=to_status,
                         provider_code=code, message=(message or "")[:500] or None)
    if now is not None:
        event.created_at = now
    db.session.add(event)


def stage_reversal(payment_id: int, *, note: str = REVERSAL_NOTE, uncertain: bool = False) -> bool:
    """Stage the refund of a ``failed`` payment in the caller's unit of work:
    ``failed -> reversed`` and the reversal transfer (exactly the payment's
    amount, from ``biller_clearing`` back to the payment's own wallet).

    A refund made while the outcome was uncertain (``uncertain``, or
    :func:`uncertain_refund`: on "never received") gets its requeries after
    the refund scheduled (``recheck_after_refund_at``, the first of
    ``REQUERY_AFTER_REFUND_DELAYS_SECONDS`` from now).

    The provider's code and text stay on the payment (customers read the
    reason from them); ``note`` goes on the reversal's event. Refused (False,
    nothing staged) when the payment is not ``failed`` or a delivery was
    reported for it (:func:`may_reverse`), or another transaction reversed it
    first.
    """
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None or not may_reverse(payment):
        return False
    wallet_id, amount_kobo = payment.wallet_id, payment.amount_kobo
    reason = CUSTOMER_REASONS.get(payment.provider_code or "", DEFAULT_CUSTOMER_REASON)
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    now = db_now()
    recheck: dict[str, Any] = {}
    delays = current_app.config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"]
    if (uncertain or uncertain_refund(payment)) and delays:
        recheck = {"recheck_after_refund_at": now + timedelta(seconds=delays[0]),
                   "rechecks_after_refund": 0}
    # The conditional UPDATE re-checks "no delivery" too: a late delivery
    # may have been recorded since the read above.
    if not transition(payment_id, FAILED, REVERSED, note=note, now=now,
                      where=(Payment.token.is_(None), Payment.receipt_reference.is_(None)),
                      **recheck):
        return False
    ledger.post_transfer(
        kind=KIND_REVERSAL,
        debit_wallet_id=clearing_id,
        credit_wallet_id=wallet_id,
        amount_kobo=amount_kobo,
        payment_id=payment_id,
        description=note[:200],
    )
    messages.refunded(payment_id, reason)  # same unit as the refund
    return True


# --- Units of work ----------------------------------------------------------------


def find_by_key(user_id: int, idempotency_key: str) -> Optional[Payment]:
    """The payment ``user_id`` made with ``idempotency_key``, if any."""
    return db.session.scalar(
        sa.select(Payment).where(
            Payment.user_id == user_id, Payment.idempotency_key == idempotency_key
        )
    )


def _same_order(payment: Payment, details: dict[str, Any]) -> bool:
    return all(getattr(payment, name) == value for name, value in details.items())


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
    """Debit the wallet and record a ``pending`` payment: ONE unit of work.

    Idempotent per (user, ``idempotency_key``): a repeat with the same details
    returns the first payment, also when the repeats race (the UNIQUE
    constraint decides the winner; the loser's unit rolls back whole and it
    reads the winner's row).

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
    try:
        return _create_payment(user, details, idempotency_key, customer_name, customer_address)
    except sa.exc.IntegrityError:
        existing = find_by_key(user.id, idempotency_key)
        if existing is None:
            raise
        return _repeat(existing, details)


def _repeat(existing: Payment, details: dict[str, Any]) -> tuple[Payment, bool]:
    if not _same_order(existing, details):
        raise IdempotencyConflict(
            "This form was already used for a different payment. Please start a new payment."
        )
    return existing, False


@unit_of_work
def _create_payment(user: User, details: dict[str, Any], idempotency_key: str,
                    customer_name: Optional[str], customer_address: Optional[str]) -> tuple[Payment, bool]:
    existing = find_by_key(user.id, idempotency_key)
    if existing is not None:
        return _repeat(existing, details)
    wallet_id = user.wallet.id
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    now = db_now()
    payment = Payment(
        reference=new_reference(now),
        user_id=user.id,
        wallet_id=wallet_id,
        status=PENDING,
        idempotency_key=idempotency_key,
        customer_name=_clip(customer_name, 200),
        customer_address=_clip(customer_address, 300),
        created_at=now,
        updated_at=now,
        **details,
    )
    db.session.add(payment)
    db.session.flush()  # claims (user, idempotency_key) first
    # Recorded before the debit: post_transfer flushes it before locking
    # the wallets, so nothing else is written while they are locked.
    record_event(payment.id, None, PENDING, message="Wallet debited; vend queued", now=now)
    ledger.post_transfer(
        kind=KIND_BILL_PAYMENT,
        debit_wallet_id=wallet_id,
        credit_wallet_id=clearing_id,
        amount_kobo=details["amount_kobo"],
        payment_id=payment.id,
        description=f"Electricity {details['meter_number']}",
    )
    return payment, True


def requery_delay_seconds(requery_count: int) -> float:
    """Exponential backoff for the next requery: ``REQUERY_BASE_DELAY_SECONDS
    * 2**requery_count``, capped at ``REQUERY_MAX_DELAY_SECONDS``, for any
    count (the exponent is bounded, so a payment requeried for weeks still
    gets its next requery instead of an ``OverflowError``)."""
    config = current_app.config
    exponent = min(max(requery_count, 0), MAX_BACKOFF_EXPONENT)
    return min(config["REQUERY_BASE_DELAY_SECONDS"] * (2.0 ** exponent),
               config["REQUERY_MAX_DELAY_SECONDS"])


def _is_overdue(payment: Payment, now: datetime) -> bool:
    age_seconds = (now - payment.created_at).total_seconds()
    return age_seconds >= current_app.config["UNKNOWN_ALERT_AGE_SECONDS"]


@unit_of_work
def apply_result(payment_id: int, from_status: str, result: VendResult, *,
                 source: str = SOURCE_REQUERY) -> FollowUp:
    """Record what the provider said about a ``vending`` or ``unknown``
    payment: ONE unit of work, safe to repeat.

    - ``delivered``: a ``vending``/``unknown`` payment becomes ``successful``
      (token, units, receipt), whatever ``from_status`` was (another step may
      have moved it from ``vending`` to ``unknown`` meanwhile); on a
      ``failed`` payment the proof is kept, the reversal blocked and the
      payment flagged; on ``reversed`` the payment is flagged.
    - ``failed``: ``failed`` (the caller then reverses), except a requery's
      "never received" (``NOT_FOUND``, VTpass ``015``) that
      :func:`not_found_trusted` does not believe (inside the grace, or ever
      for a pay whose answer had begun), which counts as ``pending``.
    - ``pending``: ``unknown`` with the next requery by capped exponential
      backoff, flagged ``needs_attention`` once older than
      ``UNKNOWN_ALERT_AGE_SECONDS`` (never refunded on that account).

    :param source: ``pay`` when ``result`` answers the vend call itself (the
        call has ended, so ``pay_in_flight_until`` becomes now, and
        ``result.answer_began`` is kept as ``pay_answer_began``), ``requery``
        otherwise.
    :returns: the follow-up for the task layer.
    """
    now = db_now()
    if source == SOURCE_PAY:
        _end_pay_call(payment_id, result, now)
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None:
        return NOTHING
    result = as_understood(result, payment.meter_type)

    if result.status == provider_base.DELIVERED:
        token = result.token if result.token and TOKEN_RE.fullmatch(result.token) else None
        proof = dict(token=token, units_kwh=_clip(result.units_kwh, 20),
                     receipt_reference=_clip(result.receipt_reference, 64))
        _apply_delivery(payment_id, from_status, result, proof, now)
        return NOTHING

    if payment.status != from_status:
        return NOTHING  # another worker or an admin settled it meanwhile

    if result.status == provider_base.FAILED:
        distrusted = _distrusted_not_found(payment, result, source, now)
        if distrusted is None:
            moved = transition(payment_id, from_status, FAILED, code=result.code,
                               message=result.message or "Failed", now=now, next_requery_at=None)
            return REVERSE if moved else NOTHING
        result = distrusted
    return _schedule_requery(payment, from_status, result, now)


def as_understood(result: VendResult, meter_type: str) -> VendResult:
    """A provider's answer as the lifecycle takes it: a prepaid "delivered"
    without a valid token (:data:`TOKEN_RE`, 20 ASCII digits: the proof the
    customer types on the meter) is no definite answer, a ``pending``
    ``UNEXPECTED_RESPONSE`` (DESIGN.md: an unexpected answer is not a
    failure; it is requeried, which repeats the token, and never refunded
    for it). The one place of this rule, whatever the provider client
    checked. Postpaid deliveries carry a receipt, not a token: unchanged.
    """
    if (result.status != provider_base.DELIVERED or meter_type != PREPAID
            or (result.token and TOKEN_RE.fullmatch(result.token))):
        return result
    return VendResult(provider_base.PENDING, provider_base.CODE_UNEXPECTED_RESPONSE,
                      "Delivered without a readable token")


def _end_pay_call(payment_id: int, result: VendResult, now: datetime) -> None:
    """Stage on the payment that its vend call has ended at ``now`` (UTC): nothing of it is
    in flight any more, and whether the provider had begun answering (it had the order)."""
    # The call has ended now: earlier than claim + deadline, or later
    # (the client's deadline starts after the claim commits; a provider
    # may overrun), either way nothing of it is in flight after now.
    ended = {"pay_in_flight_until": now}
    if result.answer_began:
        ended["pay_answer_began"] = True  # the provider had the order
    db.session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id)
        .values(**ended)
        .execution_options(synchronize_session=False))
    _expire_loaded(payment_id)


def _distrusted_not_found(payment: Payment, result: VendResult, source: str,
                          now: datetime) -> Optional[VendResult]:
    """A ``failed`` ``result`` that :func:`apply_result` must not believe, as the ``pending``
    result it counts as; None when the failure stands.

    Only a requery's "never received" (``NOT_FOUND``, VTpass ``015``) is doubted, and only
    while :func:`not_found_trusted` says no.
    """
    if not (source == SOURCE_REQUERY and result.code == provider_base.CODE_NOT_FOUND
            and not not_found_trusted(payment, now)):
        return None
    why = ("not trusted: the provider had begun answering the pay, so it had the order"
           if payment.pay_answer_began else
           "not trusted yet: a pay may have been in flight moments ago")
    return VendResult(provider_base.PENDING, result.code,
                      f"{result.message or 'No record of the order'} ({why})")


def _schedule_requery(payment: Payment, from_status: str, result: VendResult,
                      now: datetime) -> FollowUp:
    """Stage a ``pending`` answer: ``vending`` becomes ``unknown``, an ``unknown`` payment
    records the attempt; either way the next requery comes after
    :func:`requery_delay_seconds` and the payment is flagged once overdue.

    :returns: a ``requery`` follow-up with that delay (seconds), or ``NOTHING`` when the
        payment had moved on meanwhile.
    """
    payment_id = payment.id
    delay_seconds = requery_delay_seconds(payment.requery_count)
    fields = {
        "next_requery_at": now + timedelta(seconds=delay_seconds),
        "needs_attention": _is_overdue(payment, now),
    }
    if from_status == VENDING:
        moved = transition(payment_id, VENDING, UNKNOWN, code=result.code,
                           message=result.message or "No definite answer", now=now, **fields)
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
            _expire_loaded(payment_id)
            record_event(payment_id, UNKNOWN, UNKNOWN, code=result.code,
                         message=f"Requery: {result.message or 'still pending'}", now=now)
    return FollowUp("requery", delay_seconds) if moved else NOTHING


def _clip(value: Optional[str], length: int) -> Optional[str]:
    """Provider text cut to its column, so an overlong answer cannot make
    every retry of a payment fail on the database."""
    return value[:length] if value else None


def _apply_delivery(payment_id: int, expected_status: str, result: VendResult,
                    proof: dict[str, Any], now: datetime) -> None:
    """Stage a reported delivery on the payment as it is NOW: complete a
    ``vending``/``unknown`` payment, else :func:`_record_late_delivery`.

    Each write is conditional on the status just read; when it matches no
    row, another transaction moved the payment between the read and the
    write (the refund task, the original worker's ``vending -> unknown``),
    so read again and act on the new status. Statuses only move forward, so
    this ends within a few rounds; should it not, the unit of work reruns.
    """
    for _ in range(len(TRANSITIONS)):
        payment = db.session.get(Payment, payment_id, populate_existing=True)
        if payment is None or payment.status == SUCCESSFUL:
            return
        status = payment.status
        if status in (VENDING, UNKNOWN):
            if transition(payment_id, status, SUCCESSFUL, code=result.code,
                          message=result.message or "Delivered", now=now,
                          needs_attention=False, next_requery_at=None, **proof):
                # Units, tariff, debt, key-change tokens, the disco's reference;
                # the meter saved for "buy again": same unit as the success.
                journey.record_delivery(payment_id, result)
                messages.token_delivered(payment_id)  # the token by email and SMS, same unit
                return
        elif _record_late_delivery(payment_id, status, expected_status, result, proof, now):
            return
    raise StaleDataError(f"payment {payment_id} kept changing while a delivery was recorded")


def _record_late_delivery(payment_id: int, status: str, expected_status: str, result: VendResult,
                          proof: dict[str, Any], now: datetime) -> bool:
    """A delivery arrived for a payment that is no longer ``vending`` or
    ``unknown`` (``status``, just read). On ``failed`` the proof is kept on
    the payment, which blocks its reversal (:func:`may_reverse`); on
    ``failed`` and ``reversed`` the payment is flagged and the provider's
    proof goes on the timeline, so the customer never silently holds a
    token AND the money.

    :returns: False (nothing staged) if the payment is no longer in
        ``status``: the caller reads it again.
    """
    values: dict[str, Any] = {"needs_attention": True, "updated_at": now}
    if status == FAILED:
        values.update({k: v for k, v in proof.items() if v})
        if not (values.get("token") or values.get("receipt_reference")):
            values["receipt_reference"] = "delivered"  # the provider said so, without proof
    elif status == REVERSED:
        # The customer has the money back; the token stays off the payment's
        # token column (which customers' pages, searches and statements
        # read) and goes where only admins look (issue 20).
        values.update(delivered_after_refund=True, recheck_after_refund_at=None,
                      late_token=proof.get("token"),
                      late_receipt_reference=proof.get("receipt_reference") or "delivered")
    if db.session.execute(
        sa.update(Payment).where(Payment.id == payment_id, Payment.status == status)
        .values(**values).execution_options(synchronize_session=False)
    ).rowcount != 1:
        return False
    _expire_loaded(payment_id)
    # No token in the event's text: the proof is on the payment's columns,
    # shown on admin pages only.
    proof_kind = "a token" if proof.get("token") else "a receipt" if proof.get("receipt_reference") \
        else "no proof"
    record_event(payment_id, status, status, code=result.code, now=now,
                 message=f"Provider reported delivery ({proof_kind}) after the payment was "
                         f"{status}: needs an admin")
    log.error("payment %s delivered after it became %s (expected %s)",
              payment_id, status, expected_status)
    return True


def claim(payment_id: int) -> bool:
    """``pending`` -> ``vending`` for one worker: ONE unit of work (the
    intent, committed before the provider is called). True if this call
    claimed it; see :func:`_claim`."""
    return _claim(payment_id) is not None


@unit_of_work
def _claim(payment_id: int) -> Optional[dict[str, Any]]:
    """Claim ``payment_id`` (``pending`` -> ``vending``): ONE unit of work.

    Records ``claimed_at`` and ``pay_in_flight_until`` (claim time + the
    vending lease, ``VENDING_LEASE_SECONDS``) from the database clock. Not
    claim + the call's deadline: that deadline starts only once this claim
    has committed and the worker reaches the call, and the call's end is
    recorded by a later write, so on a loaded machine the pay can outlast
    claim + deadline. The lease is the bound the system already trusts (it
    must outlast a vend call, ``config.check_timings``; a worker holding it
    is presumed alive); :func:`_end_pay_call` replaces the bound with the
    moment the call really ended.

    :returns: the order to send (``request_id``, ``service_id``,
        ``meter_number``, ``meter_type``, ``amount_kobo``, ``phone``) if this
        call claimed it; None if another worker did, or it is not pending.
    """
    now = db_now()
    lease = timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    if not transition(payment_id, PENDING, VENDING, now=now,
                      message="A worker is contacting the disco", claimed_at=now,
                      pay_in_flight_until=now + lease,
                      vend_attempts=Payment.vend_attempts + 1):
        return None
    payment = db.session.get(Payment, payment_id)
    return dict(request_id=payment.reference, service_id=payment.service_id,
                meter_number=payment.meter_number, meter_type=payment.meter_type,
                amount_kobo=payment.amount_kobo, phone=payment.phone)


def vend_payment(payment_id: int, provider: Provider) -> FollowUp:
    """Claim a ``pending`` payment (one unit), vend it through ``provider``
    outside any transaction (the provider enforces its hard deadline), and
    record the answer (a second unit).

    Safe to call any number of times and concurrently: only the worker whose
    claim succeeds calls the provider, with the payment's ``reference`` as the
    ``request_id``.
    """
    order = _claim(payment_id)
    if order is None:
        return NOTHING
    try:
        result = provider.vend(**order)
    except Exception as exc:  # noqa: BLE001 - any crash mid-call is ambiguous
        log.exception("vend of payment %s raised", payment_id)
        result = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Provider call failed: {type(exc).__name__}")
    return apply_result(payment_id, VENDING, result, source=SOURCE_PAY)


@unit_of_work
def _claim_requery(payment_id: int, include_vending: bool, force: bool) -> Optional[tuple[str, str, str]]:
    """Take the one requery of a payment: a compare-and-set on
    ``next_requery_at`` (and, for ``vending``, ``claimed_at``) that pushes it
    a lease ahead, so a racing sweep tick or task finds it taken.

    :returns: ``(from_status, reference, meter_type)``, or None.
    """
    now = db_now()
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None or not may_requery(payment, now, include_vending=include_vending):
        return None
    due_at = payment.next_requery_at
    if (payment.status == UNKNOWN and not force and due_at is not None
            and due_at > now + timedelta(seconds=1)):
        return None
    from_status = payment.status
    lease_until = now + timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    claim_requery = (
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == from_status,
               Payment.next_requery_at.is_(None) if due_at is None
               else Payment.next_requery_at == due_at)
        .values(requery_count=Payment.requery_count + 1, next_requery_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    if from_status == VENDING:
        claim_requery = claim_requery.where(Payment.claimed_at == payment.claimed_at).values(claimed_at=now)
    if db.session.execute(claim_requery).rowcount != 1:
        return None
    _expire_loaded(payment_id)
    return from_status, payment.reference, payment.meter_type


def requery_payment(payment_id: int, provider: Provider, *, include_vending: bool = False,
                    force: bool = False) -> FollowUp:
    """Ask the provider about an ``unknown`` payment (or a ``vending`` one
    whose lease expired: the sweep and admins) and record the answer. Never
    places a new order.

    Three steps: claim the requery (one unit, :func:`_claim_requery`), call
    the provider outside any transaction, record the answer
    (:func:`apply_result`, a second unit). An ``unknown`` payment is only
    requeried when due (``next_requery_at`` reached, with a second of slack
    for the scheduler); ``force`` (an admin's "requery now") skips that.
    """
    claimed = _claim_requery(payment_id, include_vending, force)
    if claimed is None:
        return NOTHING
    from_status, reference, meter_type = claimed
    try:
        result = provider.requery(reference, meter_type=meter_type)
    except Exception as exc:  # noqa: BLE001
        log.exception("requery of payment %s raised", payment_id)
        result = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Requery failed: {type(exc).__name__}")
    return apply_result(payment_id, from_status, result, source=SOURCE_REQUERY)


class RequeryNotRecorded(PaymentError):
    """A requery whose answer is not on record (not made, no answer, or the
    answer could not be stored); the message says which, for an admin."""


def requery_before_refund(payment_id: int, provider: Provider) -> VendResult:
    """The requery an admin's refund of an ``unknown`` payment rests on: made
    now, and its answer recorded (:func:`apply_result`), or an error.

    Only an answer on record may lead to the refund (issue 20): one that
    could not be stored may have been "delivered".

    :returns: the provider's answer, recorded.
    :raises RequeryNotRecorded: another requery holds the payment (its
        answer is on its way), the provider call raised, or recording the
        answer failed.
    """
    claimed = _claim_requery(payment_id, False, True)
    if claimed is None:
        raise RequeryNotRecorded("another requery of this payment is in flight, or it is no longer "
                                 "unknown; look again in a moment")
    from_status, reference, meter_type = claimed
    try:
        result = provider.requery(reference, meter_type=meter_type)
    except Exception as exc:  # noqa: BLE001 - no answer: no refund on it
        log.exception("requery of payment %s before a refund raised", payment_id)
        failed = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Requery failed: {type(exc).__name__}")
        try:
            apply_result(payment_id, from_status, failed, source=SOURCE_REQUERY)
        except Exception:  # noqa: BLE001 - the sweep requeries it anyway
            log.exception("could not record the failed requery of payment %s", payment_id)
        raise RequeryNotRecorded(f"the provider could not be asked ({type(exc).__name__})") from exc
    try:
        apply_result(payment_id, from_status, result, source=SOURCE_REQUERY)
    except Exception as exc:  # noqa: BLE001 - the answer may be "delivered"
        log.exception("could not record the requery of payment %s before a refund", payment_id)
        db.session.rollback()
        raise RequeryNotRecorded(
            f"the provider's answer to the requery before the refund ({result.status}) could not be "
            f"recorded ({type(exc).__name__})") from exc
    return result


# --- Requeries after an uncertain refund (issue 20) -------------------------------

#: Requery answers that are no answer at all (the provider was not reached):
#: the same requery after a refund is tried again, not counted as done.
_NO_ANSWER_CODES = frozenset({provider_base.CODE_NO_RESPONSE, provider_base.CODE_TIMEOUT})


@unit_of_work
def _claim_recheck(payment_id: int) -> Optional[tuple[str, str, datetime]]:
    """Take the due requery-after-refund of a ``reversed`` payment: a
    compare-and-set on ``recheck_after_refund_at`` that pushes it a lease
    ahead, so a racing sweep finds it taken (and a worker that dies in the
    call leaves it to the sweep after the lease).

    :returns: ``(reference, meter_type, lease_until)``, or None (not due,
        or taken); ``lease_until`` is the claim, for :func:`_record_recheck`.
    """
    now = db_now()
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None or payment.status != REVERSED or payment.recheck_after_refund_at is None:
        return None
    due_at = payment.recheck_after_refund_at
    if due_at > now + timedelta(seconds=1):
        return None
    lease_until = now + timedelta(seconds=current_app.config["VENDING_LEASE_SECONDS"])
    if db.session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == REVERSED,
               Payment.recheck_after_refund_at == due_at)
        .values(recheck_after_refund_at=lease_until)
        .execution_options(synchronize_session=False)
    ).rowcount != 1:
        return None
    _expire_loaded(payment_id)
    return payment.reference, payment.meter_type, lease_until


@unit_of_work
def _record_recheck(payment_id: int, result: VendResult,
                    claimed_until: Optional[datetime] = None) -> None:
    """Record a requery-after-refund answer: ONE unit of work; never moves money.

    ``delivered`` (:func:`as_understood`: a prepaid one with its token):
    the payment is flagged ``delivered_after_refund`` with its proof
    (:func:`_record_late_delivery`), no more requeries. No answer (provider
    not reached): the same requery again after ``REQUERY_MAX_DELAY_SECONDS``.
    Any other answer: this requery is done; the next is due at refund time +
    the next of ``REQUERY_AFTER_REFUND_DELAYS_SECONDS``, or none is left, and
    then an inconclusive last answer (``pending``: processing, an unreadable
    delivery, a 5xx) flags the payment ``needs_attention`` (the refund was
    never confirmed; the admin stuck list says so). Only while the claim
    ``claimed_until`` (from :func:`_claim_recheck`) still holds: a worker
    that outlived its lease, whose requery another worker has taken again
    since, records nothing but a delivery (counted twice, its answer used
    up the next requery).
    """
    now = db_now()
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None or payment.status != REVERSED:
        return
    result = as_understood(result, payment.meter_type)
    if result.status == provider_base.DELIVERED:
        token = result.token if result.token and TOKEN_RE.fullmatch(result.token) else None
        proof = dict(token=token, units_kwh=result.units_kwh, receipt_reference=result.receipt_reference)
        _record_late_delivery(payment_id, REVERSED, REVERSED, result, proof, now)
        return
    done, next_at, flag, note = _next_recheck(payment, result, now)
    still_ours = (() if claimed_until is None
                  else (Payment.recheck_after_refund_at == claimed_until,))
    if db.session.execute(
        sa.update(Payment)
        .where(Payment.id == payment_id, Payment.status == REVERSED, *still_ours)
        .values(recheck_after_refund_at=next_at, rechecks_after_refund=done, updated_at=now,
                needs_attention=sa.true() if flag else Payment.needs_attention)
        .execution_options(synchronize_session=False)
    ).rowcount != 1:
        return
    _expire_loaded(payment_id)
    record_event(payment_id, REVERSED, REVERSED, code=result.code, message=note, now=now)


def _next_recheck(payment: Payment, result: VendResult,
                  now: datetime) -> tuple[int, Optional[datetime], bool, str]:
    """What a requery-after-refund answer (not a delivery) leaves for
    :func:`_record_recheck`: ``(rechecks done, next due or None, flag for
    an admin, the event's note)``."""
    config = current_app.config
    said = result.message or result.code or result.status
    if result.status == provider_base.PENDING and result.code in _NO_ANSWER_CODES:
        next_at = now + timedelta(seconds=config["REQUERY_MAX_DELAY_SECONDS"])
        return (payment.rechecks_after_refund, next_at, False,
                f"Requery after the refund: no answer ({said}); trying again")
    done = payment.rechecks_after_refund + 1
    delays = config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"]
    refunded_at = payment.finalized_at or now
    next_at = refunded_at + timedelta(seconds=delays[done]) if done < len(delays) else None
    if next_at is None and result.status == provider_base.PENDING:
        return (done, None, True, f"Requery after the refund: still no definite answer after the "
                                  f"last one ({said}); refund unconfirmed, needs an admin")
    return done, next_at, False, f"Requery after the refund: {said}"


def requery_after_refund(payment_id: int, provider: Provider) -> bool:
    """Ask the provider again about a payment refunded while its outcome was
    uncertain, once its next requery after the refund is due (the sweep
    finds those, ``sweep_candidates()["refunded"]``): claim (one unit), call
    the provider outside any transaction, record (a second unit,
    :func:`_record_recheck`). Never changes the money: a delivery found is
    flagged for an admin.

    :returns: True if the provider was asked.
    """
    claimed = _claim_recheck(payment_id)
    if claimed is None:
        return False
    reference, meter_type, claimed_until = claimed
    try:
        result = provider.requery(reference, meter_type=meter_type)
    except Exception as exc:  # noqa: BLE001 - no answer: try again later
        log.exception("requery after the refund of payment %s raised", payment_id)
        result = VendResult(provider_base.PENDING, provider_base.CODE_NO_RESPONSE,
                            f"Requery failed: {type(exc).__name__}")
    _record_recheck(payment_id, result, claimed_until)
    return True


@unit_of_work
def reverse_payment(payment_id: int, *, note: str = REVERSAL_NOTE) -> bool:
    """Refund a ``failed`` payment to its wallet: ONE unit of work
    (:func:`stage_reversal`). Exactly once: a second call (or a racing
    worker) finds the payment no longer ``failed`` and does nothing; a
    payment with a reported delivery is never refunded here.

    :returns: True if this call posted the refund.
    """
    return stage_reversal(payment_id, note=note)


def payment_for_user(reference: str, user: User) -> Optional[Payment]:
    """The payment with ``reference`` if ``user`` owns it (or is an admin);
    None for anything else, including a string that is not a reference.
    Its events (the page's timeline) come in the same statement."""
    if not REFERENCE_RE.fullmatch(reference):
        return None
    payment = db.session.scalars(sa.select(Payment).where(Payment.reference == reference)
                                 .options(joinedload(Payment.events))).unique().first()
    if payment is None or (payment.user_id != user.id and not user.is_admin):
        return None
    return payment
