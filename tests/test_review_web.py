"""Review of the web tier: each defect test here first failed against the
integrated main branch (a 500, another user's data, a broken page), then
drove a fix; the few guards around a fix say so."""

from __future__ import annotations

import pytest

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
