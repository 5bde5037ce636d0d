"""Issue 14: the web tier never waits on the provider.

The meter verification cache (hits skip the provider, TTLs, invalid meters,
documented-fields clients), the status long poll, /metrics and its
protection, and request ids in JSON logs from the request into the tasks.
"""

from __future__ import annotations

import io
import re
import json
import logging
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.platform import logs
from billvend.vending import meter_verification, tasks
from billvend.web.bills import routes
from billvend.platform.extensions import db
from billvend.vending.models import MeterVerificationCache, Payment
from billvend.accounts.models import User
from billvend.vending.providers import base, outcomes
from billvend.vending.providers.simulated import SimulatedProvider
from tests.conftest import form_tokens
from tests.helpers import assert_books_balance, make_payment, make_user

METER = "1111111111111"


class CountingProvider:
    """The simulator (delay 0), counting ``verify_meter`` calls."""

    name = "counting"

    def __init__(self, answer: base.MeterVerification | None = None):
        self.verify_calls = 0
        self.answer = answer

    def verify_meter(self, service_id, meter_number, meter_type):
        self.verify_calls += 1
        if self.answer is not None:
            return self.answer
        return SimulatedProvider(db.engine, delay_seconds=0).verify_meter(service_id, meter_number, meter_type)


@pytest.fixture
def provider(monkeypatch):
    counting = CountingProvider()
    monkeypatch.setattr(routes, "get_provider", lambda: counting)
    return counting


def cache_row(meter_number=METER) -> MeterVerificationCache | None:
    db.session.expire_all()
    return db.session.scalar(sa.select(MeterVerificationCache).where(
        MeterVerificationCache.meter_number == meter_number))


def check_meter(client, meter_number=METER, disco="ikeja-electric", meter_type="prepaid"):
    data = form_tokens(client, "/bills/electricity")
    return client.post("/bills/electricity/verify", headers={"HX-Request": "true"}, data={
        "csrf_token": data["csrf_token"], "disco": disco, "meter_type": meter_type,
        "meter_number": meter_number})


def documented_fields(client, meter_number=METER, amount="1000") -> dict:
    """Only DESIGN.md's fields: no ``verified_meter``, no ``confirm_meter``."""
    tokens = form_tokens(client, "/bills/electricity")
    return {"csrf_token": tokens["csrf_token"], "idempotency_key": tokens["idempotency_key"],
            "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": meter_number,
            "amount": amount, "phone": "08031234567"}


def test_pay_after_the_htmx_check_does_not_call_the_provider_again(client, auth, fund, pay, provider):
    auth.signup()
    fund("5000")
    checked = check_meter(client)
    name, _ = outcomes.customer_for(METER, "ikeja-electric")
    assert checked.status_code == 200 and name in checked.get_data(as_text=True)
    assert provider.verify_calls == 1
    paid = pay(METER, "1000")
    assert paid.status_code == 303
    assert provider.verify_calls == 1  # the pay submit used the cache
    payment = db.session.scalar(sa.select(Payment))
    assert payment.customer_name == name and payment.status == "successful"
    assert_books_balance()


def test_confirm_step_then_pay_calls_the_provider_once(client, auth, fund, provider):
    auth.signup()
    fund("5000")
    data = form_tokens(client, "/bills/electricity") | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": METER,
        "amount": "1000", "phone": "08031234567"}
    confirm = client.post("/bills/electricity", data=data)
    assert confirm.status_code == 200 and b"Confirm payment" in confirm.data
    data["verified_meter"] = f"ikeja-electric:prepaid:{METER}"
    assert client.post("/bills/electricity", data=data).status_code == 303
    assert provider.verify_calls == 1


def test_documented_fields_client_is_verified_on_the_server_from_the_cache(client, auth, fund, provider):
    auth.signup()
    fund("5000")
    first = client.post("/bills/electricity", data=documented_fields(client))
    assert first.status_code == 303 and provider.verify_calls == 1  # a miss: asked the provider
    second = client.post("/bills/electricity", data=documented_fields(client))
    assert second.status_code == 303 and provider.verify_calls == 1  # fresh: from the cache
    refused = client.post("/bills/electricity", data=documented_fields(client, outcomes.INVALID_METER))
    assert refused.status_code == 422 and provider.verify_calls == 2
    again = client.post("/bills/electricity", data=documented_fields(client, outcomes.INVALID_METER))
    assert again.status_code == 422 and provider.verify_calls == 2  # the invalid answer is cached too
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 2
    assert_books_balance()


def test_ttls_valid_invalid_and_errors_not_cached(app, client, auth, provider):
    auth.signup()
    check_meter(client)
    valid = cache_row()
    assert valid.status == "valid"
    assert valid.expires_at - valid.verified_at == timedelta(seconds=600)
    check_meter(client, outcomes.INVALID_METER)
    invalid = cache_row(outcomes.INVALID_METER)
    assert invalid.status == "invalid"
    assert invalid.expires_at - invalid.verified_at == timedelta(seconds=60)

    provider.answer = base.MeterVerification("error", message="disco down")
    check_meter(client, "1234567890123")
    assert cache_row("1234567890123") is None  # the next request asks again
    assert provider.verify_calls == 3


def test_an_expired_answer_is_asked_again(client, auth, provider):
    auth.signup()
    check_meter(client)
    check_meter(client)
    assert provider.verify_calls == 1
    db.session.execute(sa.update(MeterVerificationCache).values(
        expires_at=cache_row().verified_at - timedelta(seconds=1)))
    db.session.commit()
    check_meter(client)
    assert provider.verify_calls == 2
    assert cache_row().expires_at > cache_row().verified_at  # refreshed


def test_the_key_is_disco_type_and_meter(client, auth, provider):
    auth.signup()
    check_meter(client)
    check_meter(client, disco="eko-electric")
    check_meter(client, METER, meter_type="postpaid")
    assert provider.verify_calls == 3
    assert db.session.scalar(sa.select(sa.func.count()).select_from(MeterVerificationCache)) == 3


def test_a_slow_provider_is_cut_off_at_the_deadline(app, client, auth, monkeypatch):
    release = threading.Event()

    class Slow:
        name = "slow"

        def verify_meter(self, *args):
            release.wait(30)  # far past the deadline
            return base.MeterVerification("valid", customer_name="LATE")

    app.config["METER_VERIFICATION_DEADLINE_SECONDS"] = 0.2
    monkeypatch.setattr(routes, "get_provider", Slow)
    auth.signup()
    tokens = form_tokens(client, "/bills/electricity")
    started = time.monotonic()
    response = client.post("/bills/electricity/verify", headers={"HX-Request": "true"}, data={
        "csrf_token": tokens["csrf_token"], "disco": "ikeja-electric", "meter_type": "prepaid",
        "meter_number": METER})
    elapsed = time.monotonic() - started
    release.set()
    html = response.get_data(as_text=True)
    assert elapsed < 15  # generous: the deadline is 0.2 s, the provider would take 30 s
    assert "could not reach the disco" in html and "LATE" not in html
    assert cache_row() is None  # a deadline is not an answer: nothing cached


def test_verification_refuses_to_run_inside_a_transaction(app):
    from billvend.platform import transactions

    @transactions.unit_of_work
    def inside():
        return meter_verification.verify("ikeja-electric", "1231231231231", "prepaid", CountingProvider())

    with pytest.raises(transactions.ExternalCallInTransaction):
        inside()


# -- the status long poll ------------------------------------------------------

def _set_status_later(app, payment_id: int, status: str, delay_seconds: float):
    def run():
        time.sleep(delay_seconds)
        with app.app_context():
            db.session.execute(sa.update(Payment).where(Payment.id == payment_id).values(status=status))
            db.session.commit()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_long_poll_answers_promptly_when_the_status_changes(app, client, auth):
    app.config["STATUS_LONG_POLL_SECONDS"] = 20.0
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    thread = _set_status_later(app, payment.id, "vending", 0.5)
    started = time.monotonic()
    response = client.get(f"/payments/{payment.reference}/status?since=pending", headers={"HX-Request": "true"})
    elapsed = time.monotonic() - started
    thread.join()
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'data-status="vending"' in html
    assert 0.4 < elapsed < 10  # woke on the change, not at the 20 s limit
    assert f'status?since=vending"' in html  # the next long poll waits on the new status


def test_one_watcher_wakes_exactly_the_waiters_whose_payment_changed(app):
    from billvend.vending import status_watch

    user = make_user(balance_kobo=500_000)
    changing, quiet = make_payment(user), make_payment(user)
    watcher = status_watch.watcher_for(app)
    results = {}

    def wait(name, payment_id, timeout_seconds):
        results[name] = watcher.wait(payment_id, "pending", timeout_seconds)

    threads = [threading.Thread(target=wait, args=(name, pid, timeout)) for name, pid, timeout in (
        ("first", changing.id, 20), ("second", changing.id, 20), ("quiet", quiet.id, 1.0))]
    for thread in threads:
        thread.start()
    setter = _set_status_later(app, changing.id, "vending", 0.3)
    started = time.monotonic()
    for thread in threads:
        thread.join()
    setter.join()
    assert results == {"first": True, "second": True, "quiet": False}
    assert time.monotonic() - started < 10  # woken, not timed out at 20 s
    assert watcher._waiters == {}  # nobody left registered


def test_long_poll_gives_up_after_its_limit_and_polls_again(app, client, auth):
    app.config["STATUS_LONG_POLL_SECONDS"] = 0.3
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    response = client.get(f"/payments/{payment.reference}/status?since=pending", headers={"HX-Request": "true"})
    html = response.get_data(as_text=True)
    assert 'data-status="pending"' in html and 'hx-trigger="load, every 10s"' in html


def test_one_user_cannot_hold_more_than_a_few_web_threads_in_long_polls(app, client, auth):
    """Each long poll holds a web thread for up to STATUS_LONG_POLL_SECONDS:
    a signed-in user opening many at once could take every thread of a
    process. Past STATUS_LONG_POLLS_PER_USER waiting requests, theirs are
    answered at once and the panel falls back to plain polling every 3 s
    (not an immediate new long poll, which would be a busy loop)."""
    from billvend.vending import status_watch

    app.config.update(STATUS_LONG_POLL_SECONDS=20.0, STATUS_LONG_POLLS_PER_USER=2)
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    watcher = status_watch.watcher_for(app)
    holders = [threading.Thread(target=watcher.wait, args=(payment.id, "pending", 3.0),
                                kwargs={"holder": user.id, "max_per_holder": 2}) for _ in range(2)]
    for thread in holders:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    response = client.get(f"/payments/{payment.reference}/status?since=pending", headers={"HX-Request": "true"})
    elapsed = time.monotonic() - started
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and elapsed < 2  # not held
    assert 'data-status="pending"' in html and 'hx-trigger="every 3s"' in html and "since=" not in html
    # Another user is not affected by this one's waits.
    other = make_user(email="bob@example.com", balance_kobo=500_000)
    assert watcher.wait(make_payment(other).id, "pending", 0.2, holder=other.id, max_per_holder=2) is False
    for thread in holders:
        thread.join()
    assert watcher._waiters == {} and watcher._per_holder == {}


def test_long_poll_does_not_wait_when_the_page_is_behind_or_final(app, client, auth):
    app.config["STATUS_LONG_POLL_SECONDS"] = 30.0
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    started = time.monotonic()
    behind = client.get(f"/payments/{payment.reference}/status?since=vending", headers={"HX-Request": "true"})
    assert 'data-status="pending"' in behind.get_data(as_text=True)
    tasks.vend(payment.id)
    final = client.get(f"/payments/{payment.reference}/status?since=successful", headers={"HX-Request": "true"})
    html = final.get_data(as_text=True)
    assert "hx-get" not in html and "Your token" in html
    assert time.monotonic() - started < 10  # neither waited for the 30 s limit


def test_polling_backs_off_after_the_first_seconds_and_stays_bounded(app, client, auth):
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    path = f"/payments/{payment.reference}"
    for age_seconds, trigger in ((5, "load, every 10s"), (60, "every 3s"), (600, "every 15s"),
                                 (7200, "every 60s")):
        db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(
            created_at=_utc_ago(age_seconds)))
        db.session.commit()
        html = client.get(path).get_data(as_text=True)
        assert f'hx-trigger="{trigger}"' in html, age_seconds


def _utc_ago(seconds: float):
    from billvend.platform.models import utcnow

    return utcnow() - timedelta(seconds=seconds)


def test_without_javascript_the_page_refreshes_itself(client, auth):
    user = make_user(balance_kobo=200_000)
    payment = make_payment(user)
    auth.login(email=user.email)
    page = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="3">' in page
    plain = client.get(f"/payments/{payment.reference}/status?since=pending")
    assert plain.status_code == 302 and plain.headers["Location"] == f"/payments/{payment.reference}"


# -- /metrics ------------------------------------------------------------------

def test_metrics_content(app, client, auth, fund, pay):
    auth.signup()
    fund("5000")
    check_meter(client)
    pay(METER, "1000")
    text = client.get("/metrics").get_data(as_text=True)
    assert ('billvend_http_request_duration_seconds_count{endpoint="bills.electricity",method="POST",'
            'status="303"}') in text
    assert 'billvend_payments{status="successful"}' in text
    assert "billvend_queue_depth" in text
    assert 'billvend_meter_verification_lookups_total{result="hit"}' in text
    assert 'billvend_meter_verification_lookups_total{result="miss"}' in text
    assert ('billvend_provider_call_duration_seconds_count{call="vend",disco="ikeja-electric",'
            'outcome="delivered",provider="simulated"}') in text
    payment = db.session.scalar(sa.select(Payment))
    assert payment.token not in text and payment.reference not in text and METER not in text


def test_metrics_need_the_token_or_loopback(app, client):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    remote = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert remote.status_code == 404
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 404
    app.config["METRICS_TOKEN"] = "s3cret-scrape-token"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape-token"},
                    environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert ok.status_code == 200 and b"billvend_payments" in ok.data


def test_worker_heartbeat_reaches_metrics_and_the_admin_overview(app, client):
    from billvend.platform import heartbeat

    heartbeat.beat("host:1", 64)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'billvend_worker_heartbeat_age_seconds{worker="host:1"}' in text
    last, age, live = heartbeat.latest()
    assert last is not None and 0 <= age < 60 and live == 64


# -- logs ------------------------------------------------------------------------

def test_request_id_follows_a_payment_into_its_tasks(app, client, auth, fund, pay, caplog, monkeypatch):
    seen_in_vend = []

    class LoggingProvider:
        name = "logging"

        def verify_meter(self, *args):
            return SimulatedProvider(db.engine, delay_seconds=0).verify_meter(*args)

        def vend(self, **order):
            logging.getLogger("billvend.test").info("vending %s", order["request_id"])
            seen_in_vend.append(logs.current_request_id())
            return SimulatedProvider(db.engine, delay_seconds=0).vend(**order)

    monkeypatch.setattr(tasks, "get_provider", LoggingProvider)
    auth.signup()
    fund("5000")
    caplog.set_level(logging.INFO)
    response = pay(METER, "1000")
    rid = response.headers["X-Request-ID"]
    assert rid
    payment = db.session.scalar(sa.select(Payment))
    assert payment.request_id == rid
    assert seen_in_vend == [rid]  # the task ran with the request's id
    request_lines = [r for r in caplog.records if r.name == "billvend.request" and r.request_id == rid]
    assert request_lines and request_lines[0].endpoint == "bills.electricity"
    assert request_lines[0].rule == "/bills/electricity" and request_lines[0].status == 303

    # A later task (a requery hours later) runs outside any request: it finds
    # the id on the payment.
    logs.set_request_id(None)
    seen_in_vend.clear()
    db.session.execute(sa.update(Payment).values(status="pending"))
    db.session.commit()
    tasks.vend(payment.id)
    assert seen_in_vend == [rid]


def test_router_request_id_is_kept_and_a_bad_one_replaced(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc123-router-id"}).headers["X-Request-ID"] \
        == "abc123-router-id"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert replaced and "<" not in replaced and replaced != "bad id <script>"


def test_log_lines_are_json_with_the_request_id_and_no_secrets():
    stream = io.StringIO()
    logger = logging.getLogger("billvend.test.json")
    logger.propagate = False
    logger.addHandler(logs.json_handler(stream))
    logger.setLevel(logging.INFO)
    token = logs.set_request_id("req-0001")
    try:
        logger.info("delivered token 1234-5678-9012-3456-7890 for 20261201233012ab34cd56ef")
        logger.info("login password=hunter22 api-key: sk_live_abc secret-key=xyz")
        logger.info("reset link https://billvend.ng/reset/IjEi.Zm9v.YmFy sent")
        logger.info("raw %s", "12345678901234567890")
    finally:
        logs._request_id.reset(token)
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and all(r["request_id"] == "req-0001" for r in records)
    assert {"time", "level", "logger", "message"} <= set(records[0])
    text = stream.getvalue()
    for secret in ("1234-5678-9012-3456-7890", "hunter22", "sk_live_abc", "xyz", "IjEi.Zm9v.YmFy",
                   "12345678901234567890"):
        assert secret not in text, secret
    assert "20261201233012ab34cd56ef" in records[0]["message"]  # a payment reference is not a secret


def test_admin_overview_shows_the_worker_heartbeat_and_queue_depth(client, auth):
    from billvend.platform import heartbeat
    from tests.test_admin import PASSWORD, make_admin

    admin = make_admin()
    assert auth.login("root@example.com", PASSWORD).status_code == 303
    auth.second_factor(admin)
    page = client.get("/admin/").get_data(as_text=True)
    assert "none yet: no worker has started" in page
    heartbeat.beat("host:7", 64)
    page = client.get("/admin/").get_data(as_text=True)
    block = page[page.index('data-testid="workers"'):]
    assert "Last worker heartbeat" in block and "64 vends at once" in block
    assert re.search(r'data-testid="queue-depth">0<', block)


def test_a_cached_type_mismatch_still_offers_the_one_tap_switch(client, auth, provider):
    """The disco's "this is a postpaid meter" is cached like any invalid
    answer, and the switch it offers must survive the cache."""
    auth.signup()
    provider.answer = base.MeterVerification(
        "invalid", message="This is a postpaid meter, not prepaid", other_meter_type="postpaid")
    first = check_meter(client).get_data(as_text=True)
    second = check_meter(client).get_data(as_text=True)
    assert provider.verify_calls == 1  # the second answer came from the cache
    for page in (first, second):
        assert 'name="switch_meter_type" value="postpaid"' in page


def test_a_database_error_quoting_a_password_hash_or_totp_secret_is_masked():
    """A failed statement's message quotes its parameters: the stored
    password hash (werkzeug's ``scrypt:...$salt$hex``) or a TOTP secret must
    not reach the logs in full, under any column name or none."""
    from werkzeug.security import generate_password_hash

    hashed = generate_password_hash("correct horse battery 1")
    lines = [
        f"(psycopg.errors.X) ... [parameters: ('ada@example.com', '{hashed}', None)]",
        f"UPDATE users SET password_hash={hashed}",
        "INSERT users totp_secret: JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        f"pbkdf2 too: pbkdf2:sha256:600000$abcDEF12$" + "ab" * 32,
    ]
    for line in lines:
        masked = logs.redact(line)
        assert hashed.split("$")[-1] not in masked, masked
        assert "JBSWY3DPEHPK3PXP" not in masked and "ab" * 32 not in masked, masked
    assert "ada@example.com" in logs.redact(lines[0])


def test_logs_are_readable_in_development_and_json_in_production():
    from billvend.platform.config import from_env

    assert from_env({})["LOG_FORMAT"] == "text"
    assert from_env({"BILLVEND_ENV": "production"})["LOG_FORMAT"] == "json"
    assert from_env({"LOG_FORMAT": "JSON"})["LOG_FORMAT"] == "json"
    assert from_env({"BILLVEND_ENV": "production", "LOG_FORMAT": "text"})["LOG_FORMAT"] == "text"

    stream = io.StringIO()
    logger = logging.getLogger("billvend.test.text")
    logger.propagate = False
    logger.addHandler(logs.text_handler(stream))
    logger.setLevel(logging.INFO)
    token = logs.set_request_id("req-0002")
    try:
        logger.info("delivered token 1234-5678-9012-3456-7890", extra={"status": 200})
        logger.info("no request")
    finally:
        logs._request_id.reset(token)
        logger.handlers.clear()
    first, second = stream.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO billvend\.test\.text: delivered token \[token\] "
                        r"\(status=200\) \[req req-0002\]", first), first
    assert "{" not in first and "1234-5678" not in first
    assert second.endswith("INFO billvend.test.text: no request [req req-0002]")


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
