"""The money core under real concurrency, on PostgreSQL.

Real threads, each with its own app context (so its own session and pooled
connection), race on one wallet or one payment. SQLite serialises every
writer, so these run on the PostgreSQL pass only (``postgresql`` marker).
Assertions are on outcomes (counts, balances, invariants, status codes),
never on timings.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa

from billvend.ledger import services as ledger
from billvend.vending import lifecycle as payments
from billvend.platform.extensions import db
from billvend.vending.models import (
    FAILED, PENDING, REVERSED, SUCCESSFUL, VENDING, Payment, PaymentEvent,
)
from billvend.ledger.models import KIND_REVERSAL, Transfer, Wallet
from billvend.funding.models import Funding
from billvend.accounts.models import User
from tests.conftest import CSRF_RE, base_config, fresh_app
from tests.helpers import assert_books_balance, assert_ledger_consistent, make_user

pytestmark = pytest.mark.postgresql

PASSWORD = "correct horse 1"
JOIN_TIMEOUT_SECONDS = 120


@pytest.fixture
def app(database_url, monkeypatch):
    """Like conftest's ``app``, with a pool big enough for the threads, and
    vending not enqueued (these tests drive the payment state themselves)."""
    config = base_config(database_url) | {
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": 16, "max_overflow": 0, "pool_timeout": 60},
    }
    monkeypatch.setattr("billvend.vending.tasks.enqueue_vend", lambda payment_id: True)
    with fresh_app(config) as app:
        yield app


def run_threads(app, count: int, target, *args) -> list:
    """Run ``target(index, *args)`` in ``count`` threads that start together,
    each in its own app context; return their results in index order.
    Any exception in a thread is re-raised here."""
    barrier = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def body(index: int) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=JOIN_TIMEOUT_SECONDS)
                results[index] = target(index, *args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_SECONDS)
        assert not thread.is_alive(), "a racing thread hung"
    if errors:
        raise errors[0]
    return results


def wallet_balance(user_id: int) -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(Wallet.balance_kobo).where(Wallet.user_id == user_id))


def new_payment(user_id: int, amount_kobo: int, key: str | None = None):
    user = db.session.get(User, user_id)
    return payments.create_payment(
        user, service_id="ikeja-electric", meter_type="prepaid", meter_number="1111111111111",
        phone="08031234567", amount_kobo=amount_kobo,
        idempotency_key=key or secrets.token_urlsafe(16))


def logged_in_client(app, email: str):
    """A test client signed in as ``email`` through the real login form."""
    client = app.test_client()
    html = client.get("/login").get_data(as_text=True)
    match = CSRF_RE.search(html)
    response = client.post("/login", data={"email": email, "password": PASSWORD,
                                           "csrf_token": match.group(1) or match.group(2)})
    assert response.status_code in (302, 303), response.status_code
    return client


def clone_client(app, client):
    """Another client in the same signed-in session (same cookie)."""
    other = app.test_client()
    cookie = client.get_cookie("session")
    other.set_cookie(cookie.key, cookie.value)
    return other


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def electricity_form(amount_naira: str, key: str, csrf: str) -> dict:
    return {"disco": "ikeja-electric", "meter_type": "prepaid", "meter_number": "1111111111111",
            "amount": amount_naira, "phone": "08031234567", "idempotency_key": key,
            "csrf_token": csrf,
            # As the htmx verification leaves it: the customer saw the name.
            "verified_meter": "ikeja-electric:prepaid:1111111111111"}


def test_200_concurrent_payments_exactly_exhaust_the_wallet(app):
    """₦100,000 and 200 simultaneous ₦1,000 payments: 100 in, 100 refused."""
    user_id = make_user(balance_kobo=10_000_000).id

    def pay(index: int) -> str:
        try:
            new_payment(user_id, 100_000)
        except ledger.InsufficientFunds:
            return "refused"
        return "accepted"

    outcomes = Counter(run_threads(app, 200, pay))
    assert outcomes == {"accepted": 100, "refused": 100}
    assert wallet_balance(user_id) == 0
    statuses = db.session.scalars(sa.select(Payment.status)).all()
    assert len(statuses) == 100 and set(statuses) == {PENDING}
    # 1 funding + 100 debits: a gapless statement, versions 1..101.
    wallet = db.session.scalar(sa.select(Wallet).where(Wallet.user_id == user_id))
    assert wallet.version == 101
    assert_books_balance()


def test_ten_seconds_of_fundings_payments_and_reversals_on_one_wallet(app):
    """Web fundings and payments race worker claims, completions and refunds
    on one wallet: every response is a redirect or a clear refusal, the
    balance is exactly what the accepted requests imply, the books balance."""
    user = make_user(balance_kobo=2_000_000)
    user_id, email = user.id, user.email
    start_kobo = 2_000_000
    client = logged_in_client(app, email)
    deadline = time.monotonic() + 10
    statuses: Counter = Counter()
    lock = threading.Lock()
    funded_kobo = [0]

    def funder(index: int) -> None:
        web = clone_client(app, client)
        csrf = csrf_of(web, "/wallet/fund")
        rng = random.Random(index)
        while time.monotonic() < deadline:
            naira = rng.randrange(500, 5000)
            response = web.post("/wallet/fund", data={
                "amount": str(naira), "idempotency_key": secrets.token_urlsafe(16), "csrf_token": csrf})
            if response.status_code == 303:
                # Back from the (simulated, instantly approved) checkout.
                response = web.get(response.headers["Location"])
            with lock:
                statuses[("fund", response.status_code)] += 1
                if response.status_code == 303:
                    funded_kobo[0] += naira * 100

    def payer(index: int) -> None:
        web = clone_client(app, client)
        csrf = csrf_of(web, "/bills/electricity")
        rng = random.Random(100 + index)
        while time.monotonic() < deadline:
            naira = rng.randrange(500, 8000)
            response = web.post("/bills/electricity", data=electricity_form(
                str(naira), secrets.token_urlsafe(16), csrf))
            if response.status_code == 422:
                assert b"Your wallet balance is" in response.data
            with lock:
                statuses[("pay", response.status_code)] += 1

    def worker(index: int) -> None:
        # Both workers go for the oldest payment in each state, so they race.
        rng = random.Random(200 + index)
        while time.monotonic() < deadline:
            db.session.rollback()
            pending = db.session.scalar(sa.select(Payment.id).where(Payment.status == PENDING)
                                        .order_by(Payment.id).limit(1))
            if pending is not None and payments.claim(pending):
                outcome = SUCCESSFUL if rng.random() < 0.5 else FAILED
                payments.transition(pending, VENDING, outcome, code="TEST")
                db.session.commit()
            failed = db.session.scalar(sa.select(Payment.id).where(Payment.status == FAILED)
                                       .order_by(Payment.id).limit(1))
            if failed is not None:
                payments.reverse_payment(failed)
            if pending is None and failed is None:
                time.sleep(0.01)

    roles = [funder] * 2 + [payer] * 3 + [worker] * 2
    run_threads(app, len(roles), lambda index: roles[index](index))

    assert set(code for _, code in statuses) <= {303, 422}, statuses
    assert statuses[("pay", 303)] > 0 and statuses[("fund", 303)] > 0
    db.session.expire_all()
    all_payments = db.session.scalars(sa.select(Payment)).all()
    assert len(all_payments) == statuses[("pay", 303)]
    spent = sum(p.amount_kobo for p in all_payments if p.status != REVERSED)
    # No lost update: what the client saw accepted is exactly what moved.
    assert wallet_balance(user_id) == start_kobo + funded_kobo[0] - spent
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 1 + statuses[("fund", 303)]
    assert_books_balance()


@pytest.mark.parametrize("form", ["payment", "funding"])
def test_one_idempotency_key_submitted_20_times_at_once(app, form):
    """20 simultaneous submits of one form: one payment (or funding), and
    every response points to it."""
    user = make_user(balance_kobo=150_000)  # enough for ONE ₦1,000 payment
    user_id = user.id
    client = logged_in_client(app, user.email)
    key = secrets.token_urlsafe(16)
    if form == "payment":
        path, data = "/bills/electricity", electricity_form("1000", key, csrf_of(client, "/bills/electricity"))
    else:
        path, data = "/wallet/fund", {"amount": "1000", "idempotency_key": key,
                                      "csrf_token": csrf_of(client, "/wallet/fund")}
    clients = [clone_client(app, client) for _ in range(20)]

    def submit(index: int):
        response = clients[index].post(path, data=data)
        return response.status_code, response.headers.get("Location")

    responses = run_threads(app, 20, submit)
    assert {status for status, _ in responses} == {303}, responses
    if form == "payment":
        (payment,) = db.session.scalars(sa.select(Payment)).all()
        assert {location for _, location in responses} == {f"/payments/{payment.reference}"}
        assert wallet_balance(user_id) == 50_000
    else:
        assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 2  # make_user's + this
        # One checkout for all 20 (the simulated one is our own callback);
        # coming back through it, however often, credits once.
        (checkout,) = {location for _, location in responses}
        for index in range(3):
            clients[index].get(checkout)
        assert wallet_balance(user_id) == 250_000
    assert_books_balance()


def test_two_workers_racing_on_one_payment_have_exactly_one_effect(app):
    """Claim, complete and refund, each raced by two workers, 10 times over."""
    user_id = make_user(balance_kobo=10_000_000).id
    for round_number in range(10):
        payment, _ = new_payment(user_id, 100_000)
        payment_id = payment.id
        balance_before = wallet_balance(user_id)

        claims = run_threads(app, 2, lambda index: payments.claim(payment_id))
        assert sorted(claims) == [False, True]

        outcome = SUCCESSFUL if round_number % 2 else FAILED

        def complete(index: int) -> bool:
            moved = payments.transition(payment_id, VENDING, outcome, code="TEST")
            db.session.commit()
            return moved

        assert sorted(run_threads(app, 2, complete)) == [False, True]
        events = db.session.scalars(sa.select(PaymentEvent.to_status)
                                    .where(PaymentEvent.payment_id == payment_id)).all()
        assert Counter(events) == {PENDING: 1, VENDING: 1, outcome: 1}

        refunds = run_threads(app, 2, lambda index: payments.reverse_payment(payment_id))
        reversals = db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(
            Transfer.payment_id == payment_id, Transfer.kind == KIND_REVERSAL))
        if outcome == FAILED:
            assert sorted(refunds) == [False, True]
            assert reversals == 1
            assert wallet_balance(user_id) == balance_before + 100_000
        else:
            assert refunds == [False, False]
            assert reversals == 0
            assert wallet_balance(user_id) == balance_before
    assert_books_balance()


def test_crossing_transfers_between_two_wallets_do_not_deadlock(app):
    """A pays B while B pays A, many times at once: both transfers lock the
    wallets in one (descending) id order, so none deadlocks (a deadlock would surface as an
    error here after unit_of_work's retries) and the totals are exact."""
    a = make_user(balance_kobo=1_000_000).wallet.id
    b = make_user(balance_kobo=1_000_000).wallet.id
    retries = Counter()

    @ledger.unit_of_work(on_retry=lambda attempt, exc: retries.update([type(exc).__name__]))
    def move(debit: int, credit: int) -> None:
        ledger.post_transfer(kind="adjustment", debit_wallet_id=debit, credit_wallet_id=credit,
                             amount_kobo=1_000)  # the unit of work commits

    def body(index: int) -> None:
        for _ in range(25):
            move(a, b) if index % 2 else move(b, a)

    run_threads(app, 8, body)
    db.session.expire_all()
    assert db.session.get(Wallet, a).balance_kobo == db.session.get(Wallet, b).balance_kobo == 1_000_000
    assert retries == Counter()
    assert_ledger_consistent()  # bare adjustments: see the helper


def test_many_threads_never_lose_an_update(app):
    """16 threads each post 30 debits from one wallet, some refused near
    the end: the balance equals the start minus what was accepted."""
    user = make_user(balance_kobo=400_000)
    wallet_id = user.wallet.id
    # Any system wallet will do; not biller_clearing, which must reconcile
    # with the payments (invariant 6).
    clearing = ledger.system_wallet_id("funding")

    def body(index: int) -> int:
        accepted = 0
        for _ in range(30):
            try:
                ledger.post_transfer(kind="adjustment", debit_wallet_id=wallet_id,
                                     credit_wallet_id=clearing, amount_kobo=1_000)
                db.session.commit()
                accepted += 1
            except ledger.InsufficientFunds:
                # A refusal writes nothing: committing now must be harmless.
                db.session.commit()
        return accepted

    accepted = sum(run_threads(app, 16, body))
    assert accepted == 400  # 400_000 / 1_000: the wallet is exactly emptied
    assert wallet_balance(user.id) == 0
    assert_ledger_consistent()  # bare adjustments: see the helper
