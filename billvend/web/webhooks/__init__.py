"""Gateway webhooks (``POST /webhooks/paystack``)."""

from flask import Blueprint

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

from billvend.web.webhooks import routes  # noqa: E402,F401
