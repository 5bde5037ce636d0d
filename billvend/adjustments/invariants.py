"""The ledger invariants of admin adjustments and bonuses (DESIGN.md, Money 7; issue 27),
registered with the ledger's checker (``billvend.ledger.invariants``) when this module is
imported, and the rules that explain an ``adjustment`` or ``bonus`` transfer."""

from __future__ import annotations

import sqlalchemy as sa

from billvend.adjustments.models import APPROVED, BONUS, CREDIT, DEBIT, Adjustment
from billvend.ledger.invariants import Violation, register, register_transfer_rule, system_wallet_id
from billvend.ledger.models import (
    ADJUSTMENTS_WALLET, KIND_ADJUSTMENT, KIND_BONUS, PROMOTIONS_WALLET, Transfer, Wallet,
)
from billvend.platform.extensions import db

POSTING_KINDS = (KIND_ADJUSTMENT, KIND_BONUS)


def _expected_sides(adjustments_id, promotions_id) -> tuple[sa.ColumnElement, sa.ColumnElement,
                                                           sa.ColumnElement]:
    """SQL over :class:`Adjustment`: the kind, debit wallet and credit wallet its posting
    must have (``adjustments`` <-> customer for a credit or debit, ``promotions`` ->
    customer for a bonus)."""
    kind = sa.case((Adjustment.direction == BONUS, KIND_BONUS), else_=KIND_ADJUSTMENT)
    system = sa.case((Adjustment.direction == BONUS, promotions_id), else_=adjustments_id)
    debit = sa.case((Adjustment.direction == DEBIT, Adjustment.wallet_id), else_=system)
    credit = sa.case((Adjustment.direction == DEBIT, system), else_=Adjustment.wallet_id)
    return kind, debit, credit


def _postings_off_their_approvals(adjustments_id, promotions_id) -> list[Violation]:
    """Every ``adjustment``/``bonus`` transfer (or transfer naming an adjustment) that is
    not the posting of one approved adjustment: missing or unapproved record, approved
    by its proposer or by nobody, another amount, kind or pair of wallets, or a record
    that names another transfer."""
    kind, debit, credit = _expected_sides(adjustments_id, promotions_id)
    wrong = sa.or_(
        Adjustment.id.is_(None), Adjustment.status != APPROVED,
        Adjustment.decided_by_id.is_(None), Adjustment.decided_by_id == Adjustment.proposed_by_id,
        Adjustment.amount_kobo != Transfer.amount_kobo, Transfer.kind != kind,
        Transfer.debit_wallet_id != debit, Transfer.credit_wallet_id != credit,
        Adjustment.transfer_id.is_(None), Adjustment.transfer_id != Transfer.id)
    rows = db.session.execute(
        sa.select(Transfer.id, Transfer.kind, Transfer.amount_kobo, Transfer.debit_wallet_id,
                  Transfer.credit_wallet_id, Transfer.adjustment_id, Adjustment.status,
                  Adjustment.direction, Adjustment.amount_kobo)
        .outerjoin(Adjustment, Adjustment.id == Transfer.adjustment_id)
        .where(sa.or_(Transfer.kind.in_(POSTING_KINDS), Transfer.adjustment_id.is_not(None)))
        .where(wrong))
    return [
        Violation("adjustment_approved", "transfer", transfer_id,
                  f"{kind_} of {amount} kobo from wallet {debit_id} to wallet {credit_id} names "
                  f"adjustment {adjustment_id} ({status or 'no record'}, {direction or '-'} of "
                  f"{expected} kobo): not the posting of one adjustment approved by a second admin")
        for (transfer_id, kind_, amount, debit_id, credit_id, adjustment_id, status, direction,
             expected) in rows
    ]


def _approvals_without_one_posting() -> list[Violation]:
    """Every approved adjustment without exactly one transfer naming it."""
    postings = (sa.select(Transfer.adjustment_id, sa.func.count(Transfer.id).label("n"))
                .where(Transfer.adjustment_id.is_not(None))
                .group_by(Transfer.adjustment_id).subquery())
    return [
        Violation("adjustment_approved", "adjustment", adjustment_id,
                  f"approved adjustment with {n} ledger postings (exactly one expected)")
        for adjustment_id, n in db.session.execute(
            sa.select(Adjustment.id, sa.func.coalesce(postings.c.n, 0))
            .outerjoin(postings, postings.c.adjustment_id == Adjustment.id)
            .where(sa.or_(sa.and_(Adjustment.status == APPROVED,
                                  sa.func.coalesce(postings.c.n, 0) != 1),
                          sa.and_(Adjustment.status != APPROVED,
                                  sa.func.coalesce(postings.c.n, 0) != 0))))
    ]


@register({
    "adjustment_approved": "Each adjustment or bonus is the one posting of an adjustment approved by "
                           "an admin other than its proposer: its amount, its kind, between the "
                           "customer's wallet and adjustments (credit, debit) or from promotions "
                           "(bonus)",
})
def check_adjustments() -> list[Violation]:
    """``adjustment_approved`` both ways: from the transfers and from the approvals."""
    adjustments_id = system_wallet_id(ADJUSTMENTS_WALLET)
    promotions_id = system_wallet_id(PROMOTIONS_WALLET)
    return [*_postings_off_their_approvals(adjustments_id, promotions_id),
            *_approvals_without_one_posting()]


def _approved_total(*directions: str) -> sa.ScalarSelect:
    return (sa.select(sa.func.coalesce(sa.func.sum(Adjustment.amount_kobo), 0))
            .where(Adjustment.status == APPROVED, Adjustment.direction.in_(directions))
            .scalar_subquery())


@register({
    "adjustments_wallet_reconciles": "The adjustments wallet's balance is the approved debits less "
                                     "the approved credits",
    "promotions_wallet_reconciles": "The promotions wallet's balance is minus the approved bonuses",
})
def check_adjustment_wallets() -> list[Violation]:
    """The two system wallets against the approved records, each in one statement (one
    snapshot for both sides)."""
    expected = {
        ADJUSTMENTS_WALLET: ("adjustments_wallet_reconciles",
                             _approved_total(DEBIT) - _approved_total(CREDIT)),
        PROMOTIONS_WALLET: ("promotions_wallet_reconciles", -_approved_total(BONUS)),
    }
    violations: list[Violation] = []
    for code, (invariant, total) in expected.items():
        wallet_id = system_wallet_id(code)
        if wallet_id is None:
            continue
        balance, want = db.session.execute(
            sa.select(Wallet.balance_kobo, total).where(Wallet.id == wallet_id)).one()
        if balance != want:
            violations.append(Violation(invariant, "wallet", wallet_id,
                                        f"balance {balance} kobo, approved records say {want}"))
    return violations


def _explained(*directions: str):
    """A builder of the condition under which a transfer is the posting of an approved
    adjustment of one of ``directions`` on its own customer's wallet."""
    def build() -> sa.ColumnElement[bool]:
        kind, debit, credit = _expected_sides(system_wallet_id(ADJUSTMENTS_WALLET),
                                              system_wallet_id(PROMOTIONS_WALLET))
        return sa.exists().where(
            Adjustment.id == Transfer.adjustment_id, Adjustment.status == APPROVED,
            Adjustment.direction.in_(directions), Adjustment.decided_by_id != Adjustment.proposed_by_id,
            Transfer.debit_wallet_id == debit, Transfer.credit_wallet_id == credit)
    return build


register_transfer_rule(KIND_ADJUSTMENT, "adjustment_approved", _explained(CREDIT, DEBIT))
register_transfer_rule(KIND_BONUS, "adjustment_approved", _explained(BONUS))
