"""Vending's ledger invariants (DESIGN.md, Money 4-6), registered with the ledger's
checker (``billvend.ledger.invariants``) when this module is imported."""

from __future__ import annotations

import sqlalchemy as sa

from billvend.ledger.invariants import Violation, register, register_transfer_rule, system_wallet_id
from billvend.ledger.models import BILLER_CLEARING_WALLET, KIND_BILL_PAYMENT, KIND_REVERSAL, Transfer, Wallet
from billvend.platform.extensions import db
from billvend.vending.models import REVERSED, Payment


@register({
    "payment_debits": "Each payment has exactly one debit",
    "payment_debit_wallet": "Each payment's debit moves its amount from the wallet of the payment's "
                            "own user to biller_clearing",
    "payment_reversals": "A reversed payment has exactly one reversal; any other payment none",
    "reversal_amount": "Each reversal moves exactly its payment's amount from biller_clearing "
                       "back to the payment's own wallet",
    "biller_clearing_reconciles": "biller_clearing's balance equals the amounts of all payments "
                                  "not reversed (less settlements: none yet)",
})
def check_payments() -> list[Violation]:
    """Every payment's debit and reversal, and biller_clearing against the payments."""
    clearing_id = system_wallet_id(BILLER_CLEARING_WALLET)
    return [*_payment_debit_counts(), *_payment_debits_off_their_wallets(clearing_id),
            *_payment_reversal_counts(), *_reversals_off_their_payments(clearing_id),
            *_biller_clearing_off_the_payments(clearing_id)]


def _transfers_of(kind: str) -> sa.Subquery:
    """Per payment: ``payment_id``, ``n`` (its transfers of ``kind``), ``amount`` (their kobo)."""
    return (
        sa.select(Transfer.payment_id, sa.func.count(Transfer.id).label("n"),
                  sa.func.sum(Transfer.amount_kobo).label("amount"))
        .where(Transfer.kind == kind, Transfer.payment_id.is_not(None))
        .group_by(Transfer.payment_id)
        .subquery()
    )


def _payment_debit_counts() -> list[Violation]:
    """``payment_debits``: every payment without exactly one debit of its amount (kobo)."""
    debits = _transfers_of(KIND_BILL_PAYMENT)
    return [
        Violation("payment_debits", "payment", payment_id,
                  f"{n} debits totalling {amount} kobo for a {expected} kobo payment")
        for payment_id, n, amount, expected in db.session.execute(
            sa.select(Payment.id, sa.func.coalesce(debits.c.n, 0), debits.c.amount,
                      Payment.amount_kobo)
            .outerjoin(debits, debits.c.payment_id == Payment.id)
            .where(sa.or_(sa.func.coalesce(debits.c.n, 0) != 1,
                          debits.c.amount != Payment.amount_kobo)))
    ]


def _payment_debits_off_their_wallets(clearing_id: int | None) -> list[Violation]:
    """``payment_debit_wallet``: every debit not from the payment's own user's wallet to
    biller_clearing (wallet ``clearing_id``; None before it is seeded flags every debit)."""
    # DESIGN.md invariants 4 and 5 assume the debit came from the payer: a
    # debit from another wallet, or a payment whose wallet is not its user's,
    # would make a refund return money to the wrong person.
    return [
        Violation("payment_debit_wallet", "payment", payment_id,
                  f"debit transfer {transfer_id} from wallet {debit_id} to wallet {credit_id}; "
                  f"the payment names wallet {wallet_id} (of user {owner_id}) and user {user_id} "
                  f"(biller_clearing is wallet {clearing_id})")
        for transfer_id, payment_id, debit_id, credit_id, wallet_id, owner_id, user_id
        in db.session.execute(
            sa.select(Transfer.id, Payment.id, Transfer.debit_wallet_id, Transfer.credit_wallet_id,
                      Payment.wallet_id, Wallet.user_id, Payment.user_id)
            .join(Payment, Payment.id == Transfer.payment_id)
            .outerjoin(Wallet, Wallet.id == Payment.wallet_id)
            .where(Transfer.kind == KIND_BILL_PAYMENT)
            .where(sa.or_(Transfer.debit_wallet_id != Payment.wallet_id,
                          Wallet.user_id.is_(None), Wallet.user_id != Payment.user_id,
                          Transfer.credit_wallet_id != clearing_id if clearing_id is not None
                          else sa.true())))
    ]


def _payment_reversal_counts() -> list[Violation]:
    """``payment_reversals``: a reversed payment without exactly one reversal, or any other
    payment with one."""
    reversals = _transfers_of(KIND_REVERSAL)
    expected_reversals = sa.case((Payment.status == REVERSED, 1), else_=0)
    return [
        Violation("payment_reversals", "payment", payment_id, f"{status} payment with {n} reversals")
        for payment_id, status, n in db.session.execute(
            sa.select(Payment.id, Payment.status, sa.func.coalesce(reversals.c.n, 0))
            .outerjoin(reversals, reversals.c.payment_id == Payment.id)
            .where(sa.func.coalesce(reversals.c.n, 0) != expected_reversals))
    ]


def _reversals_off_their_payments(clearing_id: int | None) -> list[Violation]:
    """``reversal_amount``: every reversal not of its payment's amount (kobo), from
    biller_clearing (wallet ``clearing_id``) to the payment's wallet."""
    # DESIGN.md invariant 5: a refund returns exactly what was taken, to
    # whoever it was taken from, out of the money held for the provider.
    return [
        Violation("reversal_amount", "transfer", transfer_id,
                  f"reversal of {amount} kobo from wallet {debit_id} to wallet {credit_id} for "
                  f"payment {payment_id} of {expected_amount} kobo from wallet {wallet_id} "
                  f"(biller_clearing is wallet {clearing_id})")
        for transfer_id, payment_id, amount, debit_id, credit_id, expected_amount, wallet_id
        in db.session.execute(
            sa.select(Transfer.id, Transfer.payment_id, Transfer.amount_kobo,
                      Transfer.debit_wallet_id, Transfer.credit_wallet_id, Payment.amount_kobo,
                      Payment.wallet_id)
            .outerjoin(Payment, Payment.id == Transfer.payment_id)
            .where(Transfer.kind == KIND_REVERSAL)
            .where(sa.or_(Payment.id.is_(None), Transfer.amount_kobo != Payment.amount_kobo,
                          Transfer.credit_wallet_id != Payment.wallet_id,
                          Transfer.debit_wallet_id != clearing_id if clearing_id is not None
                          else sa.true())))
    ]


def _biller_clearing_off_the_payments(clearing_id: int | None) -> list[Violation]:
    """``biller_clearing_reconciles``: biller_clearing's balance (kobo) against the amounts of
    the payments not reversed; nothing to compare before the wallet is seeded."""
    # DESIGN.md invariant 6: biller_clearing holds exactly the money of
    # payments not refunded (settlements to the provider would come off it;
    # there are none yet).
    # One statement, so both sides come from one snapshot: on a live system
    # (READ COMMITTED, or SQLite reading outside a transaction) a payment
    # committed between two separate reads would look like missing money.
    if clearing_id is None:
        return []
    owed_now = (sa.select(sa.func.coalesce(sa.func.sum(Payment.amount_kobo), 0))
                .where(Payment.status != REVERSED).scalar_subquery())
    balance, owed = db.session.execute(
        sa.select(Wallet.balance_kobo, owed_now).where(Wallet.id == clearing_id)).one()
    if balance == owed:
        return []
    return [Violation("biller_clearing_reconciles", "wallet", clearing_id,
                      f"balance {balance} kobo, but payments not reversed total {owed} kobo")]


def _payment_debit_explained() -> sa.ColumnElement[bool]:
    """A ``bill_payment`` transfer moves money from its payment's wallet to biller_clearing."""
    return sa.and_(
        Transfer.credit_wallet_id == system_wallet_id(BILLER_CLEARING_WALLET),
        sa.exists().where(Payment.id == Transfer.payment_id,
                          Payment.wallet_id == Transfer.debit_wallet_id))


def _reversal_explained() -> sa.ColumnElement[bool]:
    """A ``reversal`` moves money from biller_clearing back to its payment's wallet."""
    return sa.and_(
        Transfer.debit_wallet_id == system_wallet_id(BILLER_CLEARING_WALLET),
        sa.exists().where(Payment.id == Transfer.payment_id,
                          Payment.wallet_id == Transfer.credit_wallet_id))


register_transfer_rule(KIND_BILL_PAYMENT, "payment_debit_wallet", _payment_debit_explained)
register_transfer_rule(KIND_REVERSAL, "reversal_amount", _reversal_explained)
