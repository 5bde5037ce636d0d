"""Admin: credit a flagged bank-transfer arrival at the amount the gateway's
``verify`` says arrived (the "credit the verified amount" button of
``/admin/fundings/<reference>``), once, audited.
"""

from __future__ import annotations

from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import AdminAction, User
from billvend.funding import gateways
from billvend.funding.gateways import SUCCESS, FundingGateway, GatewayError, GatewayTransaction
from billvend.funding.models import DedicatedAccount, Funding
from billvend.funding.verification import CURRENCY, credit_funding, record_success_details
from billvend.ledger import services as ledger
from billvend.ledger.models import Transfer
from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.money import format_naira


def credit_verified_arrival(funding_id: int, admin_id: int, reason: str,
                            gw: Optional[FundingGateway] = None) -> str:
    """Admin action: credit a flagged bank-transfer arrival with the amount
    the gateway's ``verify`` says arrived, once, audited.

    An arrival is recorded at the amount ``verify`` gave when it was created
    (arrivals recorded before that, at a webhook's amount); when ``verify``
    (the authority, paystack.com/docs/payments/verify-payments) later says
    another amount, it is flagged, never credited automatically, and "verify now"
    refuses it. For a bank transfer there is no amount we asked for: the
    money the gateway verifies is what the customer sent, so an admin who has
    checked may credit exactly that. A card checkout is never credited this
    way (a different amount there is the tampering Paystack warns about),
    nor an answer saying the reference was paid another way than into a
    dedicated account, or by another customer than the funding's
    (:func:`_customer_mismatch`): only the amount is taken from ``verify``.

    The gateway is asked outside any transaction; the check and the credit
    are ONE unit of work with the funding row locked, together with the
    ``AdminAction`` row. Refusals are recorded too.

    :returns: the result text, ``"done: ..."``, ``"refused: ..."`` or
        ``"error: ..."`` (the gateway could not be asked; nothing changed).
    :raises LookupError: no such funding.
    """
    gw = gw or gateways.gateway()
    reference = db.session.scalar(sa.select(Funding.gateway_reference).where(Funding.id == funding_id))
    if reference is None:
        raise LookupError(f"no funding {funding_id}")
    db.session.rollback()
    try:
        tx = gw.verify(reference)
    except GatewayError as exc:
        result = f"error: the gateway could not be asked ({exc})"
        transactions.run(lambda: db.session.add(AdminAction(
            admin_id=admin_id, funding_id=funding_id, action="credit_verified", reason=reason[:500],
            result=result[:500])))
        return result
    try:
        return _credit_verified(funding_id, admin_id, reason, tx)
    except sa.exc.IntegrityError:
        # Another unit credited it between our check and our transfer (SQLite
        # has no row lock): UNIQUE (funding_id) refused the second credit.
        # Run the unit again: it now finds the credit and records the refusal.
        return _credit_verified(funding_id, admin_id, reason, tx)


def _verified_arrival_refusal(funding: Funding, tx: GatewayTransaction) -> Optional[str]:
    if db.session.scalar(sa.select(Transfer.id).where(Transfer.funding_id == funding.id)) is not None:
        return "already credited"
    if funding.method != "bank_transfer":
        return "only a bank transfer is credited at the verified amount; a card checkout is credited " \
               "only at the amount the customer was asked to pay"
    if not funding.needs_attention:
        return "the funding is not flagged; verify now credits it"
    if tx.status != SUCCESS:
        return f"the gateway says {tx.status}, not success"
    if tx.reference != funding.gateway_reference:
        return f"the gateway answered for reference {tx.reference!r}, not {funding.gateway_reference!r}"
    if tx.currency != CURRENCY:
        return f"the gateway's currency is {tx.currency!r}, not NGN"
    if not isinstance(tx.amount_kobo, int) or not 0 < tx.amount_kobo <= ledger.MAX_TRANSFER_KOBO:
        return f"the gateway's amount {tx.amount_kobo!r} kobo is not one we can credit"
    if tx.channel and tx.channel != "dedicated_nuban":
        # Verify says this reference was not a transfer into a dedicated
        # account: its amount is not "what the customer sent" to us.
        return f"the gateway says this was paid by {tx.channel!r}, not a bank transfer to a dedicated account"
    return _customer_mismatch(funding, tx)


def _customer_mismatch(funding: Funding, tx: GatewayTransaction) -> Optional[str]:
    """Why the customer ``verify`` names is not the funding's user, or None.

    The arrival's user came from the webhook, which this very funding shows
    was wrong once (its amount): before crediting the amount ``verify``
    reports, its customer must be the funding's too, or the money of one
    customer's dedicated account lands in another's wallet. The customer
    code decides when given (as ``arrivals._account_for`` matches a webhook), else
    the email; an answer naming neither is not refused on that ground.
    """
    if tx.customer_code:
        ours = funding.customer_code or db.session.scalar(
            sa.select(DedicatedAccount.customer_code).where(DedicatedAccount.user_id == funding.user_id))
        if tx.customer_code != ours:
            return (f"the gateway says the money went to customer {tx.customer_code!r}, not to this "
                    f"funding's customer ({ours or 'no dedicated account'})")
    elif tx.customer_email:
        email = db.session.scalar(sa.select(User.email).where(User.id == funding.user_id)) or ""
        if tx.customer_email.strip().lower() != email.strip().lower():
            return (f"the gateway says the money came from customer {tx.customer_email!r}, not this "
                    f"funding's customer")
    return None


@transactions.unit_of_work
def _credit_verified(funding_id: int, admin_id: int, reason: str, tx: GatewayTransaction) -> str:
    funding = db.session.scalar(sa.select(Funding).where(Funding.id == funding_id).with_for_update())
    refusal = _verified_arrival_refusal(funding, tx)
    if refusal is not None:
        result = f"refused: {refusal}"
    else:
        recorded_kobo = funding.amount_kobo
        funding.amount_kobo = tx.amount_kobo
        funding.gateway_status = tx.status[:32]
        record_success_details(funding, tx)
        if not funding.customer_code:
            # _customer_mismatch has checked that verify names this user's
            # dedicated account (or names no one): record whose it is.
            funding.customer_code = tx.customer_code or db.session.scalar(
                sa.select(DedicatedAccount.customer_code).where(DedicatedAccount.user_id == funding.user_id))
        funding.needs_attention = False
        funding.attention_reason = None
        credit_funding(funding, tx, db_now())
        result = (f"done: credited {format_naira(tx.amount_kobo)}, the amount the gateway verified "
                  f"(the arrival was recorded as {format_naira(recorded_kobo)})")
    db.session.add(AdminAction(admin_id=admin_id, funding_id=funding_id, action="credit_verified",
                               reason=reason[:500], result=result[:500]))
    return result
