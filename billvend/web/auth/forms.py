"""Account forms. Field names are a contract (DESIGN.md, Pages and URLs)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField, SubmitField, TelField
from wtforms.validators import DataRequired, Email, EqualTo, Length, Optional, ValidationError

from billvend.web.forms import PlainText
from billvend.web.security import normalise_email, password_problem


class NormalisedEmail:
    """Normalise the address (NFKC, case folded) into ``field.data`` and
    refuse mixed-script look-alikes (billvend.web.security.normalise_email)."""

    def __call__(self, form, field):
        try:
            field.data = normalise_email(field.data or "")
        except ValueError as error:
            raise ValidationError(str(error)) from None


class StrongPassword:
    """billvend.web.security.password_problem against the form's ``email``
    field, or its ``account_email`` attribute (a signed-in user's form)."""

    def __call__(self, form, field):
        email_field = getattr(form, "email", None)
        if email_field is not None:
            email = email_field.data if not email_field.errors else None
        else:
            email = getattr(form, "account_email", None)
        problem = password_problem(field.data or "", email)
        if problem:
            raise ValidationError(problem)


def _nigerian_phone(form, field):
    from billvend.platform.phones import to_e164

    if field.data:
        phone = to_e164(field.data)
        if phone is None:
            raise ValidationError("Enter a Nigerian mobile number, like 08031234567.")
        field.data = phone


class ProfileDetailsMixin:
    """Full name and phone: asked at signup, and once of accounts made before
    signup asked. Optional, so a client posting only email and passwords
    still signs up; the phone pre-fills payments."""

    full_name = StringField(
        "Full name",
        validators=[Optional(), Length(max=120, message="Use at most 120 characters."), PlainText()],
        filters=[lambda value: value.strip() if isinstance(value, str) else value],
    )
    phone = TelField(
        "Phone number",
        validators=[Optional(), _nigerian_phone],
        description="Where your tokens are sent. We fill it in for each payment.",
    )


class SignupForm(ProfileDetailsMixin, FlaskForm):
    email = EmailField(
        "Email",
        validators=[DataRequired(message="Enter your email address."),
                    Email(message="Enter a valid email address.", check_deliverability=False),
                    Length(max=254), NormalisedEmail()],
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired(message="Choose a password."), StrongPassword()],
    )
    confirm_password = PasswordField(
        "Confirm password",
        validators=[DataRequired(message="Type the password again."),
                    EqualTo("password", message="The passwords do not match.")],
    )
    submit = SubmitField("Create account")


class LoginForm(FlaskForm):
    email = EmailField(
        "Email",
        validators=[DataRequired(message="Enter your email address."),
                    Email(message="Enter a valid email address.", check_deliverability=False),
                    NormalisedEmail()],
    )
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])
    remember = BooleanField("Keep me signed in")
    submit = SubmitField("Log in")


class LogoutForm(FlaskForm):
    submit = SubmitField("Log out")


class ProfileDetailsForm(ProfileDetailsMixin, FlaskForm):
    """The dashboard's one-time "add your name and phone" prompt."""

    submit = SubmitField("Save")
    later = SubmitField("Not now")


class ForgotPasswordForm(FlaskForm):
    email = EmailField(
        "Email",
        validators=[DataRequired(message="Enter your email address."),
                    Email(message="Enter a valid email address.", check_deliverability=False),
                    Length(max=254), NormalisedEmail()],
    )
    submit = SubmitField("Send me a link")


class ResetPasswordForm(FlaskForm):
    """A new password under the signup policy (StrongPassword against the
    account's address, given as ``account_email``)."""

    password = PasswordField(
        "New password", validators=[DataRequired(message="Choose a new password."), StrongPassword()],
        description="At least 10 characters; not a common password; not your email.")
    confirm_password = PasswordField(
        "Confirm new password",
        validators=[DataRequired(message="Type the new password again."),
                    EqualTo("password", message="The passwords do not match.")])
    submit = SubmitField("Set new password")

    def __init__(self, *args, account_email: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.account_email = account_email
