"""Pay for electricity, verify a meter, and watch a payment until it is final.

The pay page never debits a wallet before the customer has seen the name on
the meter: with JavaScript the htmx verification shows it beside the form
(and marks the form ``verified_meter``); without JavaScript the first valid
submit (the page's form carries ``confirm_meter``) renders a confirm step with
the name, and the second pays. A client posting just the documented fields
is verified and paid at once (303), as DESIGN.md's URL contract says. Both steps
carry the same ``idempotency_key``. The meter is verified on every submit,
so an invalid meter is refused before any debit, but from the shared cache
(``billvend.meter_verification``) when the htmx check or the confirm step
has just asked the provider: a pay submit runs at database speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from billvend import ledger, meter_verification, payments, status_watch, tasks
from billvend.bills import bp
from billvend.bills.forms import ElectricityForm, MeterForm
from billvend.extensions import db
from billvend.models import Payment, utcnow
from billvend.money import format_naira
from billvend.providers import DISCOS, get_provider

DISCO_DOWN_MESSAGE = "We could not reach the disco to check this meter. Please try again in a minute."


def _render_form(form: ElectricityForm, verification=None, status: int | None = None):
    verified_key = form.meter_key() if verification is not None and verification.is_valid else None
    if status is None:
        status = 422 if form.errors else 200
    return render_template("bills/electricity.html", form=form, verification=verification,
                           verified_key=verified_key), status


def _pay(form: ElectricityForm, verification=None):
    """Debit and record the payment (or find the earlier one for this key)."""
    try:
        payment, created = payments.create_payment(
            current_user,
            service_id=form.disco.data,
            meter_type=form.meter_type.data,
            meter_number=form.meter_number.data,
            phone=form.phone.data,
            amount_kobo=form.amount.kobo,
            idempotency_key=form.idempotency_key.data,
            customer_name=verification.customer_name if verification else None,
            customer_address=verification.address if verification else None,
        )
    except ledger.InsufficientFunds:
        balance = current_user.wallet.balance_kobo
        form.amount.errors.append(
            f"Your wallet balance is {format_naira(balance)}. "
            "Fund your wallet or enter a smaller amount."
        )
        return _render_form(form, verification)
    except payments.IdempotencyConflict as exc:
        form.amount.errors.append(str(exc))
        return _render_form(form, verification)
    if created and not tasks.enqueue_vend(payment.id):
        # The queue is down: the payment is safe in the database and the
        # sweep sends it once the queue is back.
        flash("Your payment is recorded and queued. It is taking longer than usual "
              "to reach the disco; this page updates by itself.", "info")
    return redirect(url_for("bills.payment", reference=payment.reference), code=303)


@bp.route("/bills/electricity", methods=["GET", "POST"])
@login_required
def electricity():
    form = ElectricityForm()
    if request.method == "POST" and form.edit.data:
        # "Change details" on the confirm step: the filled-in form again,
        # same idempotency key, nothing checked or charged.
        return _render_form(form, status=200)
    if not form.validate_on_submit():
        return _render_form(form)

    if payments.find_by_key(current_user.id, form.idempotency_key.data) is not None:
        # A repeat of a submitted payment: answer with the first result.
        return _pay(form)

    verification = meter_verification.verify(
        form.disco.data, form.meter_number.data, form.meter_type.data, get_provider()
    )
    if verification.status == "invalid":
        form.meter_number.errors.append(
            verification.message or "This meter number was not found at the disco."
        )
        return _render_form(form, verification)
    if verification.status == "error":
        form.meter_number.errors.append(DISCO_DOWN_MESSAGE)
        return _render_form(form, verification)
    minimum_kobo = verification.min_purchase_kobo
    if minimum_kobo and form.amount.kobo < minimum_kobo:
        form.amount.errors.append(f"The smallest amount for this meter is {format_naira(minimum_kobo)}.")
        return _render_form(form, verification)
    if form.confirm_meter.data and form.verified_meter.data != form.meter_key():
        # A customer on our pay page has not seen the name on this meter yet
        # (no JavaScript, or the meter changed since): confirm first.
        return render_template(
            "bills/confirm.html", form=form, verification=verification,
            verified_key=form.meter_key(), disco_name=DISCOS[form.disco.data],
        )
    return _pay(form, verification)


@bp.route("/bills/electricity/verify", methods=["POST"])
@login_required
def verify():
    """htmx: the customer behind a meter (name and address), "meter not
    found", or that the disco cannot be reached; empty until the disco, type
    and meter number are complete."""
    form = MeterForm()
    verification = None
    verified_key = None
    if form.validate():
        verification = meter_verification.verify(
            form.disco.data, form.meter_number.data, form.meter_type.data, get_provider()
        )
        if verification.is_valid:
            verified_key = form.meter_key()
    return render_template("bills/_verification.html", form=form, verification=verification,
                           verified_key=verified_key)


def _payment_or_404(reference: str):
    payment = payments.payment_for_user(reference, current_user)
    if payment is None:
        abort(404)
    return payment


@dataclass(frozen=True)
class Poll:
    """How the status panel asks for its next update (htmx attributes)."""

    url: str
    trigger: str


def status_poll(payment: Payment) -> Optional[Poll]:
    """The panel's next poll, or None once the payment is final.

    In a payment's first ``STATUS_FAST_PHASE_SECONDS`` (when a token normally
    arrives) the panel long-polls: it asks again as soon as it is swapped in
    (``load``), passing the status it shows (``since``), and the server holds
    the request until the status changes or ``STATUS_LONG_POLL_SECONDS``
    pass. After that it polls plainly, every 3 s for two minutes, every 15 s
    for half an hour, then once a minute, so a page left open sends a
    bounded number of requests. ``every 10s`` in the fast phase restarts a
    long poll that a network error ended (htmx drops it while one is in
    flight).
    """
    if payment.is_final:
        return None
    base = url_for("bills.payment_status", reference=payment.reference)
    age_seconds = (utcnow() - payment.created_at).total_seconds()
    if age_seconds < current_app.config["STATUS_FAST_PHASE_SECONDS"]:
        return Poll(f"{base}?since={payment.status}", "load, every 10s")
    if age_seconds < 120:
        return Poll(base, "every 3s")
    if age_seconds < 1800:
        return Poll(base, "every 15s")
    return Poll(base, "every 60s")


def _render_payment(template: str, payment: Payment):
    return render_template(template, payment=payment, disco_name=DISCOS.get(payment.service_id),
                           poll=status_poll(payment))


@bp.route("/payments/<reference>")
@login_required
def payment(reference: str):
    return _render_payment("bills/payment.html", _payment_or_404(reference))


def _wait_for_change(payment: Payment, since: str) -> Payment:
    """Hold the request until the payment leaves status ``since`` or
    ``STATUS_LONG_POLL_SECONDS`` pass (``billvend.status_watch``: one thread
    per process looks at every waiting payment every 0.05 s). Holds no
    database connection while it waits: the session's transaction ends first."""
    payment_id = payment.id
    db.session.rollback()
    status_watch.watcher_for(current_app._get_current_object()).wait(  # noqa: SLF001
        payment_id, since, current_app.config["STATUS_LONG_POLL_SECONDS"])
    return db.session.get(Payment, payment_id)


@bp.route("/payments/<reference>/status")
@login_required
def payment_status(reference: str):
    """htmx: the status panel. With ``since`` (the status the page shows)
    and the payment still there, a long poll (:func:`status_poll`)."""
    payment = _payment_or_404(reference)
    if request.headers.get("HX-Request") != "true":
        # A full page load gets the full page: works without JavaScript.
        return redirect(url_for("bills.payment", reference=reference))
    since = request.args.get("since")
    if since is not None and since == payment.status and status_poll(payment) is not None:
        payment = _wait_for_change(payment, since)
    return _render_payment("bills/_status.html", payment)


@bp.route("/payments/<reference>/receipt")
@login_required
def receipt(reference: str):
    """A printable receipt for one payment (owner or admin, else 404)."""
    payment = _payment_or_404(reference)
    return render_template("bills/receipt.html", payment=payment, disco_name=DISCOS.get(payment.service_id))
