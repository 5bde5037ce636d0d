"""Saved meters (beneficiaries): list, rename, remove, buy again."""

from flask import Blueprint

bp = Blueprint("meters", __name__)

from billvend.web.meters import routes  # noqa: E402,F401
