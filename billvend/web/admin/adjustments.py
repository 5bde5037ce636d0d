"""Admin pages for adjustments and bonuses with four-eyes approval (issue 27).

``/admin/adjustments`` lists proposals (waiting, decided, filters) and holds the form to
propose one; ``/admin/adjustments/<id>`` shows one with its audit trail and, to an admin
other than its proposer, the approve and reject forms. Deciding takes a fresh code from
the decider's authenticator app (checked as the second-factor page checks it, with the
same allowance of wrong tries) and a reason. The rules live in
``billvend.adjustments.services``; every step, refusals included, leaves an
``AdminAction`` row with the adjustment.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from billvend.accounts import twofactor
from billvend.accounts.models import AdminAction, User
from billvend.adjustments import services as adjustments
from billvend.adjustments.models import APPROVED, EXPIRED, PROPOSED, REJECTED, Adjustment
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.web.admin import bp
from billvend.web.admin.forms import AdjustmentFilterForm, DecideAdjustmentForm, ProposeAdjustmentForm
from billvend.web.admin.queries import _page_by_id
from billvend.web.forms import query_int
from billvend.web.security import reentry

PAGE_SIZE = 50


def _filtered(query: sa.Select, form: AdjustmentFilterForm, now) -> sa.Select:
    """``query`` narrowed by the validated filters; "pending" and "expired" are read on
    the database clock ``now`` (a proposal past its window is expired)."""
    status = form.status.data
    if status == "pending":
        query = query.where(Adjustment.status == PROPOSED, Adjustment.expires_at > now)
    elif status == EXPIRED:
        query = query.where(sa.or_(Adjustment.status == EXPIRED,
                                   sa.and_(Adjustment.status == PROPOSED, Adjustment.expires_at <= now)))
    elif status in (APPROVED, REJECTED):
        query = query.where(Adjustment.status == status)
    if form.direction.data:
        query = query.where(Adjustment.direction == form.direction.data)
    email = (form.email.data or "").strip().lower()[:254]
    if email:
        query = query.join(User, User.id == Adjustment.user_id).where(User.email == email)
    return query


def _render_list(propose_form: ProposeAdjustmentForm, status: int = 200):
    now = db_now()
    form = AdjustmentFilterForm(request.args)
    base = (sa.select(Adjustment).options(so.joinedload(Adjustment.user),
                                          so.joinedload(Adjustment.proposed_by),
                                          so.joinedload(Adjustment.decided_by))
            .order_by(Adjustment.id.desc()))
    waiting = db.session.scalars(base.where(Adjustment.status == PROPOSED, Adjustment.expires_at > now)
                                 .limit(200)).unique().all()
    query = _filtered(base, form, now) if form.validate() else base
    page = _page_by_id(query, Adjustment, query_int("before"), PAGE_SIZE)
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render_template("admin/adjustments.html", waiting=waiting, page=page, form=form,
                           propose_form=propose_form, now=now, filter_args=args), status


@bp.route("/adjustments", methods=["GET", "POST"])
def adjustments_list():
    """The list, and (POST) a proposal: 303 to it, or the form again with its errors."""
    propose_form = ProposeAdjustmentForm()
    if request.method == "GET":
        return _render_list(ProposeAdjustmentForm(formdata=None))
    if not propose_form.validate_on_submit():
        return _render_list(propose_form, 422)
    admin_id = current_user.id
    db.session.rollback()
    outcome = adjustments.propose(admin_id, propose_form.email.data, propose_form.direction.data,
                                  propose_form.amount.kobo, propose_form.reason.data.strip())
    if not outcome.ok:
        propose_form.email.errors = list(propose_form.email.errors) + [outcome.message]
        return _render_list(propose_form, 422)
    flash(outcome.message, "success")
    return redirect(url_for("admin.adjustment_detail", adjustment_id=outcome.adjustment_id), code=303)


def _adjustment_or_404(adjustment_id: int) -> Adjustment:
    row = db.session.scalar(sa.select(Adjustment).where(Adjustment.id == adjustment_id)
                            .options(so.joinedload(Adjustment.user), so.joinedload(Adjustment.proposed_by),
                                     so.joinedload(Adjustment.decided_by)))
    if row is None:
        abort(404)
    return row


def _render_detail(row: Adjustment, status: int = 200, **forms):
    actions = db.session.scalars(sa.select(AdminAction).where(AdminAction.adjustment_id == row.id)
                                 .options(so.joinedload(AdminAction.admin))
                                 .order_by(AdminAction.id)).all()
    return render_template(
        "admin/adjustment.html", adjustment=row, actions=actions, now=db_now(),
        approve_form=forms.get("approve_form") or DecideAdjustmentForm(formdata=None, prefix="approve"),
        reject_form=forms.get("reject_form") or DecideAdjustmentForm(formdata=None, prefix="reject")), status


@bp.route("/adjustments/<int:adjustment_id>")
def adjustment_detail(adjustment_id: int):
    return _render_detail(_adjustment_or_404(adjustment_id))


def _decide(adjustment_id: int, prefix: str, action: str, service):
    """Approve or reject: the form (CSRF, a 6-digit code, a reason), the code
    (each time step once; wrong tries spend the session's allowance), then the service.

    :returns: 303 to the adjustment with the outcome flashed; 422 with the form's
        errors (nothing recorded: the request never named a decision with a reason);
        a refused code is recorded and answered 422.
    """
    row = _adjustment_or_404(adjustment_id)
    form = DecideAdjustmentForm(prefix=prefix)
    if not form.validate_on_submit():
        return _render_detail(row, 422, **{f"{prefix}_form": form})
    admin_id, reason, code = current_user.id, form.reason.data.strip(), form.code.data
    right, ended = reentry("second-factor code", lambda: twofactor.verify(admin_id, code))
    if ended is not None:
        adjustments.record_refusal(admin_id, adjustment_id, action, reason,
                                   "wrong authenticator code; the session was ended")
        return ended
    if not right:
        adjustments.record_refusal(admin_id, adjustment_id, action, reason,
                                   "wrong or already used authenticator code")
        form.code.errors = ["That code is not right (or was already used). Wait for the next one."]
        return _render_detail(_adjustment_or_404(adjustment_id), 422, **{f"{prefix}_form": form})
    db.session.rollback()
    outcome = service(admin_id, adjustment_id, reason)
    flash(outcome.message, "success" if outcome.ok else "error")
    return redirect(url_for("admin.adjustment_detail", adjustment_id=adjustment_id), code=303)


@bp.route("/adjustments/<int:adjustment_id>/approve", methods=["POST"])
def adjustment_approve(adjustment_id: int):
    """A second admin approves: the ledger posts it, once."""
    return _decide(adjustment_id, "approve", adjustments.APPROVE, adjustments.approve)


@bp.route("/adjustments/<int:adjustment_id>/reject", methods=["POST"])
def adjustment_reject(adjustment_id: int):
    """A second admin rejects: no money moves."""
    return _decide(adjustment_id, "reject", adjustments.REJECT, adjustments.reject)
