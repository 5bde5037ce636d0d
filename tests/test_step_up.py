"""Step-up before money leaves (issue 24): ``billvend.web.security.step_up_required``
on its first real page, ``GET /wallet/withdraw`` (the withdrawals' entry).

Refused without a password typed in the last 10 minutes (to
``/account/confirm`` and back); refused, with the time money can leave
again, for 24 h after a phone change, a password reset or an email change
(also with a fresh password, and before the password is asked); passes
otherwise, and once the 24 h are over."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask.sessions import session_json_serializer

from billvend.accounts import sessions
from billvend.accounts.models import SecurityEvent, User, UserSession
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from tests.conftest import CSRF_RE
from tests.helpers import make_user

COMING = "Withdrawals are coming"


def page_text(response) -> str:
    return " ".join(response.get_data(as_text=True).split())


def age_password_entry(user_id: int, seconds: float) -> None:
    """Make every session of ``user_id`` say its password was typed
    ``seconds`` ago (what 10 minutes of waiting would do)."""
    db.session.rollback()
    for row in db.session.scalars(sa.select(UserSession).where(UserSession.user_id == user_id)):
        data = session_json_serializer.loads(row.data)
        data[sessions.FRESH_AT_KEY] = time.time() - seconds
        row.data = session_json_serializer.dumps(data)
    db.session.commit()


def add_event(user_id: int, kind: str, age: timedelta = timedelta(0)) -> None:
    db.session.add(SecurityEvent(user_id=user_id, kind=kind, created_at=utcnow() - age))
    db.session.commit()


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    return match.group(1) or match.group(2)


@pytest.fixture
def ada(client, auth):
    user = make_user("ada@example.com")
    user.phone = "+2348031234567"
    db.session.commit()
    assert auth.login().status_code == 303
    return user


def test_a_password_typed_just_now_passes(client, ada):
    response = client.get("/wallet/withdraw")
    assert response.status_code == 200 and COMING in page_text(response)


def test_a_password_older_than_ten_minutes_goes_to_confirm_and_back(client, ada):
    age_password_entry(ada.id, 9 * 60)
    assert client.get("/wallet/withdraw").status_code == 200
    age_password_entry(ada.id, 10 * 60 + 1)
    refused = client.get("/wallet/withdraw")
    assert refused.status_code == 303
    assert refused.headers["Location"].startswith("/account/confirm?next=/wallet/withdraw")
    wrong = client.post(refused.headers["Location"], data={"password": "not my password",
                                                            "csrf_token": csrf_of(client, "/account/confirm")})
    assert wrong.status_code == 422 and client.get("/wallet/withdraw").status_code == 303
    confirmed = client.post(refused.headers["Location"], data={"password": "correct horse 1",
                                                                "csrf_token": csrf_of(client, "/account/confirm")})
    assert confirmed.status_code == 303 and confirmed.headers["Location"].startswith("/wallet/withdraw")
    assert COMING in page_text(client.get(confirmed.headers["Location"]))


def test_a_session_restored_from_keep_me_signed_in_must_type_the_password(app, client):
    make_user("ada@example.com")
    response = client.post("/login", data={"email": "ada@example.com", "password": "correct horse 1",
                                           "remember": "y", "csrf_token": csrf_of(client, "/login")})
    assert response.status_code == 303
    client.delete_cookie(app.config["SESSION_COOKIE_NAME"])  # the browser was closed
    assert client.get("/").status_code == 200  # signed in again from the remember cookie
    refused = client.get("/wallet/withdraw")
    assert refused.status_code == 303 and refused.headers["Location"].startswith("/account/confirm")


@pytest.mark.parametrize("kind, words", [
    (sessions.PHONE_CHANGED, "your phone number was changed"),
    (sessions.PASSWORD_RESET, "your password was reset"),
    (sessions.EMAIL_CHANGED, "your email address was changed"),
])
def test_a_change_in_the_last_24_hours_holds_money_and_says_until_when(client, ada, kind, words):
    add_event(ada.id, kind, age=timedelta(hours=3))
    refused = client.get("/wallet/withdraw")
    text = page_text(refused)
    assert refused.status_code == 403 and COMING not in text
    assert words in text
    db.session.rollback()
    since = db.session.scalar(sa.select(SecurityEvent.created_at).where(SecurityEvent.user_id == ada.id))
    until = (since + timedelta(hours=24)).astimezone(sessions_lagos())
    assert f"Money can leave again from {until.strftime('%d %b %Y, %H:%M')}" in text


def sessions_lagos():
    from billvend.vending.lifecycle import LAGOS

    return LAGOS


def test_the_hold_ends_24_hours_after_the_change(client, ada):
    add_event(ada.id, sessions.PHONE_CHANGED, age=timedelta(hours=23, minutes=59))
    assert client.get("/wallet/withdraw").status_code == 403
    db.session.execute(sa.update(SecurityEvent).values(created_at=utcnow() - timedelta(hours=24, seconds=5)))
    db.session.commit()
    assert client.get("/wallet/withdraw").status_code == 200


def test_the_newest_change_counts(client, ada):
    add_event(ada.id, sessions.PASSWORD_RESET, age=timedelta(hours=30))
    add_event(ada.id, sessions.EMAIL_CHANGED, age=timedelta(hours=1))
    text = page_text(client.get("/wallet/withdraw"))
    assert "your email address was changed" in text


def test_the_hold_is_told_before_the_password_is_asked(client, ada):
    age_password_entry(ada.id, 3600)
    add_event(ada.id, sessions.PHONE_CHANGED)
    assert client.get("/wallet/withdraw").status_code == 403


def test_changing_the_phone_on_the_profile_holds_money(client, ada):
    response = client.post("/account", data={"full_name": "Ada", "phone": "08059876543",
                                             "csrf_token": csrf_of(client, "/account")})
    assert response.status_code == 303
    refused = client.get("/wallet/withdraw")
    assert refused.status_code == 403 and "your phone number was changed" in page_text(refused)


def test_other_events_and_other_accounts_changes_do_not_hold(client, ada):
    add_event(ada.id, sessions.REAUTH_LOCKED)
    add_event(ada.id, sessions.REMEMBER_THEFT)
    bola = make_user("bola@example.com")
    add_event(bola.id, sessions.PHONE_CHANGED)
    assert client.get("/wallet/withdraw").status_code == 200


def test_signed_out_visitors_go_to_sign_in(client):
    response = client.get("/wallet/withdraw")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_the_hold_of_an_account_with_no_events_is_none(app):
    from billvend.accounts import stepup

    user = make_user("ada@example.com")
    assert stepup.hold_of(user.id) is None
    add_event(user.id, sessions.PHONE_CHANGED, age=timedelta(minutes=5))
    hold = stepup.hold_of(user.id)
    assert hold.kind == sessions.PHONE_CHANGED and hold.until - hold.since == timedelta(hours=24)
    assert db.session.get(User, user.id) is not None


def test_the_hold_runs_on_the_database_clock_whatever_the_web_hosts_clock(client, ada, monkeypatch):
    """A web host whose clock is a day behind the database's must not
    record a change already "24 h old": the hold is compared with the
    database clock, so the event's time must come from it too."""
    from billvend.platform import models

    monkeypatch.setattr(sessions, "utcnow", lambda: models.utcnow() - timedelta(hours=25))
    response = client.post("/account", data={"full_name": "Ada", "phone": "08059876543",
                                             "csrf_token": csrf_of(client, "/account")})
    assert response.status_code == 303
    refused = client.get("/wallet/withdraw")
    assert refused.status_code == 403 and "your phone number was changed" in page_text(refused)
