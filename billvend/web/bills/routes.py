"""Pay for electricity, verify a meter, and watch a payment until it is final.

Review before debit, on every path of our own pages: the pay page's form
carries ``confirm_meter``, and a submission from it goes to the review step
(bills/confirm.html: disco, meter, name and address, meter type, amount, "No
fee", total, phone, and a "Pay ₦…" button) unless it carries the review's own
``verified_meter`` for this exact meter; with or without JavaScript. Only the
review step sets ``verified_meter`` (the htmx check shows the name but does
not), so no submit of the form itself debits. A client posting just the
documented fields is verified and paid at once (303), as DESIGN.md's URL
contract says. Both steps carry the same ``idempotency_key``. The meter is
verified with the provider again on every submit, so an invalid meter, or an
amount below the meter's own minimum, is refused before any debit.
The verification comes from the shared cache (``billvend.vending.meter_verification``)
when the htmx check or the review step has just asked the provider, so a pay
submit runs at database speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa
from flask import Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.datastructures import MultiDict

from billvend.platform.phones import national
from billvend.ledger import services as ledger
from billvend.vending import meter_verification, lifecycle as payments, resend as token_resend, status_watch, tasks
from billvend.accounts import sessions
from billvend.platform import transactions
from billvend.web.security import safe_next
from billvend.web.bills import bp
from billvend.web.bills.forms import QUICK_AMOUNTS_NAIRA, ElectricityForm, MeterForm, ResendTokenForm
from billvend.platform.extensions import db
from billvend.web.forms import parse_int, query_int
from billvend.vending.models import METER_TYPES, Payment, SavedMeter
from billvend.platform.models import utcnow
from billvend.platform.money import format_naira, kobo_to_naira_input
from billvend.vending.providers import DISCOS, get_provider

#: Up to this wait, "this usually takes a few seconds" is true; after it the
#: page says it is taking longer than usual (until the slow-disco notice).
USUAL_WAIT_SECONDS = 10

DISCO_DOWN_MESSAGE = "We could not reach the disco to check this meter. Please try again in a minute."


def _render_form(form: ElectricityForm, verification=None, status: int | None = None):
    if status is None:
        status = 422 if form.errors else 200
    return render_template("bills/electricity.html", form=form, verification=verification,
                           quick_amounts=QUICK_AMOUNTS_NAIRA), status


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


def _posted_form() -> ElectricityForm:
    """The pay form from this request. A quick-amount chip chosen while the
    amount box is empty (no JavaScript) becomes the amount; "Switch to
    prepaid/postpaid" sets the meter type."""
    if request.method != "POST":
        return ElectricityForm()
    data = MultiDict(request.form)
    quick = data.get("quick_amount", "")
    if not data.get("amount", "").strip() and parse_int(quick) in QUICK_AMOUNTS_NAIRA:
        data["amount"] = quick
    switch = data.get("switch_meter_type")
    if switch in METER_TYPES:
        data["meter_type"] = switch
    return ElectricityForm(formdata=data)


def _prefill(form: ElectricityForm) -> None:
    """A new pay form, pre-filled from a saved meter (``?meter=<id>``: "Buy
    again") and with the customer's phone. Another customer's meter is a 404."""
    meter_id = query_int("meter")
    if meter_id is not None:
        saved = db.session.scalar(sa.select(SavedMeter).where(
            SavedMeter.id == meter_id, SavedMeter.user_id == current_user.id))
        if saved is None:
            abort(404)
        form.disco.data = saved.service_id
        form.meter_type.data = saved.meter_type
        form.meter_number.data = saved.meter_number
        form.amount.data = kobo_to_naira_input(saved.last_amount_kobo).removesuffix(".00")
        form.phone.data = national(saved.last_phone)
    if not form.phone.data and current_user.phone:
        form.phone.data = national(current_user.phone)


@bp.route("/bills/electricity", methods=["GET", "POST"])
@login_required
def electricity():
    form = _posted_form()
    if request.method == "GET":
        _prefill(form)
        return _render_form(form)
    if form.edit.data:
        # "Change details" on the review step: the filled-in form again,
        # same idempotency key, nothing checked or charged.
        return _render_form(form, status=200)
    switching = request.form.get("switch_meter_type") in METER_TYPES
    if not form.validate_on_submit():
        if switching:
            # Only the type changed: show the form again (checked with the
            # new type when the meter number is complete), no errors yet.
            return _render_switched(form)
        return _render_form(form)

    if payments.find_by_key(current_user.id, form.idempotency_key.data) is not None:
        # A repeat of a submitted payment: answer with the first result.
        return _pay(form)

    verification = meter_verification.verify(
        form.disco.data, form.meter_number.data, form.meter_type.data, get_provider()
    )
    if verification.status == "invalid":
        form.meter_number.errors.append(_invalid_message(verification))
        return _render_form(form, verification)
    if verification.status == "error":
        form.meter_number.errors.append(DISCO_DOWN_MESSAGE)
        return _render_form(form, verification)
    if switching:
        return _render_form(form, verification, status=200)
    minimum_kobo = verification.min_purchase_kobo
    if minimum_kobo and form.amount.kobo < minimum_kobo:
        form.amount.errors.append(f"The smallest amount for this meter is {format_naira(minimum_kobo)}.")
        return _render_form(form, verification)
    if form.confirm_meter.data and form.verified_meter.data != form.meter_key():
        # Our own pay page: one summary before any money moves.
        return render_template(
            "bills/confirm.html", form=form, verification=verification,
            verified_key=form.meter_key(), disco_name=DISCOS[form.disco.data],
        )
    return _pay(form, verification)


def _render_switched(form: ElectricityForm):
    for field in form:
        field.errors = []
    return _render_form(form, status=200)


def _invalid_message(verification) -> str:
    """The one message for a meter the disco refused (shown once, by the field)."""
    if verification.other_meter_type:
        return (f"The disco says this is a {verification.other_meter_type} meter. "
                f"Switch to {verification.other_meter_type} to continue.")
    return verification.message or "We could not find this meter at the disco. Check the number and the disco."


@bp.route("/bills/electricity/verify", methods=["POST"])
@login_required
def verify():
    """htmx: the customer behind a meter (name, address, the meter's
    minimum), "meter not found" (with a one-tap type switch when the disco
    says the meter is of the other type), that the disco cannot be reached,
    or an inline hint for a number that cannot be a meter yet; empty until
    the disco and meter number are there."""
    form = MeterForm()
    verification = None
    hint = None
    if form.validate():
        verification = meter_verification.verify(
            form.disco.data, form.meter_number.data, form.meter_type.data, get_provider()
        )
    elif form.meter_number.data and form.meter_number.errors:
        hint = _meter_number_hint(form.meter_number.data)
    return render_template("bills/_verification.html", form=form, verification=verification,
                           hint=hint, inline=True)


def _meter_number_hint(number: str) -> str:
    if not number.isdigit():
        return "A meter number has digits only."
    if len(number) < 10:
        return f"Keep going: a meter number has 10 to 13 digits ({len(number)} so far)."
    return f"That is {len(number)} digits; a meter number has 10 to 13."


def _payment_or_404(reference: str):
    """The payment with ``reference`` for this request's user, else a 404.

    A customer sees only their own. An admin sees anyone's only once this
    session has the second factor (as every admin page requires): a password
    alone, or a remember-me cookie, must not open customers' tokens, names,
    addresses and phones.
    """
    payment = payments.payment_for_user(reference, current_user)
    if payment is None:
        abort(404)
    if payment.user_id != current_user.id and not sessions.has_second_factor():
        abort(404)
    return payment


def _page_context(payment) -> dict:
    """What the payment's pages show besides the payment: the disco's name,
    how long the customer has waited, and whether to say it is slow (after
    ``SLOW_PAYMENT_NOTICE_SECONDS``) or give the support contact (after
    ``UNKNOWN_ALERT_AGE_SECONDS``, or once an admin has been alerted)."""
    config = current_app.config
    end = payment.finalized_at or utcnow()
    elapsed_seconds = max(0, int((end - payment.created_at).total_seconds()))
    waiting = not payment.is_final and payment.status != "failed"
    return {
        "payment": payment,
        "disco_name": DISCOS.get(payment.service_id),
        "elapsed_seconds": elapsed_seconds,
        "usual_wait_seconds": USUAL_WAIT_SECONDS,
        "slow": waiting and elapsed_seconds >= config["SLOW_PAYMENT_NOTICE_SECONDS"],
        "show_support": waiting and (payment.needs_attention
                                     or elapsed_seconds >= config["UNKNOWN_ALERT_AGE_SECONDS"]),
        "support_contact": config["SUPPORT_CONTACT"],
    }


@bp.app_template_global("resend_buttons")
def resend_buttons(payment: Payment) -> list[tuple[str, str]]:
    """The "Send token again" buttons of ``payment`` (templates/bills/_resend.html),
    as (target, label); none unless it is the signed-in customer's own
    successful payment with a token."""
    if (not current_user.is_authenticated or payment.user_id != current_user.id
            or payment.status != "successful" or not payment.token):
        return []
    return [(target, f"By email to {to}" if channel == "email" else f"By SMS to {national(to)}")
            for target, channel, to in token_resend.resend_targets(payment, current_user)]


@dataclass(frozen=True)
class Poll:
    """How the status panel asks for its next update (htmx attributes), and
    how often the page reloads itself without JavaScript (``refresh_seconds``,
    the same schedule, so neither sends an unbounded stream of requests)."""

    url: str
    trigger: str
    refresh_seconds: int = 3


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
        return Poll(base, "every 3s", 3)
    if age_seconds < 1800:
        return Poll(base, "every 15s", 15)
    return Poll(base, "every 60s", 60)


def _render_payment(template: str, payment: Payment, poll: Optional[Poll] = None, **extra):
    return render_template(template, **_page_context(payment), poll=poll or status_poll(payment), **extra)


@bp.route("/payments/<reference>")
@login_required
def payment(reference: str):
    payment = _payment_or_404(reference)
    # Only the full page offers "Buy again" (the status partial, polled, does not).
    saved_meter = db.session.scalar(sa.select(SavedMeter).where(
        SavedMeter.user_id == payment.user_id, SavedMeter.service_id == payment.service_id,
        SavedMeter.meter_number == payment.meter_number))
    return _render_payment("bills/payment.html", payment, saved_meter=saved_meter)


def _wait_for_change(payment: Payment, since: str) -> Optional[Payment]:
    """Hold the request until the payment leaves status ``since`` or
    ``STATUS_LONG_POLL_SECONDS`` pass (``billvend.vending.status_watch``: one thread
    per process looks at every waiting payment every 0.05 s). Holds no
    database connection while it waits: the session's transaction ends first.

    :returns: the payment as it is now, or None (without waiting) when this
        user already has ``STATUS_LONG_POLLS_PER_USER`` requests waiting in
        this process.
    """
    payment_id, user_id = payment.id, current_user.id
    db.session.rollback()
    waited = status_watch.watcher_for(current_app._get_current_object()).wait(  # noqa: SLF001
        payment_id, since, current_app.config["STATUS_LONG_POLL_SECONDS"],
        holder=user_id, max_per_holder=current_app.config["STATUS_LONG_POLLS_PER_USER"])
    if waited is None:
        return None
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
        changed = _wait_for_change(payment, since)
        if changed is None:
            # Too many of this user's requests wait already: answer now and
            # poll plainly (another immediate long poll would be a busy loop).
            payment = db.session.get(Payment, payment.id)
            return _render_payment("bills/_status.html", payment,
                                   Poll(url_for("bills.payment_status", reference=reference), "every 3s", 3))
        payment = changed
    return _render_payment("bills/_status.html", payment)


@bp.route("/payments/<reference>/resend", methods=["POST"])
@login_required
def resend(reference: str):
    """"Send token again" (billvend.vending.resend): the owner only (anyone
    else's reference is a 404 and changes nothing). Answers with a flash and
    a redirect to ``next`` (the payment, or the history row it came from);
    an htmx request gets the outcome as a fragment instead."""
    payment = payments.payment_for_user(reference, current_user)
    if payment is None or payment.user_id != current_user.id:
        abort(404)
    form = ResendTokenForm()
    if form.validate_on_submit():
        result = transactions.run(token_resend.resend_token, payment.id, current_user.id, form.to.data)
    else:
        result = token_resend.ResendResult(False, "Choose where to send the token.")
    if request.headers.get("HX-Request") == "true":
        return render_template("bills/_resend_result.html", result=result)
    flash(result.message, "success" if result.sent else "error")
    return redirect(safe_next(form.next.data, url_for("bills.payment", reference=reference)), code=303)


@bp.route("/payments/<reference>/receipt")
@login_required
def receipt(reference: str):
    """A printable receipt for one payment (owner or admin, else 404)."""
    payment = _payment_or_404(reference)
    return render_template("bills/receipt.html", **_page_context(payment))


@bp.route("/payments/<reference>/receipt.pdf")
@login_required
def receipt_pdf(reference: str):
    """The receipt as a PDF (proof of payment); owner or admin, else 404."""
    from billvend.web.statements import receipt_pdf as render_receipt

    payment = _payment_or_404(reference)
    body = render_receipt(payment, DISCOS.get(payment.service_id, payment.service_id))
    return Response(body, mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="billvend-receipt-{payment.reference}.pdf"',
        "Cache-Control": "no-store",
    })
