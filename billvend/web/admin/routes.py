"""Admin pages. Every route sits behind :func:`_admins_only`: signed-out
visitors are sent to log in, signed-in non-admins get a 404 (the admin area
does not admit it exists), and an admin who has not given the second factor
(TOTP or a recovery code) in this session is sent to give it, or to enrol."""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import (Response, abort, flash, redirect, render_template, request,
                   stream_with_context, url_for)
from flask_login import current_user

from billvend.ledger import services as ledger
from billvend.notifications import outbox
from billvend.platform.clock import db_now
from billvend.ledger import invariants as ledger_invariants
from billvend.accounts import sessions
from billvend.web.admin import bp, chart, queries, services
from billvend.web.admin.forms import (
    PaymentFilterForm, ReasonForm, ResolveDeliveredForm, WalletSearchForm,
)
from billvend.platform.extensions import db, login_manager
from billvend.web.forms import query_int
from billvend.ledger.models import LedgerEntry, Transfer, Wallet
from billvend.vending.models import Payment
from billvend.platform.money import kobo_to_naira_input
from billvend.vending.lifecycle import LAGOS
from billvend.vending.providers import DISCOS
from billvend.web.statements import csv_safe

log = logging.getLogger(__name__)

#: Violations listed per invariant on the panel (the count is always exact).
VIOLATIONS_SHOWN = 200


@bp.before_request
def _admins_only():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        abort(404)
    if not sessions.has_second_factor():
        return redirect(url_for("account.two_factor", next=request.full_path), code=303)
    return None


@bp.route("/")
def overview():
    data = queries.overview()
    return render_template("admin/overview.html", **data, chart=chart.build(data["days"]),
                           workers=_worker_status())


def _worker_status() -> dict:
    """The newest worker heartbeat, its age, live concurrency and the queue
    depth, for the overview's "Workers" block (``None`` where unknown)."""
    from billvend.platform import heartbeat
    from billvend.platform.queue import huey

    last_seen, age_seconds, concurrency = heartbeat.latest()
    try:
        queue_depth = huey.pending_count()
    except Exception:  # noqa: BLE001 - queue down: say so, not a 500
        queue_depth = None
    oldest = outbox.oldest_unsent_created_at()
    return {"last_seen": last_seen, "age_seconds": age_seconds, "concurrency": concurrency,
            "queue_depth": queue_depth,
            "oldest_unsent_seconds": None if oldest is None else max(0.0, (db_now() - oldest).total_seconds())}


@bp.route("/invariants")
def invariants():
    violations = ledger_invariants.check_invariants()
    by_invariant = defaultdict(list)
    for violation in violations:
        by_invariant[violation.invariant].append(violation)
    payment_ids = {v.subject_id for v in violations if v.subject == "payment"}
    references = dict(db.session.execute(
        sa.select(Payment.id, Payment.reference).where(Payment.id.in_(payment_ids))
    ).all()) if payment_ids else {}
    return render_template(
        "admin/invariants.html", invariants=ledger_invariants.INVARIANTS, by_invariant=by_invariant,
        references=references, total=len(violations), shown=VIOLATIONS_SHOWN)


@bp.route("/payments")
def payments():
    form = PaymentFilterForm(request.args)
    if not form.validate():
        return render_template("admin/payments.html", form=form, page=None, filter_args={}), 422
    page = queries.payments_page(form.filters(), request.args.get("after"))
    return render_template("admin/payments.html", form=form, page=page,
                           filter_args=form.query_args())


CSV_COLUMNS = ("reference", "created_at_utc", "customer_email", "disco", "meter_type",
               "meter_number", "amount_kobo", "amount_naira", "status", "provider_code",
               "token", "receipt_reference", "vend_attempts", "requery_count",
               "needs_attention", "finalized_at_utc")


def _csv_row(row) -> list[str]:
    return [
        row.reference, row.created_at.isoformat(), csv_safe(row.email), row.service_id,
        row.meter_type, row.meter_number, str(row.amount_kobo),
        kobo_to_naira_input(row.amount_kobo), row.status, csv_safe(row.provider_code),
        row.token or "", csv_safe(row.receipt_reference), str(row.vend_attempts),
        str(row.requery_count), "yes" if row.needs_attention else "no",
        row.finalized_at.isoformat() if row.finalized_at else "",
    ]


@bp.route("/payments.csv")
def payments_csv():
    """The filtered payments as CSV, streamed in keyset batches.

    The filters are validated, and the first batch read, before anything is
    sent: a bad filter gets a 400 with the reasons. A failure later, when the
    200 has already gone out, ends the file with an ``ERROR`` line saying it
    is incomplete, never a silently short file.
    """
    form = PaymentFilterForm(request.args)
    if not form.validate():
        messages = "; ".join(e for errors in form.errors.values() for e in errors)
        return Response(f"Bad filter: {messages}\n", status=400, mimetype="text/plain")
    filters = form.filters()
    rows = iter(queries.iter_payment_rows(filters))
    first = next(rows, None)  # a database error here is the usual 400/503 page

    def generate():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        written = 0
        try:
            if first is not None:
                writer.writerow(_csv_row(first))
                written = 1
            for written, row in enumerate(rows, 2):
                writer.writerow(_csv_row(row))
                if written % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        except Exception:  # noqa: BLE001 - the status line is gone; say so in the file
            log.exception("CSV export failed after %d rows", written)
            writer.writerow([f"ERROR: the export failed after {written} rows; this file is incomplete"])
        finally:
            db.session.rollback()
        yield buffer.getvalue()

    return Response(
        stream_with_context(generate()), mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=payments.csv",
                 "Cache-Control": "no-store"})


def _payment_or_404(reference: str) -> Payment:
    payment = db.session.scalar(
        sa.select(Payment).where(Payment.reference == reference)
        .options(so.joinedload(Payment.user), so.selectinload(Payment.events)))
    if payment is None:
        abort(404)
    return payment


def _render_payment(payment: Payment, status: int = 200, **forms):
    resolve_form = forms.get("resolve_form") or ResolveDeliveredForm(formdata=None)
    allowed = services.allowed_actions(payment)
    # A form sent back with errors is shown even if the action no longer
    # applies, so its message is visible.
    for name, action in (("requery_form", services.REQUERY), ("refund_form", services.REFUND),
                         ("resolve_form", services.RESOLVE_DELIVERED),
                         ("redrive_form", services.REDRIVE)):
        if name in forms and action not in allowed:
            allowed.append(action)
    return render_template(
        "admin/payment.html", payment=payment, lagos=LAGOS, disco_name=DISCOS.get(payment.service_id),
        transfers=queries.payment_transfers(payment.id),
        actions=queries.payment_actions(payment.id),
        allowed=allowed,
        requery_form=forms.get("requery_form") or ReasonForm(formdata=None, prefix="requery"),
        refund_form=forms.get("refund_form") or ReasonForm(formdata=None, prefix="refund"),
        redrive_form=forms.get("redrive_form") or ReasonForm(formdata=None, prefix="redrive"),
        resolve_form=resolve_form,
    ), status


@bp.route("/payments/<reference>")
def payment_detail(reference: str):
    return _render_payment(_payment_or_404(reference))


def _after_action(payment: Payment, outcome: services.Outcome):
    flash(outcome.message, "success" if outcome.ok else "error")
    return redirect(url_for("admin.payment_detail", reference=payment.reference), code=303)


@bp.route("/payments/<reference>/requery", methods=["POST"])
def requery(reference: str):
    payment = _payment_or_404(reference)
    form = ReasonForm(prefix="requery")
    if not form.validate_on_submit():
        return _render_payment(payment, 422, requery_form=form)
    return _after_action(payment, services.requery_now(current_user, payment.id, form.reason.data.strip()))


@bp.route("/payments/<reference>/resolve", methods=["POST"])
def resolve(reference: str):
    payment = _payment_or_404(reference)
    form = ResolveDeliveredForm()
    form.meter_type = payment.meter_type
    if not form.validate_on_submit():
        return _render_payment(payment, 422, resolve_form=form)
    return _after_action(payment, services.resolve_delivered(
        current_user, payment.id, form.reason.data.strip(), token=form.token.data or None,
        receipt_reference=form.receipt_reference.data or None,
        units_kwh=form.units_kwh.data or None))


@bp.route("/payments/<reference>/refund", methods=["POST"])
def refund(reference: str):
    payment = _payment_or_404(reference)
    form = ReasonForm(prefix="refund")
    if not form.validate_on_submit():
        return _render_payment(payment, 422, refund_form=form)
    if request.form.get("refund-review") and not request.form.get("refund-confirmed"):
        # Our page's refund form: a refund cannot be undone, so ask once more
        # on a page of its own (works without JavaScript). A client posting
        # only the documented fields acts at once, as before.
        return render_template("admin/refund_confirm.html", payment=payment, form=form,
                               disco_name=DISCOS.get(payment.service_id))
    return _after_action(payment, services.refund(current_user, payment.id, form.reason.data.strip()))


@bp.route("/payments/<reference>/redrive", methods=["POST"])
def redrive(reference: str):
    payment = _payment_or_404(reference)
    form = ReasonForm(prefix="redrive")
    if not form.validate_on_submit():
        return _render_payment(payment, 422, redrive_form=form)
    return _after_action(payment, services.redrive_now(current_user, payment.id, form.reason.data.strip()))


@bp.route("/stuck")
def stuck():
    page = queries.stuck_page(request.args.get("after"))
    return render_template("admin/stuck.html", page=page)


@bp.route("/wallets")
def wallets():
    form = WalletSearchForm(request.args)
    email = (form.email.data or "").strip().lower() if form.validate() else None
    page = queries.user_wallets_page(email or None, query_int("before"))
    return render_template("admin/wallets.html", form=form, page=page,
                           system_wallets=queries.system_wallets(), email=email or "")


@bp.route("/wallets/<int:wallet_id>")
def wallet(wallet_id: int):
    wallet = db.session.get(Wallet, wallet_id)
    if wallet is None:
        abort(404)
    page = queries.statement_page(wallet, query_int("before"))
    return render_template("admin/wallet.html", wallet=wallet, page=page)


@bp.route("/transfers/<int:transfer_id>")
def transfer(transfer_id: int):
    transfer = db.session.scalar(
        sa.select(Transfer).where(Transfer.id == transfer_id)
        .options(so.selectinload(Transfer.entries).joinedload(LedgerEntry.wallet)
                 .joinedload(Wallet.user), so.joinedload(Transfer.payment)))
    if transfer is None:
        abort(404)
    return render_template("admin/transfer.html", transfer=transfer)


@bp.route("/actions")
def actions():
    page = queries.actions_page(query_int("before"))
    return render_template("admin/actions.html", page=page)
