"""The database round trips a request costs (issue 25): counted, never timed.

A signed-in page's session row, user and wallet come in one statement; an
unchanged session is written at most once a minute; the dashboard and the
status partial stay within a budget of statements."""

from __future__ import annotations

import contextlib

import pytest
import sqlalchemy as sa

from billvend.platform.extensions import db
from billvend.vending.models import Payment


@contextlib.contextmanager
def statements(app):
    """The SQL statements the app runs inside the block (list of strings)."""
    seen: list[str] = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    # As in a server, the request starts with an empty identity map: no
    # object the test holds may stand in for one the request must load.
    db.session.expunge_all()
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _writes(seen: list[str]) -> list[str]:
    return [s for s in seen if s.split(" ", 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]


def test_dashboard_loads_session_user_and_wallet_in_one_statement(app, client, customer, pay):
    assert pay().status_code == 303
    client.get("/")  # the session row exists and was touched just now
    with statements(app) as seen:
        response = client.get("/")
    assert response.status_code == 200 and "₦" in response.get_data(as_text=True)
    assert not any(s.startswith("SELECT users.") for s in seen), seen  # no separate user load
    assert not any(s.startswith("SELECT wallets.") for s in seen), seen  # nor wallet load
    # Session + user + wallet, the recent entries, payments in flight, "Buy again".
    assert len(seen) <= 4, seen
    assert _writes(seen) == []


def test_status_partial_of_a_final_payment_stays_within_its_budget(app, client, customer, pay):
    response = pay()
    reference = response.headers["Location"].rsplit("/", 1)[1]
    with app.app_context():
        status = db.session.scalar(sa.select(Payment.status).where(Payment.reference == reference))
    assert status == "successful"  # huey runs immediately in tests
    client.get("/")
    with statements(app) as seen:
        partial = client.get(f"/payments/{reference}/status", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and 'data-status="successful"' in partial.get_data(as_text=True)
    # Session + user + wallet, the payment with its events; no saved meter.
    assert len(seen) <= 2, seen
    assert _writes(seen) == []


def test_an_unchanged_session_is_written_once_a_minute(app, client, customer, monkeypatch):
    from billvend.accounts import sessions

    client.get("/")
    with statements(app) as seen:
        client.get("/")
    assert _writes(seen) == []
    # A minute later its idle deadline is pushed forward: one UPDATE.
    monkeypatch.setattr(sessions, "TOUCH_INTERVAL_SECONDS", 0)
    with statements(app) as seen:
        client.get("/")
    assert [s for s in _writes(seen) if s.startswith("UPDATE user_sessions")], seen


@pytest.mark.parametrize("path", ["/", "/bills/electricity"])
def test_a_changed_session_is_still_saved(app, client, customer, path):
    # A flash is session data: it must survive to the next page.
    from billvend.accounts import sessions

    with app.test_request_context():
        pass
    client.get(path)
    with client.session_transaction() as sess:
        sess["_flashes"] = [("info", "hello")]
    with statements(app) as seen:
        page = client.get(path)
    assert "hello" in page.get_data(as_text=True)
    assert [s for s in _writes(seen) if s.startswith("UPDATE user_sessions")], seen
    assert sessions.TOUCH_INTERVAL_SECONDS == 60
