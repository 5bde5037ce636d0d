"""Statement filters (a GET form: no CSRF, bookmarkable)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SearchField, SelectField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, Optional, ValidationError

from billvend.web.forms import FilterDate
from billvend.vending.models import FAILED, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING
from billvend.ledger.models import TRANSFER_KINDS

KIND_LABELS = {
    "funding": "Fundings",
    "bill_payment": "Payments",
    "reversal": "Refunds",
    "adjustment": "Corrections and credits by billvend",
    "bonus": "Goodwill credits",
    "p2p": "Transfers",
}

#: The status filter in the customer's words (as the badges say them) ->
#: the payment statuses it covers.
STATUS_GROUPS: dict[str, tuple[str, ...]] = {
    "done": (SUCCESSFUL,),
    "in_progress": (PENDING, VENDING, UNKNOWN),
    "refunded": (FAILED, REVERSED),
}
STATUS_GROUP_LABELS = {
    "done": "Token issued or paid",
    "in_progress": "In progress",
    "refunded": "Refunded or refund on the way",
}


class HistoryFilterForm(FlaskForm):
    class Meta:
        csrf = False

    q = SearchField(
        "Search",
        validators=[Optional(), Length(max=60, message="Search for at most 60 characters.")],
        description="Meter number, token or reference",
    )
    kind = SelectField(
        "Kind",
        choices=[SelectChoice("", "All kinds")]
        + [SelectChoice(k, KIND_LABELS.get(k, k)) for k in TRANSFER_KINDS],
        default="",
        validate_choice=True,
    )
    status = SelectField(
        "Status",
        choices=[SelectChoice("", "Any status")]
        + [SelectChoice(key, label) for key, label in STATUS_GROUP_LABELS.items()],
        default="",
    )
    date_from = DateField("From", validators=[Optional(), FilterDate()])
    date_to = DateField("To", validators=[Optional(), FilterDate()])
    submit = SubmitField("Filter")

    def validate_date_to(self, field):
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> dict:
        """The valid filters as ``statement_query`` keyword arguments."""
        return {
            "kind": self.kind.data or None,
            "statuses": STATUS_GROUPS.get(self.status.data or ""),
            "search": (self.q.data or "").strip() or None,
            "date_from": self.date_from.data,
            "date_to": self.date_to.data,
        }

    def args(self) -> dict:
        """The filters as query-string arguments (pagination and downloads)."""
        return {key: value for key, value in {
            "q": (self.q.data or "").strip(),
            "kind": self.kind.data or "",
            "status": self.status.data or "",
            "date_from": self.date_from.data.isoformat() if self.date_from.data else "",
            "date_to": self.date_to.data.isoformat() if self.date_to.data else "",
        }.items() if value}
