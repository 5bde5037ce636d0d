"""Admin pages for money in: fundings (filters), each funding's webhook
events and credit, webhook events, reconciliation runs and what they found,
and the flagged items; with audited actions (verify now, clear a flag, run
a reconciliation, credit a flagged bank transfer at its verified amount),
each leaving one ``AdminAction`` row (who, why, result) like the payment
actions. No action here can credit without the gateway's verified success:
"verify now" goes through ``verification.verify_funding``, "credit the verified
amount" through ``admin_credit.credit_verified_arrival``."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Optional as OptionalValidator

from billvend.funding import admin_credit, reconciliation as funding_reconciliation, verification
from billvend.platform import transactions
from billvend.web.admin import bp
from billvend.web.admin.forms import ReasonForm
from billvend.platform.extensions import db
from billvend.web.forms import query_int
from billvend.funding.models import (
    FUNDING_STATUSES, Funding, GatewayEvent, ReconciliationItem, ReconciliationRun,
)
from billvend.accounts.models import AdminAction, User
from billvend.ledger.models import Transfer
from billvend.platform.money import format_naira

PAGE_SIZE = 50


class FundingFilterForm(FlaskForm):
    class Meta:
        csrf = False

    status = SelectField("Status", choices=[SelectChoice("", "Any")]
                         + [SelectChoice(s, s) for s in FUNDING_STATUSES],
                         validators=[OptionalValidator()])
    method = SelectField("Method", choices=[SelectChoice("", "Any"), SelectChoice("card", "card"),
                                            SelectChoice("bank_transfer", "bank transfer")],
                         validators=[OptionalValidator()])
    flagged = SelectField("Flagged", choices=[SelectChoice("", "Any"),
                                              SelectChoice("yes", "needs attention")],
                          validators=[OptionalValidator()])
    email = StringField("Customer email", validators=[OptionalValidator()])
    q = StringField("Reference", validators=[OptionalValidator()])


class ReconcileForm(FlaskForm):
    day = DateField("Day (Africa/Lagos)", validators=[DataRequired()])
    reason = StringField("Reason", validators=[DataRequired()])
    submit = SubmitField("Reconcile")


def _before_id():
    return query_int("before")


def _record(admin_id: int, funding_id, action: str, reason: str, result: str) -> None:
    transactions.run(lambda: db.session.add(AdminAction(
        admin_id=admin_id, funding_id=funding_id, action=action, reason=reason[:500],
        result=result[:500])))


@bp.route("/fundings")
def fundings():
    form = FundingFilterForm(request.args)
    query = sa.select(Funding).options(so.joinedload(Funding.user)).order_by(Funding.id.desc())
    if form.validate():
        if form.status.data:
            query = query.where(Funding.status == form.status.data)
        if form.method.data:
            query = query.where(Funding.method == form.method.data)
        if form.flagged.data == "yes":
            query = query.where(Funding.needs_attention.is_(True))
        if form.email.data:
            query = query.join(User, User.id == Funding.user_id).where(
                User.email == form.email.data.strip().lower()[:254])
        if form.q.data:
            ref = form.q.data.strip()[:100]
            query = query.where(sa.or_(Funding.reference == ref, Funding.gateway_reference == ref))
    before = _before_id()
    if before is not None:
        query = query.where(Funding.id < before)
    rows = db.session.scalars(query.limit(PAGE_SIZE + 1)).all()
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render_template("admin/fundings.html", form=form, fundings=rows[:PAGE_SIZE],
                           next_before=rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None,
                           filter_args=args)


def _funding_or_404(reference: str) -> Funding:
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == reference[:40])
                            .options(so.joinedload(Funding.user)))
    if row is None:
        abort(404)
    return row


def _render_funding(row: Funding, status: int = 200, **forms):
    events = db.session.scalars(sa.select(GatewayEvent).where(GatewayEvent.funding_id == row.id)
                                .order_by(GatewayEvent.id)).all()
    transfers = db.session.scalars(sa.select(Transfer).where(Transfer.funding_id == row.id)).all()
    actions = db.session.scalars(sa.select(AdminAction).where(AdminAction.funding_id == row.id)
                                 .options(so.joinedload(AdminAction.admin))
                                 .order_by(AdminAction.id)).all()
    items = db.session.scalars(sa.select(ReconciliationItem).where(ReconciliationItem.funding_id == row.id)
                               .order_by(ReconciliationItem.id)).all()
    return render_template(
        "admin/funding.html", funding=row, events=events, transfers=transfers, actions=actions,
        items=items,
        verify_form=forms.get("verify_form") or ReasonForm(formdata=None, prefix="verify"),
        dismiss_form=forms.get("dismiss_form") or ReasonForm(formdata=None, prefix="dismiss"),
        credit_form=forms.get("credit_form") or ReasonForm(formdata=None, prefix="credit")), status


@bp.route("/fundings/<reference>")
def funding_detail(reference: str):
    return _render_funding(_funding_or_404(reference))


@bp.route("/fundings/<reference>/verify", methods=["POST"])
def funding_verify(reference: str):
    """Ask the gateway now and apply its answer (credits only a verified
    success of the stored amount); audited."""
    row = _funding_or_404(reference)
    form = ReasonForm(prefix="verify")
    if not form.validate_on_submit():
        return _render_funding(row, 422, verify_form=form)
    funding_id, admin_id, amount = row.id, current_user.id, row.amount_kobo
    db.session.rollback()
    if row.needs_attention:
        result = "refused: flagged fundings are not credited automatically; investigate with the gateway"
        ok = False
    else:
        outcome = verification.verify_funding(funding_id)
        ok = outcome.outcome != "unknown"
        result = {"credited": f"done: credited {format_naira(amount)}",
                  "already_credited": "done: already credited, nothing more"}.get(
            outcome.outcome, f"done: gateway says {outcome.outcome} {outcome.detail}".strip())
        if outcome.outcome == "unknown":
            result = f"error: the gateway could not be asked ({outcome.detail})"
    _record(admin_id, funding_id, "verify", form.reason.data.strip(), result)
    flash(result, "success" if ok else "error")
    return redirect(url_for("admin.funding_detail", reference=reference), code=303)


@bp.route("/fundings/<reference>/credit-verified", methods=["POST"])
def funding_credit_verified(reference: str):
    """Credit a flagged bank-transfer arrival with the amount the gateway
    verifies (``admin_credit.credit_verified_arrival``); audited, once."""
    row = _funding_or_404(reference)
    form = ReasonForm(prefix="credit")
    if not form.validate_on_submit():
        return _render_funding(row, 422, credit_form=form)
    funding_id, admin_id = row.id, current_user.id
    db.session.rollback()
    result = admin_credit.credit_verified_arrival(funding_id, admin_id, form.reason.data.strip())
    flash(result, "success" if result.startswith("done") else "error")
    return redirect(url_for("admin.funding_detail", reference=reference), code=303)


@bp.route("/fundings/<reference>/dismiss", methods=["POST"])
def funding_dismiss(reference: str):
    """Clear a funding's flag after an admin looked into it (no money moves); audited."""
    row = _funding_or_404(reference)
    form = ReasonForm(prefix="dismiss")
    if not form.validate_on_submit():
        return _render_funding(row, 422, dismiss_form=form)
    funding_id, admin_id, reason = row.id, current_user.id, form.reason.data.strip()
    db.session.rollback()

    def clear() -> str:
        target = db.session.scalar(sa.select(Funding).where(Funding.id == funding_id).with_for_update())
        if not target.needs_attention:
            return "refused: the funding is not flagged"
        was = target.attention_reason or ""
        target.needs_attention = False
        target.attention_reason = None
        db.session.add(AdminAction(admin_id=admin_id, funding_id=funding_id, action="dismiss_flag",
                                   reason=reason[:500], result=f"done: flag cleared ({was})"[:500]))
        return f"done: flag cleared ({was})"

    result = transactions.run(clear)
    if result.startswith("refused"):
        _record(admin_id, funding_id, "dismiss_flag", reason, result)
    flash(result, "success" if result.startswith("done") else "error")
    return redirect(url_for("admin.funding_detail", reference=reference), code=303)


@bp.route("/gateway-events")
def gateway_events():
    query = sa.select(GatewayEvent).order_by(GatewayEvent.id.desc())
    if request.args.get("flagged") == "yes":
        query = query.where(GatewayEvent.needs_attention.is_(True))
    before = _before_id()
    if before is not None:
        query = query.where(GatewayEvent.id < before)
    rows = db.session.scalars(query.limit(PAGE_SIZE + 1)).all()
    return render_template("admin/gateway_events.html", events=rows[:PAGE_SIZE],
                           next_before=rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None)


@bp.route("/gateway-events/<int:event_id>")
def gateway_event(event_id: int):
    row = db.session.get(GatewayEvent, event_id)
    if row is None:
        abort(404)
    return render_template("admin/gateway_event.html", event=row)


@bp.route("/reconciliation", methods=["GET", "POST"])
def reconciliation():
    form = ReconcileForm()
    if request.method == "POST":
        if form.validate_on_submit():
            day: date = form.day.data
            admin_id, reason = current_user.id, form.reason.data.strip()
            db.session.rollback()
            run = funding_reconciliation.reconcile(day)
            result = (f"done: {run.gateway_transactions} gateway transactions, {run.matched} matched, "
                      f"{run.credited} credited, {run.flagged} flagged"
                      + (f"; error: {run.error}" if run.error else ""))
            _record(admin_id, None, f"reconcile {day.isoformat()}", reason, result)
            flash(result, "success" if not run.error else "error")
            return redirect(url_for("admin.reconciliation"), code=303)
    runs = db.session.scalars(sa.select(ReconciliationRun).order_by(ReconciliationRun.id.desc())
                              .options(so.selectinload(ReconciliationRun.items)).limit(30)).all()
    return render_template("admin/reconciliation.html", runs=runs, form=form), (
        422 if form.errors else 200)


@bp.route("/funding-flags")
def funding_flags():
    """Everything about money in that waits for an admin."""
    flagged = db.session.scalars(sa.select(Funding).where(Funding.needs_attention.is_(True))
                                 .options(so.joinedload(Funding.user)).order_by(Funding.id.desc())
                                 .limit(200)).all()
    events = db.session.scalars(sa.select(GatewayEvent).where(GatewayEvent.needs_attention.is_(True))
                                .order_by(GatewayEvent.id.desc()).limit(200)).all()
    items = db.session.scalars(sa.select(ReconciliationItem)
                               .where(ReconciliationItem.kind != "credited")
                               .order_by(ReconciliationItem.id.desc()).limit(200)).all()
    return render_template("admin/funding_flags.html", fundings=flagged, events=events, items=items)
