"""The signed-in user's account: profile, password, sessions, second factor."""

from flask import Blueprint

bp = Blueprint("account", __name__, url_prefix="/account")

from billvend.web.account import phone, routes  # noqa: E402,F401
