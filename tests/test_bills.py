"""The pay form without JavaScript (confirm step), and the payment page."""

from __future__ import annotations

import re

import sqlalchemy as sa

from billvend.vending import tasks
from billvend.web.bills import routes
from billvend.platform.extensions import db
from billvend.vending.models import Payment
from billvend.accounts.models import User
from billvend.vending.providers import base, outcomes
from tests.conftest import KEY_RE, form_tokens
from tests.helpers import assert_books_balance, make_payment


def balance() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(User)).wallet.balance_kobo


def payment_count() -> int:
    return db.session.scalar(sa.select(sa.func.count(Payment.id)))


def hidden_fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*type="hidden"[^>]*value="([^"]*)"', html))
    fields |= dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    return fields


def test_without_javascript_the_name_is_confirmed_before_the_debit(client, auth, fund):
    auth.signup()
    fund("5000")
    data = form_tokens(client, "/bills/electricity") | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111-1111-11111",
        "amount": "1,500", "phone": "+234 803 123 4567"}
    confirm = client.post("/bills/electricity", data=data)
    assert confirm.status_code == 200
    html = confirm.get_data(as_text=True)
    name, address = outcomes.customer_for("1111111111111", "ikeja-electric")
    assert "Confirm payment" in html and name in html and address in html
    assert "₦1,500.00" in html
    assert payment_count() == 0 and balance() == 500_000  # nothing charged yet

    fields = hidden_fields(html)
    assert fields["idempotency_key"] == data["idempotency_key"]  # one key across both steps
    assert fields["verified_meter"] == "ikeja-electric:prepaid:1111111111111"
    assert fields["meter_number"] == "1111111111111" and fields["phone"] == "+2348031234567"
    paid = client.post("/bills/electricity", data=fields)
    assert paid.status_code == 303 and paid.headers["Location"].startswith("/payments/")
    again = client.post("/bills/electricity", data=fields)  # back button + resubmit
    assert again.headers["Location"] == paid.headers["Location"]
    assert payment_count() == 1 and balance() == 350_000
    payment = db.session.scalar(sa.select(Payment))
    assert payment.customer_name == name and payment.status == "successful"
    assert_books_balance()


def test_confirm_step_change_details_keeps_the_form(client, auth, fund):
    auth.signup()
    fund("5000")
    data = form_tokens(client, "/bills/electricity") | {
        "disco": "eko-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "1000", "phone": "08031234567"}
    fields = hidden_fields(client.post("/bills/electricity", data=data).get_data(as_text=True))
    edit = client.post("/bills/electricity", data=fields | {"edit": "Change details"})
    assert edit.status_code == 200
    html = edit.get_data(as_text=True)
    assert "Buy electricity" in html and 'value="1111111111111"' in html
    assert KEY_RE.search(html).group(1) == data["idempotency_key"]
    assert payment_count() == 0 and balance() == 500_000


def test_meter_changed_after_verification_is_confirmed_again(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    response = pay("1111111111111", verified_meter="ikeja-electric:prepaid:12345678901")
    assert response.status_code == 200 and b"Confirm payment" in response.data
    assert payment_count() == 0 and balance() == 500_000


def test_below_the_meters_minimum_is_refused(app, client, auth, fund, pay, monkeypatch):
    app.config["MIN_PAYMENT_KOBO"] = 100_00  # the form allows it; the disco does not

    class Provider:
        name = "stub"

        def verify_meter(self, *args):
            return base.MeterVerification("valid", customer_name="ADA", min_purchase_kobo=500_00)

    monkeypatch.setattr(routes, "get_provider", Provider)
    auth.signup()
    fund("5000")
    response = pay("1111111111111", "200")
    assert response.status_code == 422 and b"smallest amount for this meter is \xe2\x82\xa6500.00" in response.data
    assert payment_count() == 0


def test_payment_page_token_units_timeline(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    reference = pay("1111111111111", "1000").headers["Location"].rsplit("/", 1)[1]
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    html = client.get(f"/payments/{reference}").get_data(as_text=True)
    groups = payment.token_groups
    assert re.fullmatch(r"\d{4}(-\d{4}){4}", groups) and groups in html.replace("<wbr>", "")
    assert re.search(rf'class="[^"]*js-only[^"]*" data-copy="{payment.token}"', html)  # a JS-only button
    assert "js/app.js" in html
    assert f"{payment.units_kwh} kWh" in html
    assert "Ikeja Electric (IKEDC)" in html and "1111111111111" in html and "₦1,000.00" in html
    timeline = html[html.index('data-testid="timeline"'):]
    assert timeline.count('class="timeline-event"') == len(payment.events) == 3
    # The customer's timeline in plain words; no internal status names or codes.
    assert "Paid from your wallet" in timeline and "Sent to the disco" in timeline
    assert "Token issued" in timeline
    assert "→" not in timeline and "delivered" not in timeline and "vending" not in timeline
    assert client.get("/static/js/app.js").status_code == 200


def test_postpaid_page_shows_the_receipt(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    reference = pay("1010101010101", "1000", meter_type="postpaid").headers["Location"].rsplit("/", 1)[1]
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    assert payment.status == "successful" and payment.token is None
    html = client.get(f"/payments/{reference}").get_data(as_text=True)
    assert payment.receipt_reference and payment.receipt_reference in html
    assert "Your token" not in html and "data-copy" not in html


def test_unknown_payment_says_it_waits_in_plain_words_codes_stay_on_the_admin_page(
        app, client, auth, fund):
    auth.signup()
    fund("5000")
    user = db.session.scalar(sa.select(User))
    payment = make_payment(user, meter_number=outcomes.TIMEOUT_METER)
    tasks.vend(payment.id)
    html = client.get(f"/payments/{payment.reference}/status",
                      headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'data-status="unknown"' in html and "Waiting for the disco to confirm" in html
    assert "TIMEOUT" not in html, html
    assert "hx-trigger" in html  # still polling


def test_documented_fields_alone_pay_at_once(client, auth, fund):
    """DESIGN.md's contract: a client posting just the documented fields is
    verified on the server and gets 303 to the payment (no confirm step)."""
    auth.signup()
    fund("5000")
    html = client.get("/bills/electricity").get_data(as_text=True)
    assert 'name="confirm_meter" type="hidden" value="1"' in html
    tokens = form_tokens(client, "/bills/electricity")
    data = {"csrf_token": tokens["csrf_token"], "idempotency_key": tokens["idempotency_key"],
            "disco": "jos-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
            "amount": "1000", "phone": "08031234567"}
    response = client.post("/bills/electricity", data=data)
    assert response.status_code == 303 and response.headers["Location"].startswith("/payments/")
    payment = db.session.scalar(sa.select(Payment))
    assert payment.customer_name and payment.status == "successful"
    assert balance() == 400_000
    invalid = client.post("/bills/electricity", data=data | {
        "meter_number": "0000000000000", "idempotency_key": form_tokens(client, "/bills/electricity")["idempotency_key"]})
    assert invalid.status_code == 422 and payment_count() == 1 and balance() == 400_000
