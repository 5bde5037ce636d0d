"""The wallet statement: every funding, payment and refund, newest first."""

from __future__ import annotations

from flask import current_app, render_template, request
from flask_login import current_user, login_required

from billvend.extensions import db
from billvend.history import bp
from billvend.history.forms import KIND_LABELS, HistoryFilterForm
from billvend.history.queries import statement_query


MAX_PAGE = 100_000


@bp.route("/history")
@login_required
def index():
    form = HistoryFilterForm(request.args)
    kind = status = None
    if form.validate():
        kind, status = form.kind.data or None, form.status.data or None
    # Clamped: an absurd ?page= is an empty page, not an integer overflow.
    page_number = min(max(request.args.get("page", 1, type=int) or 1, 1), MAX_PAGE)
    page = db.paginate(
        statement_query(current_user.wallet.id, kind=kind, status=status),
        page=page_number,
        per_page=current_app.config["PAYMENTS_PER_PAGE"],
        error_out=False,
        max_per_page=100,
    )
    return render_template(
        "history/index.html", page=page, form=form, kind_labels=KIND_LABELS,
        filter_args={"kind": kind or "", "status": status or ""},
    )
