"""Card checkout, the first step of a card funding (DESIGN.md, Money in;
``reference/paystack-api.md``): :func:`begin_checkout` commits an ``initiated``
funding (its reference fixed), THEN asks the gateway to ``initialize`` a hosted
checkout for that reference, THEN records the checkout URL. The customer pays
there and comes back to the callback, which verifies the funding
(:mod:`billvend.funding.verification`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from flask import current_app

from billvend.accounts.models import User
from billvend.funding import gateways
from billvend.funding.gateways import FundingGateway, GatewayError
from billvend.funding.models import FUNDING_INITIATED, FUNDING_PENDING, Funding
from billvend.funding.references import new_funding_reference
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.platform.models import utcnow

log = logging.getLogger(__name__)


class FundingError(Exception):
    """A funding that could not be carried out as asked."""


class FundingIdempotencyConflict(FundingError):
    """An idempotency key reused with a different amount."""


def find_by_key(user_id: int, idempotency_key: str) -> Optional[Funding]:
    """The user's funding started with ``idempotency_key`` (one submit of the form), or None."""
    return db.session.scalar(
        sa.select(Funding).where(Funding.user_id == user_id, Funding.idempotency_key == idempotency_key)
    )


@dataclass(frozen=True)
class CheckoutStart:
    """What :func:`begin_checkout` did: ``checkout_url`` is where to send the
    customer (None if the gateway could not be reached: ``error`` says why);
    ``created`` is False for a repeated submit of the same form."""

    reference: str
    amount_kobo: int
    checkout_url: Optional[str]
    created: bool
    error: Optional[str] = None


@transactions.unit_of_work
def _record_intent(user_id: int, wallet_id: int, amount_kobo: int, idempotency_key: str,
                   gateway_name: str) -> tuple[int, str, Optional[str], bool]:
    existing = find_by_key(user_id, idempotency_key)
    if existing is not None:
        if existing.amount_kobo != amount_kobo:
            raise FundingIdempotencyConflict(
                "This form was already used for a different amount. Please start again.")
        return existing.id, existing.reference, existing.authorization_url, False
    reference = new_funding_reference()
    funding = Funding(reference=reference, user_id=user_id, wallet_id=wallet_id,
                      amount_kobo=amount_kobo, gateway=gateway_name, gateway_reference=reference,
                      status=FUNDING_INITIATED, idempotency_key=idempotency_key, method="card")
    db.session.add(funding)
    db.session.flush()
    return funding.id, reference, None, True


def _intent(user: User, amount_kobo: int, idempotency_key: str, gateway_name: str):
    wallet_id = user.wallet.id
    try:
        return _record_intent(user.id, wallet_id, amount_kobo, idempotency_key, gateway_name)
    except sa.exc.IntegrityError:
        # A concurrent submit of the same form won the (user, key) row.
        return _record_intent(user.id, wallet_id, amount_kobo, idempotency_key, gateway_name)


@transactions.unit_of_work
def _record_checkout(funding_id: int, authorization_url: str) -> None:
    db.session.execute(
        sa.update(Funding).where(Funding.id == funding_id, Funding.authorization_url.is_(None))
        .values(authorization_url=authorization_url[:500], status=sa.case(
            (Funding.status == FUNDING_INITIATED, FUNDING_PENDING), else_=Funding.status),
            updated_at=utcnow()))


def _wait_for_checkout(funding_id: int, seconds: float) -> Optional[str]:
    deadline = time.monotonic() + seconds
    while True:
        db.session.rollback()  # a fresh snapshot each look
        row = db.session.execute(sa.select(Funding.authorization_url, Funding.status)
                                 .where(Funding.id == funding_id)).first()
        db.session.rollback()
        if row.authorization_url is not None or row.status != FUNDING_INITIATED:
            return row.authorization_url
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def begin_checkout(user: User, amount_kobo: int, idempotency_key: str, callback_url: str,
                   gw: Optional[FundingGateway] = None) -> CheckoutStart:
    """Start a card funding: commit the ``initiated`` funding (unit 1), call
    the gateway's ``initialize`` with our reference (no transaction open),
    record the checkout URL (unit 2, safe to repeat).

    A deadlock or retry in either unit never repeats the gateway call, and a
    repeat of the same form (same ``idempotency_key``) answers the first
    checkout's URL without a second ``initialize``. If the gateway cannot be
    reached the funding stays ``initiated``; the funding sweep verifies it
    and ends it ``failed`` if the gateway never heard of it.

    :param amount_kobo: positive int, already checked against the limits.
    :param callback_url: absolute URL of ``/wallet/fund/callback``.
    :raises FundingIdempotencyConflict: key reused with a different amount.
    """
    gw = gw or gateways.gateway()
    funding_id, reference, url, created = _intent(user, amount_kobo, idempotency_key, gw.name)
    email = user.email
    if url is not None:
        return CheckoutStart(reference, amount_kobo, url, created)
    if not created:
        # The first submit is still talking to the gateway (a second
        # initialize would be refused as a duplicate reference): wait for its
        # checkout URL, at most as long as its call may take.
        url = _wait_for_checkout(funding_id, current_app.config["PAYSTACK_DEADLINE_SECONDS"] + 1)
        if url is not None:
            return CheckoutStart(reference, amount_kobo, url, False)
        return CheckoutStart(reference, amount_kobo, None, False,
                             "This payment is already being set up. Check your funding history "
                             "in a minute.")
    db.session.rollback()  # end the read transaction: no transaction during the call
    try:
        checkout = gw.initialize(email=email, amount_kobo=amount_kobo, reference=reference,
                                 callback_url=callback_url)
    except GatewayError as exc:
        log.warning("initialize %s failed: %s", reference, exc)
        return CheckoutStart(reference, amount_kobo, None, True,
                             "We could not reach the payment page. Nothing was taken; please try again.")
    _record_checkout(funding_id, checkout.authorization_url)
    return CheckoutStart(reference, amount_kobo, checkout.authorization_url, True)
