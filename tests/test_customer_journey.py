"""The customer journey (issue 16): review before debit, delivery details,
saved meters, the once-asked phone, history search and statements."""

from __future__ import annotations

import csv
import io
import re

import pytest
import sqlalchemy as sa

from billvend.vending import tasks
from billvend.platform.extensions import db
from billvend.vending.models import Payment, SavedMeter
from billvend.accounts.models import User
from billvend.vending.providers import outcomes
from tests.conftest import CSRF_RE, form_tokens, verified_meter
from tests.helpers import assert_books_balance, make_payment, make_user


def balance() -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).order_by(User.id)).wallet.balance_kobo


def payment_count() -> int:
    return db.session.scalar(sa.select(sa.func.count(Payment.id)))


def hidden_fields(html: str) -> dict[str, str]:
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*type="hidden"[^>]*value="([^"]*)"', html))
    fields |= dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    return fields


def pay_form(client, **fields) -> dict:
    return form_tokens(client, "/bills/electricity") | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "2000", "phone": "08031234567"} | fields


# -- review before debit --------------------------------------------------------

def test_our_page_always_reviews_before_the_debit_even_after_the_name_was_shown(client, auth, fund):
    """With JavaScript the htmx check has shown the name; the submit still
    gets the one summary (disco, meter, name, address, type, amount, no fee,
    total, phone) and only its "Pay ₦…" button debits."""
    auth.signup()
    fund("5000")
    partial = client.post("/bills/electricity/verify", headers={"HX-Request": "true",
                          "X-CSRFToken": auth.csrf("/bills/electricity")},
                          data={"disco": "ikeja-electric", "meter_type": "prepaid",
                                "meter_number": "1111111111111"}).get_data(as_text=True)
    name, address = outcomes.customer_for("1111111111111", "ikeja-electric")
    assert name in partial and "verified_meter" not in partial
    review = client.post("/bills/electricity", data=pay_form(client))
    assert review.status_code == 200 and payment_count() == 0 and balance() == 500_000
    html = review.get_data(as_text=True)
    summary = html[html.index('data-testid="review"'):html.index("</dl>")]
    for text in ("Ikeja Electric (IKEDC)", "1111111111111", "Prepaid", name, address, "₦2,000.00",
                 "No fee", "08031234567"):
        assert text in summary, text
    assert re.search(r'data-testid="total">₦2,000.00<', html)
    assert re.search(r">Pay ₦2,000.00</button>", html)
    paid = client.post("/bills/electricity", data=hidden_fields(html))
    assert paid.status_code == 303 and payment_count() == 1 and balance() == 300_000
    assert_books_balance()


def test_a_client_posting_only_the_documented_fields_is_paid_at_once(client, auth, fund):
    auth.signup()
    fund("5000")
    data = pay_form(client)
    data.pop("confirm_meter")
    response = client.post("/bills/electricity", data=data)
    assert response.status_code == 303 and payment_count() == 1


def test_the_meters_minimum_is_shown_and_enforced(client, auth, fund):
    auth.signup()
    fund("5000")
    partial = client.post("/bills/electricity/verify", headers={"X-CSRFToken": auth.csrf("/bills/electricity")},
                          data={"disco": "abuja-electric", "meter_type": "prepaid",
                                "meter_number": "1111111111111"}).get_data(as_text=True)
    assert "Smallest purchase for this meter: ₦1,000.00" in partial
    refused = client.post("/bills/electricity", data=pay_form(client, disco="abuja-electric", amount="600"))
    assert refused.status_code == 422 and "smallest amount for this meter is ₦1,000.00" in refused.get_data(as_text=True)
    assert payment_count() == 0


def test_quick_amount_without_javascript_becomes_the_amount(client, auth, fund):
    auth.signup()
    fund("20000")
    html = client.get("/bills/electricity").get_data(as_text=True)
    for label in ("₦1,000", "₦2,000", "₦5,000", "₦10,000"):
        assert label in html
    assert "No fee" in html
    review = client.post("/bills/electricity", data=pay_form(client, amount="", quick_amount="5000"))
    assert review.status_code == 200 and ">Pay ₦5,000.00</button>" in review.get_data(as_text=True)
    # A typed amount wins over a chip.
    review = client.post("/bills/electricity", data=pay_form(client, amount="3000", quick_amount="5000"))
    assert ">Pay ₦3,000.00</button>" in review.get_data(as_text=True)


def test_wrong_meter_type_is_one_error_with_a_switch_that_works_without_javascript(client, auth, fund):
    auth.signup()
    fund("5000")
    wrong = client.post("/bills/electricity", data=pay_form(client, meter_number="1010101010101"))
    html = wrong.get_data(as_text=True)
    assert wrong.status_code == 422 and payment_count() == 0
    assert html.count("this is a postpaid meter") == 1  # each error once
    assert 'name="switch_meter_type" value="postpaid"' in html
    switched = client.post("/bills/electricity", data=pay_form(
        client, meter_number="1010101010101", switch_meter_type="postpaid"))
    html = switched.get_data(as_text=True)
    assert switched.status_code == 200 and payment_count() == 0
    assert re.search(r'<input checked[^>]*value="postpaid"|value="postpaid"[^>]*checked', html)
    assert 'data-testid="customer"' in html and "switch_meter_type" not in html


def test_invalid_meter_error_is_shown_once(client, auth, fund):
    auth.signup()
    fund("5000")
    html = client.post("/bills/electricity", data=pay_form(client, meter_number="0000000000000")).get_data(as_text=True)
    assert html.count('role="alert"') == 1 and "Meter number not found" in html


def test_inline_hints_for_a_number_that_cannot_be_a_meter(client, auth):
    auth.signup()
    headers = {"X-CSRFToken": auth.csrf("/bills/electricity")}

    def hint(number):
        return client.post("/bills/electricity/verify", headers=headers, data={
            "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": number}).get_data(as_text=True)

    assert "digits only" in hint("12345abc")
    assert "10 to 13 digits (5 so far)" in hint("12345")
    assert "has 10 to 13" in hint("12345678901234")


# -- the token first, honest waiting ------------------------------------------

def test_delivery_details_kcts_debt_tariff_and_the_discos_reference_are_kept_and_shown(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    reference = pay(outcomes.KCT_METER, "2000").headers["Location"].rsplit("/", 1)[1]
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    assert payment.status == "successful"
    assert payment.debt_kobo == 350_00 and payment.tariff
    assert re.fullmatch(r"\d{20}", payment.kct1) and re.fullmatch(r"\d{20}", payment.kct2)
    assert payment.exchange_reference == outcomes.receipt_reference_for(reference)
    assert payment.units_kwh == outcomes.units_kwh_for(2000_00 - 350_00)
    html = client.get(f"/payments/{reference}").get_data(as_text=True)
    for text in (payment.token_groups, payment.kct_groups[0], payment.kct_groups[1], "₦350.00",
                 payment.tariff, payment.exchange_reference, "How to load your token", "key change"):
        assert text in html, text
    # KCTs come first in the loading steps.
    steps = html[html.index('data-testid="token-help"'):]
    assert steps.index(payment.kct_groups[0]) < steps.index("type the 20 digits")


def test_slow_payment_says_so_then_gives_the_support_contact(app, client, auth, fund):
    auth.signup()
    fund("5000")
    payment = make_payment(db.session.scalar(sa.select(User)))  # pending: no worker ran
    db.session.execute(sa.update(Payment).values(created_at=payment.created_at.replace(year=2020)))
    db.session.commit()
    app.config["UNKNOWN_ALERT_AGE_SECONDS"] = 10**12
    html = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert "The disco is slow to answer" in html and "automatic refund" in html
    assert "data-testid=\"slow-notice\"" in html
    assert 'data-testid="support"' not in html
    app.config["UNKNOWN_ALERT_AGE_SECONDS"] = 60
    html = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert app.config["SUPPORT_CONTACT"] in html and payment.reference in html
    assert 'data-testid="support"' in html


def test_a_fresh_payment_shows_the_elapsed_time_but_no_slow_notice(client, auth, fund):
    auth.signup()
    fund("5000")
    payment = make_payment(db.session.scalar(sa.select(User)))
    html = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert re.search(r'data-testid="elapsed">Waiting 0:0\d<', html)
    assert "slow-notice" not in html


# -- saved meters ---------------------------------------------------------------

def test_a_meter_is_saved_on_success_only(client, auth, fund, pay):
    auth.signup()
    fund("20000")
    user = db.session.scalar(sa.select(User))
    failed = make_payment(user, meter_number=outcomes.NO_RESPONSE_METER)
    tasks.vend(failed.id)
    tasks.requery(failed.id, force=True)
    db.session.expire_all()
    assert db.session.get(Payment, failed.id).status == "reversed"
    assert db.session.scalar(sa.select(sa.func.count(SavedMeter.id))) == 0
    pay("1111111111111", "1500", phone="08099999999")
    pay("1111111111111", "2500", phone="08031234567")
    saved = db.session.scalars(sa.select(SavedMeter)).all()
    assert len(saved) == 1
    meter = saved[0]
    assert (meter.service_id, meter.meter_type, meter.meter_number) == ("ikeja-electric", "prepaid", "1111111111111")
    assert meter.customer_name == outcomes.customer_for("1111111111111", "ikeja-electric")[0]
    assert (meter.last_amount_kobo, meter.last_phone, meter.purchase_count) == (2500_00, "+2348031234567", 2)
    assert_books_balance()


def test_saved_meters_rename_remove_and_buy_again(client, auth, fund, pay):
    auth.signup()
    fund("20000")
    pay("1111111111111", "1500")
    meter = db.session.scalar(sa.select(SavedMeter))
    page = client.get("/meters").get_data(as_text=True)
    assert "1111111111111" in page and meter.customer_name in page

    rename = client.post(f"/meters/{meter.id}/rename", data={
        "nickname": "Mum's flat", "csrf_token": auth.csrf(f"/meters/{meter.id}/rename")})
    assert rename.status_code == 303
    db.session.expire_all()
    assert db.session.get(SavedMeter, meter.id).nickname == "Mum's flat"
    assert "Mum&#39;s flat" in client.get("/meters").get_data(as_text=True)
    assert "Mum&#39;s flat" in client.get("/history").get_data(as_text=True)
    too_long = client.post(f"/meters/{meter.id}/rename", data={
        "nickname": "x" * 61, "csrf_token": auth.csrf(f"/meters/{meter.id}/rename")})
    assert too_long.status_code == 422

    # Buy again: the form comes pre-filled with disco, type, number, last amount and phone.
    form = client.get(f"/bills/electricity?meter={meter.id}").get_data(as_text=True)
    assert 'value="1111111111111"' in form and 'value="1500"' in form and 'value="08031234567"' in form
    assert re.search(r'<option selected value="ikeja-electric"|value="ikeja-electric" selected', form)
    dashboard = client.get("/").get_data(as_text=True)
    assert f"/bills/electricity?meter={meter.id}" in dashboard and "Buy again" in dashboard

    confirm = client.get(f"/meters/{meter.id}/remove")
    assert confirm.status_code == 200 and b"Remove meter" in confirm.data
    removed = client.post(f"/meters/{meter.id}/remove", data={"csrf_token": auth.csrf(f"/meters/{meter.id}/remove")})
    assert removed.status_code == 303
    assert db.session.scalar(sa.select(sa.func.count(SavedMeter.id))) == 0
    assert payment_count() == 1  # the payment stays


def test_another_customers_meter_is_a_404(client, auth, fund, pay):
    auth.signup("owner@example.com")
    fund("5000")
    pay("1111111111111", "1500")
    meter = db.session.scalar(sa.select(SavedMeter))
    auth.logout()
    auth.signup("other@example.com")
    csrf = auth.csrf("/")
    assert client.get(f"/meters/{meter.id}/rename").status_code == 404
    assert client.post(f"/meters/{meter.id}/rename", data={"nickname": "mine", "csrf_token": csrf}).status_code == 404
    assert client.get(f"/meters/{meter.id}/remove").status_code == 404
    assert client.post(f"/meters/{meter.id}/remove", data={"csrf_token": csrf}).status_code == 404
    assert client.get(f"/bills/electricity?meter={meter.id}").status_code == 404
    assert "1111111111111" not in client.get("/meters").get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(SavedMeter, meter.id).nickname is None


# -- signup and the once-asked phone ------------------------------------------------

def test_signup_takes_full_name_and_phone_and_the_phone_prefills_payments(client, auth):
    response = client.post("/signup", data={
        "email": "ngozi@example.com", "full_name": "Ngozi Eze", "phone": "+234 803 555 1234",
        "password": "correct horse 1", "confirm_password": "correct horse 1",
        "csrf_token": auth.csrf("/signup")})
    assert response.status_code == 303
    user = db.session.scalar(sa.select(User))
    assert (user.full_name, user.phone) == ("Ngozi Eze", "+2348035551234")
    assert 'value="08035551234"' in client.get("/bills/electricity").get_data(as_text=True)
    assert "Add your phone number" not in client.get("/").get_data(as_text=True)


def test_signup_refuses_a_bad_phone(client, auth):
    response = client.post("/signup", data={
        "email": "x@example.com", "full_name": "X", "phone": "12345",
        "password": "correct horse 1", "confirm_password": "correct horse 1",
        "csrf_token": auth.csrf("/signup")})
    assert response.status_code == 422 and b"Nigerian mobile number" in response.data
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_an_account_without_a_phone_is_asked_once(client, auth):
    auth.signup()  # email and passwords only
    assert "Add your phone number" in client.get("/").get_data(as_text=True)
    csrf = auth.csrf("/")
    later = client.post("/profile-prompt", data={"later": "Not now", "csrf_token": csrf})
    assert later.status_code == 303
    assert "Add your phone number" not in client.get("/").get_data(as_text=True)
    bad = client.post("/profile-prompt", data={"phone": "999", "csrf_token": csrf})
    assert bad.status_code == 422
    saved = client.post("/profile-prompt", data={"full_name": "Ada Obi", "phone": "08031112222",
                                                  "csrf_token": csrf})
    assert saved.status_code == 303
    user = db.session.scalar(sa.select(User))
    db.session.refresh(user)
    assert (user.full_name, user.phone) == ("Ada Obi", "+2348031112222")


# -- history --------------------------------------------------------------------------

def test_history_finds_a_payment_by_token_meter_and_reference(client, auth, fund, pay):
    auth.signup()
    fund("20000")
    first = pay("1111111111111", "1500").headers["Location"].rsplit("/", 1)[1]
    pay("1010101010101", "1200", meter_type="postpaid")
    token = db.session.scalar(sa.select(Payment.token).where(Payment.reference == first))
    grouped = "-".join(token[i:i + 4] for i in range(0, 20, 4))

    def rows(query):
        html = client.get("/history", query_string=query).get_data(as_text=True)
        return html.count('data-testid="statement-row"'), html

    count, html = rows({"q": grouped})
    assert count == 1 and first in html and grouped in html
    assert rows({"q": token})[0] == 1
    assert rows({"q": "1010101010101"})[0] == 1
    assert rows({"q": first})[0] == 1
    assert rows({"q": "99999999999"})[0] == 0
    # Status filter in customer words; date range (Lagos days).
    assert rows({"status": "done"})[0] == 2
    assert rows({"status": "refunded"})[0] == 0
    assert rows({"date_from": "2000-01-01", "date_to": "2000-01-02"})[0] == 0
    assert rows({"date_from": "2000-01-01"})[0] == 3
    bad = client.get("/history", query_string={"date_from": "2030-01-02", "date_to": "2030-01-01"})
    assert bad.status_code == 200 and b"before the start date" in bad.data
    # The row shows disco, name, token, and the status in words.
    _count, html = rows({})
    assert "Ikeja Electric (IKEDC)" in html and "Token issued" in html and grouped in html
    assert "vending" not in html.replace("badge-vending", "")


def test_statement_downloads(client, auth, fund, pay):
    auth.signup()
    fund("20000")
    reference = pay("1111111111111", "1500").headers["Location"].rsplit("/", 1)[1]
    token = db.session.scalar(sa.select(Payment.token).where(Payment.reference == reference))
    response = client.get("/history/statement.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert table[0][0] == "Date (Lagos)" and len(table) == 3
    payment_row = next(r for r in table if r[6] == reference)
    assert payment_row[1] == "Electricity" and payment_row[3] == "1111111111111"
    assert payment_row[7].replace("-", "") == token and payment_row[9] == "Token issued"
    assert payment_row[10] == "-1500.00"
    filtered = client.get("/history/statement.csv?kind=funding").get_data(as_text=True)
    assert reference not in filtered and len(filtered.strip().splitlines()) == 2

    pdf = client.get("/history/statement.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    receipt = client.get(f"/payments/{reference}/receipt.pdf")
    assert receipt.status_code == 200 and receipt.data.startswith(b"%PDF")


def test_pdf_receipt_is_owner_only(client, auth, fund, pay):
    auth.signup("owner@example.com")
    fund("5000")
    reference = pay("1111111111111", "1500").headers["Location"].rsplit("/", 1)[1]
    auth.logout()
    auth.signup("other@example.com")
    assert client.get(f"/payments/{reference}/receipt.pdf").status_code == 404


# -- admin polish -----------------------------------------------------------------------

def test_admin_refund_asks_for_confirmation_and_lists_use_display_names(client, auth):
    from tests.test_admin import PASSWORD, make_admin, to_status

    customer = make_user("ngozi@example.com", balance_kobo=500_000)
    payment = to_status(make_payment(customer), "failed")
    pending = make_payment(customer)
    admin = make_admin()
    assert auth.login("root@example.com", PASSWORD).status_code == 303
    auth.second_factor(admin)

    listing = client.get("/admin/payments").get_data(as_text=True)
    rows = listing[listing.index("<tbody>"):]
    assert "Ikeja Electric (IKEDC)" in rows and ">ikeja-electric<" not in rows
    assert "Failed, not refunded yet" in rows and ">failed<" not in rows and 'data-label="Status"' in rows
    assert "sweep" in client.get(f"/admin/payments/{pending.reference}").get_data(as_text=True)

    page = client.get(f"/admin/payments/{payment.reference}").get_data(as_text=True)
    assert re.search(r'class="button small danger-outline">Refund ₦1,000.00…<', page)
    csrf = re.search(r'id="refund-csrf_token" name="refund-csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    form = {"refund-csrf_token": csrf, "refund-reason": "Disco confirmed failure", "refund-review": "1"}
    confirm = client.post(f"/admin/payments/{payment.reference}/refund", data=form)
    html = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "This cannot be undone" in html and "Yes, refund ₦1,000.00" in html
    db.session.expire_all()
    assert db.session.get(Payment, payment.id).status == "failed"  # nothing yet
    done = client.post(f"/admin/payments/{payment.reference}/refund", data=form | {"refund-confirmed": "1"})
    assert done.status_code == 303
    db.session.expire_all()
    assert db.session.get(Payment, payment.id).status == "reversed"
    assert_books_balance()


@pytest.mark.parametrize("cell", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)",
                                  "\t=cmd|' /C calc'!A0", "\r=1+1"])
def test_csv_cells_from_outside_never_start_a_formula(cell):
    """OWASP's CSV injection list: = + - @, tab and carriage return. One
    function serves the customer statement and the admin export."""
    from billvend.web.admin import routes as admin_routes
    from billvend.web.statements import csv_safe

    assert csv_safe(cell) == "'" + cell
    assert admin_routes.csv_safe is csv_safe
    assert csv_safe("Ada Obi") == "Ada Obi" and csv_safe(None) == ""


# --- Issue 20, item 5: a late token never reaches the customer ------------------


def _pdf_text(data: bytes) -> str:
    """The text of a PDF's (Flate-compressed) content streams."""
    import zlib

    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            text.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            text.append(stream.decode("latin-1"))
    return "\n".join(text)


def _late_delivery(customer: User, status: str, token: str) -> Payment:
    """A payment the provider reported delivered after it became ``status``
    (``failed``: the refund is blocked; ``reversed``: already refunded)."""
    from billvend.vending import lifecycle as payments
    from billvend.vending.providers.base import VendResult

    payment = make_payment(customer, amount_kobo=100_000)
    assert payments.claim(payment.id)
    assert payments.transition(payment.id, "vending", "failed", code="NOT_FOUND", message="VTpass 015")
    db.session.commit()
    if status == "reversed":
        assert payments.reverse_payment(payment.id)
    payments.apply_result(payment.id, "vending", VendResult(
        "delivered", code="delivered", token=token, units_kwh="4.5", receipt_reference="EXRLATE1",
        exchange_reference="EXRLATE1", kct1="1" * 20, kct2="2" * 20))
    db.session.expire_all()
    return db.session.get(Payment, payment.id)


@pytest.mark.parametrize("status", ["reversed", "failed"])
def test_a_late_token_never_reaches_the_customer(client, auth, status):
    """The provider reported the token after the payment failed or was
    refunded: the customer's payment page, status partial, receipt (HTML and
    PDF), history search and statement (CSV and PDF) never show it; the
    admin's payment page does."""
    auth.signup()
    customer = db.session.scalar(sa.select(User).where(User.email == "ada@example.com"))
    from billvend.funding import seed

    seed.fund_wallet(customer, 500_000, "fund-late-1")
    token = "73194682051937460285"
    payment = _late_delivery(customer, status, token)
    assert payment.status == status and payment.needs_attention
    grouped = "-".join(token[i:i + 4] for i in range(0, 20, 4))
    spellings = (token, grouped, " ".join(token[i:i + 4] for i in range(0, 20, 4)))
    ref = payment.reference
    pages = {
        "payment": client.get(f"/payments/{ref}"),
        "status": client.get(f"/payments/{ref}/status", headers={"HX-Request": "true"}),
        "receipt": client.get(f"/payments/{ref}/receipt"),
        "history": client.get("/history"),
        "statement.csv": client.get("/history/statement.csv"),
    }
    for name, response in pages.items():
        assert response.status_code == 200, name
        body = response.get_data(as_text=True)
        assert not any(s in body for s in spellings), f"the late token is on the customer's {name}"
        assert "EXRLATE1" not in body, f"the late delivery's reference is on the customer's {name}"
        assert "1111-1111-1111-1111-1111" not in body, f"a key-change token is on the customer's {name}"
    for query in (token, grouped, "EXRLATE1"):  # searching by the late proof finds nothing
        search = client.get("/history", query_string={"q": query})
        assert search.status_code == 200 and ref not in search.get_data(as_text=True), query
        assert 'data-testid="statement-row"' not in search.get_data(as_text=True), query
        assert ref not in client.get("/history/statement.csv", query_string={"q": query}).get_data(as_text=True)
    for path in (f"/payments/{ref}/receipt.pdf", "/history/statement.pdf"):
        text = _pdf_text(client.get(path).data)
        assert not any(s in text for s in spellings), f"the late token is in {path}"
    statement = list(csv.reader(io.StringIO(pages["statement.csv"].get_data(as_text=True))))
    assert any(ref in row for row in statement)  # the payment is listed, without its token

    from billvend.accounts.models import User as UserModel

    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    auth.logout()
    auth.login("root@example.com")
    auth.second_factor(db.session.get(UserModel, admin.id))
    admin_page = client.get(f"/admin/payments/{ref}").get_data(as_text=True)
    assert grouped in admin_page


def test_the_review_says_the_token_goes_to_the_phone_by_sms_and_to_the_address(client, auth, fund):
    """Issue 23: the token SMS exists, so the review says where the token is
    sent (the "no SMS is sent yet" wording of issue 21 is gone)."""
    auth.signup()
    fund("5000")
    html = client.post("/bills/electricity", data=pay_form(client)).get_data(as_text=True)
    summary = html[html.index('data-testid="review"'):html.index("</dl>")]
    assert re.search(r"<dt>Phone</dt><dd>08031234567", summary)
    assert "We send your token to this phone by SMS and to ada@example.com by email" in summary
    assert "For the disco's record of this purchase" not in summary
    assert "Your token appears on the next page" in html


# --- Statement filters -----------------------------------------------------------------------


@pytest.mark.parametrize("query", ["date_from=0001-01-01", "date_to=9999-12-31",
                                   "date_from=9999-12-31&date_to=9999-12-31", "date_from=1899-12-31"])
@pytest.mark.parametrize("path", ["/history", "/history/statement.csv", "/history/statement.pdf"])
def test_history_dates_beyond_any_statement_get_a_message_not_an_error(client, customer, path, query):
    """``date_from=0001-01-01`` was a 500 (its Lagos midnight cannot be turned
    into UTC); ``date_to=9999-12-31`` the generic 400 page. Now the history
    page shows the filter form with a message, and the downloads are served
    unfiltered by the bad date, like any other invalid filter."""
    make_payment(customer)
    response = client.get(f"{path}?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    if path == "/history":
        assert "Pick a date from 2000 to 2100." in response.get_data(as_text=True)
