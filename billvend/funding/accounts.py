"""Dedicated accounts: each customer's own bank account number at the
gateway, into which a bank transfer funds their wallet (``POST /customer``,
``POST /dedicated_account``, ``reference/paystack-api.md``). The money then
arrives as a ``charge.success`` webhook (:mod:`billvend.funding.events`).
"""

from __future__ import annotations

import re
from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.funding import gateways
from billvend.funding.gateways import AccountDetails, FundingGateway
from billvend.funding.models import DedicatedAccount
from billvend.platform import transactions
from billvend.platform.extensions import db


@transactions.unit_of_work
def _save_account(user_id: int, gateway_name: str, details: AccountDetails) -> None:
    if db.session.scalar(sa.select(DedicatedAccount.id).where(DedicatedAccount.user_id == user_id)):
        return
    db.session.add(DedicatedAccount(
        user_id=user_id, gateway=gateway_name, customer_code=details.customer_code[:64],
        account_number=details.account_number[:20], account_name=details.account_name[:200],
        bank_name=details.bank_name[:100] or "Bank", bank_slug=(details.bank_slug or None)))


def dedicated_account_of(user_id: int) -> Optional[DedicatedAccount]:
    """The user's dedicated account, or None before its first use."""
    return db.session.scalar(sa.select(DedicatedAccount).where(DedicatedAccount.user_id == user_id))


def account_holder_names(user: User) -> tuple[str, str]:
    """``(first_name, last_name)`` for the gateway's customer record, from
    which it builds the account name ("BILLVEND/<FIRST> <LAST>"): the full
    name's first word and the rest; without a full name, the words of the
    email's name part (``ngozi.okafor92`` -> ``("Ngozi", "Okafor")``), else
    ``("Customer", "")``. A one-word name leaves ``last_name`` empty: it used
    to repeat the first ("BILLVEND/BOLA BOLA")."""
    words = (user.full_name or "").split()
    if not words:
        words = [w.capitalize() for w in re.findall(r"[^\W\d_]+", user.email.split("@")[0])]
    if not words:
        return "Customer", ""
    return words[0], " ".join(words[1:])


def ensure_dedicated_account(user: User, gw: Optional[FundingGateway] = None) -> DedicatedAccount:
    """The customer's dedicated account, created at the gateway on first use
    (``POST /customer``, ``POST /dedicated_account``, no transaction open),
    then stored (one unit; a concurrent first use keeps the first row).

    :raises GatewayError: the gateway could not open it (nothing stored).
    """
    gw = gw or gateways.gateway()
    existing = dedicated_account_of(user.id)
    if existing is not None:
        return existing
    first, last = account_holder_names(user)
    user_id, email, phone = user.id, user.email, user.phone
    db.session.rollback()
    details = gw.open_dedicated_account(email=email, first_name=first, last_name=last, phone=phone)
    try:
        _save_account(user_id, gw.name, details)
    except sa.exc.IntegrityError:
        pass  # a concurrent first use stored it
    account = dedicated_account_of(user_id)
    assert account is not None
    return account
