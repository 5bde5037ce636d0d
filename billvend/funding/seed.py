"""Money in for tests and seed data: :func:`fund_wallet`, a whole card funding
through an in-process gateway, without HTTP."""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.funding.checkout import begin_checkout
from billvend.funding.gateways import FundingGateway, SimulatedGateway
from billvend.funding.models import Funding
from billvend.funding.verification import verify_funding
from billvend.platform.extensions import db


def fund_wallet(user: User, amount_kobo: int, idempotency_key: str,
                gw: Optional[FundingGateway] = None) -> tuple[Funding, bool]:
    """Fund ``user``'s wallet end to end with an in-process gateway (the
    :class:`SimulatedGateway` by default): checkout, verify, credit, each
    step its own unit. For tests and seed scripts that need money in a
    wallet without HTTP.

    :returns: ``(funding, created)``.
    :raises FundingIdempotencyConflict: key reused with a different amount.
    """
    gw = gw or SimulatedGateway()
    start = begin_checkout(user, amount_kobo, idempotency_key, "http://billvend.invalid/cb", gw)
    funding = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    if start.created:
        verify_funding(funding.id, gw)
        db.session.refresh(funding)
    return funding, start.created
