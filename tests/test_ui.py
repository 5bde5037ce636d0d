"""Server-rendered UI details that do not need a browser: accessible form
markup, the receipt page, progress states and error pages."""

from __future__ import annotations

import re

from billvend.platform.extensions import db
from billvend.vending.models import Payment
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


def _paid_page(client, auth, fund, pay) -> tuple[str, str]:
    auth.signup()
    fund("5000")
    reference = pay().headers["Location"].rsplit("/", 1)[-1]
    return reference, client.get(f"/payments/{reference}").get_data(as_text=True)


def test_the_receipt_actions_are_one_menu_that_works_without_javascript(client, auth, fund, pay):
    reference, html = _paid_page(client, auth, fund, pay)
    menus = re.findall(r'<details class="receipt-menu"[^>]*>.*?</details>', html, re.S)
    assert len(menus) == 1, html
    menu = menus[0]
    assert re.search(r"<summary[^>]*>\s*Receipt\s*</summary>", menu)
    assert f'href="/payments/{reference}/receipt"' in menu and ">Print or view receipt<" in menu
    assert f'href="/payments/{reference}/receipt.pdf"' in menu and ">Download PDF receipt<" in menu
    outside = html.replace(menu, "")
    assert f"/payments/{reference}/receipt" not in outside
    assert "Print receipt" not in outside


def test_copy_buttons_say_what_they_copied(client, auth, fund, pay):
    _, html = _paid_page(client, auth, fund, pay)
    token_button = re.search(r'<button[^>]*data-copy="\d{20}"[^>]*>', html).group(0)
    assert 'data-copied="Token copied to the clipboard."' in token_button
    app_js = client.get("/static/js/app.js").get_data(as_text=True)
    assert "Token copied" not in app_js and 'getAttribute("data-copied")' in app_js


def test_without_the_web_share_api_the_token_can_be_sent_by_whatsapp_or_sms(client, auth, fund, pay):
    from urllib.parse import quote

    reference, html = _paid_page(client, auth, fund, pay)
    payment = db.session.scalar(db.select(Payment).where(Payment.reference == reference))
    text = quote(f"Token for meter {payment.meter_number}: {payment.token_groups}", safe="")
    fallback = re.search(r'<span class="share-fallback"[^>]*>.*?</span>', html, re.S).group(0)
    assert f'href="https://wa.me/?text={text}' in fallback and ">WhatsApp<" in fallback
    assert f'href="sms:?&amp;body={text}' in fallback and ">SMS<" in fallback
    assert "<script>" not in html.split("</head>", 1)[1]  # no inline script: the CSP forbids it


def test_the_payment_heading_stays_the_disco_when_the_payment_completes(client, auth, fund):
    from billvend.vending.models import SavedMeter

    user = make_user(balance_kobo=500_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    heading = re.compile(r'<h1 class="payment-title">([^<]*)</h1>')
    before = heading.search(client.get(f"/payments/{payment.reference}").get_data(as_text=True)).group(1)
    db.session.execute(db.update(Payment).where(Payment.id == payment.id).values(status="successful"))
    db.session.add(SavedMeter(user_id=user.id, service_id="ikeja-electric", meter_type="prepaid",
                              meter_number=payment.meter_number, customer_name="ADA OBI",
                              last_amount_kobo=100_000, last_phone="08031234567"))
    db.session.commit()
    after = heading.search(client.get(f"/payments/{payment.reference}").get_data(as_text=True)).group(1)
    assert before == after == "Electricity · Ikeja Electric (IKEDC)"


def test_the_waiting_words_stay_true_as_the_wait_grows(client, auth, app):
    from datetime import timedelta

    from billvend.platform.models import utcnow

    user = make_user(balance_kobo=500_000)
    payment = make_payment(user)
    auth.login(email=user.email)

    def page_after(seconds: int) -> str:
        db.session.execute(db.update(Payment).where(Payment.id == payment.id).values(
            status="vending", created_at=utcnow() - timedelta(seconds=seconds)))
        db.session.commit()
        return client.get(f"/payments/{payment.reference}").get_data(as_text=True)

    assert "usually takes a few seconds" in page_after(2)
    later = page_after(17)
    assert "usually takes a few seconds" not in later
    assert "Taking longer than usual" in later and "Waiting 0:17" in later
    slow = page_after(app.config["SLOW_PAYMENT_NOTICE_SECONDS"] + 5)
    assert "usually takes a few seconds" not in slow and "The disco is slow to answer" in slow


def test_sessions_are_listed_by_browser_and_system_not_the_raw_user_agent(client, auth):
    android = ("Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/120.0.0.0 Mobile Safari/537.36")
    client.environ_base["HTTP_USER_AGENT"] = android
    auth.signup()
    html = client.get("/account").get_data(as_text=True)
    sessions = html[html.index('data-testid="sessions"'):]
    assert "<strong>Chrome on Android</strong>" in sessions
    assert "Mozilla/5.0" not in sessions


def test_device_names(app):
    from billvend.web.useragents import device_name

    cases = {
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1": "Safari on iPhone",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36 Edg/120.0.0.0": "Edge on Windows",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) Gecko/20100101 Firefox/121.0": "Firefox on macOS",
        "python-requests/2.31": "Python Requests",
        "": "Unknown browser",
        None: "Unknown browser",
        "\x00<b>": "Unknown browser",
    }
    for ua, name in cases.items():
        assert device_name(ua) == name, ua


def test_the_landing_page_speaks_to_customers_not_accountants(client):
    html = client.get("/").get_data(as_text=True)
    assert "ledger" not in html.lower() and "double-entry" not in html.lower()
    assert "Every kobo accounted for" in html
