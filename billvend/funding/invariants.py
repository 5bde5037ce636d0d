"""Funding's ledger invariants (DESIGN.md, Money 6, funding part), registered with the
ledger's checker (``billvend.ledger.invariants``) when this module is imported, and the
rule that explains a ``funding`` transfer."""

from __future__ import annotations

import sqlalchemy as sa

from billvend.funding import services
from billvend.funding.models import FUNDING_SUCCEEDED, Funding
from billvend.ledger.invariants import Violation, register, register_transfer_rule, system_wallet_id
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer, Wallet
from billvend.platform.extensions import db


@register({
    "funding_credits": "Every funding credit has one verified gateway success (a succeeded funding, "
                       "its amount, exactly one credit, from the funding wallet into the wallet "
                       "of the funding's own user)",
})
def check_fundings() -> list[Violation]:
    """``funding_credits``: :func:`billvend.funding.services.check_invariants` as violations."""
    return [Violation("funding_credits", subject, subject_id, detail)
            for subject, subject_id, detail in services.check_invariants()]


@register({
    "dedicated_account_owner": "Every dedicated-account (bank transfer) credit lands in the wallet of "
                               "the owner of the dedicated account the gateway names",
})
def check_dedicated_account_owner() -> list[Violation]:
    """``dedicated_account_owner``: :func:`billvend.funding.services.check_dedicated_account_credits`
    as violations."""
    return [Violation("dedicated_account_owner", subject, subject_id, detail)
            for subject, subject_id, detail in services.check_dedicated_account_credits()]


@register({
    "funding_wallet_reconciles": "The funding wallet's balance is minus the credited fundings "
                                 "(the money that came in through the gateway)",
})
def check_funding_wallet() -> list[Violation]:
    """The funding wallet mirrors the outside world, so it is minus every credited funding
    (no payouts yet). One statement, so both sides come from one snapshot."""
    funding_wallet_id = system_wallet_id(FUNDING_WALLET)
    if funding_wallet_id is None:
        return []
    credited_now = (sa.select(sa.func.coalesce(sa.func.sum(Funding.amount_kobo), 0))
                    .where(Funding.status == FUNDING_SUCCEEDED).scalar_subquery())
    balance, credited = db.session.execute(
        sa.select(Wallet.balance_kobo, credited_now).where(Wallet.id == funding_wallet_id)).one()
    if balance == -credited:
        return []
    return [Violation("funding_wallet_reconciles", "wallet", funding_wallet_id,
                      f"balance {balance} kobo, but credited fundings total {credited} kobo "
                      f"(expected {-credited})")]


def _funding_credit_explained() -> sa.ColumnElement[bool]:
    """A ``funding`` transfer moves money from the funding wallet into its funding's wallet."""
    return sa.and_(
        Transfer.debit_wallet_id == system_wallet_id(FUNDING_WALLET),
        sa.exists().where(Funding.id == Transfer.funding_id,
                          Funding.wallet_id == Transfer.credit_wallet_id))


register_transfer_rule(KIND_FUNDING, "funding_credits", _funding_credit_explained)
