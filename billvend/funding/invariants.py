"""Funding's ledger invariants (DESIGN.md, Money 6, funding part): their queries
(:func:`check_invariants`, :func:`check_dedicated_account_credits`), registered with the
ledger's checker (``billvend.ledger.invariants``) when this module is imported, and the
rule that explains a ``funding`` transfer."""

from __future__ import annotations

import sqlalchemy as sa

from billvend.funding.models import FUNDING_SUCCEEDED, DedicatedAccount, Funding
from billvend.ledger.invariants import Violation, register, register_transfer_rule, system_wallet_id
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer, Wallet
from billvend.platform.extensions import db


def check_invariants() -> list[tuple[str, int, str]]:
    """DESIGN.md invariant 6, funding part: every funding credit has one
    verified gateway success. Checked as: every ``funding`` transfer belongs
    to a ``succeeded`` funding of the same amount, moves it from the
    ``funding`` system wallet into that funding's own wallet, whose owner is
    the funding's user; and every ``succeeded`` funding has exactly one such
    transfer. Three aggregate queries.

    :returns: ``(subject, id, detail)`` for each violation.
    """
    found: list[tuple[str, int, str]] = []
    for transfer_id, funding_id, status, amount, expected in db.session.execute(
        sa.select(Transfer.id, Transfer.funding_id, Funding.status, Transfer.amount_kobo,
                  Funding.amount_kobo)
        .outerjoin(Funding, Funding.id == Transfer.funding_id)
        .where(Transfer.kind == KIND_FUNDING)
        .where(sa.or_(Funding.id.is_(None), Funding.status != FUNDING_SUCCEEDED,
                      Funding.amount_kobo != Transfer.amount_kobo))
    ):
        found.append(("transfer", transfer_id,
                      f"funding credit of {amount} kobo for funding {funding_id} "
                      f"({status or 'missing'}, {expected} kobo)"))
    # Where the money went: the check above passes a credit of the right
    # amount into the wrong customer's wallet (or out of a customer's).
    funding_wallet_id = db.session.scalar(
        sa.select(Wallet.id).where(Wallet.system_code == FUNDING_WALLET))
    for transfer_id, funding_id, debit_id, credit_id, wallet_id, owner_id, user_id in db.session.execute(
        sa.select(Transfer.id, Funding.id, Transfer.debit_wallet_id, Transfer.credit_wallet_id,
                  Funding.wallet_id, Wallet.user_id, Funding.user_id)
        .join(Funding, Funding.id == Transfer.funding_id)
        .outerjoin(Wallet, Wallet.id == Funding.wallet_id)
        .where(Transfer.kind == KIND_FUNDING)
        .where(sa.or_(Transfer.credit_wallet_id != Funding.wallet_id,
                      Wallet.user_id.is_(None), Wallet.user_id != Funding.user_id,
                      Transfer.debit_wallet_id != funding_wallet_id if funding_wallet_id is not None
                      else sa.true()))
    ):
        found.append(("transfer", transfer_id,
                      f"funding credit for funding {funding_id} from wallet {debit_id} to wallet "
                      f"{credit_id}; the funding names wallet {wallet_id} (of user {owner_id}) and "
                      f"user {user_id} (funding is wallet {funding_wallet_id})"))
    credits = (sa.select(Transfer.funding_id, sa.func.count(Transfer.id).label("n"))
               .where(Transfer.kind == KIND_FUNDING).group_by(Transfer.funding_id).subquery())
    for funding_id, n in db.session.execute(
        sa.select(Funding.id, sa.func.coalesce(credits.c.n, 0))
        .outerjoin(credits, credits.c.funding_id == Funding.id)
        .where(Funding.status == FUNDING_SUCCEEDED, sa.func.coalesce(credits.c.n, 0) != 1)
    ):
        found.append(("funding", funding_id, f"succeeded funding with {n} credits"))
    return found


def check_dedicated_account_credits() -> list[tuple[str, int, str]]:
    """Issue 20's invariant: every dedicated-account (bank transfer) credit
    lands in the wallet of the owner of the dedicated account whose
    customer code the funding records (the customer the gateway's verify
    named). One query.

    :returns: ``(subject, funding id, detail)`` for each violation.
    """
    owner_wallet = sa.orm.aliased(Wallet)
    found: list[tuple[str, int, str]] = []
    for funding_id, code, credit_id, owner_id, owner_wallet_id in db.session.execute(
        sa.select(Funding.id, Funding.customer_code, Transfer.credit_wallet_id, DedicatedAccount.user_id,
                  owner_wallet.id)
        .join(Funding, Funding.id == Transfer.funding_id)
        .outerjoin(DedicatedAccount, DedicatedAccount.customer_code == Funding.customer_code)
        .outerjoin(owner_wallet, owner_wallet.user_id == DedicatedAccount.user_id)
        .where(Transfer.kind == KIND_FUNDING, Funding.method == "bank_transfer")
        .where(sa.or_(DedicatedAccount.id.is_(None), owner_wallet.id.is_(None),
                      Transfer.credit_wallet_id != owner_wallet.id))
    ):
        found.append(("funding", funding_id,
                      f"bank transfer for customer {code!r} credited to wallet {credit_id}; the "
                      f"dedicated account's owner is user {owner_id} (wallet {owner_wallet_id})"))
    return found


@register({
    "funding_credits": "Every funding credit has one verified gateway success (a succeeded funding, "
                       "its amount, exactly one credit, from the funding wallet into the wallet "
                       "of the funding's own user)",
})
def check_fundings() -> list[Violation]:
    """``funding_credits``: :func:`check_invariants` as violations."""
    return [Violation("funding_credits", subject, subject_id, detail)
            for subject, subject_id, detail in check_invariants()]


@register({
    "dedicated_account_owner": "Every dedicated-account (bank transfer) credit lands in the wallet of "
                               "the owner of the dedicated account the gateway names",
})
def check_dedicated_account_owner() -> list[Violation]:
    """``dedicated_account_owner``: :func:`check_dedicated_account_credits` as violations."""
    return [Violation("dedicated_account_owner", subject, subject_id, detail)
            for subject, subject_id, detail in check_dedicated_account_credits()]


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
