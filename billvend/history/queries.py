"""Statement queries shared by the history page and the dashboard."""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa
import sqlalchemy.orm as so

from billvend.models import LedgerEntry, Payment, Transfer


def statement_query(wallet_id: int, *, kind: Optional[str] = None,
                    status: Optional[str] = None) -> sa.Select:
    """Ledger entries of one wallet, newest first, with their transfer and payment.

    :param kind: keep only transfers of this kind.
    :param status: keep only entries caused by payments in this status.
    """
    query = (
        sa.select(LedgerEntry)
        .join(LedgerEntry.transfer)
        .outerjoin(Payment, Payment.id == Transfer.payment_id)
        .where(LedgerEntry.wallet_id == wallet_id)
        .options(so.contains_eager(LedgerEntry.transfer).contains_eager(Transfer.payment))
        .order_by(LedgerEntry.wallet_version.desc())
    )
    if kind:
        query = query.where(Transfer.kind == kind)
    if status:
        query = query.where(Payment.status == status)
    return query
