"""Admin adjustments and bonuses with four-eyes approval (issue 27).

An admin proposes a credit, a debit or a bonus to one customer's wallet, with a reason
(:func:`propose`). A DIFFERENT admin approves it (:func:`approve`, after a fresh TOTP
code checked by the web tier) or rejects it (:func:`reject`). Only an approval moves
money, through the ledger, once:

- a credit: ``adjustments`` -> customer, kind ``adjustment``;
- a debit: customer -> ``adjustments``, kind ``adjustment`` (refused when the wallet
  cannot cover it: a user wallet never goes below zero);
- a bonus: ``promotions`` -> customer, kind ``bonus``.

A proposal waits ``ADJUSTMENT_TTL_SECONDS`` (24 h, database clock); after that it cannot
be approved. Exactly once: the approval locks the adjustment row (``FOR UPDATE`` on
PostgreSQL; SQLite serialises writers), posts the transfer, whose
``UNIQUE(adjustment_id, kind)`` refuses a second one, and moves the status with a
conditional UPDATE (``WHERE status = 'proposed'``); a unit that loses the race rolls
back whole and records a refusal.

Every step, refusals included, leaves one ``AdminAction`` row (``adjustment_id`` set),
written in the same unit of work as the step. Results start ``done:`` or ``refused:``.
Each public function is ONE unit of work (``billvend.platform.transactions``); call it
outside any unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.accounts.models import AdminAction, User
from billvend.adjustments import messages
from billvend.adjustments.models import (
    APPROVED, BONUS, CREDIT, DEBIT, DIRECTIONS, EXPIRED, PROPOSED, REJECTED, Adjustment,
)
from billvend.ledger import services as ledger
from billvend.ledger.models import (
    ADJUSTMENTS_WALLET, KIND_ADJUSTMENT, KIND_BONUS, PROMOTIONS_WALLET, Wallet,
)
from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.money import format_naira

log = logging.getLogger(__name__)

PROPOSE = "adjustment_propose"
APPROVE = "adjustment_approve"
REJECT = "adjustment_reject"

#: What the customer's statement says (``transfers.description``), by direction.
CUSTOMER_WORDS = {
    CREDIT: "Goodwill credit from billvend",
    BONUS: "Goodwill credit from billvend",
    DEBIT: "Balance correction by billvend",
}


@dataclass(frozen=True)
class Outcome:
    """What a step did: ``ok`` False for a refusal; ``message`` is the ``AdminAction``
    result (``done: ...`` / ``refused: ...``); ``adjustment_id`` may be None (a proposal
    refused before it existed)."""

    ok: bool
    message: str
    adjustment_id: Optional[int]


class _LostRace(Exception):
    """Another unit decided the adjustment between our lock-free read and our write."""


def kind_of(direction: str) -> str:
    """The ledger transfer kind that posts ``direction``: ``bonus`` or ``adjustment``."""
    return KIND_BONUS if direction == BONUS else KIND_ADJUSTMENT


def system_wallet_of(direction: str) -> str:
    """The system wallet on the business's side of ``direction``."""
    return PROMOTIONS_WALLET if direction == BONUS else ADJUSTMENTS_WALLET


def _audit(admin_id: int, adjustment_id: Optional[int], action: str, reason: str,
           result: str) -> None:
    db.session.add(AdminAction(admin_id=admin_id, adjustment_id=adjustment_id, action=action,
                               reason=(reason or "")[:500], result=result[:500]))


def _amount_refusal(amount_kobo) -> Optional[str]:
    """Why ``amount_kobo`` cannot be adjusted, or None (kobo, the configured bounds)."""
    if not isinstance(amount_kobo, int) or isinstance(amount_kobo, bool) or amount_kobo <= 0:
        return "the amount must be a whole number of kobo above zero"
    low = current_app.config["MIN_ADJUSTMENT_KOBO"]
    high = min(current_app.config["MAX_ADJUSTMENT_KOBO"], ledger.MAX_TRANSFER_KOBO)
    if not low <= amount_kobo <= high:
        return f"the amount must be from {format_naira(low)} to {format_naira(high)}"
    return None


def _proposal_refusal(admin: Optional[User], customer: Optional[User], direction: str,
                      amount_kobo, reason: str) -> Optional[str]:
    if admin is None or not admin.is_admin:
        return "only an admin may propose an adjustment"
    if customer is None or customer.wallet is None:
        return "no customer has that email address"
    if customer.id == admin.id:
        return "you cannot propose an adjustment to your own wallet"
    if direction not in DIRECTIONS:
        return f"unknown direction {direction!r}"
    if not (reason or "").strip():
        return "a reason is required"
    return _amount_refusal(amount_kobo)


@transactions.unit_of_work
def propose(admin_id: int, customer_email: str, direction: str, amount_kobo: int,
            reason: str) -> Outcome:
    """Record a proposal (status ``proposed``, expiring ``ADJUSTMENT_TTL_SECONDS`` after
    now on the database clock) and its audit row. No money moves.

    :param customer_email: the customer's address (case-insensitive).
    :param direction: ``credit``, ``debit`` or ``bonus``.
    :param amount_kobo: positive int kobo within ``MIN/MAX_ADJUSTMENT_KOBO``.
    :returns: the outcome; a refusal (unknown customer, bad amount, own wallet, ...)
        writes only its audit row.
    """
    admin = db.session.get(User, admin_id)
    email = (customer_email or "").strip().lower()[:254]
    customer = db.session.scalar(sa.select(User).where(User.email == email)) if email else None
    refusal = _proposal_refusal(admin, customer, direction, amount_kobo, reason)
    if refusal is not None:
        result = f"refused: {refusal}"
        _audit(admin_id, None, PROPOSE, f"{direction} {amount_kobo!r} kobo for {email}: {reason}",
               result)
        return Outcome(False, result, None)
    now = db_now()
    row = Adjustment(user_id=customer.id, wallet_id=customer.wallet.id, direction=direction,
                     amount_kobo=amount_kobo, reason=reason.strip()[:500], status=PROPOSED,
                     proposed_by_id=admin_id, proposed_at=now,
                     expires_at=now + timedelta(seconds=current_app.config["ADJUSTMENT_TTL_SECONDS"]))
    db.session.add(row)
    db.session.flush()
    result = (f"done: proposed a {direction} of {format_naira(amount_kobo)} for {customer.email}; "
              "waiting for a second admin")
    _audit(admin_id, row.id, PROPOSE, reason, result)
    return Outcome(True, result, row.id)


def _locked(adjustment_id: int) -> Optional[Adjustment]:
    """The adjustment, freshly read, row-locked on PostgreSQL (SQLite: writers are serial)."""
    return db.session.scalar(sa.select(Adjustment).where(Adjustment.id == adjustment_id)
                             .with_for_update().execution_options(populate_existing=True))


def _decision_refusal(row: Optional[Adjustment], admin: Optional[User], now) -> Optional[str]:
    """Why ``admin`` may not decide ``row`` at ``now``, or None. Marks a proposal past
    its window ``expired`` (in the caller's unit)."""
    if row is None:
        return "no such adjustment"
    if admin is None or not admin.is_admin:
        return "only an admin may decide an adjustment"
    if row.status == PROPOSED and row.expires_at <= now:
        row.status = EXPIRED
        return "the proposal expired (24 hours passed without a decision); propose it again"
    if row.status != PROPOSED:
        return f"it is already {row.status}"
    if row.proposed_by_id == admin.id:
        return "you proposed it: a different admin must approve or reject it (four eyes)"
    if row.user_id == admin.id:
        return "it is for your own wallet: another admin must decide it"
    return None


def _post(row: Adjustment) -> int:
    """Post ``row`` through the ledger; the transfer id. Raises as ``post_transfer``."""
    system_id = ledger.system_wallet_id(system_wallet_of(row.direction))
    debit_id, credit_id = ((row.wallet_id, system_id) if row.direction == DEBIT
                           else (system_id, row.wallet_id))
    return ledger.post_transfer(
        kind=kind_of(row.direction), debit_wallet_id=debit_id, credit_wallet_id=credit_id,
        amount_kobo=row.amount_kobo, adjustment_id=row.id,
        description=CUSTOMER_WORDS[row.direction]).transfer_id


def _mark_decided(row: Adjustment, status: str, admin_id: int, reason: str, now,
                  transfer_id: Optional[int] = None) -> None:
    """The status guard: ``proposed`` -> ``status`` in one conditional UPDATE.

    :raises _LostRace: another unit decided it first (the caller's unit rolls back).
    """
    table = Adjustment.__table__
    changed = db.session.execute(
        sa.update(table).where(table.c.id == row.id, table.c.status == PROPOSED)
        .values(status=status, decided_by_id=admin_id, decided_at=now,
                decision_reason=reason[:500], transfer_id=transfer_id)).rowcount
    if changed != 1:
        raise _LostRace(row.id)
    db.session.expire(row)


@transactions.unit_of_work
def _approve(admin_id: int, adjustment_id: int, reason: str) -> Outcome:
    row = _locked(adjustment_id)
    now = db_now()
    refusal = _decision_refusal(row, db.session.get(User, admin_id), now)
    if refusal is None:
        try:
            transfer_id = _post(row)
        except ledger.InsufficientFunds:
            balance = db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.id == row.wallet_id))
            refusal = (f"the debit of {format_naira(row.amount_kobo)} would take the wallet below "
                       f"zero (it holds {format_naira(balance or 0)}); nothing was taken")
    if refusal is not None:
        result = f"refused: {refusal}"
        _audit(admin_id, row.id if row else None, APPROVE, reason, result)
        return Outcome(False, result, row.id if row else None)
    direction, amount_kobo, user_id = row.direction, row.amount_kobo, row.user_id
    _mark_decided(row, APPROVED, admin_id, reason, now, transfer_id)
    if direction != DEBIT:
        messages.credited(adjustment_id)
    result = f"done: posted the {direction} of {format_naira(amount_kobo)} (transfer {transfer_id})"
    _audit(admin_id, adjustment_id, APPROVE, reason, result)
    log.info("adjustment %s approved by admin %s: %s %s kobo for user %s", adjustment_id, admin_id,
             direction, amount_kobo, user_id)
    return Outcome(True, result, adjustment_id)


def approve(admin_id: int, adjustment_id: int, reason: str) -> Outcome:
    """Approve a proposal and post it through the ledger, exactly once (one unit).

    The caller (the web tier) has checked the approver's fresh TOTP code. Refused, with
    only the audit row written: an unknown adjustment; one not ``proposed``; one past
    its 24 h (it becomes ``expired``); the proposer approving their own; an admin
    approving one for their own wallet; a debit the wallet cannot cover.

    :returns: the outcome; ``done:`` means the transfer is posted and committed.
    """
    # A first failure: another approval won between our read and our write (SQLite
    # takes no row lock; on PostgreSQL the row lock makes this a plain refusal): the
    # unit rolled back whole, UNIQUE(adjustment_id, kind) having refused a second
    # posting. The rerun finds the decision and records the refusal. A second failure
    # with the proposal still undecided: a transfer not posted by an approval already
    # names it (a forgery the invariants report); refused on the record, not a crash.
    for attempt in (1, 2):
        try:
            return _approve(admin_id, adjustment_id, reason)
        except (sa.exc.IntegrityError, _LostRace):
            if attempt == 2:
                return record_refusal(admin_id, adjustment_id, APPROVE, reason,
                                      "a ledger transfer already names it; nothing was posted "
                                      "(see the invariants page)")
    raise AssertionError("unreachable")  # pragma: no cover


@transactions.unit_of_work
def _reject(admin_id: int, adjustment_id: int, reason: str) -> Outcome:
    row = _locked(adjustment_id)
    now = db_now()
    refusal = _decision_refusal(row, db.session.get(User, admin_id), now)
    if refusal is not None:
        result = f"refused: {refusal}"
        _audit(admin_id, row.id if row else None, REJECT, reason, result)
        return Outcome(False, result, row.id if row else None)
    _mark_decided(row, REJECTED, admin_id, reason, now)
    result = "done: rejected; no money moved"
    _audit(admin_id, adjustment_id, REJECT, reason, result)
    return Outcome(True, result, adjustment_id)


def reject(admin_id: int, adjustment_id: int, reason: str) -> Outcome:
    """Reject a proposal (one unit; no money moves). Refused as :func:`approve` is,
    except that a debit is never refused for the balance."""
    try:
        return _reject(admin_id, adjustment_id, reason)
    except _LostRace:
        return _reject(admin_id, adjustment_id, reason)


def record_refusal(admin_id: int, adjustment_id: Optional[int], action: str, reason: str,
                   why: str) -> Outcome:
    """Record a step the web tier refused before calling a service (a wrong or reused
    TOTP code), as its own unit. :returns: the refusal."""
    result = f"refused: {why}"
    transactions.run(_audit, admin_id, adjustment_id, action, reason, result)
    return Outcome(False, result, adjustment_id)
