"""The wallet statement: every funding, payment and refund, newest first;
search, filters, and the statement as CSV or PDF."""

from __future__ import annotations

from flask import Response, current_app, render_template, request
from flask_login import current_user, login_required

from billvend.platform.extensions import db
from billvend.web.forms import query_int
from billvend.web.history import bp
from billvend.web.history.forms import KIND_LABELS, HistoryFilterForm
from billvend.web.history.queries import meter_labels, statement_query


MAX_PAGE = 100_000
#: A downloaded statement holds at most this many entries (newest first).
MAX_STATEMENT_ROWS = 5_000


def _filters():
    form = HistoryFilterForm(request.args)
    if form.validate():
        return form, form.filters(), form.args()
    return form, {}, {}


@bp.route("/history")
@login_required
def index():
    form, filters, filter_args = _filters()
    # Clamped: an absurd ?page= is an empty page, not an integer overflow.
    page_number = min(query_int("page", 1, minimum=1) or 1, MAX_PAGE)
    page = db.paginate(
        statement_query(current_user.wallet.id, **filters),
        page=page_number,
        per_page=current_app.config["PAYMENTS_PER_PAGE"],
        error_out=False,
        max_per_page=100,
    )
    return render_template(
        "history/index.html", page=page, form=form, kind_labels=KIND_LABELS,
        filter_args=filter_args, labels=meter_labels(current_user.id),
    )


def _statement_rows(filters: dict):
    from billvend.web.statements import statement_rows

    entries = db.session.scalars(
        statement_query(current_user.wallet.id, **filters).limit(MAX_STATEMENT_ROWS)).unique().all()
    return statement_rows(entries, meter_labels(current_user.id))


@bp.route("/history/statement.csv")
@login_required
def statement_csv():
    """The (filtered) statement as CSV."""
    from billvend.web.statements import statement_csv as render_csv

    _form, filters, _args = _filters()
    body = render_csv(_statement_rows(filters))
    return Response(body, mimetype="text/csv", headers={
        "Content-Disposition": 'attachment; filename="billvend-statement.csv"',
        "Cache-Control": "no-store",
    })


@bp.route("/history/statement.pdf")
@login_required
def statement_pdf():
    """The (filtered) statement as PDF."""
    from billvend.web.statements import statement_pdf as render_pdf

    form, filters, _args = _filters()
    start, end = filters.get("date_from"), filters.get("date_to")
    if start or end:
        period = (f"{start:%d %b %Y}" if start else "the start") + " to " + (f"{end:%d %b %Y}" if end else "today")
    else:
        period = "All dates"
    owner = current_user.full_name or current_user.email
    body = render_pdf(_statement_rows(filters), owner=owner, period=period)
    return Response(body, mimetype="application/pdf", headers={
        "Content-Disposition": 'attachment; filename="billvend-statement.pdf"',
        "Cache-Control": "no-store",
    })
