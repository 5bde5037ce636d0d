"""The wallet: funding it, and sending money to another customer."""

from flask import Blueprint

bp = Blueprint("wallet", __name__, url_prefix="/wallet")

from billvend.web.wallet import routes, transfer  # noqa: E402,F401
