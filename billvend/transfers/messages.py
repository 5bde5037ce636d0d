"""The messages a transfer between customers causes (issue 27): a receipt to
the sender ("You sent ...") and a notice to the recipient ("You received
..."), by email, and by SMS as well when the account chose SMS for its
messages (``token_channels``) and has a mobile on file. Called inside the
unit of work that posts the transfer (``billvend.transfers.services``); only
queues outbox rows, sent after that unit commits. Templates:
templates/messages/transfer_sent.* and transfer_received.*."""

from __future__ import annotations

from typing import Any

from flask import current_app

from billvend.accounts.models import User
from billvend.notifications.services import notify
from billvend.platform.extensions import db
from billvend.platform.money import format_naira
from billvend.platform.phones import is_e164
from billvend.transfers.models import P2PTransfer, masked_name

#: Where links point when PUBLIC_BASE_URL is unset (development).
LOCAL_BASE_URL = "http://127.0.0.1:5000"


def sms_amount(amount_kobo: int) -> str:
    """``150050`` -> ``NGN 1,500.50``: GSM-7 text (no ``₦``)."""
    return f"NGN {amount_kobo // 100:,}.{amount_kobo % 100:02d}"


def _context(transfer: P2PTransfer, sender: User, recipient: User) -> dict[str, Any]:
    base = (current_app.config.get("PUBLIC_BASE_URL") or LOCAL_BASE_URL).rstrip("/")
    return {"amount": format_naira(transfer.amount_kobo), "amount_sms": sms_amount(transfer.amount_kobo),
            "reference": transfer.reference, "note": transfer.note or "",
            "sender_name": masked_name(sender), "recipient_name": masked_name(recipient),
            "receipt_url": f"{base}/wallet/transfers/{transfer.reference}"}


def _send_to(user: User, event_key: str, template: str, context: dict[str, Any]) -> None:
    notify(event_key, "email", user.email, template, context, user_id=user.id)
    if user.wants_token_by("sms") and is_e164(user.phone):
        notify(event_key, "sms", user.phone, template, context, user_id=user.id)


def transfer_made(transfer: P2PTransfer) -> None:
    """Queue both sides' messages of ``transfer`` (just posted, same unit)."""
    sender = db.session.get(User, transfer.sender_id)
    recipient = db.session.get(User, transfer.recipient_id)
    if sender is None or recipient is None:
        return
    context = _context(transfer, sender, recipient)
    _send_to(sender, f"p2p:{transfer.id}:sent", "transfer_sent", context)
    _send_to(recipient, f"p2p:{transfer.id}:received", "transfer_received", context)
