"""The electricity payment form. Field names are a contract (DESIGN.md)."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import HiddenField, RadioField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, ValidationError

from billvend.platform.phones import to_e164
from billvend.web.forms import NairaField, idempotency_key_field
from billvend.vending.models import METER_TYPES
from billvend.vending.resend import RESEND_TARGETS
from billvend.vending.providers import DISCOS

METER_NUMBER_RE = re.compile(r"^[0-9]{10,13}$")


def normalise_meter_number(text: str | None) -> str:
    """Drop the spaces and dashes people type inside meter numbers."""
    return re.sub(r"[\s\-]", "", text or "")


class MeterNumber:
    def __call__(self, form, field):
        field.data = normalise_meter_number(field.data)
        if not METER_NUMBER_RE.fullmatch(field.data):
            raise ValidationError("A meter number is 10 to 13 digits.")


class NigerianPhone:
    """A Nigerian mobile number, stored E.164 (:func:`billvend.platform.phones.to_e164`)."""

    def __call__(self, form, field):
        phone = to_e164(field.data)
        if phone is None:
            raise ValidationError("Enter a Nigerian mobile number, like 08031234567.")
        field.data = phone


class MeterForm(FlaskForm):
    """The fields meter verification needs (also the start of the pay form)."""

    disco = SelectField(
        "Distribution company (disco)",
        choices=[SelectChoice("", "Choose your disco")]
        + [SelectChoice(service_id, name) for service_id, name in DISCOS.items()],
        validators=[DataRequired(message="Choose your disco.")],
        validate_choice=False,
    )
    meter_type = RadioField(
        "Meter type",
        choices=[SelectChoice(t, t.capitalize()) for t in METER_TYPES],
        default="prepaid",
        validators=[DataRequired(message="Choose prepaid or postpaid.")],
    )
    meter_number = StringField(
        "Meter number",
        validators=[DataRequired(message="Enter the meter number."), MeterNumber()],
        render_kw={"inputmode": "numeric", "autocomplete": "off"},
    )

    def validate_disco(self, field):
        if field.data not in DISCOS:
            raise ValidationError("Choose a disco from the list.")

    def meter_key(self) -> str:
        """``disco:meter_type:meter_number`` of the (validated) fields: what the
        customer saw verified, echoed back as ``verified_meter``."""
        return verified_meter_key(self.disco.data, self.meter_type.data, self.meter_number.data)


def verified_meter_key(service_id: str, meter_type: str, meter_number: str) -> str:
    """The value of the ``verified_meter`` field for a meter the customer has
    seen the name of (htmx partial, or the no-JavaScript confirm step)."""
    return f"{service_id}:{meter_type}:{meter_number}"


#: One-tap amounts on the pay form, in naira (what VTpass and bank apps offer).
QUICK_AMOUNTS_NAIRA = (1_000, 2_000, 5_000, 10_000)


class ElectricityForm(MeterForm):
    amount = NairaField("Amount (₦)", min_key="MIN_PAYMENT_KOBO", max_key="MAX_PAYMENT_KOBO")
    # Not a contract field: the quick-amount chips. Without JavaScript a chip
    # chosen with the amount box left empty becomes the amount (the route
    # copies it over before validation); with JavaScript a chip fills the box.
    quick_amount = RadioField(
        "Quick amounts",
        choices=[SelectChoice(str(naira), f"₦{naira:,}") for naira in QUICK_AMOUNTS_NAIRA],
        validate_choice=False,
    )
    phone = StringField(
        "Phone number",
        validators=[DataRequired(message="Enter a phone number for the receipt."), NigerianPhone()],
        render_kw={"inputmode": "tel", "autocomplete": "tel"},
    )
    idempotency_key = idempotency_key_field()
    # Set by the review step only (bills/confirm.html): the customer has seen
    # the summary (name on this exact meter, amount, no fee, total, phone).
    # Not a security check: the server verifies the meter again on every
    # submit; the review's own form carries the other values hidden.
    verified_meter = HiddenField()
    # Rendered by our own pay page. A submission from that page without a
    # matching ``verified_meter`` gets the review step before any debit,
    # with or without JavaScript. A client that posts only the documented
    # fields (DESIGN.md, Pages and URLs) keeps the contract: verified on the
    # server, then paid, 303 to the payment.
    confirm_meter = HiddenField()
    # The review step's "Change details" button.
    edit = SubmitField("Change details")
    submit = SubmitField("Pay")


class ResendTokenForm(FlaskForm):
    """"Send token again": where to (each button posts its own ``to``)."""

    to = RadioField("Send it to", choices=[SelectChoice(target, target) for target in RESEND_TARGETS],
                    validators=[DataRequired(message="Choose where to send the token.")])
    next = HiddenField()
