"""``/meters``: the customer's saved meters. A meter is saved by a successful
purchase (billvend.vending.journey); here it can be renamed, removed, or bought for
again (the pay form pre-filled). Each route acts only on the signed-in
customer's own meters: another customer's meter id is a 404."""

from __future__ import annotations

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from billvend.platform.extensions import db
from billvend.web.meters import bp
from billvend.web.meters.forms import RemoveForm, RenameForm
from billvend.vending.models import SavedMeter
from billvend.platform.transactions import unit_of_work


def saved_meters_of(user_id: int, *, order: str = "recent", limit: int | None = None) -> list[SavedMeter]:
    """A customer's saved meters: ``order`` ``recent`` (last paid first) or
    ``most_used`` (most purchases first)."""
    query = sa.select(SavedMeter).where(SavedMeter.user_id == user_id)
    if order == "most_used":
        query = query.order_by(SavedMeter.purchase_count.desc(), SavedMeter.last_paid_at.desc())
    else:
        query = query.order_by(SavedMeter.last_paid_at.desc(), SavedMeter.id.desc())
    if limit:
        query = query.limit(limit)
    return list(db.session.scalars(query))


def _buy_again_statement() -> sa.Select:
    """Each of a customer's meters (``:user_id``) ranked by last use and by
    use count (window functions), only those in the first ``:recent`` of
    the one or the first ``:limit`` of the other."""
    by_recent = sa.func.row_number().over(order_by=(SavedMeter.last_paid_at.desc(), SavedMeter.id.desc()))
    by_use = sa.func.row_number().over(order_by=(SavedMeter.purchase_count.desc(),
                                                 SavedMeter.last_paid_at.desc(), SavedMeter.id.desc()))
    ranked = (sa.select(SavedMeter.id, by_recent.label("by_recent"), by_use.label("by_use"))
              .where(SavedMeter.user_id == sa.bindparam("user_id")).subquery())
    return (sa.select(SavedMeter, ranked.c.by_recent, ranked.c.by_use).join(ranked, ranked.c.id == SavedMeter.id)
            .where(sa.or_(ranked.c.by_recent <= sa.bindparam("recent"), ranked.c.by_use <= sa.bindparam("limit"))))


# Built once: the dashboard runs it on every load.
_BUY_AGAIN = _buy_again_statement()


def buy_again_meters(user_id: int, *, recent: int = 2, limit: int = 4) -> list[SavedMeter]:
    """The dashboard's "Buy again" meters: the ``recent`` last used, then the
    most used, without repeats, at most ``limit``; in ONE query."""
    rows = db.session.execute(_BUY_AGAIN, {"user_id": user_id, "recent": recent, "limit": limit}).all()
    ordered = ([m for m, r, _ in sorted(rows, key=lambda row: row[1]) if r <= recent]
               + [m for m, _, u in sorted(rows, key=lambda row: row[2]) if u <= limit])
    return list(dict.fromkeys(ordered))[:limit]


def _own_meter_or_404(meter_id: int) -> SavedMeter:
    meter = db.session.scalar(sa.select(SavedMeter).where(
        SavedMeter.id == meter_id, SavedMeter.user_id == current_user.id))
    if meter is None:
        abort(404)
    return meter


@bp.route("/meters")
@login_required
def index():
    meters = saved_meters_of(current_user.id)
    return render_template("meters/index.html", meters=meters, remove_form=RemoveForm())


@bp.route("/meters/<int:meter_id>/rename", methods=["GET", "POST"])
@login_required
def rename(meter_id: int):
    meter = _own_meter_or_404(meter_id)
    form = RenameForm(nickname=meter.nickname)
    if form.validate_on_submit():
        _set_nickname(meter.id, current_user.id, (form.nickname.data or "").strip() or None)
        flash("Meter renamed.", "success")
        return redirect(url_for("meters.index"), code=303)
    return render_template("meters/rename.html", meter=meter, form=form), (422 if form.errors else 200)


@bp.route("/meters/<int:meter_id>/remove", methods=["GET", "POST"])
@login_required
def remove(meter_id: int):
    """GET: the confirm step (works without JavaScript); POST: remove."""
    meter = _own_meter_or_404(meter_id)
    form = RemoveForm()
    if form.validate_on_submit():
        label = meter.label
        _delete(meter.id, current_user.id)
        flash(f"{label} removed from your saved meters. Your payments stay in your history.", "success")
        return redirect(url_for("meters.index"), code=303)
    return render_template("meters/remove.html", meter=meter, form=form)


@unit_of_work
def _set_nickname(meter_id: int, user_id: int, nickname: str | None) -> None:
    db.session.execute(sa.update(SavedMeter).where(
        SavedMeter.id == meter_id, SavedMeter.user_id == user_id).values(nickname=nickname))


@unit_of_work
def _delete(meter_id: int, user_id: int) -> None:
    db.session.execute(sa.delete(SavedMeter).where(
        SavedMeter.id == meter_id, SavedMeter.user_id == user_id))
