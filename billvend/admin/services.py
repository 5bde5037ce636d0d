"""Admin actions on payments: requery now, resolve as delivered, refund.

Every action an admin submits (a valid form: CSRF and a reason) leaves one
``AdminAction`` row saying who, when, which payment, what, why and what came
of it, including a refusal: an attempt to refund a delivered payment is worth
having on the record. ``result`` starts with ``done:``, ``refused:`` or
``error:``. Refusals change nothing else.

Status changes go through ``billvend.payments`` (``transition``,
``requery_payment``, ``reverse_payment``), so the admin path has the same
guarantees as the workers: a conditional UPDATE per step, a ``PaymentEvent``
per change, and a refund posted exactly once however often it is asked for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from billvend import payments, tasks
from billvend.extensions import db
from billvend.models import (
    FAILED,
    PENDING,
    PREPAID,
    REVERSED,
    SUCCESSFUL,
    UNKNOWN,
    VENDING,
    AdminAction,
    Payment,
    User,
)
from billvend.money import format_naira
from billvend.providers import get_provider

log = logging.getLogger(__name__)

REQUERY = "requery"
RESOLVE_DELIVERED = "resolve_delivered"
REFUND = "refund"
ACTIONS = (REQUERY, RESOLVE_DELIVERED, REFUND)

#: The statuses each action starts from (anything else is refused).
ALLOWED_FROM: dict[str, frozenset[str]] = {
    REQUERY: frozenset({VENDING, UNKNOWN}),
    RESOLVE_DELIVERED: frozenset({VENDING, UNKNOWN}),
    REFUND: frozenset({FAILED, UNKNOWN}),
}

_REFUSALS: dict[str, dict[str, str]] = {
    REQUERY: {
        PENDING: "the payment has not been sent to the provider yet (the sweep re-queues it)",
        SUCCESSFUL: "the payment is already successful",
        FAILED: "the provider already said the payment failed; refund it instead",
        REVERSED: "the payment is already refunded",
    },
    RESOLVE_DELIVERED: {
        PENDING: "the payment has not been sent to the provider yet",
        SUCCESSFUL: "the payment is already successful",
        FAILED: "the payment failed and its refund is due; a failed payment cannot become delivered",
        REVERSED: "the payment was refunded; it cannot become delivered",
    },
    REFUND: {
        PENDING: "the payment is still in flight; wait for the provider's answer or requery it",
        VENDING: "the payment is still in flight; wait for the provider's answer or requery it",
        SUCCESSFUL: "the payment was delivered (successful); a delivered payment is never refunded",
        REVERSED: "the payment is already refunded",
    },
}


class ActionError(Exception):
    """An admin action that could not be carried out (and was refused)."""


@dataclass(frozen=True)
class Outcome:
    """What an admin action did. ``ok`` is False for a refusal or an error;
    ``message`` is the text stored in ``AdminAction.result``."""

    ok: bool
    message: str
    action_id: int


def allowed_actions(status: str) -> list[str]:
    """The admin actions that make sense for a payment in ``status``."""
    return [action for action in ACTIONS if status in ALLOWED_FROM[action]]


def _record(admin: User, payment_id: Optional[int], action: str, reason: str, result: str) -> int:
    """Add the ``AdminAction`` row to the session (the caller commits)."""
    row = AdminAction(admin_id=admin.id, payment_id=payment_id, action=action,
                      reason=reason[:500], result=result[:500])
    db.session.add(row)
    db.session.flush()
    return row.id


def _record_alone(admin: User, payment_id: Optional[int], action: str, reason: str, result: str) -> int:
    """Write an ``AdminAction`` in its own transaction (after a rollback)."""
    db.session.rollback()
    action_id = _record(admin, payment_id, action, reason, result)
    db.session.commit()
    return action_id


def _refuse(admin: User, payment: Payment, action: str, reason: str) -> Outcome:
    status = payment.status
    why = _REFUSALS[action].get(status, f"not allowed from {status}")
    message = f"refused: {why} (status {status})"
    return Outcome(False, message, _record_alone(admin, payment.id, action, reason, message))


def _load(payment_id: int) -> Payment:
    db.session.expire_all()  # decide on the row as it is now, not a cached copy
    payment = db.session.get(Payment, payment_id)
    if payment is None:
        raise ActionError(f"no payment {payment_id}")
    return payment


def requery_now(admin: User, payment_id: int, reason: str) -> Outcome:
    """Ask the provider about a ``vending``/``unknown`` payment now, in this
    request, and record what it said. A definite failure queues the refund and
    a still-pending answer the next requery, as the worker would.

    Not atomic with the ``AdminAction``: the requery is an observation; the
    row is written after it with the status before and after.

    :raises ActionError: no such payment.
    """
    payment = _load(payment_id)
    if payment.status not in ALLOWED_FROM[REQUERY]:
        return _refuse(admin, payment, REQUERY, reason)
    if payment.status == VENDING and not payments.vending_lease_expired(payment):
        # A worker's pay call may still be in flight: a requery now could hear
        # "no such order" and refund a payment that is about to be delivered.
        message = ("refused: a worker is vending this payment right now; requery it "
                   "once its lease has expired (the sweep will too) (status vending)")
        return Outcome(False, message, _record_alone(admin, payment_id, REQUERY, reason, message))
    before = payment.status
    try:
        follow_up = payments.requery_payment(payment_id, get_provider(), include_vending=True,
                                             force=True)
    except Exception as exc:  # noqa: BLE001 - tell the admin, keep the record
        log.exception("admin requery of payment %s failed", payment_id)
        message = f"error: the requery failed ({type(exc).__name__}); nothing changed"
        return Outcome(False, message, _record_alone(admin, payment_id, REQUERY, reason, message))
    after = _load(payment_id)
    detail = f"{before} → {after.status}"
    if after.provider_code:
        detail += f", provider {after.provider_code}"
    if after.provider_message:
        detail += f": {after.provider_message}"
    message = f"done: requeried; {detail}"
    action_id = _record_alone(admin, payment_id, REQUERY, reason, message)
    # Queue what the state machine asks for only after our commit.
    try:
        if follow_up.action == "reverse":
            tasks.reverse(payment_id)
        elif follow_up.action == "requery":
            tasks.requery.schedule((payment_id,), delay=follow_up.delay_seconds)
    except Exception:  # noqa: BLE001 - the sweep re-drives it
        log.exception("could not enqueue the follow-up of payment %s", payment_id)
    return Outcome(True, message, action_id)


def resolve_delivered(admin: User, payment_id: int, reason: str, *, token: Optional[str],
                      receipt_reference: Optional[str], units_kwh: Optional[str]) -> Outcome:
    """Mark a ``vending``/``unknown`` payment ``successful`` with the token (or
    receipt) the admin found in the provider's records.

    One transaction: the conditional transition, its ``PaymentEvent`` and the
    ``AdminAction``. If a worker settles the payment first, the transition
    matches no row and the action is recorded as refused.

    :param token: 20 digits (required for prepaid; the form checks it).
    :raises ActionError: no such payment, or a prepaid payment without a
        20-digit token.
    """
    payment = _load(payment_id)
    if payment.meter_type == PREPAID and not (token and len(token) == 20 and token.isdigit()):
        raise ActionError("a prepaid payment needs a 20-digit token")
    if payment.status not in ALLOWED_FROM[RESOLVE_DELIVERED]:
        return _refuse(admin, payment, RESOLVE_DELIVERED, reason)
    before = payment.status
    try:
        moved = payments.transition(
            payment_id, before, SUCCESSFUL,
            code="ADMIN_RESOLVED",
            message=f"Resolved as delivered by {admin.email}: {reason}",
            token=token or None, receipt_reference=receipt_reference or None,
            units_kwh=units_kwh or None, needs_attention=False, next_requery_at=None,
        )
        if not moved:
            db.session.rollback()
            return _refuse(admin, _load(payment_id), RESOLVE_DELIVERED, reason)
        proof = f"token {token}" if token else f"receipt {receipt_reference}"
        message = f"done: {before} → successful with {proof}"
        action_id = _record(admin, payment_id, RESOLVE_DELIVERED, reason, message)
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    return Outcome(True, message, action_id)


def refund(admin: User, payment_id: int, reason: str) -> Outcome:
    """Refund a ``failed`` or ``unknown`` payment to its wallet, exactly once.

    An ``unknown`` payment is requeried first: if the provider says it was
    delivered it becomes ``successful`` and the refund is refused; if the
    provider still cannot say, the admin's refund (with its reason) proceeds.

    ``unknown`` goes ``unknown → failed → reversed`` and ``failed`` goes
    ``failed → reversed``, through ``payments.reverse_payment`` (the same
    reversal path the workers use), in ONE transaction with the
    ``AdminAction``. Under a double submit (or a racing sweep) only one
    conditional UPDATE matches; the loser is recorded as refused.

    :raises ActionError: no such payment.
    """
    payment = _load(payment_id)
    if payment.status not in ALLOWED_FROM[REFUND]:
        return _refuse(admin, payment, REFUND, reason)
    if payment.status == UNKNOWN:
        # The token may exist (DESIGN.md: a timeout is not a failure). Ask the
        # provider first: a delivered order is recorded, not refunded; a
        # definite failure takes the ordinary refund path below.
        try:
            payments.requery_payment(payment_id, get_provider(), force=True)
        except Exception:  # noqa: BLE001 - the admin's decision still stands
            log.exception("requery before the admin refund of payment %s failed", payment_id)
        payment = _load(payment_id)
        if payment.status == SUCCESSFUL:
            message = ("refused: the provider says this order was delivered; it is now "
                       "successful with its token, so no refund (status successful)")
            return Outcome(False, message, _record_alone(admin, payment_id, REFUND, reason, message))
        if payment.status not in ALLOWED_FROM[REFUND]:
            return _refuse(admin, payment, REFUND, reason)
    before, amount_kobo = payment.status, payment.amount_kobo
    path = "unknown → failed → reversed" if before == UNKNOWN else "failed → reversed"
    message = f"done: refunded {format_naira(amount_kobo)} to the customer's wallet ({path})"
    try:
        if before == UNKNOWN and not payments.transition(
            payment_id, UNKNOWN, FAILED, code="ADMIN_REFUND",
            message=f"Marked failed by {admin.email} for a refund: {reason}",
            needs_attention=False, next_requery_at=None,
        ):
            db.session.rollback()
            return _refuse(admin, _load(payment_id), REFUND, reason)
        # Pending in the session: reverse_payment commits it together with
        # the reversal, or rolls it back with everything else.
        action_id = _record(admin, payment_id, REFUND, reason, message)
        refunded = payments.reverse_payment(
            payment_id, reason=f"Refunded by an admin: {reason}"[:200])
    except Exception:
        db.session.rollback()
        raise
    if not refunded:
        return _refuse(admin, _load(payment_id), REFUND, reason)
    return Outcome(True, message, action_id)


@sa.event.listens_for(AdminAction, "before_update")
@sa.event.listens_for(AdminAction, "before_delete")
def _append_only(mapper, connection, target) -> None:
    """The audit log is append-only: the ORM refuses to change or delete a row."""
    raise ActionError("admin actions are append-only")
