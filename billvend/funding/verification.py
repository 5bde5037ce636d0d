"""Wallet funding: money arriving from outside through a payment gateway.

Two ways in (DESIGN.md, Money in; ``reference/paystack-api.md``):

- **card checkout**: :func:`begin_checkout` commits an ``initiated`` funding
  (its reference fixed), THEN asks the gateway to ``initialize`` a hosted
  checkout for that reference, THEN records the checkout URL; the customer
  pays there and comes back to the callback, which :func:`verify_funding`s;
- **bank transfer** to the customer's dedicated account
  (:func:`ensure_dedicated_account`): the money arrives only as a
  ``charge.success`` webhook (or in the day's list), which
  :func:`process_event` turns into a funding only after the gateway's
  ``verify``, for the customer verify names (never the webhook's).

The transaction rule (``billvend.platform.transactions``): every gateway call happens
outside any transaction, between two units of work; the credit is its own
unit, safe to repeat. A credit needs the gateway's server-side ``verify`` to
say ``success`` for our reference with the stored amount in ``NGN``
(:func:`apply_verification`); one credit per gateway reference is enforced
by UNIQUE (gateway, gateway_reference) on fundings and UNIQUE (funding_id)
on transfers, so racing callbacks, webhooks, sweeps and reconciliations can
only ever credit once. Mismatches are flagged for an admin, never credited.
The gateway's ``fees`` are recorded on the funding as our cost; the
customer is credited exactly what they paid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

import sqlalchemy as sa
from flask import current_app

from billvend.ledger import services as ledger
from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.funding.gateways import (FAILED_STATUSES, NOT_FOUND, SUCCESS, AccountDetails,
                                       FundingGateway, GatewayError, GatewayTransaction,
                                       SimulatedGateway, gateway_from_config, transaction_from)
from billvend.funding.models import (
    FUNDING_FAILED, FUNDING_INITIATED, FUNDING_OPEN_STATUSES, FUNDING_PENDING, FUNDING_SUCCEEDED,
    DedicatedAccount, Funding, GatewayEvent, ReconciliationItem, ReconciliationRun,
)
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer, Wallet
from billvend.accounts.models import AdminAction, User
from billvend.platform.models import utcnow
from billvend.platform.money import format_naira

log = logging.getLogger(__name__)

# Nigeria keeps West Africa Time all year (UTC+1).
LAGOS = timezone(timedelta(hours=1), "Africa/Lagos")
CURRENCY = "NGN"

__all__ = [
    "FundingError", "FundingIdempotencyConflict", "GatewayError",
    "begin_checkout", "verify_funding", "apply_verification", "store_event", "process_event",
    "ensure_dedicated_account", "due_fundings", "reconcile", "check_invariants",
    "gateway", "fund_wallet", "SimulatedGateway", "credit_verified_arrival",
    "check_dedicated_account_credits", "funding_for_transaction",
]


class FundingError(Exception):
    """A funding that could not be carried out as asked."""


class FundingIdempotencyConflict(FundingError):
    """An idempotency key reused with a different amount."""


def gateway() -> FundingGateway:
    """The configured gateway (``FUNDING_GATEWAY``)."""
    return gateway_from_config(current_app.config)


def new_funding_reference() -> str:
    """A unique reference for a funding, e.g. ``FND-3f9a...`` (28 characters)."""
    return "FND-" + secrets.token_hex(12)


def find_by_key(user_id: int, idempotency_key: str) -> Optional[Funding]:
    return db.session.scalar(
        sa.select(Funding).where(Funding.user_id == user_id, Funding.idempotency_key == idempotency_key)
    )


#: What a reference from outside (a callback URL, a webhook) may look like:
#: printable ASCII without spaces (Paystack: alphanumerics and ``-.=``).
EXTERNAL_REFERENCE_RE = re.compile(r"[\x21-\x7e]{1,100}")


def funding_for_user(reference: str, user: User) -> Optional[Funding]:
    """The funding with our ``reference`` if it belongs to ``user``, else None
    (another customer's reference is "not found" too)."""
    if (not isinstance(reference, str) or len(reference) > 40
            or not EXTERNAL_REFERENCE_RE.fullmatch(reference)):
        return None
    return db.session.scalar(
        sa.select(Funding).where(Funding.reference == reference, Funding.user_id == user.id))


# --- Card checkout -----------------------------------------------------------


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
    gw = gw or gateway()
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


# --- Verify and credit -------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_funding` concluded. ``outcome``: ``credited`` (now),
    ``already_credited``, ``pending``, ``failed``, ``flagged`` (mismatch, for
    an admin) or ``unknown`` (the gateway could not be asked)."""

    outcome: str
    funding_id: int
    amount_kobo: int
    detail: str = ""


def _backoff_seconds(attempts: int) -> float:
    config = current_app.config
    # The exponent is capped: 2**1024 and more overflow a float, and
    # attempts grow with every callback visit, not only with the sweep.
    return min(config["FUNDING_VERIFY_MAX_DELAY_SECONDS"],
               config["FUNDING_VERIFY_BASE_DELAY_SECONDS"] * 2 ** min(max(attempts - 1, 0), 40))


def _flag(funding: Funding, reason: str) -> None:
    funding.needs_attention = True
    funding.attention_reason = reason[:500]
    funding.next_verify_at = None


LATE_CREDIT_NOTE = "Confirmed late by the bank; credited"


def _record_success_details(funding: Funding, tx: GatewayTransaction) -> None:
    # What a gateway success tells us beyond its status: the fee (our cost),
    # how the customer paid, and when.
    funding.fees_kobo = tx.fees_kobo
    funding.channel = (tx.channel or "")[:32] or None
    funding.paid_at = tx.paid_at


def _credit(funding: Funding, tx: GatewayTransaction, now: datetime) -> None:
    late = funding.status == FUNDING_FAILED
    ledger.post_transfer(
        kind=KIND_FUNDING, debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
        credit_wallet_id=funding.wallet_id, amount_kobo=funding.amount_kobo,
        funding_id=funding.id,
        description=("Bank transfer" if funding.method == "bank_transfer" else "Card")
        + f" funding via {funding.gateway}")
    funding.status = FUNDING_SUCCEEDED
    funding.credited_at = now
    funding.next_verify_at = None
    if late:
        # We told the customer it failed: the history says it did not, after all.
        funding.gateway_message = LATE_CREDIT_NOTE


@transactions.unit_of_work
def apply_verification(funding_id: int, tx: GatewayTransaction) -> Verification:
    """Record what the gateway's ``verify`` said about a funding, crediting
    it when (and only when) Paystack's rule holds: ``status == "success"``,
    the reference is this funding's, ``amount`` equals the stored amount and
    ``currency == "NGN"`` (paystack.com/docs/payments/verify-payments).

    One unit of work, safe to repeat and to race: the funding row is locked
    first, a funding already credited is left alone, and the ledger's UNIQUE
    (funding_id) refuses a second credit even if two units got past the check.

    A funding still open ``FUNDING_EXPIRE_SECONDS`` after it began (the
    gateway keeps saying ``ongoing``, ``pending``...) is closed as failed, so
    the sweep stops asking; a late success still credits it.

    :param tx: the gateway's answer for ``funding.gateway_reference``.
    :raises LookupError: no such funding.
    """
    funding = db.session.scalar(sa.select(Funding).where(Funding.id == funding_id).with_for_update())
    if funding is None:
        raise LookupError(f"no funding {funding_id}")
    now = db_now()
    credited = db.session.scalar(sa.select(Transfer.id).where(Transfer.funding_id == funding.id))
    if credited is not None:
        return Verification("already_credited", funding.id, funding.amount_kobo)
    funding.verify_attempts += 1
    funding.gateway_status = tx.status[:32]
    funding.gateway_message = tx.message[:200] or None
    if tx.status == SUCCESS:
        problems = []
        if tx.reference != funding.gateway_reference:
            problems.append(f"reference {tx.reference!r} is not {funding.gateway_reference!r}")
        if tx.amount_kobo != funding.amount_kobo:
            problems.append(f"gateway amount {tx.amount_kobo} kobo, stored {funding.amount_kobo} kobo")
        if tx.currency != CURRENCY:
            problems.append(f"currency {tx.currency!r}, not NGN")
        if funding.method == "bank_transfer":
            code, email, _ = _owner_of_arrival(funding.id)
            if _names_other_customer(tx, code, email):
                # The money went into another customer's dedicated account.
                problems.append(f"the gateway names customer {_customer_of(tx)}, this arrival's "
                                f"is {code!r}")
        _record_success_details(funding, tx)
        if problems:
            _flag(funding, "Not credited: " + "; ".join(problems))
            if funding.status == FUNDING_INITIATED:
                funding.status = FUNDING_PENDING
            return Verification("flagged", funding.id, funding.amount_kobo, "; ".join(problems))
        _credit(funding, tx, now)
        return Verification("credited", funding.id, funding.amount_kobo)
    if tx.status in FAILED_STATUSES:
        funding.status = FUNDING_FAILED
        funding.next_verify_at = None
        return Verification("failed", funding.id, funding.amount_kobo, tx.status)
    age_seconds = (now - funding.created_at).total_seconds()
    if tx.status == NOT_FOUND:
        if funding.status == FUNDING_INITIATED and age_seconds >= current_app.config["FUNDING_GIVE_UP_SECONDS"]:
            funding.status = FUNDING_FAILED
            funding.next_verify_at = None
            return Verification("failed", funding.id, funding.amount_kobo,
                                "the gateway never received this checkout")
    elif funding.status == FUNDING_INITIATED:
        funding.status = FUNDING_PENDING
    expire_seconds = current_app.config["FUNDING_EXPIRE_SECONDS"]
    if funding.status in FUNDING_OPEN_STATUSES and age_seconds >= expire_seconds:
        # Without an end, the sweep would ask about it every
        # FUNDING_VERIFY_MAX_DELAY_SECONDS for ever.
        funding.status = FUNDING_FAILED
        funding.next_verify_at = None
        return Verification("failed", funding.id, funding.amount_kobo,
                            f"no final answer from the gateway in {_duration(expire_seconds)} "
                            f"(it said {tx.status})")
    if funding.status in FUNDING_OPEN_STATUSES:
        funding.next_verify_at = now + timedelta(seconds=_backoff_seconds(funding.verify_attempts))
    return Verification("pending", funding.id, funding.amount_kobo, tx.status)


def _duration(seconds: int) -> str:
    """``86400`` -> ``"24 h"``, ``90`` -> ``"90 s"``."""
    return f"{seconds // 3600} h" if seconds >= 3600 and seconds % 3600 == 0 else f"{seconds} s"


@transactions.unit_of_work
def _note_unreachable(funding_id: int) -> None:
    # The gateway could not say: try again later, with backoff.
    funding = db.session.get(Funding, funding_id)
    if funding is not None and funding.status in FUNDING_OPEN_STATUSES:
        funding.verify_attempts += 1
        funding.next_verify_at = db_now() + timedelta(seconds=_backoff_seconds(funding.verify_attempts))


def verify_funding(funding_id: int, gw: Optional[FundingGateway] = None) -> Verification:
    """Ask the gateway about a funding (no transaction open) and apply the
    answer (:func:`apply_verification`, one unit). Safe to call any number
    of times, from the callback, a webhook task, the sweep or
    reconciliation, concurrently.

    :raises LookupError: no such funding.
    """
    gw = gw or gateway()
    row = db.session.execute(
        sa.select(Funding.gateway_reference, Funding.amount_kobo, Funding.status)
        .where(Funding.id == funding_id)).first()
    if row is None:
        raise LookupError(f"no funding {funding_id}")
    db.session.rollback()
    already = db.session.scalar(sa.select(Transfer.id).where(Transfer.funding_id == funding_id))
    db.session.rollback()
    if already is not None:
        return Verification("already_credited", funding_id, row.amount_kobo)
    try:
        tx = gw.verify(row.gateway_reference)
    except GatewayError as exc:
        log.warning("verify of funding %s failed: %s", funding_id, exc)
        _note_unreachable(funding_id)
        return Verification("unknown", funding_id, row.amount_kobo, str(exc))
    try:
        return apply_verification(funding_id, tx)
    except sa.exc.IntegrityError:
        # Another unit credited it between our check and our transfer: the
        # UNIQUE (funding_id) did its job.
        return Verification("already_credited", funding_id, row.amount_kobo)


# --- Admin: a flagged bank-transfer arrival -------------------------------------


def credit_verified_arrival(funding_id: int, admin_id: int, reason: str,
                            gw: Optional[FundingGateway] = None) -> str:
    """Admin action: credit a flagged bank-transfer arrival with the amount
    the gateway's ``verify`` says arrived, once, audited.

    An arrival is recorded at the webhook's amount; when ``verify`` (the
    authority, paystack.com/docs/payments/verify-payments) then says another
    amount, it is flagged, never credited automatically, and "verify now"
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
    gw = gw or gateway()
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
    code decides when given (as ``_account_for`` matches a webhook), else
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
        _record_success_details(funding, tx)
        if not funding.customer_code:
            # _customer_mismatch has checked that verify names this user's
            # dedicated account (or names no one): record whose it is.
            funding.customer_code = tx.customer_code or db.session.scalar(
                sa.select(DedicatedAccount.customer_code).where(DedicatedAccount.user_id == funding.user_id))
        funding.needs_attention = False
        funding.attention_reason = None
        _credit(funding, tx, db_now())
        result = (f"done: credited {format_naira(tx.amount_kobo)}, the amount the gateway verified "
                  f"(the arrival was recorded as {format_naira(recorded_kobo)})")
    db.session.add(AdminAction(admin_id=admin_id, funding_id=funding_id, action="credit_verified",
                               reason=reason[:500], result=result[:500]))
    return result


# --- Dedicated accounts (bank transfer) --------------------------------------


@transactions.unit_of_work
def _save_account(user_id: int, gateway_name: str, details: AccountDetails) -> None:
    if db.session.scalar(sa.select(DedicatedAccount.id).where(DedicatedAccount.user_id == user_id)):
        return
    db.session.add(DedicatedAccount(
        user_id=user_id, gateway=gateway_name, customer_code=details.customer_code[:64],
        account_number=details.account_number[:20], account_name=details.account_name[:200],
        bank_name=details.bank_name[:100] or "Bank", bank_slug=(details.bank_slug or None)))


def dedicated_account_of(user_id: int) -> Optional[DedicatedAccount]:
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
    gw = gw or gateway()
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


# --- Webhook events ----------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    event_id: int
    created: bool


@transactions.unit_of_work
def _store_event(gateway_name: str, event: str, reference: str, raw_body: bytes) -> StoredEvent:
    digest = hashlib.sha256(raw_body).hexdigest()
    existing = db.session.scalar(sa.select(GatewayEvent).where(
        GatewayEvent.gateway == gateway_name, GatewayEvent.event == event,
        GatewayEvent.reference == reference, GatewayEvent.payload_sha256 == digest).with_for_update())
    if existing is not None:
        existing.deliveries += 1
        existing.last_received_at = utcnow()
        return StoredEvent(existing.id, False)
    row = GatewayEvent(gateway=gateway_name, event=event, reference=reference,
                       payload=raw_body.decode("utf-8", "replace"), payload_sha256=digest)
    db.session.add(row)
    db.session.flush()
    return StoredEvent(row.id, True)


def store_event(gateway_name: str, event: str, reference: str, raw_body: bytes) -> StoredEvent:
    """Store a verified webhook once per (gateway, event, reference, body);
    a repeat delivery of the same body only counts itself, a different body
    for the same reference is a new row (processed on its own, so a forged
    or wrong one never blocks the genuine one). One unit of work.

    :param reference: ``data.reference`` (at most 100 characters).
    """
    try:
        return _store_event(gateway_name, event[:64], reference[:100], raw_body)
    except sa.exc.IntegrityError:
        return _store_event(gateway_name, event[:64], reference[:100], raw_body)


@transactions.unit_of_work
def _finish_event(event_id: int, outcome: str, *, funding_id: Optional[int] = None,
                  attention: bool = False) -> None:
    row = db.session.get(GatewayEvent, event_id)
    row.outcome = outcome[:300]
    row.processed_at = utcnow()
    if funding_id is not None:
        row.funding_id = funding_id
    if attention:
        row.needs_attention = True


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
    ``customer_code``, at the webhook's amount (verify then decides)."""
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


def _customer_of(tx: GatewayTransaction) -> str:
    return repr(tx.customer_code or tx.customer_email or "no customer")


def _names_other_customer(tx: GatewayTransaction, customer_code: Optional[str],
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


def _owner_of_arrival(funding_id: int) -> tuple[Optional[str], str, str]:
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
        code, email, method = _owner_of_arrival(funding_id)
        db.session.rollback()
        if method == "bank_transfer" and _names_other_customer(tx, code, email):
            return Found(None, f"customer mismatch: this names customer {_customer_of(tx)}, the "
                               f"arrival belongs to customer {code!r} (the owner verify named)",
                         customer_mismatch=True, mismatched_funding_id=funding_id)
        return Found(funding_id)
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
                           f"(verify names customer {_customer_of(verified)})")
    user_id, code = account.user_id, account.customer_code
    owner_email = db.session.scalar(sa.select(User.email).where(User.id == user_id)) or ""
    db.session.rollback()
    if _names_other_customer(tx, code, owner_email):
        return Found(None, f"customer mismatch: the webhook names customer {_customer_of(tx)}, the "
                           f"gateway's verify names customer {code!r}", customer_mismatch=True)
    try:
        funding_id = _record_arrival(user_id, code, gw.name, tx)
    except sa.exc.IntegrityError:
        funding_id = _record_arrival(user_id, code, gw.name, tx)
    return Found(funding_id, verified=verified)


def _apply(funding_id: int, tx: GatewayTransaction) -> Verification:
    try:
        return apply_verification(funding_id, tx)
    except sa.exc.IntegrityError:
        # Another unit credited it between our check and our transfer.
        return Verification("already_credited", funding_id, 0)


def process_event(event_id: int, gw: Optional[FundingGateway] = None) -> str:
    """Act on a stored webhook (the Huey task's body): for ``charge.success``
    find (or, for a dedicated-account arrival, create after the gateway's
    verify, :func:`funding_for_transaction`) the funding, then verify it:
    the webhook's own fields are never trusted for money. An unknown
    reference, or a webhook naming another customer than verify does, is
    flagged for an admin, never credited, and creates no funding.
    Safe to run any number of times.

    :returns: the outcome recorded on the event.
    """
    gw = gw or gateway()
    row = db.session.get(GatewayEvent, event_id)
    if row is None:
        return "missing"
    event, payload = row.event, row.payload
    db.session.rollback()
    if event != "charge.success":
        _finish_event(event_id, f"ignored: {event} is not handled")
        return "ignored"
    try:
        tx = transaction_from(json.loads(payload).get("data"))
    except (ValueError, AttributeError, GatewayError) as exc:
        _finish_event(event_id, f"unusable payload: {exc}", attention=True)
        return "unusable"
    try:
        found = funding_for_transaction(tx, gw)
    except GatewayError as exc:
        # verify could not be asked: nothing recorded; the event stays open
        # for the sweep (unprocessed_events).
        log.warning("gateway event %s: verify failed: %s", event_id, exc)
        return "unknown"
    funding_id = found.funding_id
    if funding_id is None:
        _finish_event(event_id, f"not credited: {found.why}", attention=True)
        return "customer_mismatch" if found.customer_mismatch else found.why
    result = _apply(funding_id, found.verified) if found.verified is not None else verify_funding(funding_id, gw)
    if result.outcome == "unknown":
        # The gateway could not be asked. Leave the event open: the sweep
        # (unprocessed_events) processes it again. A funding already closed
        # (an abandoned checkout paid late) is not verified by anything else.
        return result.outcome
    stored = db.session.scalar(sa.select(Funding.amount_kobo).where(Funding.id == funding_id))
    db.session.rollback()
    attention = result.outcome == "flagged" or (tx.amount_kobo is not None and tx.amount_kobo != stored)
    detail = result.outcome + (f": {result.detail}" if result.detail else "")
    if tx.amount_kobo is not None and tx.amount_kobo != stored:
        detail += f" (the webhook said {tx.amount_kobo} kobo, stored {stored} kobo)"
    _finish_event(event_id, detail, funding_id=funding_id, attention=attention)
    return result.outcome


# --- Sweep -------------------------------------------------------------------


def due_fundings(limit: int = 500) -> list[int]:
    """Open (``initiated``/``pending``) fundings the sweep should verify now,
    by the database clock: never verified and older than
    ``FUNDING_VERIFY_AFTER_SECONDS``, or whose ``next_verify_at`` has come.
    Flagged ones wait for an admin."""
    now = db_now()
    after = now - timedelta(seconds=current_app.config["FUNDING_VERIFY_AFTER_SECONDS"])
    ids = db.session.scalars(
        sa.select(Funding.id).where(
            Funding.status.in_(FUNDING_OPEN_STATUSES), Funding.needs_attention.is_(False),
            sa.or_(sa.and_(Funding.next_verify_at.is_(None), Funding.created_at < after),
                   Funding.next_verify_at <= now))
        .order_by(Funding.id).limit(limit)).all()
    db.session.rollback()
    return list(ids)


def unprocessed_events(older_than_seconds: int = 60, limit: int = 500) -> list[int]:
    """Stored webhooks whose task never finished (a lost enqueue, a killed
    worker), older than ``older_than_seconds`` by the database clock."""
    cutoff = db_now() - timedelta(seconds=older_than_seconds)
    ids = db.session.scalars(
        sa.select(GatewayEvent.id).where(GatewayEvent.processed_at.is_(None),
                                         GatewayEvent.received_at < cutoff)
        .order_by(GatewayEvent.id).limit(limit)).all()
    db.session.rollback()
    return list(ids)


# --- Reconciliation ----------------------------------------------------------


def lagos_day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[start, end)`` of a day in Africa/Lagos, as UTC datetimes."""
    start = datetime(day.year, day.month, day.day, tzinfo=LAGOS).astimezone(timezone.utc)
    return start, start + timedelta(days=1)


@transactions.unit_of_work
def _open_run(day: date, gateway_name: str) -> int:
    run = ReconciliationRun(day=day, gateway=gateway_name)
    db.session.add(run)
    db.session.flush()
    return run.id


@transactions.unit_of_work
def _close_run(run_id: int, counts: dict[str, int], items: list[dict[str, Any]],
               error: Optional[str], left_to_sweep: frozenset[int] = frozenset()) -> None:
    run = db.session.get(ReconciliationRun, run_id)
    run.gateway_transactions = counts["gateway"]
    run.matched = counts["matched"]
    run.credited = counts["credited"]
    run.flagged = counts["flagged"]
    run.error = error[:500] if error else None
    run.finished_at = utcnow()
    for item in items:
        db.session.add(ReconciliationItem(run_id=run_id, **item))
        if item["kind"] != "credited" and item.get("funding_id") and item["funding_id"] not in left_to_sweep:
            funding = db.session.get(Funding, item["funding_id"])
            if not funding.needs_attention:
                funding.needs_attention = True
                funding.attention_reason = ("Reconciliation: " + item["detail"])[:500]


def reconcile(day: date, gw: Optional[FundingGateway] = None) -> ReconciliationRun:
    """Compare the gateway's transactions for ``day`` (Africa/Lagos) with our
    fundings (``GET /transaction`` with ``from``/``to``):

    - a gateway ``success`` we have not credited is verified and credited
      (through :func:`verify_funding`, so at most once);
    - a gateway success for a reference we do not know, a credit whose
      gateway transaction is not a success, an amount mismatch, or a bank
      transfer whose customer (per the gateway) is not the one it was
      credited to is flagged.

    Each run and what it found is stored (admin page ``/admin/reconciliation``).

    :returns: the finished run.
    """
    gw = gw or gateway()
    start, end = lagos_day_bounds(day)
    run_id = _open_run(day, gw.name)
    counts = {"gateway": 0, "matched": 0, "credited": 0, "flagged": 0}
    items: list[dict[str, Any]] = []

    def flag(kind: str, detail: str, reference: Optional[str], funding_id: Optional[int] = None,
             amount: Optional[int] = None) -> None:
        counts["flagged"] += 1
        items.append({"kind": kind, "detail": detail[:500], "gateway_reference": reference,
                      "funding_id": funding_id, "gateway_amount_kobo": amount})

    error = None
    try:
        gateway_txs = gw.transactions(start, end)
    except GatewayError as exc:
        gateway_txs, error = [], f"could not list the gateway's transactions: {exc}"
    successes = {}
    # Open fundings the gateway could not be asked about now: reported, not
    # flagged (a flag stops the sweep, which verifies them again).
    left_to_sweep: set[int] = set()
    for tx in gateway_txs:
        counts["gateway"] += 1
        if tx.status != SUCCESS:
            continue
        successes[tx.reference] = tx
        try:
            found = funding_for_transaction(tx, gw)
        except GatewayError as exc:
            flag("not_credited", f"gateway lists success; its verify could not be asked: {exc}",
                 tx.reference, amount=tx.amount_kobo)
            continue
        if found.customer_mismatch:
            # The gateway's own list names another customer than the one the
            # arrival was credited to (or than its verify): never "matched".
            flag("customer_mismatch", found.why, tx.reference, found.mismatched_funding_id, tx.amount_kobo)
            continue
        funding_id = found.funding_id
        if funding_id is None:
            flag("unknown_reference", f"gateway success with no funding of ours ({found.why})",
                 tx.reference, amount=tx.amount_kobo)
            continue
        funding = db.session.get(Funding, funding_id)
        stored, status = funding.amount_kobo, funding.status
        credited = status == FUNDING_SUCCEEDED
        db.session.rollback()
        if tx.amount_kobo != stored or tx.currency != CURRENCY:
            flag("amount_mismatch",
                 f"gateway {tx.amount_kobo} kobo {tx.currency}, stored {stored} kobo", tx.reference,
                 funding_id, tx.amount_kobo)
            continue
        if credited:
            counts["matched"] += 1
            continue
        result = (_apply(funding_id, found.verified) if found.verified is not None
                  else verify_funding(funding_id, gw))
        if result.outcome == "credited":
            counts["credited"] += 1
            items.append({"kind": "credited", "detail": "gateway success credited by reconciliation",
                          "gateway_reference": tx.reference, "funding_id": funding_id,
                          "gateway_amount_kobo": tx.amount_kobo})
        elif result.outcome == "already_credited":
            counts["matched"] += 1
        else:
            if result.outcome == "unknown" and status in FUNDING_OPEN_STATUSES:
                left_to_sweep.add(funding_id)
            flag("not_credited", f"gateway lists success, verify says {result.outcome} {result.detail}",
                 tx.reference, funding_id, tx.amount_kobo)
    if error is None:
        ours = db.session.execute(
            sa.select(Funding.id, Funding.gateway_reference, Funding.amount_kobo)
            .join(Transfer, Transfer.funding_id == Funding.id)
            .where(Funding.gateway == gw.name, Transfer.created_at >= start, Transfer.created_at < end)
        ).all()
        db.session.rollback()
        for funding_id, reference, amount in ours:
            if reference in successes:
                continue
            code, email, method = _owner_of_arrival(funding_id)
            db.session.rollback()
            # Paid late on the day before, or listed under another day: ask
            # about this one reference before flagging it.
            try:
                tx = gw.verify(reference)
            except GatewayError as exc:
                flag("credit_without_success", f"credited; the gateway could not confirm it: {exc}",
                     reference, funding_id, None)
                continue
            if method == "bank_transfer" and _names_other_customer(tx, code, email):
                flag("customer_mismatch",
                     f"credited to customer {code!r}; the gateway's verify names customer "
                     f"{_customer_of(tx)}", reference, funding_id, tx.amount_kobo)
            elif tx.status == SUCCESS and tx.amount_kobo == amount and tx.currency == CURRENCY:
                counts["matched"] += 1
            else:
                flag("credit_without_success",
                     f"credited, but the gateway says {tx.status} {tx.amount_kobo} kobo {tx.currency}",
                     reference, funding_id, tx.amount_kobo)
    _close_run(run_id, counts, items, error, frozenset(left_to_sweep))
    run = db.session.get(ReconciliationRun, run_id)
    return run


# --- Invariant 6 (funding part) ----------------------------------------------


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


# --- For tests and seed data --------------------------------------------------


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
