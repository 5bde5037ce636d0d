"""Account forms. Field names are a contract (DESIGN.md, Pages and URLs)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, Length


class SignupForm(FlaskForm):
    email = EmailField(
        "Email",
        validators=[DataRequired(message="Enter your email address."),
                    Email(message="Enter a valid email address.", check_deliverability=False),
                    Length(max=254)],
    )
    password = PasswordField(
        "Password",
        validators=[DataRequired(message="Choose a password."),
                    Length(min=8, max=128, message="Use 8 to 128 characters.")],
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
                    Email(message="Enter a valid email address.", check_deliverability=False)],
    )
    password = PasswordField("Password", validators=[DataRequired(message="Enter your password.")])
    remember = BooleanField("Keep me signed in")
    submit = SubmitField("Log in")


class LogoutForm(FlaskForm):
    submit = SubmitField("Log out")
