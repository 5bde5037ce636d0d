"""Functional tests through the Flask test client, Huey in immediate mode."""

import re

import pytest
import sqlalchemy as sa

from billvend.vending import tasks
from billvend.platform.extensions import db
from billvend.funding.models import Funding
from billvend.vending.models import Payment
from billvend.accounts.models import User
from tests.conftest import form_tokens
from tests.helpers import assert_books_balance, make_payment


def wallet_balance(email="ada@example.com"):
    db.session.expire_all()
    user = db.session.scalar(sa.select(User).where(User.email == email))
    return user.wallet.balance_kobo


def test_landing_for_visitors(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"Buy electricity in seconds" in response.data


def test_signup_creates_user_and_wallet(client, auth):
    response = auth.signup()
    assert response.status_code == 303 and response.headers["Location"] == "/"
    user = db.session.scalar(sa.select(User).where(User.email == "ada@example.com"))
    assert user.wallet.balance_kobo == 0 and user.check_password("correct horse 1")
    assert user.password_hash != "correct horse 1"
    assert b"Wallet balance" in client.get("/").data


@pytest.mark.parametrize("data,message", [
    ({"email": "not-an-email", "password": "longenough", "confirm_password": "longenough"}, b"valid email"),
    ({"email": "b@example.com", "password": "short", "confirm_password": "short"}, b"at least 10 characters"),
    ({"email": "b@example.com", "password": "password123", "confirm_password": "password123"}, b"common password"),
    ({"email": "b@example.com", "password": "longenough", "confirm_password": "different"}, b"do not match"),
])
def test_signup_validation(client, auth, data, message):
    response = client.post("/signup", data=data | {"csrf_token": auth.csrf("/signup")})
    assert response.status_code == 422 and message in response.data
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_duplicate_signup(client, auth):
    """Signing up with a taken email never confirms that it is taken: a
    stranger hears a neutral refusal; the owner (right password) is logged in."""
    auth.signup()
    auth.logout()
    response = auth.signup(email="ADA@example.com", password="another long secret 9")
    assert response.status_code == 422
    assert b"already exists" not in response.data and b"could not create an account" in response.data
    again = auth.signup(email="ADA@example.com")
    assert again.status_code == 303 and client.get("/wallet/fund").status_code == 200
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1


def test_login_logout(client, auth):
    auth.signup()
    auth.logout()
    assert client.get("/wallet/fund").status_code == 302
    bad = auth.login(password="wrong password")
    assert bad.status_code == 422 and b"Wrong email or password" in bad.data
    assert auth.login().status_code == 303
    assert client.get("/wallet/fund").status_code == 200


def test_post_without_csrf_is_refused(client, auth):
    auth.signup()
    response = client.post("/wallet/fund", data={"amount": "5000", "idempotency_key": "x" * 20})
    assert response.status_code == 400 and b"CSRF" in response.data
    assert wallet_balance() == 0


def test_login_redirect_only_to_local_paths(client, auth):
    auth.signup()
    auth.logout()
    token = auth.csrf("/login")
    response = client.post("/login?next=https://evil.example/", data={
        "email": "ada@example.com", "password": "correct horse 1", "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_fund_wallet(client, auth, fund):
    auth.signup()
    response = fund("5,000.50")
    assert response.status_code == 303
    assert wallet_balance() == 500_050
    assert b"\xe2\x82\xa65,000.50" in client.get("/").data  # ₦5,000.50
    assert_books_balance()


@pytest.mark.parametrize("amount,message", [
    ("-100", b"positive amount"), ("0", b"greater than zero"), ("abc", b"in naira"),
    ("1.234", b"two decimal places"), ("99999999999", b"largest amount"), ("50", b"smallest amount"),
    ("", b"Enter an amount"),
])
def test_fund_bad_amounts(client, auth, fund, amount, message):
    auth.signup()
    response = fund(amount)
    assert response.status_code == 422 and message in response.data
    assert wallet_balance() == 0
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0


def test_fund_twice_with_one_key_funds_once(client, auth):
    auth.signup()
    data = form_tokens(client, "/wallet/fund") | {"amount": "1000"}
    first = client.post("/wallet/fund", data=data)
    second = client.post("/wallet/fund", data=data)
    # One funding, one checkout: the repeat is sent to the same checkout.
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    client.get(first.headers["Location"])
    client.get(second.headers["Location"])  # the callback again: no second credit
    assert wallet_balance() == 100_000
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 1
    conflict = client.post("/wallet/fund", data=data | {"amount": "2000"})
    assert conflict.status_code == 422 and b"different amount" in conflict.data
    assert wallet_balance() == 100_000


def test_sign_up_fund_pay_get_token(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    response = pay("1111111111111", "1500")
    assert response.status_code == 303
    reference = re.search(r"/payments/(\w+)$", response.headers["Location"]).group(1)
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    assert payment.status == "successful"
    assert len(payment.token) == 20 and payment.units_kwh
    assert payment.customer_name
    assert wallet_balance() == 350_000
    page = client.get(f"/payments/{reference}").get_data(as_text=True)
    assert payment.token_groups in page and "kWh" in page
    assert "hx-trigger" not in page  # final: no more polling
    history = client.get("/history").get_data(as_text=True)
    assert "Electricity" in history and "Wallet funding" in history
    assert_books_balance()


def test_failed_vend_is_refunded(app, client, auth, fund, pay):
    app.config["SIMULATOR_SUCCESS_RATE"] = 0.0
    auth.signup()
    fund("5000")
    refunded = 0
    for _ in range(6):
        response = pay("12345678901", "1000")
        reference = response.headers["Location"].rsplit("/", 1)[1]
        payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
        assert payment.status in {"reversed", "unknown"}
        if payment.status == "reversed":
            refunded += 1
            assert b"refunded to your wallet" in client.get(f"/payments/{reference}").data
    assert refunded >= 1
    unknown = db.session.scalar(sa.select(sa.func.count(Payment.id)).where(Payment.status == "unknown"))
    assert wallet_balance() == 500_000 - unknown * 100_000
    assert_books_balance()


def test_invalid_meter_vend_is_reversed_and_balance_restored(app, client, auth, fund):
    """A payment on the unknown meter that slips past verification (here made
    directly) is refused by the disco and refunded by the vend task."""
    auth.signup()
    fund("5000")
    user = db.session.scalar(sa.select(User))
    payment = make_payment(user, meter_number="0000000000000", amount_kobo=200_000)
    assert wallet_balance() == 300_000
    tasks.vend(payment.id)
    db.session.expire_all()
    assert db.session.get(Payment, payment.id).status == "reversed"
    assert wallet_balance() == 500_000
    assert_books_balance()


def test_invalid_meter_is_refused_before_any_debit(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    response = pay("0000000000000", "1000")
    assert response.status_code == 422 and b"not found" in response.data
    assert wallet_balance() == 500_000
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


def test_insufficient_funds(client, auth, fund, pay):
    auth.signup()
    fund("1000")
    response = pay("1111111111111", "1500")
    assert response.status_code == 422
    assert b"Your wallet balance is \xe2\x82\xa61,000.00" in response.data
    assert wallet_balance() == 100_000
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


@pytest.mark.parametrize("field,value,message", [
    ("amount", "-500", b"positive amount"), ("amount", "0", b"greater than zero"),
    ("amount", "lots", b"in naira"), ("amount", "600000", b"largest amount"),
    ("meter_number", "12ab", b"10 to 13 digits"), ("meter_number", "1" * 14, b"10 to 13 digits"),
    ("phone", "12345", b"Nigerian mobile number"), ("disco", "lagos-electric", b"Choose a disco"),
    ("meter_type", "smart", b"Not a valid choice"),
])
def test_pay_bad_input(client, auth, fund, pay, field, value, message):
    auth.signup()
    fund("5000")
    response = pay(**{field: value})
    assert response.status_code == 422 and message in response.data
    assert wallet_balance() == 500_000
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


def test_same_form_twice_makes_one_payment(client, auth, fund):
    auth.signup()
    fund("5000")
    data = form_tokens(client, "/bills/electricity") | {
        "disco": "eko-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "1000", "phone": "+2348031234567",
        "verified_meter": "eko-electric:prepaid:1111111111111"}
    first = client.post("/bills/electricity", data=data)
    second = client.post("/bills/electricity", data=data)
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 1
    assert wallet_balance() == 400_000
    conflict = client.post("/bills/electricity", data=data | {"amount": "2000"})
    assert conflict.status_code == 422 and b"different payment" in conflict.data
    assert wallet_balance() == 400_000


def test_other_users_payment_is_404(client, auth, fund, pay):
    auth.signup()
    fund("5000")
    reference = pay().headers["Location"].rsplit("/", 1)[1]
    auth.logout()
    auth.signup(email="mallory@example.com")
    assert client.get(f"/payments/{reference}").status_code == 404
    assert client.get(f"/payments/{reference}/status", headers={"HX-Request": "true"}).status_code == 404
    assert client.get("/payments/nonexistent").status_code == 404


def test_status_partial_polls_until_final(client, auth, fund):
    auth.signup()
    fund("5000")
    user = db.session.scalar(sa.select(User))
    payment = make_payment(user)  # pending: no worker ran
    partial = client.get(f"/payments/{payment.reference}/status", headers={"HX-Request": "true"})
    assert partial.status_code == 200
    html = partial.get_data(as_text=True)
    assert 'hx-trigger="load, every 10s"' in html and "Queued" in html and "<html" not in html
    assert f'hx-get="/payments/{payment.reference}/status?since=pending"' in html
    page = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert 'http-equiv="refresh"' in page  # works without JavaScript
    no_js = client.get(f"/payments/{payment.reference}/status")
    assert no_js.status_code == 302
    tasks.vend(payment.id)
    html = client.get(f"/payments/{payment.reference}/status", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "hx-trigger" not in html and "Your token" in html


def test_verify_meter_partial(client, auth):
    auth.signup()
    token = auth.csrf("/bills/electricity")
    ok = client.post("/bills/electricity/verify", headers={"HX-Request": "true", "X-CSRFToken": token},
                     data={"disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111"})
    assert ok.status_code == 200 and b"Customer:" in ok.data
    bad = client.post("/bills/electricity/verify", headers={"HX-Request": "true", "X-CSRFToken": token},
                      data={"disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "0000000000000"})
    assert b"Meter not found" in bad.data


def test_history_pagination_and_filter(app, client, auth, fund, pay):
    app.config["PAYMENTS_PER_PAGE"] = 3
    auth.signup()
    for _ in range(4):
        fund("1000")
    pay(amount="500")
    page1 = client.get("/history").get_data(as_text=True)
    assert "Page 1 of 2" in page1 and "Electricity" in page1  # newest first
    assert "Page 2 of 2" in client.get("/history?page=2").get_data(as_text=True)
    only_payments = client.get("/history?kind=bill_payment").get_data(as_text=True)
    assert "Electricity" in only_payments and "Wallet funding" not in only_payments
    assert client.get("/history?kind=bogus&page=99").status_code == 200


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok", "database": "ok", "queue": "ok"}


def test_unknown_page_is_styled_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and b"Page not found" in response.data
