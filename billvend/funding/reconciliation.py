"""Reconciliation: compare a day's gateway transactions (``GET /transaction``
with ``from``/``to``, ``reference/paystack-api.md``) with our fundings; credit
verified successes we missed (at most once, through
:mod:`billvend.funding.verification`), flag the rest for an admin. Each run and
what it found is stored (admin page ``/admin/reconciliation``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

import sqlalchemy as sa

from billvend.funding import gateways, verification
from billvend.funding.arrivals import (Found, customer_label, funding_for_transaction,
                                       names_other_customer, owner_of_arrival)
from billvend.funding.gateways import SUCCESS, FundingGateway, GatewayError, GatewayTransaction
from billvend.funding.models import (FUNDING_OPEN_STATUSES, FUNDING_SUCCEEDED, Funding, ReconciliationItem,
                                     ReconciliationRun)
from billvend.funding.verification import CURRENCY
from billvend.ledger.models import Transfer
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.platform.models import utcnow

# Nigeria keeps West Africa Time all year (UTC+1).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")


def lagos_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of a day in Africa/Lagos, as UTC datetimes."""
    start = datetime(day.year, day.month, day.day, tzinfo=LAGOS).astimezone(timezone.utc)
    return start, start + timedelta(days=1)


@transactions.unit_of_work
def _open_run(day: date, gateway_name: str) -> int:
    run = ReconciliationRun(day=day, gateway=gateway_name)
    db.session.add(run)
    db.session.flush()
    return run.id


@transactions.unit_of_work
def _close_run(run_id: int, counts: dict[str, int], items: list[dict[str, Any]],
               error: Optional[str], left_to_sweep: frozenset[int] = frozenset()) -> None:
    run = db.session.get(ReconciliationRun, run_id)
    run.gateway_transactions = counts["gateway"]
    run.matched = counts["matched"]
    run.credited = counts["credited"]
    run.flagged = counts["flagged"]
    run.error = error[:500] if error else None
    run.finished_at = utcnow()
    for item in items:
        db.session.add(ReconciliationItem(run_id=run_id, **item))
        if item["kind"] != "credited" and item.get("funding_id") and item["funding_id"] not in left_to_sweep:
            funding = db.session.get(Funding, item["funding_id"])
            if not funding.needs_attention:
                funding.needs_attention = True
                funding.attention_reason = ("Reconciliation: " + item["detail"])[:500]


@dataclass
class _Tally:
    """What a run found so far: its counts, its items, and the open fundings
    the gateway could not be asked about now (reported, not flagged: a flag
    stops the sweep, which verifies them again)."""

    counts: dict[str, int] = field(
        default_factory=lambda: {"gateway": 0, "matched": 0, "credited": 0, "flagged": 0})
    items: list[dict[str, Any]] = field(default_factory=list)
    left_to_sweep: set[int] = field(default_factory=set)

    def flag(self, kind: str, detail: str, reference: Optional[str], funding_id: Optional[int] = None,
             amount: Optional[int] = None) -> None:
        self.counts["flagged"] += 1
        self.items.append({"kind": kind, "detail": detail[:500], "gateway_reference": reference,
                           "funding_id": funding_id, "gateway_amount_kobo": amount})


def reconcile(day: date, gw: Optional[FundingGateway] = None) -> ReconciliationRun:
    """Compare the gateway's transactions for ``day`` (Africa/Lagos) with our
    fundings (``GET /transaction`` with ``from``/``to``):

    - a gateway ``success`` we have not credited is verified and credited
      (through :func:`billvend.funding.verification.verify_funding`, so at
      most once);
    - a gateway success for a reference we do not know, a credit whose
      gateway transaction is not a success, an amount mismatch, or a bank
      transfer whose customer (per the gateway) is not the one it was
      credited to is flagged.

    Each run and what it found is stored (admin page ``/admin/reconciliation``).

    :returns: the finished run.
    """
    gw = gw or gateways.gateway()
    start, end = lagos_day_bounds(day)
    run_id = _open_run(day, gw.name)
    tally = _Tally()
    error = None
    try:
        gateway_txs = gw.transactions(start, end)
    except GatewayError as exc:
        gateway_txs, error = [], f"could not list the gateway's transactions: {exc}"
    successes = {}
    for tx in gateway_txs:
        tally.counts["gateway"] += 1
        if tx.status != SUCCESS:
            continue
        successes[tx.reference] = tx
        _reconcile_success(tx, gw, tally)
    if error is None:
        _check_our_credits(gw, start, end, successes, tally)
    _close_run(run_id, tally.counts, tally.items, error, frozenset(tally.left_to_sweep))
    run = db.session.get(ReconciliationRun, run_id)
    return run


def _reconcile_success(tx: GatewayTransaction, gw: FundingGateway, tally: _Tally) -> None:
    # One success in the gateway's list: matched, credited now, or flagged.
    try:
        found = funding_for_transaction(tx, gw)
    except GatewayError as exc:
        tally.flag("not_credited", f"gateway lists success; its verify could not be asked: {exc}",
                   tx.reference, amount=tx.amount_kobo)
        return
    if found.customer_mismatch:
        # The gateway's own list names another customer than the one the
        # arrival was credited to (or than its verify): never "matched".
        tally.flag("customer_mismatch", found.why, tx.reference, found.mismatched_funding_id, tx.amount_kobo)
        return
    funding_id = found.funding_id
    if funding_id is None:
        tally.flag("unknown_reference", f"gateway success with no funding of ours ({found.why})",
                   tx.reference, amount=tx.amount_kobo)
        return
    funding = db.session.get(Funding, funding_id)
    stored, status = funding.amount_kobo, funding.status
    credited = status == FUNDING_SUCCEEDED
    db.session.rollback()
    if tx.amount_kobo != stored or tx.currency != CURRENCY:
        tally.flag("amount_mismatch",
                   f"gateway {tx.amount_kobo} kobo {tx.currency}, stored {stored} kobo", tx.reference,
                   funding_id, tx.amount_kobo)
        return
    if credited:
        tally.counts["matched"] += 1
        return
    _credit_missed(tx, gw, found, status, tally)


def _credit_missed(tx: GatewayTransaction, gw: FundingGateway, found: Found, status: str,
                   tally: _Tally) -> None:
    # A gateway success of the right amount we have not credited: verify and credit it.
    funding_id = found.funding_id
    result = (verification.apply_answer(funding_id, found.verified) if found.verified is not None
              else verification.verify_funding(funding_id, gw))
    if result.outcome == "credited":
        tally.counts["credited"] += 1
        tally.items.append({"kind": "credited", "detail": "gateway success credited by reconciliation",
                            "gateway_reference": tx.reference, "funding_id": funding_id,
                            "gateway_amount_kobo": tx.amount_kobo})
    elif result.outcome == "already_credited":
        tally.counts["matched"] += 1
    else:
        if result.outcome == "unknown" and status in FUNDING_OPEN_STATUSES:
            tally.left_to_sweep.add(funding_id)
        tally.flag("not_credited", f"gateway lists success, verify says {result.outcome} {result.detail}",
                   tx.reference, funding_id, tx.amount_kobo)


def _check_our_credits(gw: FundingGateway, start: datetime, end: datetime,
                       successes: dict[str, GatewayTransaction], tally: _Tally) -> None:
    # Our credits of the day that the gateway's list has no success for.
    ours = db.session.execute(
        sa.select(Funding.id, Funding.gateway_reference, Funding.amount_kobo)
        .join(Transfer, Transfer.funding_id == Funding.id)
        .where(Funding.gateway == gw.name, Transfer.created_at >= start, Transfer.created_at < end)
    ).all()
    db.session.rollback()
    for funding_id, reference, amount in ours:
        if reference in successes:
            continue
        _confirm_credit(gw, funding_id, reference, amount, tally)


def _confirm_credit(gw: FundingGateway, funding_id: int, reference: str, amount: int,
                    tally: _Tally) -> None:
    code, email, method = owner_of_arrival(funding_id)
    db.session.rollback()
    # Paid late on the day before, or listed under another day: ask
    # about this one reference before flagging it.
    try:
        tx = gw.verify(reference)
    except GatewayError as exc:
        tally.flag("credit_without_success", f"credited; the gateway could not confirm it: {exc}",
                   reference, funding_id, None)
        return
    if method == "bank_transfer" and names_other_customer(tx, code, email):
        tally.flag("customer_mismatch",
                   f"credited to customer {code!r}; the gateway's verify names customer "
                   f"{customer_label(tx)}", reference, funding_id, tx.amount_kobo)
    elif tx.status == SUCCESS and tx.amount_kobo == amount and tx.currency == CURRENCY:
        tally.counts["matched"] += 1
    else:
        tally.flag("credit_without_success",
                   f"credited, but the gateway says {tx.status} {tx.amount_kobo} kobo {tx.currency}",
                   reference, funding_id, tx.amount_kobo)
