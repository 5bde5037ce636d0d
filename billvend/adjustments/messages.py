"""The message an approved credit or bonus causes (issue 27): a plain email telling the
customer money was added to their wallet. Called inside the unit of work that posts it
(:func:`billvend.adjustments.services.approve`); only queues the outbox row, sent after
that unit commits. A debit sends nothing (support tells the customer why)."""

from __future__ import annotations

from flask import current_app

from billvend.accounts.models import User
from billvend.adjustments.models import Adjustment
from billvend.ledger.models import Wallet
from billvend.notifications.services import notify
from billvend.platform.extensions import db
from billvend.platform.money import format_naira

LOCAL_BASE_URL = "http://127.0.0.1:5000"


def credited(adjustment_id: int) -> None:
    """Queue the "goodwill credit" email (templates/messages/goodwill_credit.*) for the
    approved credit or bonus ``adjustment_id``: the amount, the new balance, a link to
    the wallet. Once per adjustment (event ``adjustment:<id>:credited``)."""
    row = db.session.get(Adjustment, adjustment_id, populate_existing=True)
    user = db.session.get(User, row.user_id) if row is not None else None
    if user is None:
        return
    wallet = db.session.get(Wallet, row.wallet_id, populate_existing=True)
    base = (current_app.config.get("PUBLIC_BASE_URL") or LOCAL_BASE_URL).rstrip("/")
    context = {"amount": format_naira(row.amount_kobo),
               "balance": format_naira(wallet.balance_kobo) if wallet else "",
               "name": user.full_name or "", "wallet_url": f"{base}/history",
               "support": current_app.config["SUPPORT_CONTACT"]}
    notify(f"adjustment:{row.id}:credited", "email", user.email, "goodwill_credit", context,
           user_id=user.id)
