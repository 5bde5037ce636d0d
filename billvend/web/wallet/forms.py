"""The fund-wallet forms. Field names are a contract (DESIGN.md)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SubmitField

from billvend.web.forms import NairaField, idempotency_key_field


class FundForm(FlaskForm):
    amount = NairaField(
        "Amount (₦)", min_key="MIN_FUNDING_KOBO", max_key="MAX_FUNDING_KOBO",
        description="You pay by card on the gateway's secure page.",
    )
    idempotency_key = idempotency_key_field()
    submit = SubmitField("Fund wallet")


class BankTransferForm(FlaskForm):
    """Asks for the customer's dedicated account (made on first use)."""

    submit = SubmitField("Pay by bank transfer")
