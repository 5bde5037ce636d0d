"""Issue 24: email verification. At signup the account works at once and a
banner asks to verify by a link (single use, 24 h, resendable within a
limit); changing the address sends a link to the new one and a notice to
the old one, which stays the account's address until the link is followed;
a taken address, a stale, expired, reused or another account's link is
refused and changes nothing. The links are read from the outbox rows
(nothing is sent: NOTIFY_CONCURRENCY is 0 here; tests/test_password_reset.py
covers the SMTP path and the erasure after sending)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.accounts.models import AccountLink, SecurityEvent, User
from billvend.notifications.models import Message
from billvend.platform.config import from_env
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from billvend.platform.transactions import run
from tests.conftest import CSRF_RE, Auth, base_config, fresh_app
from tests.helpers import make_user

PASSWORD = "correct horse 1"


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def mails(template: str) -> list[Message]:
    db.session.rollback()
    return db.session.scalars(sa.select(Message).where(Message.template == template).order_by(Message.id)).all()


def link_path(message: Message) -> str:
    link = message.context["secret_link"]
    assert link.startswith("http://localhost/verify-email/"), link
    return link.removeprefix("http://localhost")


def user(email: str) -> User | None:
    db.session.rollback()
    return db.session.scalar(sa.select(User).where(User.email == email))


def change_email(client, new_email: str, password: str = PASSWORD):
    return client.post("/account/email", data={"email": new_email, "current_password": password,
                                               "csrf_token": csrf_of(client, "/account/email")})


def resend(client):
    return client.post("/account/email/resend", data={"verify-csrf_token": csrf_of(client, "/account")})


def test_signup_works_at_once_and_the_banner_asks_to_verify_until_the_link_is_followed(client, auth):
    assert auth.signup().status_code == 303
    dashboard = client.get("/").get_data(as_text=True)
    assert 'data-testid="balance"' in dashboard and 'data-testid="verify-banner"' in dashboard
    [mail] = mails("verify_email")
    assert mail.recipient == "ada@example.com" and mail.context["change"] is False
    assert user("ada@example.com").email_verified_at is None

    followed = client.get(link_path(mail))
    assert followed.status_code == 303 and followed.headers["Location"] == "/account"
    assert user("ada@example.com").email_verified_at is not None
    profile = client.get("/account").get_data(as_text=True)
    assert "ada@example.com is verified" in profile and 'data-testid="verify-banner"' not in profile
    assert 'data-testid="email-state">verified' in profile and 'href="/account/email"' in profile

    again = client.get(link_path(mail))
    assert again.status_code == 410 and "already been used" in again.get_data(as_text=True)


def test_the_link_works_signed_out_and_lasts_a_day(client, auth, app):
    auth.signup()
    auth.logout()
    db.session.rollback()
    link = db.session.scalar(sa.select(AccountLink))
    assert (link.purpose, link.expires_at - link.created_at) == ("verify_email", timedelta(hours=24))
    followed = app.test_client().get(link_path(mails("verify_email")[0]))
    assert followed.status_code == 303 and followed.headers["Location"] == "/login"
    assert user("ada@example.com").email_verified_at is not None


def test_an_expired_or_tampered_verification_link_changes_nothing(client, auth):
    auth.signup()
    path = link_path(mails("verify_email")[0])
    tampered = client.get(path[:-2] + ("zz" if not path.endswith("zz") else "yy"))
    assert tampered.status_code == 400 and "This link is not valid" in tampered.get_data(as_text=True)
    assert client.get("/verify-email/" + "é" * 30).status_code == 400
    assert client.get("/verify-email/" + "a" * 3000).status_code == 400
    run(lambda: db.session.execute(sa.update(AccountLink).values(expires_at=utcnow() - timedelta(seconds=1))))
    expired = client.get(path)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    assert user("ada@example.com").email_verified_at is None


def test_a_resend_replaces_the_older_link(client, auth):
    auth.signup()
    assert resend(client).status_code == 303
    first, second = mails("verify_email")
    assert client.get(link_path(first)).status_code == 410
    assert client.get(link_path(second)).status_code == 303
    assert user("ada@example.com").email_verified_at is not None


def test_another_accounts_link_is_refused_while_signed_in(app, client, auth):
    auth.signup()
    path = link_path(mails("verify_email")[0])
    auth.logout()
    make_user("bob@example.com")
    auth.login("bob@example.com")
    page = client.get(path)
    assert page.status_code == 400 and "for another account" in page.get_data(as_text=True)
    assert user("ada@example.com").email_verified_at is None


def test_changing_the_email_keeps_the_old_address_until_the_new_one_is_verified(app, client, auth):
    ada = make_user("ada@example.com")
    auth.login()
    wrong = change_email(client, "ada.new@example.com", password="not my password 1")
    assert wrong.status_code == 422 and "not your current password" in wrong.get_data(as_text=True)
    assert mails("verify_email") == []

    assert change_email(client, "Ada.New@Example.COM").status_code == 303  # case-folded as at signup
    [verify] = mails("verify_email")
    [notice] = mails("email_change_notice")
    assert (verify.recipient, verify.context["change"]) == ("ada.new@example.com", True)
    assert (notice.recipient, notice.context["new_email"]) == ("ada@example.com", "ada.new@example.com")
    # Until the link is followed, the old address is the account's.
    assert user("ada@example.com").id == ada.id and user("ada.new@example.com") is None
    assert "Changing to ada.new@example.com" in client.get("/account").get_data(as_text=True)
    other = app.test_client()
    assert Auth(other).login("ada@example.com").status_code == 303
    assert Auth(app.test_client()).login("ada.new@example.com").status_code == 422

    assert client.get(link_path(verify)).status_code == 303
    switched = user("ada.new@example.com")
    assert switched.id == ada.id and switched.email_verified_at is not None
    assert [e.kind for e in db.session.scalars(sa.select(SecurityEvent))] == ["email_changed"]
    assert Auth(app.test_client()).login("ada.new@example.com").status_code == 303
    assert "email address is now ada.new@example.com" in client.get("/account").get_data(as_text=True)


def test_an_address_taken_meanwhile_is_refused_with_a_clear_message(client, auth):
    make_user("ada@example.com")
    auth.login()
    assert change_email(client, "carol@example.com").status_code == 303
    make_user("carol@example.com")  # Carol signs up with it before Ada follows her link
    page = client.get(link_path(mails("verify_email")[0]))
    assert page.status_code == 409 and "Another account uses that address now" in page.get_data(as_text=True)
    assert user("ada@example.com") is not None and user("carol@example.com").email == "carol@example.com"
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SecurityEvent)) == 0


def test_an_address_already_taken_is_refused_at_once(client, auth):
    make_user("ada@example.com")
    make_user("carol@example.com")
    auth.login()
    taken = change_email(client, "CAROL@example.com")
    assert taken.status_code == 422 and "Another account uses that address." in taken.get_data(as_text=True)
    same = change_email(client, "ada@example.com")
    assert same.status_code == 422 and "already your address" in same.get_data(as_text=True)
    assert mails("verify_email") == []


def test_a_newer_change_kills_the_older_link(client, auth):
    make_user("ada@example.com")
    auth.login()
    change_email(client, "b@example.com")
    change_email(client, "c@example.com")
    to_b, to_c = mails("verify_email")
    assert client.get(link_path(to_b)).status_code == 410
    assert user("b@example.com") is None and user("ada@example.com") is not None
    assert client.get(link_path(to_c)).status_code == 303 and user("c@example.com") is not None


def cancel(client, token: str | None = None):
    token = csrf_of(client, "/account") if token is None else token
    return client.post("/account/email/cancel", data={"cancel-email-csrf_token": token})


def test_a_pending_address_change_can_be_cancelled(client, auth):
    make_user("ada@example.com")
    auth.login()
    change_email(client, "typo@exmaple.com")
    assert 'data-testid="cancel-email-change"' in client.get("/account").get_data(as_text=True)
    assert cancel(client, token="").status_code == 400  # no CSRF: nothing changes
    assert 'data-testid="pending-email"' in client.get("/account").get_data(as_text=True)

    done = cancel(client)
    assert done.status_code == 303 and done.headers["Location"] == "/account"
    profile = client.get("/account").get_data(as_text=True)
    assert "the link sent to typo@exmaple.com no longer works" in profile
    assert 'data-testid="pending-email"' not in profile
    [link] = mails("verify_email")
    assert client.get(link_path(link)).status_code == 410
    assert user("ada@example.com") is not None and user("typo@exmaple.com") is None

    again = cancel(client)
    assert again.status_code == 303
    assert "no address change to cancel" in client.get("/account").get_data(as_text=True)


def test_cancelling_keeps_the_link_that_verifies_the_current_address(client, auth):
    auth.signup()
    cancel(client)
    [mail] = mails("verify_email")
    assert client.get(link_path(mail)).status_code == 303
    assert user("ada@example.com").email_verified_at is not None


def test_a_reset_link_is_no_verification_link(app, client, auth):
    """A token of one purpose does not open the other's door."""
    from billvend.web.auth.messages import password_reset

    make_user("ada@example.com")
    with app.test_request_context():
        password_reset("ada@example.com")
    reset = mails("password_reset")[0].context["secret_link"]
    token = reset.rsplit("/", 1)[1]
    assert client.get(f"/verify-email/{token}").status_code == 400
    assert user("ada@example.com").email_verified_at is None


@pytest.fixture
def strict_app(database_url):
    strict = {k: v for k, v in from_env({}).items()
              if k.startswith("RATELIMIT_") and k != "RATELIMIT_STORAGE_URI"}
    with fresh_app(base_config(database_url) | strict) as app:
        yield app


def test_resends_are_limited_per_user(strict_app):
    make_user("ada@example.com")
    client = strict_app.test_client()
    Auth(client).login()
    codes = [resend(client).status_code for _ in range(4)]
    assert codes == [303, 303, 303, 429]  # "3 per hour"
    assert len(mails("verify_email")) == 3


def test_an_address_change_kills_reset_links_mailed_to_the_old_address(app, client, auth):
    from billvend.web.auth.messages import password_reset

    make_user("ada@example.com")
    with app.test_request_context():
        password_reset("ada@example.com")
    reset = mails("password_reset")[0].context["secret_link"].removeprefix("http://localhost")
    auth.login()
    change_email(client, "ada.new@example.com")
    assert client.get(link_path(mails("verify_email")[0])).status_code == 303
    assert app.test_client().get(reset).status_code == 410


def test_following_a_reset_link_verifies_the_address(app):
    from billvend.web.auth.messages import password_reset
    from tests.test_password_reset import set_password

    make_user("ada@example.com")
    with app.test_request_context():
        password_reset("ada@example.com")
    reset = mails("password_reset")[0].context["secret_link"].removeprefix("http://localhost")
    assert set_password(app.test_client(), reset).status_code == 303
    assert user("ada@example.com").email_verified_at is not None


def test_a_reset_kills_an_address_change_asked_before_it(app, client, auth):
    """A thief who had the password asks to move the account to their
    address; the owner, warned by the notice, resets the password by email.
    The thief's link must not switch the account any more (else: their
    address, then a reset link to it, and the account is theirs)."""
    from billvend.web.auth.messages import password_reset
    from tests.test_password_reset import set_password

    ada = make_user("ada@example.com")
    auth.login()  # the thief, with Ada's password
    assert change_email(client, "thief@example.net").status_code == 303
    stolen = link_path(mails("verify_email")[0])
    with app.test_request_context():
        password_reset("ada@example.com")
    reset = mails("password_reset")[0].context["secret_link"].removeprefix("http://localhost")
    assert set_password(app.test_client(), reset).status_code == 303

    assert app.test_client().get(stolen).status_code == 410
    assert user("ada@example.com").id == ada.id and user("thief@example.net") is None
    assert db.session.scalars(sa.select(SecurityEvent.kind)).all() == ["password_reset"]


def test_a_password_change_kills_an_address_change_asked_before_it(app, client, auth):
    ada = make_user("ada@example.com")
    thief = app.test_client()
    Auth(thief).login()
    assert change_email(thief, "thief@example.net").status_code == 303
    stolen = link_path(mails("verify_email")[0])
    auth.login()  # the owner changes the password on their own device
    changed = client.post("/account/password", data={
        "current_password": PASSWORD, "password": "violet tractor window 42",
        "confirm_password": "violet tractor window 42", "csrf_token": csrf_of(client, "/account/password")})
    assert changed.status_code == 303

    assert app.test_client().get(stolen).status_code == 410
    assert user("ada@example.com").id == ada.id and user("thief@example.net") is None


def test_a_verification_link_never_reaches_a_log_line_in_full():
    """The 503 and 429 handlers log the request's path; a verification
    link's token moves an account to its address, so it is masked like a
    reset link's."""
    from billvend.platform import logs

    token = "1VFmor-jyTfhtkLSnax314xrM-0RuXGcGn3-eV_k8L8"
    for line in (f"database unavailable on GET /verify-email/{token}: timeout",
                 f"link https://billvend.example/verify-email/{token} queued"):
        assert token not in logs.redact(line), logs.redact(line)


def test_asking_for_taken_addresses_is_limited_like_the_mails(strict_app):
    """"Another account uses that address" tells a signed-in customer which
    addresses have accounts; unlimited, it would list them faster than
    signup's rate-limited refusal does."""
    make_user("ada@example.com")
    for n in range(4):
        make_user(f"taken{n}@example.com")
    client = strict_app.test_client()
    Auth(client).login()
    codes = [change_email(client, f"taken{n}@example.com").status_code for n in range(4)]
    assert codes == [422, 422, 422, 429]  # "3 per hour", shared with the mails


def test_a_reset_link_issued_as_the_address_switched_is_refused(app):
    """A reset asked for the old address in the instant the switch commits
    (its unit read the account before the switch, wrote the link after the
    switch killed the older ones) goes to the old mailbox: the link is bound
    to the address it was mailed to, so it opens nothing."""
    from billvend.web.auth.messages import password_reset
    from tests.test_password_reset import set_password

    make_user("ada@example.com")
    with app.test_request_context():
        password_reset("ada@example.com")
    reset = mails("password_reset")[0].context["secret_link"].removeprefix("http://localhost")
    # The switch, as it lands after that unit read the account.
    db.session.execute(sa.update(User).values(email="ada.new@example.com"))
    db.session.commit()
    page = app.test_client().get(reset)
    assert page.status_code == 410 and "moved to another email address" in page.get_data(as_text=True)
