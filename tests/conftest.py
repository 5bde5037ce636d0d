"""Shared fixtures: a fresh database per test, a client, an auth helper, and
Huey in immediate mode (tasks run inline at enqueue).

Two passes (``make test``): the default backend is a temporary SQLite file;
``BILLVEND_TEST_BACKEND=postgresql`` switches the ``app`` fixture to a
throwaway database created for this session on the server named by
``TEST_DATABASE_URL``. On that pass a missing ``TEST_DATABASE_URL`` fails the
run (never silently falls back to SQLite). Tests marked ``postgresql`` (real
concurrency: SQLite serialises writers, so there is no race to test) are
skipped on the SQLite pass and run on the PostgreSQL pass.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import uuid

import pytest
import sqlalchemy as sa
from flask import g, has_app_context
from flask.testing import FlaskClient

from billvend import create_app
from billvend.ledger import services as ledger
from billvend.notifications.tasks import stop_senders
from billvend.platform.extensions import db
from tests.helpers import Interleave, make_user

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')
KEY_RE = re.compile(r'id="idempotency_key" name="idempotency_key" type="hidden" value="([^"]+)"')
CONFIRM_RE = re.compile(r'name="confirm_meter" type="hidden" value="([^"]*)"')


#: A strong key for this test process (a published test key would be refused
#: wherever the app requires a strong one).
TEST_SECRET_KEY = secrets.token_hex(32)
#: Limits no ordinary test reaches: the suite signs up and logs in many times
#: from one address. Tests of the limits set strict ones (tests/test_security.py).
GENEROUS_LIMITS = {name: "100000 per minute" for name in (
    "RATELIMIT_LOGIN_ACCOUNT_IP", "RATELIMIT_LOGIN_IP", "RATELIMIT_LOGIN_ACCOUNT",
    "RATELIMIT_SIGNUP_IP", "RATELIMIT_VERIFY_USER", "RATELIMIT_VERIFY_IP",
    "RATELIMIT_VERIFY_DISTINCT_METERS", "RATELIMIT_PAYMENT_USER", "RATELIMIT_FUNDING_USER",
    "RATELIMIT_TWO_FACTOR", "RATELIMIT_WEBHOOK_IP", "RATELIMIT_PASSWORD_RESET_EMAIL",
    "RATELIMIT_PASSWORD_RESET_IP", "RATELIMIT_EMAIL_VERIFICATION_USER",
    "RATELIMIT_PHONE_CODE_USER", "RATELIMIT_TRANSFER_USER")}


def base_config(database_url: str) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": TEST_SECRET_KEY,
        # Limits stay on (a fresh memory storage per app), but out of reach.
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_STORAGE_URI": "memory://",
        **GENEROUS_LIMITS,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "HUEY_IMMEDIATE": True,
        "VENDING_PROVIDER": "simulated",
        "SIMULATOR_DELAY_SECONDS": 0.0,
        "SIMULATOR_SUCCESS_RATE": 1.0,
        # Believe "never received" at once unless a test is about the grace.
        "PROVIDER_NOT_FOUND_GRACE_SECONDS": 0,
        "REDIS_URL": None,
        "HTMX_URL": "/static/vendor/htmx.min.js",
        # The in-process test double: checkout sends the customer straight
        # back to the callback, verify says success (tests/test_funding*.py
        # use the Paystack sandbox over real sockets instead).
        "FUNDING_GATEWAY": "simulated",
        # Messages stay in the outbox: no sender threads write behind a
        # test's back. Tests of sending set it (tests/test_notifications.py).
        "NOTIFY_CONCURRENCY": 0,
    }


# Sandbox servers made outside a test (module-scoped fixtures) keep their
# state in memory only; each test gets a file of its own (below).
os.environ["SANDBOX_STATE_PATH"] = "none"


@pytest.fixture(autouse=True)
def sandbox_state_path(tmp_path_factory, monkeypatch):
    """Each test's sandbox servers (in-process, or the Procfile's ``sandbox``
    started by a test) keep their state in a file of their own, never in
    ``instance/`` and never another test's."""
    path = tmp_path_factory.mktemp("sandbox-state") / "sandbox-state.json"
    monkeypatch.setenv("SANDBOX_STATE_PATH", str(path))
    return path


def selected_backend() -> str:
    """``sqlite`` (default) or ``postgresql``, from ``BILLVEND_TEST_BACKEND``."""
    return os.environ.get("BILLVEND_TEST_BACKEND") or "sqlite"


def pytest_configure(config):
    backend = selected_backend()
    if backend not in {"sqlite", "postgresql"}:
        raise pytest.UsageError(f"BILLVEND_TEST_BACKEND must be sqlite or postgresql, not {backend!r}")
    if backend == "postgresql" and not os.environ.get("TEST_DATABASE_URL"):
        raise pytest.UsageError(
            "BILLVEND_TEST_BACKEND=postgresql needs TEST_DATABASE_URL "
            "(e.g. postgresql://postgres@127.0.0.1/postgres)")


def pytest_collection_modifyitems(config, items):
    if selected_backend() == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL: runs on the PostgreSQL pass (make test)")
    for item in items:
        if "postgresql" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """A database URL for this test session (SQLite file, or PostgreSQL)."""
    if selected_backend() != "postgresql":
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.sqlite3")
        return
    pg_url = os.environ["TEST_DATABASE_URL"]
    from billvend.platform.config import _database_url

    admin_url = sa.engine.make_url(_database_url(pg_url))
    name = f"billvend_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def fresh_app(config: dict):
    """An app built from ``config`` on a freshly emptied database (tables
    from the models, system wallets seeded), its app context pushed."""
    app = create_app(config)
    app.test_client_class = FreshSessionClient
    with app.app_context():
        db.drop_all()
        db.create_all()
        ledger.ensure_system_wallets()
    ctx = app.app_context()
    ctx.push()
    try:
        yield app
    finally:
        stop_senders()
        db.session.remove()
        ctx.pop()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(database_url):
    """An app on a freshly emptied database (tables from the models)."""
    with fresh_app(base_config(database_url)) as app:
        yield app


class FreshSessionClient(FlaskClient):
    """Each request starts with an empty identity map, as it would in a
    server, although the test keeps one app context (and session) pushed.
    Flask reuses that app context for the request, so ``g`` would carry one
    request's signed-in user and CSRF token into the next (another client's
    too): those are dropped, as a server's fresh app context would."""

    def open(self, *args, **kwargs):
        db.session.expire_all()
        if has_app_context():
            for key in ("_login_user", "csrf_token", "csrf_valid"):
                g.pop(key, None)
        return super().open(*args, **kwargs)


@pytest.fixture
def client(app):
    app.test_client_class = FreshSessionClient
    return app.test_client()


class Auth:
    """Drive the real sign-up and login forms through the test client."""

    def __init__(self, client):
        self.client = client

    def csrf(self, path: str) -> str:
        html = self.client.get(path).get_data(as_text=True)
        match = CSRF_RE.search(html)
        assert match, f"no CSRF token on {path}"
        return match.group(1) or match.group(2)

    def signup(self, email="ada@example.com", password="correct horse 1"):
        return self.client.post("/signup", data={
            "email": email, "password": password, "confirm_password": password,
            "csrf_token": self.csrf("/signup"),
        })

    def login(self, email="ada@example.com", password="correct horse 1"):
        return self.client.post("/login", data={
            "email": email, "password": password, "csrf_token": self.csrf("/login"),
        })

    def logout(self):
        return self.client.post("/logout", data={"csrf_token": self.csrf("/")})

    def second_factor(self, user) -> None:
        """Give ``user``'s TOTP code in this client's session (enrolling the
        admin first if needed), as an admin does before ``/admin`` opens."""
        secret = enrol_totp(user)
        page = self.client.get("/account/two-factor")
        assert page.status_code == 200, page.status_code
        match = CSRF_RE.search(page.get_data(as_text=True))
        response = self.client.post("/account/two-factor", data={
            "code": totp_code(secret), "csrf_token": match.group(1) or match.group(2)})
        assert response.status_code == 303, response.get_data(as_text=True)[:2000]


def enrol_totp(user) -> str:
    """Give ``user`` a confirmed TOTP secret (no recovery codes); returns it."""
    from billvend.accounts.models import User
    from billvend.platform.models import utcnow

    fresh = db.session.get(User, user.id)
    if not fresh.has_second_factor:
        fresh.totp_secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
        fresh.totp_enabled_at = utcnow()
    # Tests sign one admin in several times a second; the one-use-per-step
    # rule has its own test (tests/test_security.py).
    fresh.totp_last_step = None
    db.session.commit()
    return fresh.totp_secret


def totp_code(secret: str, last_step: int | None = None) -> str:
    """A code for ``secret`` that has not been used yet (each step works once)."""
    import time

    import pyotp

    totp = pyotp.TOTP(secret)
    step = totp.timecode(time.time())
    if last_step is not None and step <= last_step:
        step = last_step + 1  # within the one-step drift window
    return totp.generate_otp(step)


@pytest.fixture
def auth(client):
    return Auth(client)


def form_tokens(client, path: str) -> dict[str, str]:
    """The hidden fields a browser sends back from the form at ``path``: the
    CSRF token, a fresh idempotency key, and the pay page's ``confirm_meter``."""
    html = client.get(path).get_data(as_text=True)
    csrf = CSRF_RE.search(html)
    key = KEY_RE.search(html)
    assert csrf and key, f"form tokens missing on {path}"
    tokens = {"csrf_token": csrf.group(1) or csrf.group(2), "idempotency_key": key.group(1)}
    confirm = CONFIRM_RE.search(html)
    if confirm:
        tokens["confirm_meter"] = confirm.group(1)
    return tokens


def verified_meter(data: dict) -> str:
    """The ``verified_meter`` value the pay form carries once the customer has
    seen the name on the meter in ``data``."""
    return f"{data['disco']}:{data['meter_type']}:{data['meter_number']}"


@pytest.fixture
def fund(client):
    """POST the fund form: ``fund("5000")``. With the simulated gateway the
    303 goes to our own callback (an instantly approved card), which this
    follows as a browser would; the callback's answer is returned."""

    def _fund(amount: str, **extra):
        data = form_tokens(client, "/wallet/fund") | {"amount": amount} | extra
        response = client.post("/wallet/fund", data=data)
        if response.status_code == 303 and "/wallet/fund/callback" in response.headers["Location"]:
            response = client.get(response.headers["Location"])
        return response

    return _fund


@pytest.fixture
def pay(client):
    """POST the electricity form with sensible defaults; override any field.

    Sends ``verified_meter`` as the htmx verification leaves it in the form
    (the customer saw the name), so a valid form pays at once; pass
    ``verified_meter=""`` to get the no-JavaScript confirm step instead.
    """

    def _pay(meter_number="1111111111111", amount="1000", **extra):
        data = form_tokens(client, "/bills/electricity") | {
            "disco": "ikeja-electric",
            "meter_type": "prepaid",
            "meter_number": meter_number,
            "amount": amount,
            "phone": "08031234567",
        } | extra
        data.setdefault("verified_meter", verified_meter(data))
        return client.post("/bills/electricity", data=data)

    return _pay


@pytest.fixture
def customer(client, auth):
    """Ada, signed in, with ₦10,000 in her wallet; returns her ``User``."""
    user = make_user("ada@example.com", balance_kobo=1_000_000)
    auth.login()
    return user


@pytest.fixture
def interleave(app):
    """Force one interleaving deterministically: ``interleave(matches, n,
    action)`` hooks the database engine so that ``action()`` (typically
    "another worker" committing its step in its own app context, so its own
    session and connection; see ``tests.helpers.in_other_worker``) runs at
    the exact moment after the ``n``-th statement of the test's own thread
    that ``matches``, e.g. between the code's read of a payment and its
    conditional UPDATE. Returns the hook (``hook.fired`` says it ran)."""
    hooks = []

    def install(matches, n, action):
        hook = Interleave(matches, n, action)
        sa.event.listen(db.engine, "after_cursor_execute", hook)
        hooks.append(hook)
        return hook

    yield install
    for hook in hooks:
        sa.event.remove(db.engine, "after_cursor_execute", hook)


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd, ``tests.servers.MailServer``) on a free
    port; its ``inbox`` holds what arrived."""
    from tests.servers import MailServer

    server = MailServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def termii():
    """The sandbox (its Termii SMS API among the others) on a free port: the
    URL for ``SMS_BASE_URL``."""
    from billvend.sandbox import create_app as create_sandbox_app, serve_in_thread

    server, url = serve_in_thread(create_sandbox_app({"SANDBOX_STATE_PATH": "none"}))
    yield url
    server.shutdown()
