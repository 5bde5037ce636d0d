"""Fund the wallet through the (simulated) gateway."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from billvend import funding
from billvend.money import format_naira
from billvend.wallet import bp
from billvend.wallet.forms import FundForm


@bp.route("/fund", methods=["GET", "POST"])
@login_required
def fund():
    form = FundForm()
    if form.validate_on_submit():
        try:
            record, created = funding.fund_wallet(
                current_user, form.amount.kobo, form.idempotency_key.data
            )
        except funding.FundingError as exc:
            form.amount.errors.append(str(exc))
        else:
            if created:
                flash(f"{format_naira(record.amount_kobo)} added to your wallet.", "success")
            else:
                flash(f"This funding of {format_naira(record.amount_kobo)} was already made.", "info")
            return redirect(url_for("main.index"), code=303)
    status = 422 if form.errors else 200
    return render_template("wallet/fund.html", form=form), status
