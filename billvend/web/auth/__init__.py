"""Accounts: sign up, log in, log out; password reset and email verification links."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from billvend.web.auth import recovery, routes  # noqa: E402,F401
