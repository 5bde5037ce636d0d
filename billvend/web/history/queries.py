"""Statement queries shared by the history page, its downloads and the dashboard."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Iterable, Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.vending.models import SUCCESSFUL, Payment, SavedMeter
from billvend.ledger.models import LedgerEntry, Transfer
from billvend.transfers.models import P2PTransfer


def _lagos_midnight(day: date) -> datetime:
    from billvend.vending.lifecycle import LAGOS

    return datetime.combine(day, time.min, tzinfo=LAGOS)


def statement_query(wallet_id: int, *, kind: Optional[str] = None,
                    status: Optional[str] = None, statuses: Optional[Iterable[str]] = None,
                    search: Optional[str] = None, date_from: Optional[date] = None,
                    date_to: Optional[date] = None) -> sa.Select:
    """Ledger entries of one wallet, newest first, with their transfer and payment
    (and a transfer between customers with its row and both parties).

    :param kind: keep only transfers of this kind.
    :param status: keep only entries caused by payments in this status.
    :param statuses: keep only entries caused by payments in one of these statuses.
    :param search: a meter number, token (dashes and spaces ignored), payment
        reference or the disco's reference: entries of matching payments.
    :param date_from: first day (Africa/Lagos) to include.
    :param date_to: last day (Africa/Lagos) to include.
    """
    query = (
        sa.select(LedgerEntry)
        .join(LedgerEntry.transfer)
        .outerjoin(Payment, Payment.id == Transfer.payment_id)
        .where(LedgerEntry.wallet_id == wallet_id)
        .options(so.contains_eager(LedgerEntry.transfer).contains_eager(Transfer.payment),
                 # A transfer between customers names both (masked): loaded per page, not per row.
                 so.contains_eager(LedgerEntry.transfer).selectinload(Transfer.p2p_transfer)
                 .selectinload(P2PTransfer.sender),
                 so.contains_eager(LedgerEntry.transfer).selectinload(Transfer.p2p_transfer)
                 .selectinload(P2PTransfer.recipient))
        .order_by(LedgerEntry.wallet_version.desc())
    )
    if kind:
        query = query.where(Transfer.kind == kind)
    if status:
        query = query.where(Payment.status == status)
    if statuses:
        query = query.where(Payment.status.in_(tuple(statuses)))
    if search:
        text = search.strip()
        digits = re.sub(r"[\s\-]", "", text)
        # The delivery's proof finds only a successful payment: one reported
        # after a failure or a refund is for admins (issue 20), and a match
        # would tell the customer it exists.
        delivered = Payment.status == SUCCESSFUL
        query = query.where(sa.or_(
            Payment.meter_number == digits,
            sa.and_(delivered, Payment.token == digits),
            Payment.reference == text.lower(),
            sa.and_(delivered, Payment.exchange_reference == text),
            sa.and_(delivered, Payment.receipt_reference == text),
        ))
    if date_from:
        query = query.where(LedgerEntry.created_at >= _lagos_midnight(date_from))
    if date_to:
        query = query.where(LedgerEntry.created_at < _lagos_midnight(date_to + timedelta(days=1)))
    return query


def meter_labels(user_id: int) -> dict[tuple[str, str], str]:
    """``{(service_id, meter_number): nickname}`` of the customer's named meters."""
    rows = sa.select(SavedMeter.service_id, SavedMeter.meter_number, SavedMeter.nickname).where(
        SavedMeter.user_id == user_id, SavedMeter.nickname.is_not(None))
    from billvend.platform.extensions import db

    return {(r.service_id, r.meter_number): r.nickname for r in db.session.execute(rows)}
