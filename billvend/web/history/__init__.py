"""The wallet statement."""

from flask import Blueprint

bp = Blueprint("history", __name__)

from billvend.web.history import routes  # noqa: E402,F401
