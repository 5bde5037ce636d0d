"""Landing page for visitors, dashboard for customers, and ``/healthz``."""

from __future__ import annotations

import sqlalchemy as sa
from flask import jsonify, render_template
from flask_login import current_user

from billvend.extensions import db
from billvend.queue import huey
from billvend.main import bp
from billvend.history.queries import statement_query
from billvend.models import FINAL_STATUSES, Payment


@bp.route("/")
def index():
    if not current_user.is_authenticated:
        return render_template("main/landing.html")
    wallet = current_user.wallet
    recent = db.session.scalars(statement_query(wallet.id).limit(5)).unique().all()
    in_flight = db.session.scalars(
        sa.select(Payment)
        .where(Payment.user_id == current_user.id, Payment.status.not_in(FINAL_STATUSES))
        .order_by(Payment.created_at.desc())
        .limit(5)
    ).all()
    return render_template("main/dashboard.html", wallet=wallet, recent=recent, in_flight=in_flight)


@bp.route("/healthz")
def healthz():
    """JSON: is the database reachable, is the queue reachable. 503 if not."""
    checks = {}
    try:
        db.session.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, never raise
        db.session.rollback()
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        huey.pending_count()
        checks["queue"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["queue"] = f"error: {type(exc).__name__}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "error", **checks), (200 if healthy else 503)
