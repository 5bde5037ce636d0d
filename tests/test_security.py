"""Safe on the open internet (issue 13), driven through the real app: no
public secret, revocable sessions, the admins' second factor, rate limits,
headers and cookies, proxies, request limits, passwords and look-alike emails.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyotp
import pytest
import requests
import sqlalchemy as sa
from flask.sessions import SecureCookieSessionInterface

from billvend.platform import config as billvend_config
from billvend.platform.config import ConfigError, check_production, from_env, resolve_secret_key
from billvend.platform.extensions import db
from billvend.vending.models import Payment
from billvend.accounts.models import RecoveryCode, RememberToken, User, UserSession
from tests.conftest import CSRF_RE, Auth, base_config, form_tokens, fresh_app
from tests.helpers import make_payment, make_user

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse 1"


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def login(client, email="ada@example.com", password=PASSWORD, remember=False, **kwargs):
    data = {"email": email, "password": password, "csrf_token": csrf_of(client, "/login")}
    if remember:
        data["remember"] = "y"
    return client.post("/login", data=data, **kwargs)


def session_rows(user_id: int | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(UserSession)
    if user_id is not None:
        query = query.where(UserSession.user_id == user_id)
    with db.engine.connect() as conn:
        return conn.scalar(query)


@pytest.fixture
def strict_app(database_url):
    """The app with the production default limits (limits ON, fresh memory)."""
    defaults = from_env({})
    strict = {k: v for k, v in defaults.items() if k.startswith("RATELIMIT_") and k != "RATELIMIT_STORAGE_URI"}
    with fresh_app(base_config(database_url) | strict) as app:
        yield app


@pytest.fixture
def strict_client(strict_app):
    return strict_app.test_client()


# --- No public secret ------------------------------------------------------------


def _wsgi_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BILLVEND_ENV"}}
    env.update(extra)
    return env


@pytest.mark.once
@pytest.mark.parametrize("extra,reason", [
    ({"BILLVEND_ENV": "production"}, "SECRET_KEY is not set"),
    ({"DATABASE_URL": "sqlite:////tmp/billvend-never-created.sqlite3"}, "SECRET_KEY is not set"),
    ({"REDIS_URL": "redis://127.0.0.1:1/0", "SECRET_KEY": "dev-only-not-secret"}, "published default"),
    ({"BILLVEND_ENV": "production", "SECRET_KEY": "short-key"}, "shorter than 32"),
])
def test_a_deployed_configuration_without_a_strong_key_exits_non_zero(extra, reason):
    result = subprocess.run([sys.executable, "-c", "import wsgi"], cwd=ROOT, env=_wsgi_env(**extra),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and reason in lines[0] and "SECRET_KEY" in lines[0], result.stderr


def test_the_embedded_default_generates_and_keeps_a_random_key(tmp_path, monkeypatch):
    monkeypatch.setattr(billvend_config, "SECRET_KEY_FILE", tmp_path / "instance" / "secret_key")
    first, second = from_env({}), from_env({})
    assert first["SECRET_KEY"] is None  # no shipped fallback
    resolve_secret_key(first)
    resolve_secret_key(second)
    assert first["SECRET_KEY"] == second["SECRET_KEY"] and len(first["SECRET_KEY"]) == 64
    assert (tmp_path / "instance" / "secret_key").stat().st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        resolve_secret_key(from_env({"BILLVEND_ENV": "production"}))


def test_no_fallback_key_can_sign_a_session(app, client):
    """Old-style forgeries (a signed cookie naming user 1, a Flask-Login
    remember token) open nothing, whatever key signed them: the session is a
    server-side record and the cookie only its random id."""
    user = make_user("ada@example.com")
    for key in ("dev-only-not-secret", app.config["SECRET_KEY"]):
        forger = SecureCookieSessionInterface().get_signing_serializer(
            type("A", (), {"secret_key": key, "config": {"SECRET_KEY_FALLBACKS": []}})())
        client.set_cookie("session", forger.dumps({"_user_id": str(user.id), "_fresh": True}))
        assert client.get("/wallet/fund").status_code == 302
        digest = hmac.new(key.encode(), str(user.id).encode(), hashlib.sha512).hexdigest()
        client.set_cookie("remember", f"{user.id}|{digest}")
        client.set_cookie("remember_token", f"{user.id}|{digest}")
        assert client.get("/wallet/fund").status_code == 302


PRODUCTION_OK = {
    "BILLVEND_ENV": "production", "SECRET_KEY": "x" * 8 + "0123456789abcdefghijklmnopqrstuvwxyz",
    "VENDING_PROVIDER": "vtpass", "VTPASS_BASE_URL": "https://vtpass.com",
    "VTPASS_API_KEY": "live-api-key", "VTPASS_SECRET_KEY": "live-secret-key",
    "FUNDING_GATEWAY": "paystack", "PAYSTACK_BASE_URL": "https://api.paystack.co",
    "PAYSTACK_SECRET_KEY": "sk_live_0123456789", "PAYSTACK_CHECKOUT_URL": "https://checkout.paystack.com",
    # Shared rate limits (unreachable here: each test process falls back to
    # its own memory, instantly), one stated proxy, the public name.
    "REDIS_URL": "redis://127.0.0.1:1/0", "TRUSTED_PROXY_HOPS": "1",
    "PUBLIC_BASE_URL": "https://billvend.example",
    "SMS_BASE_URL": "https://api.ng.termii.com", "SMS_API_KEY": "live-termii-key",
    "SMTP_URL": "smtp+tls://mailer:secret@smtp.billvend.example:587",
}


@pytest.mark.parametrize("change,needle", [
    ({"VENDING_PROVIDER": "simulated"}, "VENDING_PROVIDER=simulated"),
    ({"VTPASS_BASE_URL": "http://127.0.0.1:5055"}, "loopback VTPASS_BASE_URL"),
    ({"VTPASS_BASE_URL": "http://localhost:5055"}, "loopback VTPASS_BASE_URL"),
    ({"VTPASS_API_KEY": ""}, "VTpass sandbox's default keys"),
    ({"FUNDING_GATEWAY": "simulated"}, "FUNDING_GATEWAY=simulated"),
    ({"PAYSTACK_BASE_URL": "http://127.0.0.1:5055"}, "loopback PAYSTACK_BASE_URL"),
    ({"PAYSTACK_SECRET_KEY": ""}, "PAYSTACK_SECRET_KEY"),
    ({"PAYSTACK_SECRET_KEY": "sk_test_abc"}, "PAYSTACK_SECRET_KEY"),
    ({"SMS_BASE_URL": ""}, "loopback SMS_BASE_URL"),  # unset: the sandbox
    ({"SMS_BASE_URL": "http://api.ng.termii.com"}, "SMS_BASE_URL must be an https:// URL"),
    ({"SMS_API_KEY": ""}, "SMS sandbox's default key"),
    ({"SMS_SENDER_ID": "Bill Vend NG"}, "SMS_SENDER_ID"),
    ({"SMTP_URL": ""}, "SMTP_URL without TLS"),  # the default: maildev on this machine
    ({"SMTP_URL": "smtp+tls://127.0.0.1:1025"}, "loopback SMTP_URL"),
])
def test_production_refuses_every_stand_in(change, needle):
    check_production(from_env(PRODUCTION_OK))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        check_production(from_env(PRODUCTION_OK | change))
    # Development (the default) runs the deployed topology against them.
    check_production(from_env(PRODUCTION_OK | change | {"BILLVEND_ENV": "development"}))


def test_production_never_runs_a_sandbox():
    from billvend.sandbox import create_app as sandbox_app

    with pytest.raises(ConfigError, match="sandbox"):
        sandbox_app(from_env(PRODUCTION_OK))


# --- Revocable sessions ------------------------------------------------------------


def test_login_starts_a_new_session_id_and_csrf_token(client, auth):
    make_user("ada@example.com")
    before_token = csrf_of(client, "/login")
    before_id = client.get_cookie("session").value
    assert login(client).status_code == 303
    assert client.get_cookie("session").value != before_id
    assert csrf_of(client, "/") != before_token
    with db.engine.connect() as conn:  # the cookie is only an id: its hash is the key
        row = conn.execute(sa.select(UserSession.id_hash, UserSession.data)).all()
    assert client.get_cookie("session").value not in str(row)


def test_pages_without_a_form_store_no_session_for_a_visitor(client):
    """A visitor reading pages that post nothing costs no session row (a
    crawler or a flood of landing-page views must not fill the table)."""
    for path in ("/", "/no-such-page"):
        client.get(path)
    assert session_rows() == 0
    assert client.get_cookie("session") is None
    client.get("/login")  # a form: its CSRF secret needs a session
    assert session_rows() == 1


def test_the_periodic_purge_deletes_expired_sessions_and_keeps_live_ones(app, client):
    from billvend.vending.tasks import purge_expired_sessions

    make_user("ada@example.com")
    assert login(client).status_code == 303
    other = app.test_client()
    other.get("/login")
    assert session_rows() == 2
    with db.engine.begin() as conn:
        conn.execute(sa.update(UserSession).where(UserSession.user_id.is_(None))
                     .values(expires_at=datetime(2000, 1, 1, tzinfo=timezone.utc)))
    purge_expired_sessions.call_local()
    assert session_rows() == 1
    assert client.get("/").status_code == 200 and b"Log out" in client.get("/").data


def test_the_periodic_purge_deletes_links_and_phone_codes_long_expired(app):
    from billvend.accounts import links, phone_verification
    from billvend.accounts.models import AccountLink, PhoneCode
    from billvend.vending.tasks import purge_expired_sessions

    user = make_user("ada@example.com")
    user.phone = "+2348031234567"
    db.session.commit()
    old_link = links.issue(user, links.LINK_PASSWORD_RESET)[1]
    old_code = phone_verification.issue_code(user.id).code_id
    db.session.commit()
    long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc)
    with db.engine.begin() as conn:
        conn.execute(sa.update(AccountLink).values(expires_at=long_ago))
        conn.execute(sa.update(PhoneCode).values(expires_at=long_ago))
    fresh_link = links.issue(user, links.LINK_VERIFY_EMAIL)[1]
    fresh_code = phone_verification.issue_code(user.id).code_id
    db.session.commit()
    purge_expired_sessions.call_local()
    db.session.expire_all()
    assert db.session.scalars(sa.select(AccountLink.id)).all() == [fresh_link] != [old_link]
    assert db.session.scalars(sa.select(PhoneCode.id)).all() == [fresh_code] != [old_code]


def test_a_form_left_open_for_hours_still_submits_while_the_session_lives(client, auth, monkeypatch):
    """The CSRF token is bound to the server-side session, which has its own
    idle and absolute deadlines; Flask-WTF's extra one-hour limit only made
    a pay form left open over lunch fail with the 400 page."""
    import itsdangerous.timed

    make_user("ada@example.com")
    assert login(client).status_code == 303
    token = csrf_of(client, "/account")
    real_time = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real_time() + 3 * 3600)
    response = client.post("/account", data={"csrf_token": token, "full_name": "Ada Obi", "phone": ""})
    assert response.status_code in (200, 303), response.status_code
    assert db.session.scalar(sa.select(User.full_name).where(User.email == "ada@example.com")) == "Ada Obi"


def test_a_form_posted_after_the_session_ended_goes_to_login_not_an_error(client):
    make_user("ada@example.com")
    assert login(client).status_code == 303
    token = csrf_of(client, "/account")
    with db.engine.begin() as conn:  # the session ended (idle, or "log out everywhere" elsewhere)
        conn.execute(sa.delete(UserSession))
    logout = client.post("/logout", data={"csrf_token": token})
    assert logout.status_code == 303 and logout.headers["Location"].startswith("/login")
    assert "signed out" in client.get("/login").get_data(as_text=True)
    profile = client.post("/account", data={"csrf_token": token, "full_name": "Mallory"},
                          headers={"Referer": "http://localhost/account"})
    assert profile.status_code == 303 and profile.headers["Location"] == "/login?next=/account"
    assert "session ended" in client.get("/login").get_data(as_text=True)
    assert db.session.scalar(sa.select(User.full_name).where(User.email == "ada@example.com")) is None


def test_a_replayed_session_cookie_and_remember_cookie_after_logout_go_to_login(app, client, auth):
    make_user("ada@example.com")
    assert login(client, remember=True).status_code == 303
    stolen_session = client.get_cookie("session").value
    stolen_remember = client.get_cookie("remember").value
    assert client.get("/wallet/fund").status_code == 200
    auth.logout()
    assert client.get_cookie("remember") is None

    replay = app.test_client()
    replay.set_cookie("session", stolen_session)
    response = replay.get("/wallet/fund")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    replay = app.test_client()
    replay.set_cookie("remember", stolen_remember)
    response = replay.get("/wallet/fund")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_remember_me_is_a_per_device_token_rotated_on_use(app, client):
    user = make_user("ada@example.com")
    assert login(client, remember=True).status_code == 303
    first = client.get_cookie("remember").value
    with db.engine.connect() as conn:
        stored = conn.execute(sa.select(RememberToken.selector, RememberToken.token_hash)).one()
    assert first.split(".")[1] not in stored.token_hash  # stored hashed

    restarted = app.test_client()  # the browser closed: no session cookie
    restarted.set_cookie("remember", first)
    assert restarted.get("/wallet/fund").status_code == 200
    rotated = restarted.get_cookie("remember").value
    assert rotated != first and rotated.split(".")[0] == first.split(".")[0]
    # A session from a remember token is not fresh: the second factor page
    # for an admin, or a password change, asks for the password again.
    assert session_rows(user.id) == 2


def test_a_password_change_ends_the_other_sessions_and_keeps_other_users(app, client):
    ada = make_user("ada@example.com")
    make_user("bola@example.com")
    phone, laptop, bola = app.test_client(), app.test_client(), app.test_client()
    for c in (phone, laptop):
        assert login(c, remember=True).status_code == 303
    assert login(bola, email="bola@example.com").status_code == 303
    # Logging in on a new device kept the others signed in.
    assert phone.get("/wallet/fund").status_code == 200
    phone_remember = phone.get_cookie("remember").value

    response = laptop.post("/account/password", data={
        "current_password": PASSWORD, "password": "a new long secret 42",
        "confirm_password": "a new long secret 42", "csrf_token": csrf_of(laptop, "/account/password")})
    assert response.status_code == 303
    assert laptop.get("/wallet/fund").status_code == 200          # this session goes on
    assert phone.get("/wallet/fund").status_code == 302           # the other one ended
    stale = app.test_client()
    stale.set_cookie("remember", phone_remember)
    assert stale.get("/wallet/fund").status_code == 302           # and its remember token
    assert bola.get("/wallet/fund").status_code == 200            # other users untouched
    assert session_rows(ada.id) == 1
    assert db.session.get(User, ada.id).check_password("a new long secret 42")


def test_the_password_change_needs_the_current_password(client):
    make_user("ada@example.com")
    login(client)
    response = client.post("/account/password", data={
        "current_password": "not my password", "password": "a new long secret 42",
        "confirm_password": "a new long secret 42", "csrf_token": csrf_of(client, "/account/password")})
    assert response.status_code == 422 and b"not your current password" in response.data


def test_log_out_everywhere_from_the_profile(app, client):
    ada = make_user("ada@example.com")
    other = app.test_client()
    login(other)
    login(client)
    page = client.get("/account").get_data(as_text=True)
    assert "Log out everywhere else" in page and "(this browser)" in page
    token = CSRF_RE.search(page)
    response = client.post("/account/sessions/end-others",
                           data={"end-csrf_token": token.group(1) or token.group(2)})
    assert response.status_code == 303
    assert other.get("/wallet/fund").status_code == 302
    assert client.get("/wallet/fund").status_code == 200 and session_rows(ada.id) == 1


def test_the_profile_saves_name_and_phone(client):
    ada = make_user("ada@example.com")
    login(client)
    response = client.post("/account", data={"full_name": "Ada Obi", "phone": "0803 123 4567",
                                             "csrf_token": csrf_of(client, "/account")})
    assert response.status_code == 303
    db.session.expire_all()
    assert (db.session.get(User, ada.id).full_name, db.session.get(User, ada.id).phone) == ("Ada Obi", "+2348031234567")
    bad = client.post("/account", data={"phone": "12", "csrf_token": csrf_of(client, "/account")})
    assert bad.status_code == 422 and b"Nigerian mobile number" in bad.data


def test_an_idle_admin_session_expires(app, client, auth):
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    login(client, email="root@example.com")
    auth.second_factor(admin)
    assert client.get("/admin/").status_code == 200
    with db.engine.begin() as conn:
        created, idle_deadline = conn.execute(sa.select(UserSession.created_at, UserSession.expires_at)
                                              .where(UserSession.user_id == admin.id)).one()
        assert (idle_deadline - created).total_seconds() == pytest.approx(30 * 60, abs=5)
        # Thirty minutes pass without a request.
        conn.execute(sa.update(UserSession).where(UserSession.user_id == admin.id)
                     .values(expires_at=created))
    assert client.get("/admin/").status_code == 302


# --- Admins' second factor -------------------------------------------------------------


def test_an_admin_without_totp_cannot_reach_admin(app, client):
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    login(client, email="root@example.com")
    for path in ("/admin/", "/admin/payments", "/admin/payments.csv"):
        response = client.get(path)
        assert response.status_code == 303 and response.headers["Location"].startswith("/account/two-factor")

    enrol = client.get("/account/two-factor").get_data(as_text=True)
    assert "<svg" in enrol and "style=" not in enrol.split("<svg", 1)[1].split("</svg>", 1)[0]
    secret = re.search(r'data-testid="totp-secret">([A-Z2-7]+)<', enrol).group(1)
    wrong = client.post("/account/two-factor", data={"code": "000000", "csrf_token": csrf_of(client, "/account/two-factor")})
    assert wrong.status_code == 422 and client.get("/admin/").status_code == 303
    done = client.post("/account/two-factor", data={"code": pyotp.TOTP(secret).now(),
                                                    "csrf_token": csrf_of(client, "/account/two-factor")})
    codes = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", done.get_data(as_text=True))
    assert done.status_code == 200 and len(codes) == 10
    assert client.get("/admin/").status_code == 200
    with db.engine.connect() as conn:
        hashes = conn.scalars(sa.select(RecoveryCode.code_hash)).all()
    assert len(hashes) == 10 and not set(codes) & set(hashes)

    # A new session asks again; a recovery code works once; a code works once.
    other = app.test_client()
    login(other, email="root@example.com")
    assert other.get("/admin/").status_code == 303
    used = other.post("/account/two-factor?next=/admin/stuck",
                      data={"code": codes[0], "csrf_token": csrf_of(other, "/account/two-factor")})
    assert used.status_code == 303 and used.headers["Location"] == "/admin/stuck"
    third = app.test_client()
    login(third, email="root@example.com")
    again = third.post("/account/two-factor", data={"code": codes[0], "csrf_token": csrf_of(third, "/account/two-factor")})
    assert again.status_code == 422
    # The code given at enrolment cannot be given again (each time step once).
    db.session.expire_all()
    used_step = db.session.get(User, admin.id).totp_last_step
    replay = third.post("/account/two-factor", data={"code": pyotp.TOTP(secret).generate_otp(used_step),
                                                     "csrf_token": csrf_of(third, "/account/two-factor")})
    assert replay.status_code == 422 and third.get("/admin/").status_code == 303


def test_customers_have_no_second_factor_page(client):
    make_user("ada@example.com")
    login(client)
    assert client.get("/account/two-factor").status_code == 404


def test_create_admin_prints_the_enrolment_steps(app):
    result = app.test_cli_runner().invoke(args=["create-admin", "boss@example.com"],
                                          input="password123\npassword123\nlong enough 1\nlong enough 1\n")
    assert result.exit_code == 0, result.output
    assert "common password" in result.output or "easy" in result.output.lower()
    assert "/account/two-factor" in result.output and "recovery codes" in result.output


# --- Rate limits ---------------------------------------------------------------------


def test_twenty_wrong_passwords_get_429_before_the_twentieth(strict_app, strict_client):
    make_user("ada@example.com")
    codes = []
    for _ in range(20):
        codes.append(login(strict_client, password="wrong password 1").status_code)
    assert 429 in codes and codes.index(429) < 19 and codes[-1] == 429
    assert set(codes[:codes.index(429)]) == {422}
    throttled = login(strict_client)  # even the right password changes nothing now
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert b"Too many attempts" in throttled.data
    assert strict_client.get("/wallet/fund").status_code == 302


def test_spraying_one_account_from_many_addresses_slows_strangers_not_its_owner(strict_app):
    make_user("ada@example.com")
    owner = strict_app.test_client()
    assert login(owner).status_code == 303  # this browser is now a known device
    owner.post("/logout", data={"csrf_token": csrf_of(owner, "/")})
    codes = []
    for i in range(15):
        attacker = strict_app.test_client()
        codes.append(login(attacker, password=f"guess number {i}",
                           environ_base={"REMOTE_ADDR": f"10.0.{i}.1"}).status_code)
    assert codes[-1] == 429 and codes.count(422) == 10
    stranger = strict_app.test_client()
    assert login(stranger, environ_base={"REMOTE_ADDR": "10.9.9.9"}).status_code == 429
    assert login(owner).status_code == 303  # not locked out


def test_signups_per_address_are_limited(strict_app, strict_client):
    codes = []
    for i in range(7):
        c = strict_app.test_client()
        codes.append(Auth(c).signup(email=f"user{i}@example.com").status_code)
    assert codes[:5] == [303] * 5 and codes[5:] == [429, 429]
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 5


def test_meter_verification_is_limited_per_user_in_distinct_meters(strict_app, strict_client):
    make_user("ada@example.com")
    strict_app.config["RATELIMIT_VERIFY_DISTINCT_METERS"] = "5 per hour"
    login(strict_client)
    token = csrf_of(strict_client, "/bills/electricity")

    def verify(meter: str):
        return strict_client.post("/bills/electricity/verify", headers={"X-CSRFToken": token}, data={
            "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": meter})

    for i in range(5):
        assert verify(f"12345678{i:04d}").status_code == 200
    for _ in range(3):  # asking again about a meter already seen is not a new one
        assert verify("123456780000").status_code == 200
    harvesting = verify("999999999999")
    assert harvesting.status_code == 429 and int(harvesting.headers["Retry-After"]) > 0


def test_payment_and_funding_submits_are_limited_per_user(strict_app, strict_client):
    from tests.conftest import form_tokens, verified_meter

    make_user("ada@example.com", balance_kobo=1_000_000)
    strict_app.config["RATELIMIT_PAYMENT_USER"] = "2 per minute"
    strict_app.config["RATELIMIT_FUNDING_USER"] = "2 per minute"
    login(strict_client)
    codes = []
    for _ in range(3):
        data = form_tokens(strict_client, "/bills/electricity") | {
            "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
            "amount": "1000", "phone": "08031234567"}
        data["verified_meter"] = verified_meter(data)
        codes.append(strict_client.post("/bills/electricity", data=data).status_code)
    assert codes == [303, 303, 429]
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 2
    funds = [strict_client.post("/wallet/fund", data=form_tokens(strict_client, "/wallet/fund")
                                | {"amount": "5000"}).status_code for _ in range(3)]
    assert funds[-1] == 429 and funds[:2] != [429, 429]
    assert strict_client.get("/bills/electricity").status_code == 200  # GETs are not counted


def test_a_dead_limit_store_falls_back_to_memory_and_never_fails_a_request(database_url):
    """Redis down (nothing listens on port 1): limits hold per process, and
    logins, verifications and payments still answer."""
    strict = {k: v for k, v in from_env({"REDIS_URL": "redis://127.0.0.1:1/0"}).items()
              if k.startswith("RATELIMIT_")}
    assert strict["RATELIMIT_STORAGE_URI"] == "redis://127.0.0.1:1/0"
    with fresh_app(base_config(database_url) | strict) as app:
        make_user("ada@example.com")
        client = app.test_client()
        codes = [login(client, password="wrong password 1").status_code for _ in range(7)]
        assert codes[:5] == [422] * 5 and codes[-1] == 429
        other = app.test_client()
        assert login(other, environ_base={"REMOTE_ADDR": "10.1.1.1"}).status_code == 303
        token = csrf_of(other, "/bills/electricity")
        verify = other.post("/bills/electricity/verify", headers={"X-CSRFToken": token}, data={
            "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111"},
            environ_base={"REMOTE_ADDR": "10.1.1.1"})
        assert verify.status_code == 200


def test_rate_limits_can_be_switched_off_for_a_load_benchmark(database_url):
    config = base_config(database_url) | {"RATELIMIT_ENABLED": False, "RATELIMIT_LOGIN_ACCOUNT_IP": "1 per hour"}
    with fresh_app(config) as app:
        make_user("ada@example.com")
        client = app.test_client()
        assert [login(client, password="wrong password 1").status_code for _ in range(3)] == [422] * 3
    assert from_env({})["RATELIMIT_ENABLED"] is True
    assert from_env({"RATELIMIT_ENABLED": "false"})["RATELIMIT_ENABLED"] is False


@pytest.mark.once
def test_wrong_passwords_share_one_counter_across_two_gunicorn_workers_on_redis(tmp_path):
    """The deployed shape: two gunicorn workers, limits in a private Redis."""
    from tests.servers import PrivateRedis, ServerMissing
    from tests.stack import Stack

    try:
        redis_server = PrivateRedis()
    except ServerMissing as missing:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(missing))
    try:
        with Stack(tmp_path, {"REDIS_URL": redis_server.url, "WEB_CONCURRENCY": "2",
                              "RATELIMIT_LOGIN_ACCOUNT_IP": "5 per minute;20 per hour"}) as stack:
            stack.migrate()
            stack.start("web")
            http = requests.Session()
            page = http.get(stack.base_url + "/signup", timeout=10).text
            token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
            assert http.post(stack.base_url + "/signup", data={
                "email": "ada@example.com", "password": PASSWORD, "confirm_password": PASSWORD,
                "csrf_token": token}, timeout=10, allow_redirects=False).status_code == 303
            codes = []
            for _ in range(20):
                # A new browser and connection each time: either worker may answer.
                fresh = requests.Session()
                page = fresh.get(stack.base_url + "/login", timeout=10).text
                token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
                codes.append(fresh.post(stack.base_url + "/login", data={
                    "email": "ada@example.com", "password": "wrong password 1", "csrf_token": token},
                    headers={"Connection": "close"}, timeout=10, allow_redirects=False).status_code)
            assert codes.index(429) == 5 and set(codes[5:]) == {429}, codes
            import redis

            keys = redis.Redis.from_url(redis_server.url).keys("*login-account-ip*")
            assert keys, "the counter is not in Redis"
    finally:
        redis_server.close()


# --- Headers, cookies, proxies -------------------------------------------------------


def _page_urls(payment: Payment) -> dict[str, list[str]]:
    return {
        "anonymous": ["/", "/login", "/signup", "/healthz", "/no-such-page"],
        "customer": ["/", "/wallet/fund", "/bills/electricity", f"/payments/{payment.reference}",
                     "/history", "/account", "/account/password"],
        "admin": ["/admin/", "/admin/payments", "/admin/payments.csv", f"/admin/payments/{payment.reference}",
                  "/admin/stuck", "/admin/wallets", "/admin/actions", "/admin/invariants"],
    }


def _assert_security_headers(response, url):
    csp = response.headers.get("Content-Security-Policy", "")
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";") if part.strip())
    assert "unsafe-inline" not in directives.get("script-src", "unsafe-inline"), url
    assert "unsafe-eval" not in csp, url
    assert directives.get("frame-ancestors") == "'none'", url
    assert response.headers.get("X-Frame-Options") == "DENY", url
    assert response.headers.get("X-Content-Type-Options") == "nosniff", url
    assert response.headers.get("Referrer-Policy") == "same-origin", url
    assert "camera=()" in response.headers.get("Permissions-Policy", ""), url
    assert response.headers.get("Cache-Control") == "no-store", url
    assert "Strict-Transport-Security" not in response.headers, url  # development


def test_security_headers_on_every_page_for_every_role(app, client, auth):
    customer = make_user("ada@example.com", balance_kobo=500_000)
    payment = make_payment(customer)
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    urls = _page_urls(payment)
    for url in urls["anonymous"]:
        _assert_security_headers(client.get(url), url)
    login(client)
    for url in urls["customer"]:
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_security_headers(response, url)
        html = response.get_data(as_text=True)
        # Nothing the CSP would block: no inline script, handler or style.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"\son[a-z]+=", html) and " style=" not in html, url
    auth.logout()
    login(client, email="root@example.com")
    auth.second_factor(admin)
    for url in urls["admin"]:
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_security_headers(response, url)
    static = client.get("/static/css/app.css")
    assert static.headers.get("Cache-Control") != "no-store"


def test_the_csp_names_exactly_the_configured_outside_origins(database_url):
    cdn = "https://cdn.jsdelivr.net/npm/htmx.org@2.0.11/dist/htmx.min.js"
    config = base_config(database_url) | {"HTMX_URL": cdn, "PAYSTACK_BASE_URL": "http://127.0.0.1:5055"}
    with fresh_app(config) as app:
        csp = app.test_client().get("/login").headers["Content-Security-Policy"]
        assert f"script-src 'self' {cdn}" in csp
        assert "form-action 'self' http://127.0.0.1:5055" in csp
    with fresh_app(base_config(database_url)) as app:  # the local htmx copy
        csp = app.test_client().get("/login").headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp or csp.endswith("script-src 'self'")


def test_cookies_are_httponly_and_samesite_lax(client):
    make_user("ada@example.com")
    response = login(client, remember=True)
    cookies = response.headers.getlist("Set-Cookie")
    for name in ("session=", "remember=", "known_device="):
        cookie = next(c for c in cookies if c.startswith(name))
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie, cookie


def test_production_adds_hsts_secure_cookies_and_trusts_one_proxy(database_url):
    config = (base_config(database_url) | from_env(PRODUCTION_OK)
              | {"SQLALCHEMY_DATABASE_URI": database_url, "HUEY_IMMEDIATE": True, "TESTING": True})
    with fresh_app(config) as app:
        assert app.config["TRUSTED_PROXY_HOPS"] == 1
        client = app.test_client()
        plain = client.get("/login", base_url="http://billvend.example")
        assert plain.status_code == 302 and plain.headers["Location"].startswith("https://")
        behind_router = client.get("/login", base_url="http://billvend.example",
                                   headers={"X-Forwarded-Proto": "https",
                                                      "X-Forwarded-For": "203.0.113.7"})
        assert behind_router.status_code == 200
        assert "max-age=" in behind_router.headers["Strict-Transport-Security"]
        cookie = next(c for c in behind_router.headers.getlist("Set-Cookie") if c.startswith("session="))
        assert "Secure" in cookie and "HttpOnly" in cookie
        with db.engine.connect() as conn:
            assert conn.scalar(sa.select(UserSession.ip_address)) == "203.0.113.7"


def test_production_answers_only_to_its_public_host(database_url):
    config = (base_config(database_url) | from_env(PRODUCTION_OK)
              | {"SQLALCHEMY_DATABASE_URI": database_url, "HUEY_IMMEDIATE": True, "TESTING": True})
    with fresh_app(config) as app:
        assert app.config["TRUSTED_HOSTS"] == ["billvend.example"]
        client = app.test_client()
        assert client.get("/login", base_url="https://billvend.example").status_code == 200
        for host in ("evil.example", "billvend.example.evil.example", "127.0.0.1"):
            response = client.get("/login", base_url=f"https://{host}")
            assert response.status_code == 400, host
        forged = client.get("/login", base_url="https://billvend.example",
                            headers={"Host": "evil.example"})
        assert forged.status_code == 400


def test_the_gateway_callback_url_comes_from_public_base_url_not_the_host_header(database_url):
    config = base_config(database_url) | {"PUBLIC_BASE_URL": "https://billvend.example"}
    with fresh_app(config) as app:
        client = app.test_client()
        # A Host header (and X-Forwarded-Host) of the client's choosing.
        client.environ_base.update(HTTP_HOST="evil.example", HTTP_X_FORWARDED_HOST="evil.example")
        Auth(client).signup()
        tokens = form_tokens(client, "/wallet/fund")
        response = client.post("/wallet/fund", data=tokens | {"amount": "5000"})
        assert response.status_code == 303
        # The simulated gateway sends the customer straight to our callback URL.
        assert response.headers["Location"].startswith("https://billvend.example/wallet/fund/callback?")


def test_no_proxy_is_trusted_locally(client):
    client.get("/login", headers={"X-Forwarded-For": "203.0.113.7"})
    with db.engine.connect() as conn:
        assert conn.scalar(sa.select(UserSession.ip_address)) == "127.0.0.1"


# --- Request limits -------------------------------------------------------------------


def test_a_two_megabyte_body_gets_413_and_changes_nothing(client):
    response = client.post("/signup", data={"email": "big@example.com", "password": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413 and b"too large" in response.data
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_a_crlf_or_foreign_next_is_ignored(client):
    make_user("ada@example.com")
    for target in ("/%0d%0aX:1", "//evil.example/", "https://evil.example/", "/\\evil.example",
                   "javascript:alert(1)"):
        data = {"email": "ada@example.com", "password": PASSWORD, "csrf_token": csrf_of(client, "/login")}
        response = client.post(f"/login?next={target}", data=data)
        assert response.status_code == 303 and response.headers["Location"] == "/", target
        client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    ok = client.post("/login?next=/history", data={"email": "ada@example.com", "password": PASSWORD,
                                                   "csrf_token": csrf_of(client, "/login")})
    assert ok.headers["Location"] == "/history"


@pytest.fixture
def admin_client(app, client, auth):
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    login(client, email="root@example.com")
    auth.second_factor(admin)
    return client


@pytest.mark.parametrize("query", ["email=%00", "email=a%00b@example.com", "date_to=9999-12-31",
                                   "date_from=0001-01-01", "date_from=9999-12-31&date_to=9999-12-31"])
def test_bad_csv_and_list_filters_are_refused_before_streaming(admin_client, query):
    csv_response = admin_client.get(f"/admin/payments.csv?{query}")
    assert csv_response.status_code == 400, csv_response.get_data(as_text=True)
    assert admin_client.get(f"/admin/payments?{query}").status_code == 422


def test_a_failure_mid_stream_ends_the_csv_with_an_error_line(admin_client, monkeypatch):
    from billvend.web.admin import queries

    customer = make_user("ada@example.com", balance_kobo=500_000)
    make_payment(customer)
    real = queries.iter_payment_rows

    def failing(filters):
        rows = real(filters)
        yield next(rows)
        raise RuntimeError("connection lost")

    monkeypatch.setattr(queries, "iter_payment_rows", failing)
    body = admin_client.get("/admin/payments.csv").get_data(as_text=True)
    assert body.strip().splitlines()[-1].startswith("ERROR: the export failed after 1 rows")


# --- Passwords and emails ----------------------------------------------------------------


@pytest.mark.parametrize("password,message", [
    ("Password1", b"at least 10 characters"),
    ("12345678901", b"common"),
    ("password123", b"common"),
    ("ada@example.com!!", b"email address"),
    ("ada-the-great-99", b"email address"),
])
def test_a_weak_password_is_refused_with_a_clear_message(client, auth, password, message):
    response = auth.signup(email="ada@example.com", password=password)
    assert response.status_code == 422 and message in response.data, response.data[:3000]
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 0


def test_an_existing_weak_password_must_be_changed_at_next_login(client):
    user = make_user("ada@example.com")
    user.set_password("password1")
    db.session.commit()
    response = login(client, password="password1")
    assert response.status_code == 303 and response.headers["Location"] == "/account/password"
    gated = client.get("/wallet/fund")
    assert gated.status_code == 303 and gated.headers["Location"] == "/account/password"
    changed = client.post("/account/password", data={
        "current_password": "password1", "password": "a new long secret 42",
        "confirm_password": "a new long secret 42", "csrf_token": csrf_of(client, "/account/password")})
    assert changed.status_code == 303 and client.get("/wallet/fund").status_code == 200


def test_emails_are_normalised_and_look_alikes_refused(client, auth):
    assert auth.signup(email="ＡＤＡ@Example.COM").status_code == 303
    assert db.session.scalar(sa.select(User.email)) == "ada@example.com"
    auth.logout()
    assert login(client, email="Ada@example.com").status_code == 303
    auth.logout()
    lookalike = auth.signup(email="аda@example.com")  # Cyrillic а
    assert lookalike.status_code == 422 and b"look-alike" in lookalike.data
    assert db.session.scalar(sa.select(sa.func.count(User.id))) == 1


def test_login_hashes_as_much_for_an_unknown_email(client, monkeypatch):
    from billvend.web import security

    make_user("ada@example.com")
    calls = []
    real = security.check_password_hash
    monkeypatch.setattr(security, "check_password_hash", lambda *a: calls.append(a) or real(*a))
    assert login(client, email="nobody@example.com").status_code == 422
    assert len(calls) == 1 and calls[0][0].startswith("scrypt:")


def test_the_procfile_web_process_has_no_shared_control_socket():
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert "--no-control-socket" in web


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


def test_a_sign_in_from_a_new_device_mails_the_owner_and_a_known_one_does_not(client, auth):
    """Issue 23: the owner hears of a sign-in from a browser that never
    signed in to the account; the same browser signing in again is quiet."""
    from billvend.notifications.models import Message

    make_user("ada@example.com")
    assert login(client).status_code == 303
    client.post("/logout", data={"csrf_token": csrf_of(client, "/")})
    assert login(client).status_code == 303
    rows = db.session.scalars(sa.select(Message)).all()
    assert [(m.channel, m.recipient, m.template) for m in rows] == [("email", "ada@example.com", "new_signin")]
    assert rows[0].event_key.startswith(f"user:{rows[0].user_id}:signin:")


def test_a_signup_with_an_existing_address_mails_its_owner_once_a_day(client):
    from billvend.notifications.models import Message

    make_user("ada@example.com")
    for _ in range(2):
        refused = client.post("/signup", data={"email": "ada@example.com", "password": "another horse 2",
                                               "confirm_password": "another horse 2",
                                               "csrf_token": csrf_of(client, "/signup")})
        assert refused.status_code == 422
    rows = db.session.scalars(sa.select(Message)).all()
    assert [(m.recipient, m.template) for m in rows] == [("ada@example.com", "signup_attempt")]
