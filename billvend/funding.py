"""Wallet funding: money arriving from outside through a payment gateway.

A gateway charges the customer's card or bank; when it reports success the
ledger moves the amount from the ``funding`` system wallet (the mirror of all
money that ever came in) to the customer's wallet. ``SimulatedGateway`` is the
only gateway today; a real one (Paystack, Flutterwave) implements
``FundingGateway`` and, being asynchronous in real life, would confirm through
a webhook that calls :func:`fund_wallet` with the gateway's reference.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal, Optional, Protocol

import sqlalchemy as sa

from billvend import ledger
from billvend.extensions import db
from billvend.models import FUNDING_WALLET, KIND_FUNDING, Funding, User


class FundingError(Exception):
    """A funding that could not be completed."""


class FundingIdempotencyConflict(FundingError):
    """An idempotency key reused with a different amount."""


class FundingDeclined(FundingError):
    """The gateway declined the charge; nothing was credited."""


@dataclass(frozen=True)
class GatewayCharge:
    """A gateway's answer to a charge request."""

    status: Literal["succeeded", "declined"]
    gateway_reference: Optional[str] = None
    message: str = ""


class FundingGateway(Protocol):
    name: str

    def charge(self, user: User, amount_kobo: int, reference: str) -> GatewayCharge:
        """Charge ``amount_kobo`` for our ``reference`` (idempotent on it)."""
        ...


class SimulatedGateway:
    """Approves every charge at once, as a test card would."""

    name = "simulated"

    def charge(self, user: User, amount_kobo: int, reference: str) -> GatewayCharge:
        return GatewayCharge("succeeded", gateway_reference="SIM-" + reference, message="Approved")


def new_funding_reference() -> str:
    """A unique reference for a funding, e.g. ``FND-3f9a...`` (28 characters)."""
    return "FND-" + secrets.token_hex(12)


def find_by_key(user_id: int, idempotency_key: str) -> Optional[Funding]:
    return db.session.scalar(
        sa.select(Funding).where(Funding.user_id == user_id, Funding.idempotency_key == idempotency_key)
    )


@ledger.unit_of_work
def fund_wallet(
    user: User,
    amount_kobo: int,
    idempotency_key: str,
    gateway: Optional[FundingGateway] = None,
) -> tuple[Funding, bool]:
    """Charge the gateway and credit ``user``'s wallet, in one transaction.

    Idempotent per (user, ``idempotency_key``), also under concurrent repeats.

    :param amount_kobo: positive int, already validated against limits.
    :returns: ``(funding, created)``; ``created`` is False for a repeat.
    :raises FundingIdempotencyConflict: key reused with a different amount.
    :raises FundingDeclined: the gateway declined; nothing is credited.
    """
    gateway = gateway or SimulatedGateway()

    def repeat(existing: Funding) -> tuple[Funding, bool]:
        if existing.amount_kobo != amount_kobo:
            raise FundingIdempotencyConflict(
                "This form was already used for a different amount. Please start again."
            )
        return existing, False

    existing = find_by_key(user.id, idempotency_key)
    if existing is not None:
        return repeat(existing)

    wallet_id = user.wallet.id
    funding_wallet_id = ledger.system_wallet_id(FUNDING_WALLET)
    funding = Funding(
        reference=new_funding_reference(),
        user_id=user.id,
        wallet_id=wallet_id,
        amount_kobo=amount_kobo,
        gateway=gateway.name,
        status="initiated",
        idempotency_key=idempotency_key,
    )
    try:
        db.session.add(funding)
        db.session.flush()  # claims (user, idempotency_key) before charging
        charge = gateway.charge(user, amount_kobo, funding.reference)
        if charge.status != "succeeded":
            raise FundingDeclined(charge.message or "The payment was declined")
        funding.status = "succeeded"
        funding.gateway_reference = charge.gateway_reference
        ledger.post_transfer(
            kind=KIND_FUNDING,
            debit_wallet_id=funding_wallet_id,
            credit_wallet_id=wallet_id,
            amount_kobo=amount_kobo,
            funding_id=funding.id,
            description=f"Wallet funding via {gateway.name}",
        )
    except sa.exc.IntegrityError:
        db.session.rollback()
        existing = find_by_key(user.id, idempotency_key)
        if existing is None:
            raise
        return repeat(existing)
    except Exception:
        db.session.rollback()
        raise
    return funding, True
