"""Paying electricity bills, and the payment pages."""

from flask import Blueprint

bp = Blueprint("bills", __name__)

from billvend.web.bills import routes  # noqa: E402,F401
