"""Pay for electricity, verify a meter, and watch a payment until it is final."""

from __future__ import annotations

from flask import abort, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from billvend import ledger, payments, tasks
from billvend.bills import bp
from billvend.bills.forms import ElectricityForm, MeterForm
from billvend.money import format_naira
from billvend.providers import DISCOS, get_provider


@bp.route("/bills/electricity", methods=["GET", "POST"])
@login_required
def electricity():
    form = ElectricityForm()
    verification = None
    if form.validate_on_submit():
        verification = get_provider().verify_meter(
            form.disco.data, form.meter_number.data, form.meter_type.data
        )
        if verification.status == "invalid":
            form.meter_number.errors.append(
                verification.message or "This meter number was not found at the disco."
            )
        elif verification.status == "error":
            form.meter_number.errors.append(
                "We could not reach the disco to check this meter. Please try again shortly."
            )
        else:
            try:
                payment, created = payments.create_payment(
                    current_user,
                    service_id=form.disco.data,
                    meter_type=form.meter_type.data,
                    meter_number=form.meter_number.data,
                    phone=form.phone.data,
                    amount_kobo=form.amount.kobo,
                    idempotency_key=form.idempotency_key.data,
                    customer_name=verification.customer_name,
                    customer_address=verification.address,
                )
            except ledger.InsufficientFunds:
                balance = current_user.wallet.balance_kobo
                form.amount.errors.append(
                    f"Your wallet balance is {format_naira(balance)}. "
                    "Fund your wallet or enter a smaller amount."
                )
            except payments.IdempotencyConflict as exc:
                form.amount.errors.append(str(exc))
            else:
                if created:
                    tasks.enqueue_vend(payment.id)
                return redirect(url_for("bills.payment", reference=payment.reference), code=303)
    status = 422 if form.errors else 200
    return render_template("bills/electricity.html", form=form, verification=verification), status


@bp.route("/bills/electricity/verify", methods=["POST"])
@login_required
def verify():
    """htmx: the customer behind a meter, shown before paying."""
    form = MeterForm()
    verification = None
    if form.validate():
        verification = get_provider().verify_meter(
            form.disco.data, form.meter_number.data, form.meter_type.data
        )
    return render_template("bills/_verification.html", form=form, verification=verification)


def _payment_or_404(reference: str):
    payment = payments.payment_for_user(reference, current_user)
    if payment is None:
        abort(404)
    return payment


@bp.route("/payments/<reference>")
@login_required
def payment(reference: str):
    payment = _payment_or_404(reference)
    return render_template("bills/payment.html", payment=payment, disco_name=DISCOS.get(payment.service_id))


@bp.route("/payments/<reference>/status")
@login_required
def payment_status(reference: str):
    payment = _payment_or_404(reference)
    if request.headers.get("HX-Request") != "true":
        # A full page load gets the full page: works without JavaScript.
        return redirect(url_for("bills.payment", reference=reference))
    return render_template("bills/_status.html", payment=payment, disco_name=DISCOS.get(payment.service_id))


@bp.route("/payments/<reference>/receipt")
@login_required
def receipt(reference: str):
    """A printable receipt for one payment (owner or admin, else 404)."""
    payment = _payment_or_404(reference)
    return render_template("bills/receipt.html", payment=payment, disco_name=DISCOS.get(payment.service_id))
