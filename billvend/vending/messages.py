"""The messages a payment causes (issue 23): the token (email and SMS, plus a
second SMS with the key-change tokens when the disco sent them) when it turns
``successful``, and the refund when it turns ``reversed``.

Each function runs inside the unit of work that makes the change (called by
``billvend.vending.lifecycle``) and only queues outbox rows
(:func:`billvend.notifications.services.notify`); they are sent after that
unit commits. The templates are templates/messages/<name>.*; their context is
plain values only.
"""

from __future__ import annotations

from typing import Any, Optional

from flask import current_app

from billvend.accounts.models import User
from billvend.notifications.services import notify
from billvend.platform.extensions import db
from billvend.platform.money import format_naira
from billvend.platform.phones import is_e164, national
from billvend.vending.models import Payment
from billvend.vending.providers import DISCOS

#: Where receipt links point when PUBLIC_BASE_URL is unset (development).
LOCAL_BASE_URL = "http://127.0.0.1:5000"


def sms_amount(amount_kobo: int) -> str:
    """``500000000`` -> ``NGN 5,000,000.00``: GSM-7 text (``₦`` would switch
    an SMS to UCS-2 and cut it to 70 characters)."""
    return f"NGN {amount_kobo // 100:,}.{amount_kobo % 100:02d}"


def spaced_groups(digits: Optional[str]) -> str:
    """``12345678...`` -> ``1234 5678 ...``: a token as a meter keypad reads it."""
    digits = digits or ""
    return " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def receipt_url(reference: str) -> str:
    """The payment's receipt page, absolute, from PUBLIC_BASE_URL."""
    base = (current_app.config.get("PUBLIC_BASE_URL") or LOCAL_BASE_URL).rstrip("/")
    return f"{base}/payments/{reference}/receipt"


def payment_context(payment: Payment) -> dict[str, Any]:
    """The plain values every payment message's templates use."""
    return {
        "reference": payment.reference, "disco": DISCOS.get(payment.service_id, payment.service_id),
        "meter_number": payment.meter_number, "meter_type": payment.meter_type,
        "amount": format_naira(payment.amount_kobo), "amount_sms": sms_amount(payment.amount_kobo),
        "customer_name": payment.customer_name or "", "phone": national(payment.phone),
        "receipt_url": receipt_url(payment.reference),
    }


def _recipients(payment: Payment) -> tuple[Optional[str], Optional[str]]:
    """(email, E.164 phone) a payment's messages go to: the account's address,
    and the phone given with the payment (none if it is not a mobile), as the
    account's ``token_channels`` allows. A choice of SMS alone with no mobile
    on the payment still gets the email: a token is never sent nowhere."""
    user = db.session.get(User, payment.user_id)
    email = user.email if user else None
    phone = payment.phone if is_e164(payment.phone) else None
    if user is not None and not user.wants_token_by("sms"):
        phone = None
    if user is not None and not user.wants_token_by("email") and phone:
        email = None
    return email, phone


def token_context(payment: Payment) -> dict[str, Any]:
    """The token templates' values: the payment's, plus the token, units,
    key-change tokens (spaced as a keypad reads them) and the disco's reference."""
    return payment_context(payment) | {
        "token_groups": payment.token_groups, "token_spaced": spaced_groups(payment.token),
        "units_kwh": payment.units_kwh or "", "kct1": payment.kct1 or "", "kct2": payment.kct2 or "",
        "kct1_spaced": spaced_groups(payment.kct1), "kct2_spaced": spaced_groups(payment.kct2),
        "exchange_reference": payment.exchange_reference or "", "tariff": payment.tariff or "",
    }


def token_delivered(payment_id: int) -> None:
    """Queue the token messages of a payment that just turned ``successful``:
    an email (the token as hero, units, key-change tokens, the disco's
    reference, the receipt link) and an SMS of one GSM-7 part; key-change
    tokens go first, in an SMS of their own. The account's ``token_channels``
    choice decides which of the two go (:func:`_recipients`)."""
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None or not payment.token:
        return
    context = token_context(payment)
    email, phone = _recipients(payment)
    key = f"payment:{payment.id}:token"
    if email:
        notify(key, "email", email, "token", context, user_id=payment.user_id, secret=True)
    if phone:
        if payment.kct1:
            notify(f"payment:{payment.id}:kct", "sms", phone, "token_kct", context,
                   user_id=payment.user_id, secret=True)
        notify(key, "sms", phone, "token", context, user_id=payment.user_id, secret=True)


def refunded(payment_id: int, reason: str) -> None:
    """Queue the refund messages of a payment that just turned ``reversed``:
    the reason in the customer's words (``reason``), the amount back in the
    wallet, the reference to quote to support. Sent where the token would
    go (the account's ``token_channels``)."""
    payment = db.session.get(Payment, payment_id, populate_existing=True)
    if payment is None:
        return
    context = payment_context(payment) | {"reason": reason,
                                          "support": current_app.config["SUPPORT_CONTACT"]}
    email, phone = _recipients(payment)
    key = f"payment:{payment.id}:refund"
    if email:
        notify(key, "email", email, "refund", context, user_id=payment.user_id)
    if phone:
        notify(key, "sms", phone, "refund", context, user_id=payment.user_id)
