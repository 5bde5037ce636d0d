"""The landing page, the dashboard and the health check."""

from flask import Blueprint

bp = Blueprint("main", __name__)

from billvend.web.main import routes  # noqa: E402,F401
