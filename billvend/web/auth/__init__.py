"""Accounts: sign up, log in, log out."""

from flask import Blueprint

bp = Blueprint("auth", __name__)

from billvend.web.auth import routes  # noqa: E402,F401
