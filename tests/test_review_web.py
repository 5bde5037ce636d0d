"""Review of the web tier: each defect test here first failed against the
integrated main branch (a 500, another user's data, a broken page), then
drove a fix; the few guards around a fix say so."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from billvend.extensions import db
from billvend.models import UserSession
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
    from billvend import funding

    funding.fund_wallet(admin, 500_000, "review-admin-own")
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
