"""A stolen session or remember cookie (issue 21, items 1 and 4): password
and code re-entry inside a session is throttled and ends the session, and a
copied remember token is noticed, ends everything, and is told to the owner.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.accounts import sessions
from billvend.platform.extensions import db
from billvend.accounts.models import RememberToken, SecurityEvent, User, UserSession
from tests.conftest import enrol_totp, totp_code
from tests.helpers import make_payment, make_user
from tests.test_security import PASSWORD, csrf_of, login, session_rows, strict_app  # noqa: F401

NEW_PASSWORD = "a new long secret 42"


def events(user_id: int, kind: str | None = None) -> list[SecurityEvent]:
    query = sa.select(SecurityEvent).where(SecurityEvent.user_id == user_id)
    if kind:
        query = query.where(SecurityEvent.kind == kind)
    db.session.expire_all()
    return list(db.session.scalars(query.order_by(SecurityEvent.id)))


def steal_session(app, owner):
    """A second browser holding a copy of ``owner``'s session cookie."""
    thief = app.test_client()
    thief.set_cookie("session", owner.get_cookie("session").value)
    return thief


def wrong_confirm(client):
    return client.post("/account/confirm", data={"password": "not the password 1",
                                                 "csrf_token": csrf_of(client, "/account/confirm")})


def wrong_password_change(client):
    return client.post("/account/password", data={
        "current_password": "not the password 1", "password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD, "csrf_token": csrf_of(client, "/account/password")})


def right_confirm(client):
    """The right password on /account/confirm (with a CSRF token from the
    login page once the session has ended and the form is out of reach)."""
    page = "/account/confirm" if signed_in(client) else "/login"
    return client.post("/account/confirm", data={"password": PASSWORD, "csrf_token": csrf_of(client, page)})


def signed_in(client) -> bool:
    return client.get("/wallet/fund").status_code == 200


# --- Item 1: password and code re-entry inside a session ------------------------------


@pytest.mark.parametrize("wrong", [wrong_confirm, wrong_password_change], ids=["confirm", "password"])
def test_five_wrong_password_reentries_end_the_stolen_session_only(app, client, wrong):
    ada = make_user("ada@example.com")
    assert login(client).status_code == 303
    phone = app.test_client()
    assert login(phone).status_code == 303
    thief = steal_session(app, client)

    for _ in range(4):
        assert wrong(thief).status_code == 422
    assert signed_in(thief)
    fifth = wrong(thief)
    assert fifth.status_code == 303 and fifth.headers["Location"].startswith("/login")
    assert not signed_in(thief)
    # The right password on the ended session does nothing: it is anonymous.
    assert right_confirm(thief).status_code in (302, 303)
    assert not signed_in(thief)
    assert not signed_in(client)  # the same session, wherever its cookie is
    assert signed_in(phone)       # the owner's other session is untouched
    assert session_rows(ada.id) == 1
    [event] = events(ada.id, "reauth_locked")
    assert event.ip_address == "127.0.0.1"
    # The owner signs in again normally, and the password is unchanged.
    again = app.test_client()
    assert login(again).status_code == 303 and signed_in(again)
    assert db.session.get(User, ada.id).check_password(PASSWORD)


def test_wrong_reentries_of_both_kinds_share_one_count_per_session(app, client):
    make_user("ada@example.com")
    assert login(client).status_code == 303
    for wrong in (wrong_confirm, wrong_password_change, wrong_confirm, wrong_password_change):
        assert wrong(client).status_code == 422
    assert wrong_confirm(client).status_code == 303
    assert not signed_in(client)


def test_forty_wrong_reentries_then_the_right_one_never_confirm(app, client):
    """The attack of the issue: 40 wrong then the right password. Every
    attempt after the fifth lands on a signed-out session."""
    make_user("ada@example.com")
    assert login(client).status_code == 303
    thief = steal_session(app, client)
    codes = [wrong_confirm(thief).status_code for _ in range(5)]
    assert codes == [422] * 4 + [303]
    for _ in range(35):  # the same form posted again, with the token it had
        again = thief.post("/account/confirm", data={"password": "not the password 1",
                                                     "csrf_token": csrf_of(thief, "/login")})
        assert again.status_code in (302, 303) and again.headers["Location"].startswith("/login")
    right = right_confirm(thief)
    assert right.status_code in (302, 303) and right.headers["Location"].startswith("/login")
    assert not signed_in(thief)


def make_admin_session(app, client, auth):
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    assert login(client, email="root@example.com").status_code == 303
    return admin


def wrong_code(client):
    return client.post("/account/two-factor", data={
        "code": "000000", "csrf_token": csrf_of(client, "/account/two-factor")})


def test_five_wrong_second_factor_codes_end_the_session(app, client, auth):
    admin = make_admin_session(app, client, auth)
    secret = enrol_totp(admin)
    for _ in range(4):
        assert wrong_code(client).status_code == 422
    fifth = wrong_code(client)
    assert fifth.status_code == 303 and fifth.headers["Location"].startswith("/login")
    assert client.get("/admin/").status_code == 302
    assert len(events(admin.id, "reauth_locked")) == 1
    # Signed in again, a right code opens the admin area.
    assert login(client, email="root@example.com").status_code == 303
    response = client.post("/account/two-factor", data={
        "code": totp_code(secret), "csrf_token": csrf_of(client, "/account/two-factor")})
    assert response.status_code == 303 and client.get("/admin/").status_code == 200


def test_wrong_recovery_codes_and_enrolment_codes_count_too(app, client, auth):
    admin = make_admin_session(app, client, auth)
    # Not enrolled yet: the fresh-password step, then the enrolment code.
    assert client.get("/account/two-factor").status_code == 200
    for _ in range(2):
        assert wrong_code(client).status_code == 422  # enrolment codes
    enrol_totp(admin)
    for code in ("abcde-fghjk", "zzzzz-zzzzz"):  # recovery codes that do not exist
        response = client.post("/account/two-factor", data={
            "code": code, "csrf_token": csrf_of(client, "/account/two-factor")})
        assert response.status_code == 422
    assert wrong_confirm(client).status_code == 303  # the fifth: a password
    assert not signed_in(client)


def test_the_admins_fresh_password_step_is_throttled(app, client, auth):
    admin = make_admin_session(app, client, auth)
    # The step an admin takes before enrolling a second factor (and after
    # FRESH_LOGIN_SECONDS): /account/confirm.
    thief = steal_session(app, client)
    for _ in range(4):
        assert wrong_confirm(thief).status_code == 422
    assert wrong_confirm(thief).status_code == 303
    assert thief.get("/account/two-factor").status_code == 302
    assert events(admin.id, "reauth_locked")


def test_the_owner_is_told_at_next_sign_in_that_a_session_was_ended(app, client):
    make_user("ada@example.com")
    assert login(client).status_code == 303
    for _ in range(5):
        wrong_confirm(client)
    assert login(client).status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert "was typed 5 times in it" in page
    # Told once.
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert login(client).status_code == 303
    assert "was typed 5 times in it" not in client.get("/").get_data(as_text=True)


def test_reentry_failures_count_toward_the_account_login_limit_but_spare_a_known_device(strict_app):
    """RATELIMIT_LOGIN_ACCOUNT is 10 failures per 15 minutes: ten wrong
    re-entries (two sessions of five) spend it, so a login from a new
    browser is refused even with the right password; the owner's own browser
    (a known device) still signs in."""
    make_user("ada@example.com")
    owner = strict_app.test_client()
    for wrong in (wrong_confirm, wrong_password_change):
        assert login(owner).status_code == 303
        codes = [wrong(owner).status_code for _ in range(5)]
        assert codes == [422] * 4 + [303]
    stranger = strict_app.test_client()
    assert login(stranger, environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 429
    assert login(owner).status_code == 303 and signed_in(owner)


def test_a_reentry_from_an_unknown_device_is_refused_once_the_account_limit_is_spent(strict_app):
    make_user("ada@example.com")
    owner = strict_app.test_client()
    for _ in range(2):
        assert login(owner).status_code == 303
        for _ in range(5):
            wrong_confirm(owner)
    assert login(owner).status_code == 303
    thief = steal_session(strict_app, owner)  # the session, not the known-device cookie
    assert wrong_confirm(thief).status_code == 429
    assert signed_in(owner)


# --- Item 4: a copied remember token ---------------------------------------------------


def remember_login(app):
    browser = app.test_client()
    assert login(browser, remember=True).status_code == 303
    return browser


def restart(app, remember_cookie: str):
    """The browser closed and opened again: only the remember cookie is left."""
    browser = app.test_client()
    browser.set_cookie("remember", remember_cookie)
    return browser


def age_rotation(seconds: int = sessions.ROTATION_GRACE_SECONDS + 1) -> None:
    db.session.expire_all()
    for token in db.session.scalars(sa.select(RememberToken).where(RememberToken.rotated_at.is_not(None))):
        token.rotated_at -= timedelta(seconds=seconds)
    db.session.commit()


def test_a_copied_remember_cookie_used_after_the_owner_rotated_it_ends_everything(app):
    ada = make_user("ada@example.com")
    laptop = remember_login(app)
    other_device = remember_login(app)
    copied = laptop.get_cookie("remember").value

    thief = restart(app, copied)               # the thief uses the copy first
    assert signed_in(thief)
    owner = restart(app, copied)               # the owner's browser, much later
    age_rotation()
    assert not signed_in(owner)
    assert not signed_in(thief)                # the thief's session is ended
    assert not signed_in(other_device)         # and every other session of the user
    assert session_rows(ada.id) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RememberToken)
                             .where(RememberToken.user_id == ada.id)) == 0
    assert len(events(ada.id, "remember_theft")) == 1
    # Told at the next sign-in, once.
    again = app.test_client()
    assert login(again).status_code == 303
    page = again.get("/").get_data(as_text=True)
    assert "signed you out everywhere" in page
    assert "signed you out everywhere" not in again.get("/").get_data(as_text=True)


def test_the_rotated_token_again_inside_the_grace_is_not_theft(app):
    """A lost response on a mobile network: the browser sends the token it
    still has within the grace; it is signed in and given the new token."""
    ada = make_user("ada@example.com")
    laptop = remember_login(app)
    cookie = laptop.get_cookie("remember").value
    first = restart(app, cookie)
    assert signed_in(first)
    rotated = first.get_cookie("remember").value
    retry = restart(app, cookie)               # the response with `rotated` was lost
    assert signed_in(retry)
    assert retry.get_cookie("remember").value == rotated
    assert signed_in(first) and signed_in(laptop)
    assert events(ada.id, "remember_theft") == []
    # Much later the browser comes back with what it now holds: no alarm.
    age_rotation()
    later = restart(app, rotated)
    assert signed_in(later) and events(ada.id, "remember_theft") == []


def test_a_wrong_validator_for_a_known_selector_is_refused_but_is_not_theft(app):
    ada = make_user("ada@example.com")
    laptop = remember_login(app)
    selector = laptop.get_cookie("remember").value.split(".")[0]
    used = restart(app, laptop.get_cookie("remember").value)
    assert signed_in(used)
    age_rotation()
    guess = restart(app, f"{selector}.{'A' * 43}")
    assert not signed_in(guess)
    assert signed_in(laptop) and signed_in(used)  # a guess signs nobody out
    assert events(ada.id, "remember_theft") == []


def test_logging_out_ends_the_sessions_started_from_this_devices_remember_token(app):
    """The issue's case: a session started from a copied remember cookie
    survives the owner's logout on their own device. It no longer does."""
    ada = make_user("ada@example.com")
    make_user("bola@example.com")
    laptop = remember_login(app)
    phone = app.test_client()
    assert login(phone).status_code == 303
    bola = app.test_client()
    assert login(bola, email="bola@example.com", remember=True).status_code == 303
    thief = restart(app, laptop.get_cookie("remember").value)
    assert signed_in(thief)

    laptop.post("/logout", data={"csrf_token": csrf_of(laptop, "/")})
    assert not signed_in(thief)
    assert signed_in(phone) and signed_in(bola)
    assert session_rows(ada.id) == 1
    assert db.session.scalar(sa.select(UserSession.remember_selector).where(
        UserSession.user_id == ada.id)) is None


def test_wrong_reentries_sent_in_parallel_on_one_session_get_five_tries_between_them(app, client):
    """Twelve wrong passwords posted at once on one stolen session: each
    takes an attempt from the session's row before its check, so four are
    answered 422, the fifth ends the session, and the rest are not checked."""
    import threading

    ada_id = make_user("ada@example.com").id
    assert login(client).status_code == 303
    cookie = client.get_cookie("session").value
    token = csrf_of(client, "/account/confirm")
    db.session.remove()
    barrier = threading.Barrier(12, timeout=30)
    codes: list[int] = []

    def guess(i: int) -> None:
        thief = app.test_client()
        thief.set_cookie("session", cookie)
        with app.app_context():
            barrier.wait()
            codes.append(thief.post("/account/confirm", data={
                "password": f"wrong guess {i}", "csrf_token": token}).status_code)
            db.session.remove()

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(codes) == 12
    assert codes.count(422) == 4, codes
    assert not signed_in(client)
    assert len(events(ada_id, "reauth_locked")) == 1


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
