"""The admin audit pages: money totals, invariants, payments of all users,
wallets, stuck payments and the actions that resolve them, adjustments and
bonuses (four eyes), and the log of every admin action. Reachable by admins only; everyone else gets a 404."""

from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin")

from billvend.web.admin import routes  # noqa: E402,F401
from billvend.web.admin import fundings  # noqa: E402,F401 - money in (issue 15)
from billvend.web.admin import messages  # noqa: E402,F401 - the outbox (issue 23)
from billvend.web.admin import p2p  # noqa: E402,F401 - transfers between customers (issue 27)
from billvend.web.admin import adjustments  # noqa: E402,F401 - four-eyes adjustments (issue 27)
