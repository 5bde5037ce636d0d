"""Server-rendered UI details that do not need a browser: accessible form
markup, the receipt page, progress states and error pages."""

from __future__ import annotations

import re

from billvend.extensions import db
from billvend.models import Payment
from tests.helpers import make_payment, make_user


def test_form_fields_carry_no_stray_aria_attributes(client, auth):
    html = client.get("/signup").get_data(as_text=True)
    assert '"None"' not in html
    assert 'aria-invalid' not in html
    assert 'aria-describedby="password-hint"' in html

    response = client.post("/signup", data={"email": "nope", "password": "x", "confirm_password": "y",
                                            "csrf_token": auth.csrf("/signup")})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    email_input = re.search(r'<input[^>]*id="email"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in email_input and 'aria-describedby="email-error"' in email_input
    assert re.search(r'<p class="error" id="email-error" role="alert">', html)


def test_receipt_is_for_the_owner_only(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    response = pay()
    assert response.status_code == 303
    reference = response.headers["Location"].rsplit("/", 1)[-1]
    receipt = client.get(f"/payments/{reference}/receipt")
    text = receipt.get_data(as_text=True)
    assert receipt.status_code == 200
    assert "Electricity receipt" in text and "₦1,000.00" in text
    payment = db.session.scalar(db.select(Payment).where(Payment.reference == reference))
    assert payment.status == "successful" and payment.token_groups in text

    auth.logout()
    auth.signup(email="eve@example.com")
    assert client.get(f"/payments/{reference}/receipt").status_code == 404
    assert client.get("/payments/no-such-reference/receipt").status_code == 404


def test_progress_states_use_the_customers_words(client, auth):
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user, amount_kobo=100_000)
    labels = {
        "pending": "Queued",
        "vending": "Contacting the disco",
        "unknown": "Waiting for the disco",
        "failed": "Refund on the way",
        "reversed": "Refunded",
        "successful": "Token issued",
    }
    auth.login(email=user.email)
    for status, label in labels.items():
        db.session.execute(db.update(Payment).where(Payment.id == payment.id).values(status=status))
        db.session.commit()
        html = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
        assert label in html, status
        polls = f'hx-get="/payments/{payment.reference}/status?since={status}"' in html
        assert polls == (status not in ("successful", "reversed")), status
    db.session.execute(db.update(Payment).where(Payment.id == payment.id)
                       .values(status="unknown", needs_attention=True))
    db.session.commit()
    assert "Needs attention" in client.get(f"/payments/{payment.reference}").get_data(as_text=True)


def test_empty_states_and_error_pages_share_the_layout(client, auth):
    auth.signup()
    dashboard = client.get("/").get_data(as_text=True)
    assert "No activity yet" in dashboard and "app.css" in dashboard
    assert "Nothing here yet" in client.get("/history").get_data(as_text=True)
    assert "Nothing matches these filters" in client.get("/history?kind=reversal").get_data(as_text=True)
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and "app.css" in missing.get_data(as_text=True)
