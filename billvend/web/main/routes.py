"""Landing page for visitors, dashboard for customers, and ``/healthz``."""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, jsonify, redirect, render_template, session, url_for
from flask_login import current_user, login_required

from billvend.platform.extensions import db
from billvend.platform.queue import huey
from billvend.web.main import bp
from billvend.web.history.queries import statement_query
from billvend.vending.models import FINAL_STATUSES, Payment
from billvend.accounts import phone_verification
from billvend.accounts.models import User
from billvend.platform.transactions import unit_of_work

#: Session flag: the customer answered the "add your name and phone" prompt
#: (saved or "Not now"), so it is not asked again.
PROFILE_PROMPT_DONE = "profile_prompt_done"


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
    return render_template("main/dashboard.html", wallet=wallet, recent=recent, in_flight=in_flight,
                           buy_again=_buy_again(current_user.id), profile_form=_profile_prompt())


def _buy_again(user_id: int, limit: int = 4) -> list:
    """The dashboard's "Buy again" meters: the last used, then the most used,
    without repeats."""
    from billvend.web.meters.routes import buy_again_meters

    return buy_again_meters(user_id, limit=limit)


def _profile_prompt():
    """The one-time prompt for a name and phone, for accounts made before
    signup asked for them; None once answered or when nothing is missing."""
    from billvend.web.auth.forms import ProfileDetailsForm

    if current_user.phone or (session.get(PROFILE_PROMPT_DONE) and not current_user.phone_to_fix):
        return None
    return ProfileDetailsForm(full_name=current_user.full_name)


@bp.route("/profile-prompt", methods=["POST"])
@login_required
def profile_prompt():
    """Save (or decline, "Not now") the dashboard's name-and-phone prompt.
    Either way it is not asked again; the account page edits them later."""
    from billvend.web.auth.forms import ProfileDetailsForm

    form = ProfileDetailsForm()
    if form.later.data:
        session[PROFILE_PROMPT_DONE] = True
        return redirect(url_for("main.index"), code=303)
    if not form.validate_on_submit():
        wallet = current_user.wallet
        recent = db.session.scalars(statement_query(wallet.id).limit(5)).unique().all()
        return render_template("main/dashboard.html", wallet=wallet, recent=recent, in_flight=[],
                               buy_again=_buy_again(current_user.id), profile_form=form), 422
    _save_profile(current_user.id, form.full_name.data or None, form.phone.data or None)
    session[PROFILE_PROMPT_DONE] = True
    flash("Thanks! Your phone number will be filled in for each payment.", "success")
    return redirect(url_for("main.index"), code=303)


@unit_of_work
def _save_profile(user_id: int, full_name: str | None, phone: str | None) -> None:
    """The prompt's answer: the name when given; the phone when given,
    through the one writer of phones (a changed phone is unverified again)."""
    if full_name:
        db.session.execute(sa.update(User).where(User.id == user_id).values(full_name=full_name))
    if phone:
        phone_verification.change_phone(user_id, phone)
    else:
        db.session.execute(sa.update(User).where(User.id == user_id).values(phone_to_fix=None))


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
