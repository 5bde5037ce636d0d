"""Statement filters (a GET form: no CSRF, bookmarkable)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectField, SubmitField
from wtforms.fields.choices import SelectChoice

from billvend.models import PAYMENT_STATUSES, TRANSFER_KINDS

KIND_LABELS = {
    "funding": "Fundings",
    "bill_payment": "Payments",
    "reversal": "Refunds",
    "adjustment": "Adjustments",
}


class HistoryFilterForm(FlaskForm):
    class Meta:
        csrf = False

    kind = SelectField(
        "Kind",
        choices=[SelectChoice("", "All kinds")]
        + [SelectChoice(k, KIND_LABELS.get(k, k)) for k in TRANSFER_KINDS],
        default="",
        validate_choice=True,
    )
    status = SelectField(
        "Payment status",
        choices=[SelectChoice("", "Any status")]
        + [SelectChoice(s, s.capitalize()) for s in PAYMENT_STATUSES],
        default="",
    )
    submit = SubmitField("Filter")
