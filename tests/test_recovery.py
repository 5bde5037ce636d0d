"""The sweep and the failure paths of paying, in-process (both passes).

The same properties against real processes and servers are in
``tests/test_faults.py``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from flask import g

from billvend.ledger import services as ledger
from billvend.vending import lifecycle as payments, tasks
from billvend.platform.extensions import db, login_manager
from billvend.platform.queue import init_huey
from billvend.vending.models import (
    FAILED, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment, SimulatorOrder,
)
from billvend.vending.providers import get_provider
from tests.conftest import Auth, FreshSessionClient, base_config, form_tokens, fresh_app, verified_meter
from tests.helpers import assert_books_balance, make_payment, make_user
from tests.stack import free_port


def pay_calls(reference: str) -> int:
    return db.session.scalar(
        sa.select(SimulatorOrder.pay_calls).where(SimulatorOrder.request_id == reference)) or 0


@pytest.fixture
def no_grace(app):
    app.config.update(PENDING_GRACE_SECONDS=0, VENDING_LEASE_SECONDS=0)
    return app


def test_sweep_vends_pending_payment_past_its_grace(no_grace):
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user)  # committed, never enqueued
    assert tasks.sweep_once()["pending"] == 1
    db.session.expire_all()
    assert payment.status == SUCCESSFUL and payment.token
    assert pay_calls(payment.reference) == 1
    assert tasks.sweep_once() == {"pending": 0, "vending": 0, "unknown": 0, "failed": 0, "refunded": 0}
    assert_books_balance()


def test_sweep_leaves_young_pending_payment_alone(app):
    app.config.update(PENDING_GRACE_SECONDS=3600)
    payment = make_payment(make_user(balance_kobo=500_000))
    assert tasks.sweep_once()["pending"] == 0
    db.session.expire_all()
    assert payment.status == PENDING and pay_calls(payment.reference) == 0


def test_sweep_requeries_stale_vending_never_pays_again(no_grace):
    """A worker died after the provider took the order: the sweep finds the
    token by requery; the provider saw one pay call."""
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user)
    assert payments.claim(payment.id)
    get_provider().vend(request_id=payment.reference, service_id=payment.service_id,
                        meter_number=payment.meter_number, meter_type=payment.meter_type,
                        amount_kobo=payment.amount_kobo, phone=payment.phone)
    assert tasks.sweep_once()["vending"] == 1
    db.session.expire_all()
    assert payment.status == SUCCESSFUL and payment.token
    assert pay_calls(payment.reference) == 1
    assert_books_balance()


def test_sweep_refunds_stale_vending_the_provider_never_got(no_grace):
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=200_000)
    assert payments.claim(payment.id)  # the worker died before calling out
    tasks.sweep_once()
    db.session.expire_all()
    assert payment.status == REVERSED and pay_calls(payment.reference) == 0
    assert user.wallet.balance_kobo == 500_000
    assert_books_balance()


def test_sweep_leaves_vending_within_its_lease(app):
    app.config.update(VENDING_LEASE_SECONDS=3600)
    payment = make_payment(make_user(balance_kobo=500_000))
    assert payments.claim(payment.id)
    assert tasks.sweep_once()["vending"] == 0
    db.session.expire_all()
    assert payment.status == VENDING


def test_sweep_requeries_due_unknown_and_reverses_failed(no_grace):
    user = make_user(balance_kobo=500_000)
    unknown = make_payment(user, meter_number="300000000000")  # times out, but vended
    failed = make_payment(user, meter_number="1111111111111", amount_kobo=150_000)
    assert payments.claim(unknown.id) and payments.claim(failed.id)
    get_provider().vend(request_id=unknown.reference, service_id=unknown.service_id,
                        meter_number=unknown.meter_number, meter_type=unknown.meter_type,
                        amount_kobo=unknown.amount_kobo, phone=unknown.phone)
    payments.transition(unknown.id, VENDING, UNKNOWN,
                        next_requery_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    payments.transition(failed.id, VENDING, FAILED, code="SERVICE_UNAVAILABLE")
    db.session.commit()  # a worker died before posting the refund
    counts = tasks.sweep_once()
    assert counts["unknown"] == 1 and counts["failed"] == 1
    db.session.expire_all()
    assert unknown.status == SUCCESSFUL and unknown.token
    assert failed.status == REVERSED
    assert user.wallet.balance_kobo == 500_000 - unknown.amount_kobo
    assert_books_balance()


@pytest.mark.parametrize("interval_seconds, minute, due", [
    (60, 7, True), (60, 8, True), (120, 8, True), (120, 7, False),
    (90, 8, True), (90, 9, False), (300, 10, True), (300, 11, False), (10, 8, False),
])
def test_periodic_sweep_check(app, interval_seconds, minute, due):
    """Whole minutes through Huey's periodic check; under a minute the
    consumer's clock (billvend.platform.worker) runs the sweep instead."""
    app.config["SWEEP_INTERVAL_SECONDS"] = interval_seconds
    assert tasks.sweep_is_due(datetime(2026, 1, 1, 12, minute, 30)) is due


@pytest.fixture
def queue_down(database_url):
    """An app whose Redis refuses connections (nothing listens on the port)."""
    with fresh_app(base_config(database_url) | {
        "HUEY_IMMEDIATE": False, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PENDING_GRACE_SECONDS": 0,
    }) as app:
        yield app


def test_queue_down_payment_is_recorded_queued_then_swept(queue_down):
    queue_down.test_client_class = FreshSessionClient
    client = queue_down.test_client()
    Auth(client).signup()
    # Through the (simulated) checkout and back to the callback, as a browser.
    client.post("/wallet/fund", data=form_tokens(client, "/wallet/fund") | {"amount": "10000"},
                follow_redirects=True)
    data = form_tokens(client, "/bills/electricity") | {
        "disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
        "amount": "2500", "phone": "08031234567"}
    response = client.post("/bills/electricity", data=data | {"verified_meter": verified_meter(data)},
                           follow_redirects=True)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "recorded and queued" in html and "Queued" in html
    payment = db.session.scalars(sa.select(Payment)).one()
    assert payment.status == PENDING
    assert payment.user.wallet.balance_kobo == 750_000  # debited once

    queue_down.config.update(HUEY_IMMEDIATE=True)  # the queue is back
    init_huey(queue_down)
    tasks.sweep_once()
    db.session.expire_all()
    assert payment.status == SUCCESSFUL and pay_calls(payment.reference) == 1
    assert_books_balance()


def _database_gone(*args, **kwargs):
    raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))


def test_database_fails_mid_payment_503_and_nothing_debited(client, auth, fund, pay, monkeypatch):
    auth.signup()
    fund("10000")
    real_post_transfer = ledger.post_transfer

    def debit_then_connection_lost(*args, **kwargs):
        real_post_transfer(*args, **kwargs)  # the wallet UPDATE ran...
        _database_gone()  # ...and the connection died before the commit

    monkeypatch.setattr(ledger, "post_transfer", debit_then_connection_lost)
    response = pay(amount="2500")
    assert response.status_code == 503
    assert "nothing was charged" in response.get_data(as_text=True)
    monkeypatch.undo()
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0
    assert "₦10,000.00" in client.get("/").get_data(as_text=True)
    assert_books_balance()


def test_database_down_gives_503_page_not_500(client, auth, monkeypatch):
    auth.signup()
    # Every query fails, including Flask-Login's user lookup, which runs again
    # when a page is rendered.
    monkeypatch.setattr(login_manager, "_user_callback", _database_gone)
    g.pop("_login_user", None)  # the test's one app context cached the user
    response = client.get("/")
    assert response.status_code == 503
    assert "briefly unavailable" in response.get_data(as_text=True)


# --- Attacks that held (kept as guards) ---------------------------------------------------


def test_the_sweep_lease_is_released_only_by_its_holder(app):
    from billvend.platform import leases

    assert leases.acquire("sweep", "a", 60)
    assert not leases.release("sweep", "b")  # a late, expired sweep's release
    assert not leases.acquire("sweep", "b", 60)
    assert leases.release("sweep", "a")
    assert leases.acquire("sweep", "b", 60)


@pytest.mark.postgresql
def test_two_sweeps_starting_together_take_the_lease_once(app):
    from billvend.platform import leases

    barrier, taken = threading.Barrier(6), []

    def sweep(i):
        with app.app_context():
            barrier.wait()
            taken.append(leases.acquire("sweep", f"w{i}", 60))
            db.session.remove()

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(taken) == [False] * 5 + [True]
