"""The wallet's forms: fund, bank transfer, send to another customer. Field
names are a contract (DESIGN.md)."""

from __future__ import annotations

import unicodedata

from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from billvend.platform.phones import to_e164
from billvend.platform.text import BIDI_CONTROLS
from billvend.transfers.models import NOTE_MAX_LENGTH
from billvend.web.forms import NairaField, idempotency_key_field
from billvend.web.security import normalise_email


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


#: Unicode categories a note may not hold: controls (NUL, newlines, terminal
#: escapes), lone surrogates, invisible format characters (bidi marks such as
#: U+061C, zero-width space, BOM) and the line and paragraph separators
#: U+2028/U+2029, which break an SMS or an email's text into new lines.
_NOTE_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Cf", "Zl", "Zp"})
#: Format characters that real text needs: the zero-width joiner (emoji
#: sequences) and non-joiner (Persian, Indic scripts).
_NOTE_ALLOWED_FORMAT = frozenset("\u200c\u200d")


class PlainNote:
    """Validator for a transfer's note: no control characters (Unicode ``Cc``:
    NUL, newlines, terminal escapes), no invisible format characters or line
    separators (``Cf`` but the joiners, ``Zl``, ``Zp``) and no bidirectional
    controls or marks (``billvend.platform.text.BIDI_CONTROLS``), which would
    make the note read differently on the other side's statement or message.

    :raises wtforms.validators.ValidationError: with a message for the field.
    """

    message = "Use letters, numbers, spaces and punctuation only in the note."

    def __call__(self, form, field):
        text = field.data or ""
        if any(ch in BIDI_CONTROLS or (unicodedata.category(ch) in _NOTE_REFUSED_CATEGORIES
                                       and ch not in _NOTE_ALLOWED_FORMAT) for ch in text):
            raise ValidationError(self.message)


class TransferForm(FlaskForm):
    """Send money to another customer (DESIGN.md: ``recipient``, ``amount``,
    ``note``, ``idempotency_key``). ``confirm`` is set only by the review step's
    own button, so no submit of the form itself moves money from our pages;
    ``edit`` ("Change details") shows the filled-in form again."""

    recipient = StringField(
        "Send to", validators=[DataRequired(message="Enter their email address or phone number."),
                               Length(max=254, message="That is too long for an email address.")],
        description="Their email address, or the phone number they verified on billvend.")
    amount = NairaField("Amount (₦)", min_key="MIN_P2P_TRANSFER_KOBO", max_key="MAX_P2P_TRANSFER_KOBO")
    note = StringField("Note (optional)", validators=[
        Optional(), Length(max=NOTE_MAX_LENGTH, message=f"Keep the note to {NOTE_MAX_LENGTH} characters."),
        PlainNote()], description="They see it on their statement.")
    idempotency_key = idempotency_key_field()
    confirm = HiddenField()
    #: The review step's signature of what it showed (web/wallet/transfer.py).
    review_token = HiddenField()
    edit = SubmitField("Change details")
    submit = SubmitField("Review")

    def validate_recipient(self, field):
        """Set ``self.recipient_email`` or ``self.recipient_phone`` (E.164) from
        what was typed, or refuse it as neither."""
        self.recipient_email = self.recipient_phone = None
        text = (field.data or "").strip()
        if "@" in text:
            try:
                email = normalise_email(text)
            except ValueError as exc:
                raise ValidationError(str(exc)) from None
            local, _, domain = email.partition("@")
            if not local or "." not in domain or any(ch.isspace() for ch in email):
                raise ValidationError("Enter a whole email address, like ada@example.com.")
            self.recipient_email = email
            return
        phone = to_e164(text)
        if phone is None:
            raise ValidationError("Enter an email address, or a Nigerian mobile number like 0803 123 4567.")
        self.recipient_phone = phone

    @property
    def recipient_key(self) -> str:
        """The recipient as looked up (normalised email or E.164 phone)."""
        return self.recipient_email or self.recipient_phone or ""

    @property
    def clean_note(self):
        """The note, stripped, or None."""
        return (self.note.data or "").strip() or None
