"""Verify and credit: ask the gateway about a funding, apply its answer.

The transaction rule (``billvend.platform.transactions``): the gateway's
``verify`` is asked outside any transaction; its answer is applied in one unit
of work, safe to repeat. A credit needs ``verify`` to say ``success`` for our
reference with the stored amount in ``NGN`` (:func:`apply_verification`,
paystack.com/docs/payments/verify-payments); one credit per gateway reference
is enforced by UNIQUE (gateway, gateway_reference) on fundings and UNIQUE
(funding_id) on transfers, so racing callbacks, webhooks, sweeps and
reconciliations can only ever credit once. Mismatches are flagged for an
admin, never credited. The gateway's ``fees`` are recorded on the funding as
our cost; the customer is credited exactly what they paid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.funding import gateways
from billvend.funding.arrivals import customer_label, names_other_customer, owner_of_arrival
from billvend.funding.gateways import (FAILED_STATUSES, NOT_FOUND, SUCCESS, FundingGateway,
                                       GatewayError, GatewayTransaction)
from billvend.funding import messages as funding_messages
from billvend.funding.models import (FUNDING_FAILED, FUNDING_INITIATED, FUNDING_OPEN_STATUSES,
                                     FUNDING_PENDING, FUNDING_SUCCEEDED, Funding)
from billvend.ledger import services as ledger
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer
from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db

log = logging.getLogger(__name__)

#: The one currency a funding is in (Paystack's ``currency`` field).
CURRENCY = "NGN"


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_funding` concluded. ``outcome``: ``credited`` (now),
    ``already_credited``, ``pending``, ``failed``, ``flagged`` (mismatch, for
    an admin) or ``unknown`` (the gateway could not be asked)."""

    outcome: str
    funding_id: int
    amount_kobo: int
    detail: str = ""


def _backoff_seconds(attempts: int) -> float:
    config = current_app.config
    # The exponent is capped: 2**1024 and more overflow a float, and
    # attempts grow with every callback visit, not only with the sweep.
    return min(config["FUNDING_VERIFY_MAX_DELAY_SECONDS"],
               config["FUNDING_VERIFY_BASE_DELAY_SECONDS"] * 2 ** min(max(attempts - 1, 0), 40))


def _flag(funding: Funding, reason: str) -> None:
    funding.needs_attention = True
    funding.attention_reason = reason[:500]
    funding.next_verify_at = None


LATE_CREDIT_NOTE = "Confirmed late by the bank; credited"


def record_success_details(funding: Funding, tx: GatewayTransaction) -> None:
    """Record what a gateway success tells us beyond its status: the fee
    (``fees_kobo``, our cost), how the customer paid (``channel``) and when
    (``paid_at``)."""
    funding.fees_kobo = tx.fees_kobo
    funding.channel = (tx.channel or "")[:32] or None
    funding.paid_at = tx.paid_at


def credit_funding(funding: Funding, tx: GatewayTransaction, now: datetime) -> None:
    """Credit ``funding.amount_kobo`` from the funding system wallet into the
    funding's wallet (one ``funding`` transfer) and mark it ``succeeded`` at
    ``now``; the caller has checked the gateway's answer and holds the row.

    :raises sqlalchemy.exc.IntegrityError: the funding is already credited
        (UNIQUE (funding_id) on transfers).
    """
    late = funding.status == FUNDING_FAILED
    ledger.post_transfer(
        kind=KIND_FUNDING, debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
        credit_wallet_id=funding.wallet_id, amount_kobo=funding.amount_kobo,
        funding_id=funding.id,
        description=("Bank transfer" if funding.method == "bank_transfer" else "Card")
        + f" funding via {funding.gateway}")
    funding.status = FUNDING_SUCCEEDED
    funding.credited_at = now
    funding.next_verify_at = None
    if late:
        # We told the customer it failed: the history says it did not, after all.
        funding.gateway_message = LATE_CREDIT_NOTE
    funding_messages.funding_credited(funding)  # the receipt, same unit as the credit


@transactions.unit_of_work
def apply_verification(funding_id: int, tx: GatewayTransaction) -> Verification:
    """Record what the gateway's ``verify`` said about a funding, crediting
    it when (and only when) Paystack's rule holds: ``status == "success"``,
    the reference is this funding's, ``amount`` equals the stored amount and
    ``currency == "NGN"`` (paystack.com/docs/payments/verify-payments).

    One unit of work, safe to repeat and to race: the funding row is locked
    first, a funding already credited is left alone, and the ledger's UNIQUE
    (funding_id) refuses a second credit even if two units got past the check.

    A funding still open ``FUNDING_EXPIRE_SECONDS`` after it began (the
    gateway keeps saying ``ongoing``, ``pending``...) is closed as failed, so
    the sweep stops asking; a late success still credits it.

    :param tx: the gateway's answer for ``funding.gateway_reference``.
    :raises LookupError: no such funding.
    """
    funding = db.session.scalar(sa.select(Funding).where(Funding.id == funding_id).with_for_update())
    if funding is None:
        raise LookupError(f"no funding {funding_id}")
    now = db_now()
    credited = db.session.scalar(sa.select(Transfer.id).where(Transfer.funding_id == funding.id))
    if credited is not None:
        return Verification("already_credited", funding.id, funding.amount_kobo)
    funding.verify_attempts += 1
    funding.gateway_status = tx.status[:32]
    funding.gateway_message = tx.message[:200] or None
    if tx.status == SUCCESS:
        return _apply_success(funding, tx, now)
    if tx.status in FAILED_STATUSES:
        return _fail(funding, tx.status)
    return _apply_no_final_answer(funding, tx, now)


def _success_problems(funding: Funding, tx: GatewayTransaction) -> list[str]:
    # Why a gateway "success" is not this funding's money (empty: it is).
    problems = []
    if tx.reference != funding.gateway_reference:
        problems.append(f"reference {tx.reference!r} is not {funding.gateway_reference!r}")
    if tx.amount_kobo != funding.amount_kobo:
        problems.append(f"gateway amount {tx.amount_kobo} kobo, stored {funding.amount_kobo} kobo")
    if tx.currency != CURRENCY:
        problems.append(f"currency {tx.currency!r}, not NGN")
    if funding.method == "bank_transfer":
        code, email, _ = owner_of_arrival(funding.id)
        if names_other_customer(tx, code, email):
            # The money went into another customer's dedicated account.
            problems.append(f"the gateway names customer {customer_label(tx)}, this arrival's "
                            f"is {code!r}")
    return problems


def _apply_success(funding: Funding, tx: GatewayTransaction, now: datetime) -> Verification:
    problems = _success_problems(funding, tx)
    record_success_details(funding, tx)
    if problems:
        _flag(funding, "Not credited: " + "; ".join(problems))
        if funding.status == FUNDING_INITIATED:
            funding.status = FUNDING_PENDING
        return Verification("flagged", funding.id, funding.amount_kobo, "; ".join(problems))
    credit_funding(funding, tx, now)
    return Verification("credited", funding.id, funding.amount_kobo)


def _fail(funding: Funding, detail: str) -> Verification:
    funding.status = FUNDING_FAILED
    funding.next_verify_at = None
    return Verification("failed", funding.id, funding.amount_kobo, detail)


def _apply_no_final_answer(funding: Funding, tx: GatewayTransaction, now: datetime) -> Verification:
    # Neither success nor a final failure: not found, or still open
    # (``ongoing``, ``pending``...). Give up, expire, or ask again later.
    age_seconds = (now - funding.created_at).total_seconds()
    if tx.status == NOT_FOUND:
        if funding.status == FUNDING_INITIATED and age_seconds >= current_app.config["FUNDING_GIVE_UP_SECONDS"]:
            return _fail(funding, "the gateway never received this checkout")
    elif funding.status == FUNDING_INITIATED:
        funding.status = FUNDING_PENDING
    expire_seconds = current_app.config["FUNDING_EXPIRE_SECONDS"]
    if funding.status in FUNDING_OPEN_STATUSES and age_seconds >= expire_seconds:
        # Without an end, the sweep would ask about it every
        # FUNDING_VERIFY_MAX_DELAY_SECONDS for ever.
        return _fail(funding, f"no final answer from the gateway in {_duration(expire_seconds)} "
                              f"(it said {tx.status})")
    if funding.status in FUNDING_OPEN_STATUSES:
        funding.next_verify_at = now + timedelta(seconds=_backoff_seconds(funding.verify_attempts))
    return Verification("pending", funding.id, funding.amount_kobo, tx.status)


def _duration(seconds: int) -> str:
    """``86400`` -> ``"24 h"``, ``90`` -> ``"90 s"``."""
    return f"{seconds // 3600} h" if seconds >= 3600 and seconds % 3600 == 0 else f"{seconds} s"


@transactions.unit_of_work
def _note_unreachable(funding_id: int) -> None:
    # The gateway could not say: try again later, with backoff.
    funding = db.session.get(Funding, funding_id)
    if funding is not None and funding.status in FUNDING_OPEN_STATUSES:
        funding.verify_attempts += 1
        funding.next_verify_at = db_now() + timedelta(seconds=_backoff_seconds(funding.verify_attempts))


def verify_funding(funding_id: int, gw: Optional[FundingGateway] = None) -> Verification:
    """Ask the gateway about a funding (no transaction open) and apply the
    answer (:func:`apply_verification`, one unit). Safe to call any number
    of times, from the callback, a webhook task, the sweep or
    reconciliation, concurrently.

    :raises LookupError: no such funding.
    """
    gw = gw or gateways.gateway()
    row = db.session.execute(
        sa.select(Funding.gateway_reference, Funding.amount_kobo, Funding.status)
        .where(Funding.id == funding_id)).first()
    if row is None:
        raise LookupError(f"no funding {funding_id}")
    db.session.rollback()
    already = db.session.scalar(sa.select(Transfer.id).where(Transfer.funding_id == funding_id))
    db.session.rollback()
    if already is not None:
        return Verification("already_credited", funding_id, row.amount_kobo)
    try:
        tx = gw.verify(row.gateway_reference)
    except GatewayError as exc:
        log.warning("verify of funding %s failed: %s", funding_id, exc)
        _note_unreachable(funding_id)
        return Verification("unknown", funding_id, row.amount_kobo, str(exc))
    try:
        return apply_verification(funding_id, tx)
    except sa.exc.IntegrityError:
        # Another unit credited it between our check and our transfer: the
        # UNIQUE (funding_id) did its job.
        return Verification("already_credited", funding_id, row.amount_kobo)


def apply_answer(funding_id: int, tx: GatewayTransaction) -> Verification:
    """:func:`apply_verification` of an answer ``verify`` already gave (a new
    bank-transfer arrival's), where another unit crediting the funding first
    (UNIQUE (funding_id) refusing ours) is ``already_credited``.

    :raises LookupError: no such funding.
    """
    try:
        return apply_verification(funding_id, tx)
    except sa.exc.IntegrityError:
        # Another unit credited it between our check and our transfer.
        return Verification("already_credited", funding_id, 0)


# --- The sweep -----------------------------------------------------------------


def due_fundings(limit: int = 500) -> list[int]:
    """Open (``initiated``/``pending``) fundings the sweep should verify now,
    by the database clock: never verified and older than
    ``FUNDING_VERIFY_AFTER_SECONDS``, or whose ``next_verify_at`` has come.
    Flagged ones wait for an admin."""
    now = db_now()
    after = now - timedelta(seconds=current_app.config["FUNDING_VERIFY_AFTER_SECONDS"])
    ids = db.session.scalars(
        sa.select(Funding.id).where(
            Funding.status.in_(FUNDING_OPEN_STATUSES), Funding.needs_attention.is_(False),
            sa.or_(sa.and_(Funding.next_verify_at.is_(None), Funding.created_at < after),
                   Funding.next_verify_at <= now))
        .order_by(Funding.id).limit(limit)).all()
    db.session.rollback()
    return list(ids)


#: Most closed fundings one night verifies again (each is one gateway call).
RECHECK_LIMIT = 2000


def closed_fundings_to_recheck(limit: int = RECHECK_LIMIT) -> list[int]:
    """Card fundings closed as ``failed`` (abandoned, or no final answer in
    ``FUNDING_EXPIRE_SECONDS``), never credited, begun in the last
    ``FUNDING_RECHECK_FAILED_DAYS`` days, oldest first: what the nightly run
    verifies again.

    A checkout page can still be paid after its funding was closed; when all
    of that payment's webhooks are lost and the customer never comes back to
    the callback, nothing else would ever ask: the sweep only asks about open
    fundings, and the reconciliation lists the gateway's transactions by the
    day they began (found by the simulator, docs/simulation.md). Bank
    transfers are not here: their arrival is the money, never an open checkout.
    """
    since = db_now() - timedelta(days=current_app.config["FUNDING_RECHECK_FAILED_DAYS"])
    credited = sa.select(Transfer.id).where(Transfer.funding_id == Funding.id).exists()
    ids = db.session.scalars(
        sa.select(Funding.id).where(
            Funding.status == FUNDING_FAILED, Funding.method == "card", Funding.created_at >= since,
            Funding.needs_attention.is_(False), ~credited)
        .order_by(Funding.id).limit(limit)).all()
    db.session.rollback()
    return list(ids)

