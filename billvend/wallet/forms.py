"""The fund-wallet form. Field names are a contract (DESIGN.md)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SubmitField

from billvend.forms import NairaField, idempotency_key_field


class FundForm(FlaskForm):
    amount = NairaField(
        "Amount (₦)", min_key="MIN_FUNDING_KOBO", max_key="MAX_FUNDING_KOBO",
        description="Paid with the simulated card gateway.",
    )
    idempotency_key = idempotency_key_field()
    submit = SubmitField("Fund wallet")
