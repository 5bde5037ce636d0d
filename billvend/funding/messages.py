"""The message a funding causes (issue 23): the receipt when money is
credited to the wallet. Called inside the unit of work that credits it
(:func:`billvend.funding.verification.credit_funding`); only queues the
outbox row, sent after that unit commits."""

from __future__ import annotations

from flask import current_app

from billvend.accounts.models import User
from billvend.funding.models import Funding
from billvend.ledger.models import Wallet
from billvend.notifications.services import notify
from billvend.platform.extensions import db
from billvend.platform.money import format_naira

LOCAL_BASE_URL = "http://127.0.0.1:5000"


def funding_credited(funding: Funding) -> None:
    """Queue the funding receipt email for ``funding`` (just credited): the
    amount, how it came (card or bank transfer), the reference and the new
    balance."""
    user = db.session.get(User, funding.user_id)
    if user is None:
        return
    wallet = db.session.get(Wallet, funding.wallet_id, populate_existing=True)
    base = (current_app.config.get("PUBLIC_BASE_URL") or LOCAL_BASE_URL).rstrip("/")
    context = {"amount": format_naira(funding.amount_kobo), "reference": funding.reference,
               "method": "Bank transfer" if funding.method == "bank_transfer" else "Card",
               "balance": format_naira(wallet.balance_kobo) if wallet else "",
               "wallet_url": f"{base}/wallet"}
    notify(f"funding:{funding.id}:credited", "email", user.email, "funding_receipt", context,
           user_id=user.id)
