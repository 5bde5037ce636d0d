"""Issue 24: "Forgot password?" end to end over real SMTP (aiosmtpd in this
process): the link works once, and an expired, tampered, stale (from before
a second reset or a password change) or another account's link is refused
and changes nothing; a reset ends every session and remember token; known
and unknown addresses get the same answer; the outbox row keeps no link
after the send and /admin/messages hides it; an admin still needs TOTP."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.accounts.models import AccountLink, RememberToken, SecurityEvent, User, UserSession
from billvend.notifications.models import PENDING, SENT, Message
from billvend.notifications.tasks import wait_until_idle
from billvend.platform.config import from_env
from billvend.platform.extensions import db
from billvend.platform.models import utcnow
from billvend.platform.transactions import run
from billvend.web.auth import recovery
from tests.conftest import CSRF_RE, Auth, base_config, fresh_app
from tests.helpers import make_user
from tests.servers import MailServer

PASSWORD = "correct horse 1"
NEW_PASSWORD = "violet tractor window 42"
LINK_RE = re.compile(r"https://billvend\.example(/reset-password/[A-Za-z0-9_-]+)")


@pytest.fixture
def app(database_url, smtp):
    """An app whose outbox sends to ``smtp``; links built on PUBLIC_BASE_URL."""
    config = base_config(database_url) | {
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}", "NOTIFY_CONCURRENCY": 2, "SMTP_DEADLINE_SECONDS": 2.0,
        "PUBLIC_BASE_URL": "https://billvend.example"}
    with fresh_app(config) as app:
        yield app


@pytest.fixture
def fast_floor(monkeypatch):
    monkeypatch.setattr(recovery, "FORGOT_FLOOR_SECONDS", 0.0)


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def ask_reset(client, email: str = "ada@example.com"):
    return client.post("/forgot-password", data={"email": email, "csrf_token": csrf_of(client, "/forgot-password")})


def reset_links(smtp: MailServer, to: str = "ada@example.com") -> list[str]:
    """The reset paths mailed to ``to``, oldest first (after the senders finish)."""
    assert wait_until_idle()
    found = []
    for mail in smtp.inbox.messages:
        if mail["To"] == to and mail["Subject"] == "Reset your BillVend password":
            found.append(LINK_RE.search(mail.get_body(("plain",)).get_content()).group(1))
    return found


def set_password(client, path: str, password: str = NEW_PASSWORD):
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)[:500]
    match = CSRF_RE.search(page.get_data(as_text=True))
    return client.post(path, data={"password": password, "confirm_password": password,
                                   "csrf_token": match.group(1) or match.group(2)})


def password_hash(email: str = "ada@example.com") -> str:
    db.session.rollback()
    return db.session.scalar(sa.select(User.password_hash).where(User.email == email))


def test_login_page_offers_forgot_password(client):
    assert 'href="/forgot-password"' in client.get("/login").get_data(as_text=True)
    assert client.get("/forgot-password").status_code == 200


def test_a_reset_link_over_smtp_works_once_and_ends_every_session_and_remember_token(app, smtp, fast_floor):
    ada = make_user("ada@example.com")
    signed_in = app.test_client()
    assert Auth(signed_in).login().status_code == 303
    remembered = app.test_client()
    remembered.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "y",
                                    "csrf_token": csrf_of(remembered, "/login")})
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RememberToken)) == 1

    visitor = app.test_client()
    assert ask_reset(visitor).status_code == 200
    [path] = reset_links(smtp)
    answer = set_password(visitor, path)
    assert answer.status_code == 303 and answer.headers["Location"] == "/login"
    assert "Your password is changed. Sign in with it." in visitor.get("/login").get_data(as_text=True)

    # Every session and remember token of Ada ended; the old password is dead.
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)
                             .where(UserSession.user_id == ada.id)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(RememberToken)) == 0
    assert signed_in.get("/account").status_code == 302
    assert Auth(app.test_client()).login().status_code == 422
    assert Auth(app.test_client()).login(password=NEW_PASSWORD).status_code == 303
    assert [e.kind for e in db.session.scalars(sa.select(SecurityEvent))] == ["password_reset"]

    # Used once: the same link again changes nothing.
    before = password_hash()
    again = visitor.get(path)
    assert again.status_code == 410 and "already been used" in again.get_data(as_text=True)
    assert visitor.post(path, data={"password": "another horse 77 x", "confirm_password": "another horse 77 x",
                                    "csrf_token": csrf_of(visitor, "/login")}).status_code == 410
    assert password_hash() == before

    # The owner hears of the reset too.
    assert wait_until_idle()
    assert "Your BillVend password was reset" in [m["Subject"] for m in smtp.inbox.messages]


def test_the_outbox_row_keeps_no_link_after_sending_and_admins_never_see_it(app, smtp, fast_floor):
    admin = make_user("admin@example.com")
    admin.is_admin = True
    db.session.commit()
    make_user("ada@example.com")
    ask_reset(app.test_client())
    [path] = reset_links(smtp)
    token = path.rsplit("/", 1)[1]
    db.session.rollback()
    row = db.session.scalar(sa.select(Message).where(Message.template == "password_reset"))
    assert row.status == SENT and row.context["secret_link"] == ""
    assert token not in str(row.context)
    # Only the token's SHA-256 is stored with the link.
    assert token not in str([tuple(r) for r in db.session.execute(sa.select(AccountLink))])

    ops = app.test_client()
    auth = Auth(ops)
    assert auth.login("admin@example.com").status_code == 303
    auth.second_factor(admin)
    page = ops.get("/admin/messages").get_data(as_text=True)
    assert "Reset your BillVend password (link hidden)" in page and token not in page


def test_a_pending_reset_mail_is_hidden_on_the_admin_page_too(app, smtp, fast_floor):
    from billvend.web.admin.messages import content_of

    smtp.stop()  # the mail cannot leave: the row stays pending with its link
    make_user("ada@example.com")
    ask_reset(app.test_client())
    db.session.rollback()
    row = db.session.scalar(sa.select(Message).where(Message.template == "password_reset"))
    assert row.status == PENDING and row.context["secret_link"].startswith("https://billvend.example/")
    assert content_of(row) == "Reset your BillVend password (link hidden)"
    smtp.start()


def test_an_expired_link_is_refused_and_changes_nothing(app, smtp, fast_floor):
    make_user("ada@example.com")
    ask_reset(app.test_client())
    [path] = reset_links(smtp)
    visitor = app.test_client()
    form_csrf = csrf_of(visitor, path)  # the form was opened in time...
    run(lambda: db.session.execute(sa.update(AccountLink).values(
        expires_at=utcnow() - timedelta(seconds=1))))  # ...and sent too late
    before = password_hash()
    late = visitor.post(path, data={"password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
                                    "csrf_token": form_csrf})
    assert late.status_code == 410 and "This link has expired." in late.get_data(as_text=True)
    assert visitor.get(path).status_code == 410
    assert password_hash() == before


def test_the_link_lasts_thirty_minutes(app, smtp, fast_floor):
    make_user("ada@example.com")
    ask_reset(app.test_client())
    db.session.rollback()
    link = db.session.scalar(sa.select(AccountLink))
    assert (link.purpose, link.expires_at - link.created_at) == ("password_reset", timedelta(minutes=30))


@pytest.mark.parametrize("mangle", [
    lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # one character changed
    lambda token: token[:-3],                                         # cut short
    lambda token: token + "x" * 5000,                                 # very long
    lambda token: token[:10] + "%C3%A9" + token[10:],                 # non-ASCII (é)
    lambda token: "%00" + token,                                      # a NUL
])
def test_a_tampered_or_malformed_link_is_refused_cleanly(app, smtp, fast_floor, mangle):
    make_user("ada@example.com")
    ask_reset(app.test_client())
    [path] = reset_links(smtp)
    token = path.rsplit("/", 1)[1]
    visitor = app.test_client()
    bad = f"/reset-password/{mangle(token)}"
    before = password_hash()
    page = visitor.get(bad)
    assert page.status_code == 400 and "This link is not valid" in page.get_data(as_text=True)
    assert visitor.post(bad, data={"password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
                                   "csrf_token": csrf_of(visitor, "/login")}).status_code == 400
    assert password_hash() == before
    assert visitor.get(path).status_code == 200  # the real link still works


def test_a_link_from_before_a_second_reset_is_refused(app, smtp, fast_floor):
    def set_password_status(path: str) -> int:
        client = app.test_client()
        return client.post(path, data={"password": "another horse 77 x", "confirm_password": "another horse 77 x",
                                       "csrf_token": csrf_of(client, "/login")}).status_code

    make_user("ada@example.com")
    ask_reset(app.test_client())
    ask_reset(app.test_client())
    first, second = reset_links(smtp)
    assert set_password(app.test_client(), second).status_code == 303
    after = password_hash()
    old = app.test_client().get(first)
    assert old.status_code == 410 and "already been used" in old.get_data(as_text=True)
    assert set_password_status(first) == 410
    assert password_hash() == after
    # Not marked used, it is still dead: bound to the password it replaced.
    run(lambda: db.session.execute(sa.update(AccountLink).values(used_at=None)))
    assert "no longer works" in app.test_client().get(first).get_data(as_text=True)
    assert password_hash() == after


def test_a_password_change_kills_every_older_reset_link(app, smtp, client, auth, fast_floor):
    make_user("ada@example.com")
    ask_reset(app.test_client())
    [path] = reset_links(smtp)
    auth.login()
    changed = client.post("/account/password", data={
        "current_password": PASSWORD, "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
        "csrf_token": csrf_of(client, "/account/password")})
    assert changed.status_code == 303
    assert app.test_client().get(path).status_code == 410
    # A link whose digest no longer matches is refused even if not marked used.
    run(lambda: db.session.execute(sa.update(AccountLink).values(used_at=None)))
    stale = app.test_client().get(path)
    assert stale.status_code == 410 and "password was changed after it was sent" in stale.get_data(as_text=True)


def test_another_accounts_link_is_refused_while_signed_in(app, smtp, client, auth, fast_floor):
    make_user("ada@example.com")
    make_user("bob@example.com")
    ask_reset(app.test_client())
    [path] = reset_links(smtp)
    auth.login("bob@example.com")
    page = client.get(path)
    assert page.status_code == 400 and "for another account" in page.get_data(as_text=True)


def test_known_and_unknown_addresses_get_the_same_answer_and_time(app, smtp):
    make_user("ada@example.com")
    answers, times = [], {"known": [], "unknown": []}
    for _ in range(3):
        for kind, email in (("known", "ada@example.com"), ("unknown", "nobody@example.com")):
            client = app.test_client()
            token = csrf_of(client, "/forgot-password")
            started = time.monotonic()
            answer = client.post("/forgot-password", data={"email": email, "csrf_token": token})
            times[kind].append(time.monotonic() - started)
            html = answer.get_data(as_text=True)
            sent = re.search(r'<div data-testid="reset-sent">(.*?)</div>', html, re.S).group(1)
            answers.append((answer.status_code, sent, html.replace(token, "")))
    assert len({(status, sent) for status, sent, _ in answers}) == 1 and answers[0][0] == 200
    assert len({re.sub(r'value="[^"]+"', "", page) for *_, page in answers}) == 1
    # Both padded to the floor: the database work does not show.
    assert min(min(times["known"]), min(times["unknown"])) >= recovery.FORGOT_FLOOR_SECONDS
    assert abs(sorted(times["known"])[1] - sorted(times["unknown"])[1]) < 0.1
    assert len(reset_links(smtp)) == 3 and smtp.inbox.to().count("nobody@example.com") == 0


def test_a_malformed_address_gets_the_form_again_for_everyone(client):
    answer = client.post("/forgot-password", data={"email": "not-an-address",
                                                   "csrf_token": csrf_of(client, "/forgot-password")})
    assert answer.status_code == 422 and "Enter a valid email address." in answer.get_data(as_text=True)


def test_an_admin_still_needs_the_second_factor_after_a_reset(app, smtp, fast_floor):
    admin = make_user("admin@example.com")
    admin.is_admin = True
    db.session.commit()
    browser = app.test_client()
    ask_reset(browser, "admin@example.com")
    [path] = reset_links(smtp, "admin@example.com")
    assert set_password(browser, path).status_code == 303
    assert Auth(browser).login("admin@example.com", NEW_PASSWORD).status_code == 303
    gate = browser.get("/admin/")
    assert gate.status_code in (302, 303) and "/account/two-factor" in gate.headers["Location"]


# --- Rate limits -----------------------------------------------------------------------


@pytest.fixture
def strict_app(database_url):
    """Production default limits (limits ON, fresh memory)."""
    strict = {k: v for k, v in from_env({}).items()
              if k.startswith("RATELIMIT_") and k != "RATELIMIT_STORAGE_URI"}
    with fresh_app(base_config(database_url) | strict) as app:
        yield app


def _ask_from(app, email: str, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return ask_reset(client, email)


def test_reset_requests_are_limited_per_address_known_or_not(strict_app, fast_floor):
    make_user("ada@example.com")
    for email in ("ada@example.com", "nobody@example.com"):
        codes = [_ask_from(strict_app, email, f"10.9.{i}.1").status_code for i in range(4)]
        assert codes == [200, 200, 200, 429], email  # "3 per hour", from any IP
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AccountLink)) == 3


def test_reset_requests_are_limited_per_ip(strict_app, fast_floor):
    codes = [_ask_from(strict_app, f"person{i}@example.com", "10.8.0.1").status_code for i in range(11)]
    assert codes == [200] * 10 + [429]  # "10 per minute"
    assert _ask_from(strict_app, "person99@example.com", "10.8.0.2").status_code == 200


def test_a_reset_mail_given_up_loses_its_link_and_an_admin_retry_is_refused(app, smtp, fast_floor):
    from billvend.notifications import outbox
    from billvend.notifications.models import FAILED

    smtp.inbox.refuse.add("ada@example.com")  # 550: failed for good at once
    make_user("ada@example.com")
    ask_reset(app.test_client())
    assert wait_until_idle()
    db.session.rollback()
    row = db.session.scalar(sa.select(Message).where(Message.template == "password_reset"))
    assert (row.status, row.context["secret_link"]) == (FAILED, "")
    assert run(outbox.retry, row.id) == "link erased"
    db.session.rollback()
    assert db.session.get(Message, row.id).status == FAILED



@pytest.mark.postgresql
def test_a_second_request_using_the_link_meanwhile_wins_and_the_first_changes_nothing(app, interleave):
    """Forced interleaving: this request has read the link unused and the
    user's password (the link not stale); another request resets through it
    and commits before this one marks it used. The conditional UPDATE finds
    it used: this request changes nothing."""
    from billvend.accounts import links
    from billvend.accounts.links import LinkProblem
    from billvend.accounts.models import LINK_PASSWORD_RESET
    from tests.helpers import in_other_worker

    ada = make_user("ada@example.com")
    with app.test_request_context():
        token, _ = run(lambda: links.issue(db.session.get(User, ada.id), LINK_PASSWORD_RESET))
    hashes = {}
    for name in ("mine", "theirs"):
        template = User(email="ada@example.com")
        template.set_password(f"{name} violet tractor 42")
        hashes[name] = template.password_hash

    def other_request() -> None:
        with app.test_request_context():
            recovery._apply_reset(token, hashes["theirs"])

    def user_read(statement: str) -> bool:  # links.find reads the link, then its user
        return " ".join(statement.split()).startswith("SELECT users.id")

    hook = interleave(user_read, 1, lambda: in_other_worker(app, other_request))
    with app.test_request_context():
        with pytest.raises(LinkProblem) as refused:
            recovery._apply_reset(token, hashes["mine"])
    assert hook.fired and refused.value.reason == "used"
    assert password_hash() == hashes["theirs"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SecurityEvent)) == 1


@pytest.mark.postgresql
def test_a_remember_cookie_read_as_the_reset_commits_signs_no_one_in(app, smtp, interleave):
    """Forced interleaving: a copied "keep me signed in" cookie is being
    turned into a session (its token row read) when the owner's reset
    commits and deletes every token. The restore must notice its token is
    gone: no session of the user outlives the reset."""
    from billvend.accounts import links
    from billvend.accounts.models import LINK_PASSWORD_RESET
    from tests.helpers import in_other_worker

    ada = make_user("ada@example.com")
    owner = app.test_client()
    owner.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "y",
                               "csrf_token": csrf_of(owner, "/login")})
    cookie = owner.get_cookie(app.config["REMEMBER_COOKIE_NAME"])
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(app.config["REMEMBER_COOKIE_NAME"], cookie.value)
    with app.test_request_context():
        token, _ = run(lambda: links.issue(db.session.get(User, ada.id), LINK_PASSWORD_RESET))
    template = User(email="ada@example.com")
    template.set_password(NEW_PASSWORD)

    def owners_reset() -> None:
        with app.test_request_context():
            recovery._apply_reset(token, template.password_hash)

    def token_read(statement: str) -> bool:
        return " ".join(statement.split()).startswith("SELECT remember_tokens.id")

    hook = interleave(token_read, 1, lambda: in_other_worker(app, owners_reset))
    page = thief.get("/account")
    assert hook.fired
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)
                             .where(UserSession.user_id == ada.id)) == 0


@pytest.mark.postgresql
def test_a_session_restored_just_before_the_reset_is_not_saved_after_it(app, smtp, interleave):
    """Forced interleaving: a copied remember cookie has been turned into a
    session (the token rotated and committed) and its page is being made
    when the owner's reset commits. The new session row, written after the
    page, must not be written: it would outlive the reset."""
    from billvend.accounts import links
    from billvend.accounts.models import LINK_PASSWORD_RESET
    from tests.helpers import in_other_worker

    ada = make_user("ada@example.com")
    owner = app.test_client()
    owner.post("/login", data={"email": "ada@example.com", "password": PASSWORD, "remember": "y",
                               "csrf_token": csrf_of(owner, "/login")})
    thief = app.test_client()
    thief.set_cookie(app.config["REMEMBER_COOKIE_NAME"],
                     owner.get_cookie(app.config["REMEMBER_COOKIE_NAME"]).value)
    with app.test_request_context():
        token, _ = run(lambda: links.issue(db.session.get(User, ada.id), LINK_PASSWORD_RESET))
    template = User(email="ada@example.com")
    template.set_password(NEW_PASSWORD)

    def owners_reset() -> None:
        with app.test_request_context():
            recovery._apply_reset(token, template.password_hash)

    def page_reads_sessions(statement: str) -> bool:  # the profile lists the sessions
        return " ".join(statement.split()).startswith("SELECT user_sessions.id")

    hook = interleave(page_reads_sessions, 1, lambda: in_other_worker(app, owners_reset))
    thief.get("/account")
    assert hook.fired
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(UserSession)
                             .where(UserSession.user_id == ada.id)) == 0
    assert thief.get("/account").status_code == 302
