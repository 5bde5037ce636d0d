"""Admin actions on payments: requery now, resolve as delivered, refund,
re-drive now.

Every action an admin submits (a valid form: CSRF and a reason) leaves one
``AdminAction`` row saying who, when, which payment, what, why and what came
of it, including a refusal: an attempt to refund a delivered payment is worth
having on the record. ``result`` starts with ``done:``, ``refused:`` or
``error:``. Refusals change nothing else.

No rules live here: which action applies to which payment, and the refusal
text when it does not, come from the lifecycle module
(``payments.admin_refusal``); status changes go through it too
(``transition``, ``requery_payment``, ``stage_reversal``), so the admin path
has the same guarantees as the workers.

Transactions (``billvend.platform.transactions``): each action is a sequence of units
of work. A decision and its ``AdminAction`` are ONE unit (the refund's
``unknown -> failed -> reversed``, its reversal transfer and its record
commit or roll back together, and a deadlock reruns all of it); a provider
call (requery) happens between units, never inside one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from billvend.vending import lifecycle as payments, tasks
from billvend.vending import messages as token_messages
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.vending.models import PREPAID, SUCCESSFUL, UNKNOWN, Payment
from billvend.accounts.models import AdminAction, User
from billvend.platform.money import format_naira
from billvend.vending.providers import get_provider
from billvend.platform.transactions import unit_of_work

log = logging.getLogger(__name__)

REQUERY = payments.ADMIN_REQUERY
RESOLVE_DELIVERED = payments.ADMIN_RESOLVE_DELIVERED
REFUND = payments.ADMIN_REFUND
REDRIVE = payments.ADMIN_REDRIVE
ACTIONS = payments.ADMIN_ACTIONS


class ActionError(Exception):
    """An admin action that could not be carried out (and was refused)."""


@dataclass(frozen=True)
class Outcome:
    """What an admin action did. ``ok`` is False for a refusal or an error;
    ``message`` is the text stored in ``AdminAction.result``."""

    ok: bool
    message: str
    action_id: int


def allowed_actions(payment: Payment) -> list[str]:
    """The admin actions that apply to ``payment`` now (database clock)."""
    return payments.admin_actions(payment, db_now())


def _record(admin_id: int, payment_id: Optional[int], action: str, reason: str, result: str) -> int:
    """Stage the ``AdminAction`` row in the caller's unit of work."""
    row = AdminAction(admin_id=admin_id, payment_id=payment_id, action=action,
                      reason=reason[:500], result=result[:500])
    db.session.add(row)
    db.session.flush()
    return row.id


@unit_of_work
def _record_alone(admin_id: int, payment_id: Optional[int], action: str, reason: str, result: str) -> int:
    """Write an ``AdminAction`` as its own unit of work."""
    return _record(admin_id, payment_id, action, reason, result)


def _refusal_message(why: str, status: str) -> str:
    return f"refused: {why} (status {status})"


def _stage_refusal(admin_id: int, payment: Payment, action: str, reason: str,
                   why: Optional[str] = None) -> Outcome:
    """Stage the record of a refusal (in the caller's unit); ``why``
    defaults to the lifecycle's reason (or, if the action now applies after
    all, that another transaction changed the payment first)."""
    if why is None:
        why = payments.admin_refusal(action, payment, db_now()) or \
            "another worker or admin changed this payment at the same moment; look again"
    message = _refusal_message(why, payment.status)
    return Outcome(False, message, _record(admin_id, payment.id, action, reason, message))


@unit_of_work
def _refuse(admin_id: int, payment_id: int, action: str, reason: str, why: Optional[str] = None) -> Outcome:
    """Record a refusal as its own unit of work, from the payment as it is now."""
    return _stage_refusal(admin_id, _get(payment_id), action, reason, why)


def _get(payment_id: int) -> Payment:
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None:
        raise ActionError(f"no payment {payment_id}")
    return payment


def _load(payment_id: int) -> Payment:
    """The payment as it is now (a read outside any unit of work)."""
    db.session.expire_all()  # decide on the row as it is now, not a cached copy
    return _get(payment_id)


def _check(admin: User, action: str, payment_id: int, reason: str) -> tuple[Payment, Optional[Outcome]]:
    """Load the payment; if ``action`` does not apply, record the refusal."""
    payment = _load(payment_id)
    why = payments.admin_refusal(action, payment, db_now())
    if why is None:
        db.session.rollback()  # end the read; the action's own units follow
        return payment, None
    db.session.rollback()
    return payment, _refuse(admin.id, payment_id, action, reason, why)


def _enqueue_follow_up(payment_id: int, follow_up: payments.FollowUp) -> None:
    # Queue what the state machine asks for only after our commits.
    try:
        if follow_up.action == "reverse":
            tasks.reverse(payment_id)
        elif follow_up.action == "requery":
            tasks.requery.schedule((payment_id,), delay=follow_up.delay_seconds)
    except Exception:  # noqa: BLE001 - the sweep re-drives it
        log.exception("could not enqueue the follow-up of payment %s", payment_id)


def requery_now(admin: User, payment_id: int, reason: str) -> Outcome:
    """Ask the provider about an ``unknown`` payment (or a ``vending`` one
    past its lease) now, in this request, and record what it said. A
    definite failure queues the refund and a still-pending answer the next
    requery, as the worker would.

    Not atomic with the ``AdminAction``: the requery is an observation (its
    own units of work); the row is written after it with the status before
    and after.

    :raises ActionError: no such payment.
    """
    payment, refused = _check(admin, REQUERY, payment_id, reason)
    if refused:
        return refused
    before = payment.status
    try:
        follow_up = payments.requery_payment(payment_id, get_provider(), include_vending=True,
                                             force=True)
    except Exception as exc:  # noqa: BLE001 - tell the admin, keep the record
        log.exception("admin requery of payment %s failed", payment_id)
        db.session.rollback()
        message = f"error: the requery failed ({type(exc).__name__}); nothing changed"
        return Outcome(False, message, _record_alone(admin.id, payment_id, REQUERY, reason, message))
    after = _load(payment_id)
    detail = f"{before} → {after.status}"
    if after.provider_code:
        detail += f", provider {after.provider_code}"
    if after.provider_message:
        detail += f": {after.provider_message}"
    message = f"done: requeried; {detail}"
    db.session.rollback()
    action_id = _record_alone(admin.id, payment_id, REQUERY, reason, message)
    _enqueue_follow_up(payment_id, follow_up)
    return Outcome(True, message, action_id)


@unit_of_work
def _resolve(admin_id: int, admin_email: str, payment_id: int, reason: str, token: Optional[str],
             receipt_reference: Optional[str], units_kwh: Optional[str]) -> Outcome:
    payment = _get(payment_id)
    now = db_now()
    why = payments.admin_refusal(RESOLVE_DELIVERED, payment, now)
    if why is not None:
        return _stage_refusal(admin_id, payment, RESOLVE_DELIVERED, reason, why)
    before = payment.status
    # A vending payment's lease is checked again by the UPDATE itself: the
    # sweep may take it for a requery (a new claimed_at, a provider call in
    # flight) between the read above and this transition.
    lease_still_expired = (payments.vending_lease_expired_clause(now),) if before == payments.VENDING else ()
    if not payments.transition(
        payment_id, before, SUCCESSFUL, code="ADMIN_RESOLVED", now=now, where=lease_still_expired,
        message=f"Resolved as delivered by {admin_email}: {reason}",
        token=token or None, receipt_reference=receipt_reference or None,
        units_kwh=units_kwh or None, needs_attention=False, next_requery_at=None,
    ):
        return _stage_refusal(admin_id, _get(payment_id), RESOLVE_DELIVERED, reason)
    # The customer has not seen this token: it goes out as a worker's delivery
    # would, queued in this unit (a postpaid receipt alone sends nothing).
    token_messages.token_delivered(payment_id)
    proof = f"token {token}" if token else f"receipt {receipt_reference}"
    message = f"done: {before} → successful with {proof}"
    return Outcome(True, message, _record(admin_id, payment_id, RESOLVE_DELIVERED, reason, message))


def resolve_delivered(admin: User, payment_id: int, reason: str, *, token: Optional[str],
                      receipt_reference: Optional[str], units_kwh: Optional[str]) -> Outcome:
    """Mark a payment ``successful`` with the token (or receipt) the admin
    found in the provider's records: a ``vending``/``unknown`` payment, or a
    ``failed`` one whose delivery arrived late (``payments.admin_refusal``).

    ONE unit of work: the conditional transition, its ``PaymentEvent`` and
    the ``AdminAction``. If a worker settles the payment first, the
    transition matches no row and the action is recorded as refused.

    :param token: 20 digits (required for prepaid; the form checks it).
    :raises ActionError: no such payment, or a prepaid payment without a
        20-digit token.
    """
    payment = _load(payment_id)
    meter_type = payment.meter_type
    db.session.rollback()
    if meter_type == PREPAID and not (token and len(token) == 20 and token.isdigit()):
        raise ActionError("a prepaid payment needs a 20-digit token")
    return _resolve(admin.id, admin.email, payment_id, reason, token, receipt_reference, units_kwh)


@unit_of_work
def _refund(admin_id: int, admin_email: str, payment_id: int, reason: str) -> Outcome:
    payment = _get(payment_id)
    now = db_now()
    why = payments.admin_refusal(REFUND, payment, now)
    if why is not None:
        return _stage_refusal(admin_id, payment, REFUND, reason, why)
    before, amount_kobo = payment.status, payment.amount_kobo
    if before == UNKNOWN and not payments.transition(
        payment_id, UNKNOWN, payments.FAILED, now=now,
        note=f"Marked failed by {admin_email} for a refund: {reason}",
        needs_attention=False, next_requery_at=None,
    ):
        return _stage_refusal(admin_id, _get(payment_id), REFUND, reason)
    # A refund of an unknown payment is made without a definite answer: the
    # provider is asked again after it (payments.requery_after_refund).
    if not payments.stage_reversal(payment_id, note=f"Refunded by an admin: {reason}"[:200],
                                   uncertain=before == UNKNOWN):
        if before == UNKNOWN:
            # We moved it to failed ourselves in this unit; nothing else can
            # have touched it since. Undo everything rather than leave it failed.
            raise ActionError("the refund could not be posted after marking the payment failed")
        return _stage_refusal(admin_id, _get(payment_id), REFUND, reason)
    path = "unknown → failed → reversed" if before == UNKNOWN else "failed → reversed"
    message = f"done: refunded {format_naira(amount_kobo)} to the customer's wallet ({path})"
    return Outcome(True, message, _record(admin_id, payment_id, REFUND, reason, message))


def refund(admin: User, payment_id: int, reason: str) -> Outcome:
    """Refund a ``failed`` (without a reported delivery) or ``unknown``
    payment to its wallet, exactly once.

    An ``unknown`` payment is requeried first (its own units of work, the
    provider call between them, ``payments.requery_before_refund``): if the
    provider says it was delivered it becomes ``successful`` and the refund
    is refused; a definite failure takes the ordinary path; if the provider
    still cannot say (an answer on record), the admin's refund (with its
    reason) proceeds. No answer on record (the requery could not be made,
    the provider call raised, or storing the answer failed) is a refusal
    with that reason, in the audit log.

    Then ONE unit of work: ``unknown -> failed`` (if needed), ``failed ->
    reversed`` with its reversal transfer (``payments.stage_reversal``) and
    the ``AdminAction``. A deadlock or serialization failure reruns the whole
    unit; under a double submit (or a racing sweep) only one conditional
    UPDATE matches and the loser is recorded as refused with the real reason.

    :raises ActionError: no such payment.
    """
    payment, refused = _check(admin, REFUND, payment_id, reason)
    if refused:
        return refused
    if payment.status == UNKNOWN:
        # The token may exist (DESIGN.md: a timeout is not a failure). Ask the
        # provider first: a delivered order is recorded, not refunded, and
        # only an answer on record ("still pending", "never received") may
        # lead to the refund; an error on the way is a refusal (issue 20).
        try:
            payments.requery_before_refund(payment_id, get_provider())
        except Exception as exc:  # noqa: BLE001 - every error is a refusal, on record
            log.warning("admin refund of payment %s refused: requery not recorded", payment_id,
                        exc_info=True)
            db.session.rollback()
            why = str(exc) if isinstance(exc, payments.RequeryNotRecorded) else \
                f"the requery before the refund failed ({type(exc).__name__})"
            current = _load(payment_id)
            if current.status != UNKNOWN:
                # Settled meanwhile (a worker's answer, a delivery): say what
                # the payment is now, the reason that matters to the admin.
                why = payments.admin_refusal(REFUND, current, db_now()) or why
            now_status = current.status
            db.session.rollback()
            message = f"refused: {why}; nothing was refunded (status {now_status})"
            return Outcome(False, message, _record_alone(admin.id, payment_id, REFUND, reason, message))
        payment = _load(payment_id)
        status = payment.status
        db.session.rollback()
        if status == SUCCESSFUL:
            message = ("refused: the provider says this order was delivered; it is now "
                       "successful with its token, so no refund (status successful)")
            return Outcome(False, message, _record_alone(admin.id, payment_id, REFUND, reason, message))
    return _refund(admin.id, admin.email, payment_id, reason)


def redrive_now(admin: User, payment_id: int, reason: str) -> Outcome:
    """Queue the vend of a ``pending`` payment again, once it is older than
    ``PENDING_GRACE_SECONDS`` (its task was probably lost): what the sweep
    would do on its next tick. The claim makes a duplicate harmless: only
    one worker ever calls the provider for a payment.

    :raises ActionError: no such payment.
    """
    payment, refused = _check(admin, REDRIVE, payment_id, reason)
    if refused:
        return refused
    message = "done: vend queued again (pending → the next free worker)"
    action_id = _record_alone(admin.id, payment_id, REDRIVE, reason, message)
    if not tasks.enqueue_vend(payment_id):
        message = "error: the queue is unreachable; the sweep will vend this payment"
        return Outcome(False, message, _record_alone(admin.id, payment_id, REDRIVE, reason, message))
    return Outcome(True, message, action_id)


@sa.event.listens_for(AdminAction, "before_update")
@sa.event.listens_for(AdminAction, "before_delete")
def _append_only(mapper, connection, target) -> None:
    """The audit log is append-only: the ORM refuses to change or delete a row."""
    raise ActionError("admin actions are append-only")
