"""Account forms: profile, password change and confirmation, second factor."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, RadioField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp

from billvend.web.auth.forms import NormalisedEmail, ResetPasswordForm
from billvend.web.bills.forms import NigerianPhone
from billvend.web.forms import PlainText


class ProfileForm(FlaskForm):
    full_name = StringField("Full name", validators=[Optional(), Length(max=120), PlainText()])
    phone = StringField("Phone number", validators=[Optional(), NigerianPhone()],
                        description="A Nigerian mobile number, e.g. 0803 123 4567.")
    submit = SubmitField("Save")


class ChangePasswordForm(ResetPasswordForm):
    """The reset form's new password (same policy and fields) behind the
    current one."""

    current_password = PasswordField(
        "Current password", validators=[DataRequired(message="Enter your current password.")])
    submit = SubmitField("Change password")


class ConfirmPasswordForm(FlaskForm):
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])
    submit = SubmitField("Confirm")


class TwoFactorForm(FlaskForm):
    code = StringField(
        "Code", validators=[DataRequired(message="Enter the code."), Length(max=20)],
        description="The 6-digit code from your authenticator app, or one of your recovery codes.")
    submit = SubmitField("Continue")


def _without_separators(text: str | None) -> str | None:
    """"123 456" and "123-456" as typed from an SMS are "123456"."""
    return text.replace(" ", "").replace("-", "").strip() if isinstance(text, str) else text


class PhoneCodeForm(FlaskForm):
    """The 6-digit code from the verification SMS. Anything but six ASCII
    digits (letters, 7 digits, a page of text) is refused here, before any
    try is counted."""

    code = StringField(
        "Code from the SMS", filters=[_without_separators],
        validators=[DataRequired(message="Enter the 6-digit code from the SMS."),
                    Regexp(r"\A[0-9]{6}\Z", message="The code is 6 digits, like 123456.")],
        description="We sent it to your phone. It works for 10 minutes.")
    submit = SubmitField("Verify")


class PlainForm(FlaskForm):
    """A button that only needs CSRF (end sessions)."""

    submit = SubmitField("Go")


class TokenChannelsForm(FlaskForm):
    """Where tokens and refund notices go (users.token_channels); security
    mail is always sent by email."""

    token_channels = RadioField(
        "Send my tokens by", default="both",
        choices=[SelectChoice("both", "SMS and email"), SelectChoice("sms", "SMS only"),
                 SelectChoice("email", "Email only")],
        validators=[DataRequired(message="Choose how to get your tokens.")])
    submit = SubmitField("Save")


class ChangeEmailForm(FlaskForm):
    """A new address (normalised as at signup) and the current password."""

    email = EmailField(
        "New email address",
        validators=[DataRequired(message="Enter the new address."),
                    Email(message="Enter a valid email address.", check_deliverability=False),
                    Length(max=254), NormalisedEmail()],
        description="We send a link there; your current address stays until you follow it.")
    current_password = PasswordField(
        "Current password", validators=[DataRequired(message="Enter your current password.")])
    submit = SubmitField("Send the link")
