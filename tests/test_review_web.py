"""Review of the web tier: each defect test here first failed against the
integrated main branch (a 500, another user's data, a broken page), then
drove a fix; the few guards around a fix say so."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billvend.platform.extensions import db
from billvend.accounts.models import UserSession
from tests.helpers import make_payment, make_user


@pytest.fixture
def customer(client, auth):
    user = make_user("ada@example.com", balance_kobo=1_000_000)
    auth.login()
    return user


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


# --- Payment pages and the second factor -------------------------------------------------------


def _admin_without_second_factor(auth):
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    auth.login(email="root@example.com")
    return admin


@pytest.mark.parametrize("suffix", ["", "/receipt", "/receipt.pdf", "/status"])
def test_an_admin_needs_the_second_factor_to_open_a_customers_payment(client, auth, suffix):
    """An admin signed in with the password only (or restored by a
    remember-me cookie) could read any customer's token, name, address and
    phone on /payments/<reference>, although every admin page needs the
    second factor. Now the page does not exist for them (404), as for any
    other user, until they give it."""
    owner = make_user("ada@example.com", balance_kobo=500_000)
    payment = make_payment(owner)
    admin = _admin_without_second_factor(auth)
    headers = {"HX-Request": "true"} if suffix == "/status" else {}
    response = auth.client.get(f"/payments/{payment.reference}{suffix}", headers=headers)
    assert response.status_code == 404
    assert (payment.token or "no token") not in response.get_data(as_text=True)

    auth.second_factor(admin)
    assert auth.client.get(f"/payments/{payment.reference}{suffix}", headers=headers).status_code == 200


def test_an_admin_without_the_second_factor_still_sees_their_own_payment(client, auth):
    admin = _admin_without_second_factor(auth)
    from billvend.funding import seed

    seed.fund_wallet(admin, 500_000, "review-admin-own")
    payment = make_payment(admin)
    assert auth.client.get(f"/payments/{payment.reference}").status_code == 200


# --- htmx requests after the session has ended -----------------------------------------------


def _end_all_sessions():
    with db.engine.begin() as conn:
        conn.execute(sa.delete(UserSession))


def test_a_status_poll_after_the_session_ended_sends_the_whole_page_to_login(client, customer):
    """A status poll whose session ended (logged out in another tab, "log
    out everywhere", idle expiry) got a 302 to /login; htmx follows it and
    swapped the whole login page into the payment's status panel (and then
    polled no more). Now htmx is told to load the login page as a page, and
    to come back to the payment page (not to the fragment) after login."""
    payment = make_payment(customer)
    _end_all_sessions()
    response = client.get(
        f"/payments/{payment.reference}/status?since=pending",
        headers={"HX-Request": "true",
                 "HX-Current-URL": f"http://localhost/payments/{payment.reference}"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == f"/login?next=/payments/{payment.reference}"
    assert response.get_data(as_text=True) == ""


@pytest.mark.parametrize("current", ["https://evil.example/x", "//evil.example/x", "not a url", ""])
def test_the_htmx_login_redirect_never_leaves_the_site(client, customer, current):
    payment = make_payment(customer)
    _end_all_sessions()
    response = client.get(f"/payments/{payment.reference}/status",
                          headers={"HX-Request": "true", "HX-Current-URL": current})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == f"/login?next=/payments/{payment.reference}/status"


def test_a_full_page_load_when_signed_out_still_redirects_to_login(client, customer):
    """Guard: only htmx requests get the HX-Redirect answer."""
    payment = make_payment(customer)
    _end_all_sessions()
    response = client.get(f"/payments/{payment.reference}")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


# --- Rate limits -------------------------------------------------------------------------------


@pytest.fixture
def strict_app(database_url):
    """The app with the production default limits (as tests/test_security.py)."""
    from billvend.platform.config import from_env
    from tests.conftest import base_config, fresh_app

    strict = {k: v for k, v in from_env({}).items()
              if k.startswith("RATELIMIT_") and k != "RATELIMIT_STORAGE_URI"}
    with fresh_app(base_config(database_url) | strict) as app:
        yield app


def _signup_as(app, email: str, password: str, address: str):
    from tests.conftest import Auth

    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return Auth(client).signup(email=email, password=password)


def test_signup_is_no_way_around_the_per_account_login_limit(strict_app):
    """/signup with an existing email and its right password signs its owner
    in, so it answers "is this the password?" like /login does, but only the
    per-address signup limit applied: guesses spread over many addresses
    were never slowed. Now a wrong password there counts against the
    account's failed-login limit, as on /login."""
    owner_password = "violet tractor window 42"
    owner = make_user("ada@example.com")
    owner.set_password(owner_password)
    db.session.commit()
    codes = [_signup_as(strict_app, "ada@example.com", f"purple engine {i} harbour", f"10.1.{i}.1").status_code
             for i in range(12)]
    assert codes[:10] == [422] * 10 and codes[10:] == [429, 429]
    # A stranger with the right password is slowed too, on both doors.
    assert _signup_as(strict_app, "ada@example.com", owner_password, "10.9.9.9").status_code == 429
    from tests.conftest import Auth

    stranger = strict_app.test_client()
    stranger.environ_base["REMOTE_ADDR"] = "10.9.9.8"
    assert Auth(stranger).login(password=owner_password).status_code == 429


def test_new_signups_do_not_count_against_an_account(strict_app):
    """Guard: only a wrong password for an existing account counts."""
    codes = [_signup_as(strict_app, "new@example.com", "short", f"10.2.{i}.1").status_code
             for i in range(12)]
    assert codes == [422] * 12
    assert _signup_as(strict_app, "new@example.com", "violet tractor window 42", "10.2.99.1").status_code == 303


# --- Names with control characters -------------------------------------------------------------


def _saved_meter(user):
    from billvend.vending import journey

    payment = make_payment(user)
    journey.save_meter(payment.id)
    db.session.commit()
    from billvend.vending.models import SavedMeter

    return db.session.scalar(sa.select(SavedMeter).where(SavedMeter.user_id == user.id))


@pytest.mark.parametrize("name", ["Ada\x00Obi", "Ada\x1b[31mObi", "Ada\u202eObi"])
def test_names_with_control_characters_get_the_form_again(client, auth, name):
    """A NUL in a full name or a meter nickname was a 400 error page on
    PostgreSQL (the form and its other fields lost) and was stored as is on
    SQLite, then drawn into statements and receipts; terminal escapes and
    bidirectional overrides (which make "Ada Obi" display reversed) were
    stored on both. Now each is a form error, and nothing changes."""
    from billvend.accounts.models import User

    password = "violet tractor window 42"
    signup = client.post("/signup", data={"email": "obi@example.com", "password": password,
                                          "confirm_password": password, "full_name": name,
                                          "csrf_token": auth.csrf("/signup")})
    assert signup.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0

    user = make_user("ada@example.com", balance_kobo=500_000)
    auth.login()
    profile = client.post("/account", data={"full_name": name, "phone": "",
                                            "csrf_token": auth.csrf("/account")})
    prompt = client.post("/profile-prompt", data={"full_name": name, "phone": "08031234567",
                                                  "csrf_token": auth.csrf("/account")})
    meter = _saved_meter(user)
    rename = client.post(f"/meters/{meter.id}/rename", data={
        "nickname": name, "csrf_token": auth.csrf(f"/meters/{meter.id}/rename")})
    assert (profile.status_code, prompt.status_code, rename.status_code) == (422, 422, 422)
    assert "Use letters, numbers, spaces and punctuation only." in profile.get_data(as_text=True)
    db.session.expire_all()
    stored = db.session.get(User, user.id)
    assert stored.full_name is None and stored.phone is None
    assert db.session.get(type(meter), meter.id).nickname is None


def test_ordinary_names_with_accents_and_apostrophes_are_kept(client, auth):
    """Guard: real names (accents, apostrophes, hyphens, emoji) still save."""
    from billvend.accounts.models import User

    user = make_user("ada@example.com")
    auth.login()
    name = "Adaọbị O'Neil-Ṣàngó 😀"
    response = client.post("/account", data={"full_name": name, "phone": "",
                                             "csrf_token": auth.csrf("/account")})
    assert response.status_code == 303
    db.session.expire_all()
    assert db.session.get(User, user.id).full_name == name


# --- Without JavaScript ------------------------------------------------------------------------


@pytest.mark.parametrize("age_seconds, refresh", [(5, "3"), (60, "3"), (600, "15"), (7200, "60")])
def test_without_javascript_the_refresh_backs_off_like_the_poll(client, customer, age_seconds, refresh):
    """Without JavaScript the payment page reloaded itself every 3 s for as
    long as the payment was not final (an `unknown` payment can wait hours
    for the disco): a whole page every 3 s on a phone's data, unbounded,
    while the htmx poll backs off to 15 s and then 60 s. Now the refresh
    follows the poll's schedule."""
    from datetime import timedelta

    from billvend.vending.models import Payment
    from billvend.platform.models import utcnow

    payment = make_payment(customer)
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(
        created_at=utcnow() - timedelta(seconds=age_seconds)))
    db.session.commit()
    page = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert f'<meta http-equiv="refresh" content="{refresh}">' in page
