"""Admin forms: GET filters (no CSRF, bookmarkable) and action forms (POST,
CSRF, a required reason)."""

from __future__ import annotations

import re
import unicodedata
from datetime import date

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from billvend.platform.text import BIDI_CONTROLS
from billvend.web.forms import NairaField
from billvend.vending.models import METER_TYPES, PAYMENT_STATUSES, PREPAID
from billvend.vending.providers import DISCOS

TOKEN_RE = re.compile(r"^[0-9]{20}$")
UNITS_RE = re.compile(r"^[0-9]{1,7}(\.[0-9]{1,3})?$")
#: What a search box may hold: a payment reference or a meter number.
SEARCH_RE = re.compile(r"^[A-Za-z0-9]{1,40}$")
#: Dates a filter may name: the database and the Lagos-midnight arithmetic
#: (a day added to ``date_to``) hold every one of them.
EARLIEST_DATE = date(2000, 1, 1)
LATEST_DATE = date(2100, 12, 31)
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def normalise_digits(text: str | None) -> str:
    """Drop the spaces and dashes people paste inside tokens and meter numbers."""
    return re.sub(r"[\s\-]", "", text or "")


class PaymentFilterForm(FlaskForm):
    """Filters of the all-payments list and its CSV export (query string)."""

    class Meta:
        csrf = False

    status = SelectField(
        "Status", choices=[SelectChoice("", "Any status")]
        + [SelectChoice(s, s) for s in PAYMENT_STATUSES], default="")
    disco = SelectField(
        "Disco", choices=[SelectChoice("", "Any disco")]
        + [SelectChoice(k, v) for k, v in DISCOS.items()], default="")
    meter_type = SelectField(
        "Meter type", choices=[SelectChoice("", "Any type")]
        + [SelectChoice(t, t) for t in METER_TYPES], default="")
    email = StringField("Customer email", validators=[Optional(), Length(max=254)])
    date_from = DateField("From (Lagos date)", validators=[Optional()],
                          render_kw={"type": "date"})
    date_to = DateField("To (Lagos date, inclusive)", validators=[Optional()],
                        render_kw={"type": "date"})
    q = StringField("Reference or meter number", validators=[Optional(), Length(max=60)])

    def validate_q(self, field):
        field.data = normalise_digits(field.data)
        if field.data and not SEARCH_RE.fullmatch(field.data):
            raise ValidationError("Search by a payment reference or a meter number (letters and digits).")

    def validate_email(self, field):
        if field.data and CONTROL_RE.search(field.data):
            raise ValidationError("An email address has no control characters.")

    def validate_date_from(self, field):
        if field.data and not EARLIEST_DATE <= field.data <= LATEST_DATE:
            raise ValidationError(f"Pick a date from {EARLIEST_DATE.year} to {LATEST_DATE.year}.")

    def validate_date_to(self, field):
        if field.data and not EARLIEST_DATE <= field.data <= LATEST_DATE:
            raise ValidationError(f"Pick a date from {EARLIEST_DATE.year} to {LATEST_DATE.year}.")
        if field.data and self.date_from.data and field.data < self.date_from.data:
            raise ValidationError("The end date is before the start date.")

    def filters(self) -> dict:
        """The validated filters, blanks dropped (keys as in ``queries.payment_query``)."""
        values = {
            "status": self.status.data or None,
            "disco": self.disco.data or None,
            "meter_type": self.meter_type.data or None,
            "email": (self.email.data or "").strip().casefold() or None,
            "date_from": self.date_from.data,
            "date_to": self.date_to.data,
            "q": self.q.data or None,
        }
        return {k: v for k, v in values.items() if v}

    def query_args(self) -> dict[str, str]:
        """The filters as query-string arguments (for links and the export)."""
        return {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                for k, v in self.filters().items()}


class WalletSearchForm(FlaskForm):
    class Meta:
        csrf = False

    email = StringField("Customer email", validators=[Optional(), Length(max=254)])


class PlainReason:
    """Validator for a reason that goes on the record: line breaks and tabs are fine
    (a textarea), other control characters (NUL, which PostgreSQL cannot store; terminal
    escapes), lone surrogates and bidirectional controls
    (``billvend.platform.text.BIDI_CONTROLS``, which make a reason read differently to
    the admin deciding on it) are refused.

    :raises wtforms.validators.ValidationError: with a message for the field.
    """

    message = "Use letters, numbers, spaces and punctuation only in the reason."
    _LAYOUT = frozenset("\r\n\t")

    def __call__(self, form, field):
        text = field.data or ""
        if any((unicodedata.category(ch) in ("Cc", "Cs") and ch not in self._LAYOUT)
               or ch in BIDI_CONTROLS for ch in text):
            raise ValidationError(self.message)


def reason_field():
    return TextAreaField(
        "Reason (recorded in the audit log)",
        validators=[DataRequired(message="Give a reason: it goes on the record."),
                    Length(min=5, max=500, message="Write 5 to 500 characters."), PlainReason()],
        render_kw={"rows": 2},
    )


class ReasonForm(FlaskForm):
    """Requery now or refund: only a reason."""

    reason = reason_field()
    submit = SubmitField("Confirm")


class ResolveDeliveredForm(FlaskForm):
    """Resolve an ``unknown``/``vending`` payment as delivered, with what the
    provider's records show. Set ``meter_type`` before validating: a prepaid
    payment needs its 20-digit token, a postpaid one the provider's receipt."""

    token = StringField("Token (20 digits, prepaid)")
    receipt_reference = StringField("Provider receipt / reference",
                                    validators=[Length(max=64)])
    units_kwh = StringField("Units (kWh, optional)")
    reason = reason_field()
    submit = SubmitField("Resolve as delivered")

    meter_type: str = PREPAID

    def validate_token(self, field):
        field.data = normalise_digits(field.data)
        if self.meter_type == PREPAID:
            if not field.data:
                raise ValidationError("A prepaid payment needs the 20-digit token from the provider.")
        if field.data and not TOKEN_RE.fullmatch(field.data):
            raise ValidationError("A token is exactly 20 digits.")

    def validate_receipt_reference(self, field):
        field.data = (field.data or "").strip()
        if self.meter_type != PREPAID and not field.data:
            raise ValidationError("A postpaid payment needs the provider's receipt reference.")

    def validate_units_kwh(self, field):
        field.data = (field.data or "").strip()
        if field.data and not UNITS_RE.fullmatch(field.data):
            raise ValidationError("Units are a number of kWh, like 79.9.")


# --- Adjustments and bonuses (issue 27) ------------------------------------------------

ADJUSTMENT_DIRECTIONS = (
    ("credit", "Credit: correction in the customer's favour (from the adjustments wallet)"),
    ("debit", "Debit: correction against the customer (into the adjustments wallet)"),
    ("bonus", "Bonus: goodwill (from the promotions wallet)"),
)


class ProposeAdjustmentForm(FlaskForm):
    """Propose a credit, debit or bonus for one customer (a second admin decides)."""

    email = StringField("Customer email", validators=[
        DataRequired(message="Enter the customer's email address."), Length(max=254)])
    direction = SelectField("What", choices=[SelectChoice(v, label) for v, label in ADJUSTMENT_DIRECTIONS],
                            validators=[DataRequired()])
    amount = NairaField("Amount (₦)", min_key="MIN_ADJUSTMENT_KOBO", max_key="MAX_ADJUSTMENT_KOBO")
    reason = reason_field()
    submit = SubmitField("Propose")

    def validate_email(self, field):
        field.data = (field.data or "").strip().lower()
        # Bidi controls too: a refused proposal writes the address into the audit log.
        if CONTROL_RE.search(field.data) or any(ch in BIDI_CONTROLS for ch in field.data):
            raise ValidationError("An email address has no control characters.")


class DecideAdjustmentForm(FlaskForm):
    """Approve or reject a proposal: a fresh code from the approver's authenticator app
    and a reason for the record."""

    code = StringField("Code from your authenticator app", validators=[
        DataRequired(message="Type the 6-digit code from your authenticator app.")],
        render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})
    reason = reason_field()
    submit = SubmitField("Confirm")

    def validate_code(self, field):
        field.data = re.sub(r"\s", "", field.data or "")
        if not re.fullmatch(r"[0-9]{6}", field.data):
            raise ValidationError("Type the 6-digit code from your authenticator app "
                                  "(a recovery code does not approve money).")


class AdjustmentFilterForm(FlaskForm):
    """Filters of the adjustments list (query string)."""

    class Meta:
        csrf = False

    status = SelectField("Status", choices=[
        SelectChoice("", "Any"), SelectChoice("pending", "Waiting for a second admin"),
        SelectChoice("approved", "Approved"), SelectChoice("rejected", "Rejected"),
        SelectChoice("expired", "Expired")], default="", validators=[Optional()])
    direction = SelectField("What", choices=[SelectChoice("", "Any")]
                            + [SelectChoice(v, v) for v, _ in ADJUSTMENT_DIRECTIONS],
                            default="", validators=[Optional()])
    email = StringField("Customer email", validators=[Optional(), Length(max=254)])

    def validate_email(self, field):
        if field.data and CONTROL_RE.search(field.data):
            raise ValidationError("An email address has no control characters.")
