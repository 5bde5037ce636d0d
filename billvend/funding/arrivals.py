"""Which funding a gateway transaction belongs to, and whose money it is.

A transaction (a webhook's ``data``, or an item of the gateway's list) names
one of our references (a card checkout) or, for a bank transfer into a
customer's dedicated account, a reference of the gateway's: then the funding
(an "arrival") is created here, only after the gateway's ``verify``
(paystack.com/docs/payments/verify-payments), for the customer verify names.
The transaction's own customer is never trusted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from billvend.accounts.models import User
from billvend.funding.gateways import SUCCESS, FundingGateway, GatewayTransaction
from billvend.funding.models import FUNDING_PENDING, DedicatedAccount, Funding
from billvend.funding.references import EXTERNAL_REFERENCE_RE, new_funding_reference
from billvend.ledger import services as ledger
from billvend.platform import transactions
from billvend.platform.extensions import db


#: ``fundings.idempotency_key`` holds 64 characters.
_ARRIVAL_KEY_PREFIX = "nuban:"


def arrival_idempotency_key(gateway_reference: str) -> str:
    """The idempotency key of a bank-transfer arrival's funding:
    ``nuban:<gateway reference>``, or, when that would not fit the column's
    64 characters, ``nuban:`` + the reference's SHA-256 in hex (58 digits).

    Cutting a long reference to fit made two arrivals whose references share
    their first 58 characters collide on UNIQUE (user, key), so the second
    could never be recorded. Customers' own keys never contain ``:``
    (``forms.idempotency_key_field``), so these never meet a form's key.
    """
    key = _ARRIVAL_KEY_PREFIX + gateway_reference
    if len(key) <= 64:
        return key
    return _ARRIVAL_KEY_PREFIX + hashlib.sha256(gateway_reference.encode()).hexdigest()[:64 - len(
        _ARRIVAL_KEY_PREFIX)]


@transactions.unit_of_work
def _record_arrival(account_user_id: int, customer_code: str, gateway_name: str,
                    tx: GatewayTransaction) -> int:
    """A funding row for a bank transfer the gateway's verify confirmed, for
    the owner (``account_user_id``) of the dedicated account of
    ``customer_code``, at ``tx``'s amount (the caller passes verify's answer)."""
    existing = db.session.scalar(sa.select(Funding.id).where(
        Funding.gateway == gateway_name, Funding.gateway_reference == tx.reference))
    if existing is not None:
        return existing
    user = db.session.get(User, account_user_id)
    funding = Funding(reference=new_funding_reference(), user_id=user.id, wallet_id=user.wallet.id,
                      amount_kobo=tx.amount_kobo, gateway=gateway_name, gateway_reference=tx.reference,
                      status=FUNDING_PENDING, idempotency_key=arrival_idempotency_key(tx.reference),
                      method="bank_transfer", channel="dedicated_nuban",
                      customer_code=customer_code[:64])
    db.session.add(funding)
    db.session.flush()
    return funding.id


def _account_for(tx: GatewayTransaction) -> Optional[DedicatedAccount]:
    if tx.customer_code:
        account = db.session.scalar(
            sa.select(DedicatedAccount).where(DedicatedAccount.customer_code == tx.customer_code))
        if account is not None:
            return account
    if tx.customer_email:
        return db.session.scalar(sa.select(DedicatedAccount).join(User).where(
            User.email == tx.customer_email.strip().lower()))
    return None


@dataclass(frozen=True)
class Found:
    """What :func:`funding_for_transaction` found for a gateway transaction.

    ``funding_id`` is None when there is nothing to credit; ``why`` says why.
    ``verified`` is the gateway's verify answer when one was asked for (a
    new bank-transfer arrival), so the caller need not ask again.
    ``customer_mismatch`` marks a transaction naming another customer than
    the one the gateway's verify (or the recorded arrival) names;
    ``mismatched_funding_id`` is that recorded arrival, if any.
    """

    funding_id: Optional[int]
    why: str = ""
    verified: Optional[GatewayTransaction] = None
    customer_mismatch: bool = False
    mismatched_funding_id: Optional[int] = None


def customer_label(tx: GatewayTransaction) -> str:
    """The customer ``tx`` names, for a message: its code, else its email, quoted."""
    return repr(tx.customer_code or tx.customer_email or "no customer")


def names_other_customer(tx: GatewayTransaction, customer_code: Optional[str],
                         owner_email: str) -> bool:
    """True when ``tx`` names a customer who is not the dedicated account's
    owner (``customer_code``, ``owner_email``): the code decides when both
    sides have one, else the email. A transaction naming no customer names
    no other one."""
    if tx.customer_code and customer_code:
        return tx.customer_code != customer_code
    if tx.customer_email:
        return tx.customer_email.strip().lower() != owner_email.strip().lower()
    return bool(tx.customer_code)  # a code, and the funding has none to compare with


def owner_of_arrival(funding_id: int) -> tuple[Optional[str], str, str]:
    """``(customer code, owner email, method)`` of a recorded funding; the
    code falls back to its user's dedicated account (rows from before the
    column)."""
    row = db.session.execute(
        sa.select(Funding.customer_code, Funding.method, User.email, DedicatedAccount.customer_code)
        .join(User, User.id == Funding.user_id)
        .outerjoin(DedicatedAccount, DedicatedAccount.user_id == Funding.user_id)
        .where(Funding.id == funding_id)).first()
    return (row[0] or row[3]), row[2] or "", row[1]


def funding_for_transaction(tx: GatewayTransaction, gw: FundingGateway) -> Found:
    """The funding a gateway transaction (a webhook's ``data``, or an item of
    the gateway's list) belongs to; for a bank-transfer arrival into a
    dedicated account, the funding is created here, and only after the
    gateway's ``verify`` (no transaction open), for the customer verify
    names: the customer code (else the email) of the dedicated account's
    owner, with channel ``dedicated_nuban`` (issue 20). The transaction's own
    customer is never trusted: one naming another customer than verify (or
    than an arrival already recorded) creates and credits nothing.

    :raises GatewayError: verify could not be asked (nothing recorded; ask
        again later).
    """
    if len(tx.reference) > 64 or not EXTERNAL_REFERENCE_RE.fullmatch(tx.reference):
        # Also keeps a NUL (which PostgreSQL refuses) out of the lookups
        # below and out of a bank-transfer arrival's gateway_reference.
        return Found(None, "unknown reference")
    funding_id = db.session.scalar(sa.select(Funding.id).where(
        Funding.gateway == gw.name, Funding.gateway_reference == tx.reference))
    if funding_id is not None:
        code, email, method = owner_of_arrival(funding_id)
        db.session.rollback()
        if method == "bank_transfer" and names_other_customer(tx, code, email):
            return Found(None, f"customer mismatch: this names customer {customer_label(tx)}, the "
                               f"arrival belongs to customer {code!r} (the owner verify named)",
                         customer_mismatch=True, mismatched_funding_id=funding_id)
        return Found(funding_id)
    return _new_arrival(tx, gw)


def _new_arrival(tx: GatewayTransaction, gw: FundingGateway) -> Found:
    # A reference we have no funding for: only a bank transfer into a
    # dedicated account, confirmed by verify, becomes one.
    if tx.channel != "dedicated_nuban":
        return Found(None, "unknown reference")
    if (not isinstance(tx.amount_kobo, int) or tx.amount_kobo <= 0
            or tx.amount_kobo > ledger.MAX_TRANSFER_KOBO):
        # Above the ledger's ceiling the credit could never be posted (it
        # would overflow the balances): flag it for an admin instead of
        # recording a funding that every retry fails to credit.
        return Found(None, "bank transfer without a usable amount")
    db.session.rollback()  # no transaction during the call
    verified = gw.verify(tx.reference)
    if verified.status != SUCCESS or verified.reference != tx.reference:
        return Found(None, f"the gateway's verify says {verified.status} for {verified.reference!r}")
    if verified.channel != "dedicated_nuban":
        return Found(None, f"the gateway's verify says this was paid by {verified.channel!r}, "
                           "not a bank transfer to a dedicated account")
    account = _account_for(verified)
    if account is None:
        db.session.rollback()
        return Found(None, "bank transfer into an account we do not know "
                           f"(verify names customer {customer_label(verified)})")
    user_id, code = account.user_id, account.customer_code
    owner_email = db.session.scalar(sa.select(User.email).where(User.id == user_id)) or ""
    db.session.rollback()
    if names_other_customer(tx, code, owner_email):
        return Found(None, f"customer mismatch: the webhook names customer {customer_label(tx)}, the "
                           f"gateway's verify names customer {code!r}", customer_mismatch=True)
    if (not isinstance(verified.amount_kobo, int) or verified.amount_kobo <= 0
            or verified.amount_kobo > ledger.MAX_TRANSFER_KOBO):
        return Found(None, "bank transfer whose verify gives no usable amount")
    # Recorded at verify's amount, never the webhook's: a first webhook with
    # another amount would otherwise leave a funding that every later verify
    # (the genuine webhook's included) finds "amount differs" and never credits.
    try:
        funding_id = _record_arrival(user_id, code, gw.name, verified)
    except sa.exc.IntegrityError:
        funding_id = _record_arrival(user_id, code, gw.name, verified)
    return Found(funding_id, verified=verified)
