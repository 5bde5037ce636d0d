"""Fault tests: nothing is lost or paid twice when processes and servers die.

Each test runs the Procfile's real ``web`` (gunicorn) and ``worker``
(``huey_consumer``) through :class:`tests.stack.Stack`, on a PRIVATE
PostgreSQL cluster and a PRIVATE ``redis-server`` (``tests/servers.py``), so
killing, stopping and restarting them never disturbs the shared servers other
test runs use. The provider is the simulator with a small non-zero delay; its
order book (``simulator_orders``) counts ``pay`` calls per ``request_id``.

Timings come from the environment, short so the file runs in a few minutes:
sweep every ``SWEEP_SECONDS``, pending grace and vending lease of a few
seconds. Every wait is bounded.

These tests are marked ``once`` (first pass of ``make test``): they bring their
own PostgreSQL and Redis, so they do not depend on ``TEST_DATABASE_URL``. They
need the server binaries (``initdb``/``pg_ctl``, ``redis-server``): without them
they are skipped, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests
import sqlalchemy as sa

from billvend import create_app
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.platform.config import _database_url
from billvend.platform.extensions import db
from billvend.vending.models import FINAL_STATUSES, REVERSED, SUCCESSFUL, Payment, SimulatorOrder
from billvend.ledger.models import KIND_REVERSAL, Transfer
from tests.conftest import verified_meter
from tests.servers import MailServer, PrivatePostgres, PrivateRedis, ServerMissing
from tests.stack import BIN, ROOT, Stack

pytestmark = pytest.mark.once

SWEEP_SECONDS = 5
FAST_RECOVERY = {
    "SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS),
    "PENDING_GRACE_SECONDS": "2",
    # Longer than any vend call here takes, even on a loaded machine: a
    # requery must never overtake the pay call it asks about.
    "VENDING_LEASE_SECONDS": "4",
    "REQUERY_BASE_DELAY_SECONDS": "1",
    "REQUERY_MAX_DELAY_SECONDS": "2",
    # The simulator records an order before it answers, so "never received"
    # may be believed at once here (the production default, 120 s, would
    # outlast these tests; tests/test_lifecycle.py covers the grace).
    "PROVIDER_NOT_FOUND_GRACE_SECONDS": "0",
    # A worker killed mid-sweep leaves the sweep lease to expire.
    "SWEEP_LOCK_SECONDS": "5",
    "SIMULATOR_DELAY_SECONDS": "0.05",
    "SIMULATOR_SUCCESS_RATE": "0.8",
    "WEB_CONCURRENCY": "2",
}

#: (meter number, meter type): every deterministic test meter that pays, plus
#: an ordinary meter that succeeds 80% of the time.
METERS = [
    ("1111111111111", "prepaid"),     # token
    ("1010101010101", "postpaid"),    # receipt
    ("201000000000", "prepaid"),      # processing, delivered on requery
    ("300000000000", "prepaid"),      # timeout, vended: token on requery
    ("400000000000", "prepaid"),      # no response, never vended: refund
    ("500000000000", "prepaid"),      # garbled answer, vended
    ("4512345678901", "prepaid"),     # random by success rate
]

CSRF_RE = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
KEY_RE = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')


def _require(factory):
    try:
        return factory()
    except ServerMissing as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"fault tests need their servers in CI: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def postgres() -> Iterator[PrivatePostgres]:
    server = _require(PrivatePostgres)
    yield server
    server.close()


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = _require(PrivateRedis)
    yield server
    server.close()


@contextmanager
def running_stack(tmp_path, postgres: PrivatePostgres, redis_server: PrivateRedis,
                  **env: str) -> Iterator[Stack]:
    """A migrated stack on a fresh database of the private cluster."""
    database_url = postgres.create_database(f"faults_{uuid.uuid4().hex[:10]}")
    stack_env = FAST_RECOVERY | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_server.url,
        "HUEY_NAME": f"faults-{uuid.uuid4().hex[:8]}",
    } | env
    with Stack(tmp_path, stack_env) as stack:
        stack.migrate()
        stack.start("web")
        start_worker(stack)
        try:
            yield stack
        except BaseException:
            print("---- worker log (tail)\n" + stack.log("worker")[-6000:])
            print("---- web log (tail)\n" + stack.log("web")[-3000:])
            raise


def start_worker(stack: Stack, timeout_seconds: float = 60) -> float:
    """Start the worker and wait until its consumer runs; returns that moment
    (``time.monotonic()``)."""
    marker = "Huey consumer started"
    before = stack.log("worker").count(marker)
    stack.start("worker")
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if stack.log("worker").count(marker) > before:
            return time.monotonic()
        if stack.processes["worker"].poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("worker did not start:\n" + stack.log("worker")[-3000:])


class Customer:
    """One signed-up, funded customer driving the real forms over HTTP."""

    def __init__(self, base_url: str, balance_naira: int = 200_000):
        self.base_url = base_url
        self.http = requests.Session()
        self.email = email = f"c-{uuid.uuid4().hex[:10]}@example.com"
        response = self.http.post(self.url("/signup"), data=self.tokens("/signup") | {
            "email": email, "password": "correct horse 1", "confirm_password": "correct horse 1"},
            timeout=30)
        assert response.status_code == 200, response.text[:500]
        response = self.http.post(self.url("/wallet/fund"), data=self.tokens("/wallet/fund") | {
            "amount": str(balance_naira)}, timeout=30)
        assert response.status_code == 200, response.text[:500]

    def url(self, path: str) -> str:
        return self.base_url + path

    def tokens(self, path: str) -> dict[str, str]:
        html = self.http.get(self.url(path), timeout=30).text
        data = {"csrf_token": CSRF_RE.search(html).group(1)}
        key = KEY_RE.search(html)
        if key:
            data["idempotency_key"] = key.group(1)
        return data

    def pay_form(self, meter_number: str, meter_type: str, amount_naira: int) -> dict[str, str]:
        data = self.tokens("/bills/electricity") | {
            "disco": "ikeja-electric", "meter_type": meter_type, "meter_number": meter_number,
            "amount": str(amount_naira), "phone": "08031234567"}
        # As the htmx meter check leaves it: the customer saw the name, so the
        # submit pays at once (no confirm step).
        return data | {"verified_meter": verified_meter(data)}

    def pay(self, meter_number: str, meter_type: str, amount_naira: int = 1000) -> str:
        """Pay; returns the payment reference (the POST must answer 303)."""
        response = self.http.post(self.url("/bills/electricity"),
                                  data=self.pay_form(meter_number, meter_type, amount_naira),
                                  allow_redirects=False, timeout=30)
        assert response.status_code == 303, (response.status_code, response.text[:500])
        return response.headers["Location"].rsplit("/", 1)[-1]


class Books:
    """Reads the stack's database from the test process (the ledger checks
    need an app context)."""

    def __init__(self, database_url: str):
        self.app = create_app({
            "SQLALCHEMY_DATABASE_URI": _database_url(database_url),
            "HUEY_IMMEDIATE": True,
            "REDIS_URL": None,
        })

    @contextmanager
    def session(self):
        with self.app.app_context():
            try:
                yield db.session
            finally:
                db.session.rollback()

    def statuses(self, references: list[str]) -> dict[str, str]:
        with self.session() as session:
            rows = session.execute(
                sa.select(Payment.reference, Payment.status).where(Payment.reference.in_(references))
            ).all()
        return dict(rows)

    def wait_status(self, reference: str, status: str, timeout_seconds: float) -> str:
        """Poll until the payment has ``status`` or the time is up; returns
        the last status seen."""
        deadline = time.monotonic() + timeout_seconds
        while (seen := self.statuses([reference])[reference]) != status and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen

    def wait_final(self, references: list[str], timeout_seconds: float) -> dict[str, str]:
        """Poll until every payment is final or the time is up; returns the
        last statuses seen."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            statuses = self.statuses(references)
            if len(statuses) == len(references) and all(
                    status in FINAL_STATUSES for status in statuses.values()):
                return statuses
            if time.monotonic() >= deadline:
                return statuses
            time.sleep(0.25)

    def assert_money_safe(self, references: list[str]) -> dict[str, int]:
        """Every payment final; never both delivered and refunded (on our side
        or the provider's); ``pay`` at most once per ``request_id``; the books
        balance. Returns counts by status."""
        with self.session() as session:
            payments = session.scalars(sa.select(Payment).where(Payment.reference.in_(references))).all()
            orders = {order.request_id: order for order in session.scalars(sa.select(SimulatorOrder))}
            reversals = dict(session.execute(
                sa.select(Transfer.payment_id, sa.func.count())
                .where(Transfer.kind == KIND_REVERSAL).group_by(Transfer.payment_id)).all())
            violations = ledger_invariants.check_invariants()
            assert len(payments) == len(references), "a payment the web accepted is missing"
            counts: dict[str, int] = {}
            for payment in payments:
                counts[payment.status] = counts.get(payment.status, 0) + 1
                order = orders.get(payment.reference)
                label = f"{payment.reference} ({payment.meter_number})"
                assert payment.status in FINAL_STATUSES, f"{label} is still {payment.status}"
                assert order is None or order.pay_calls <= 1, f"{label} paid {order.pay_calls} times"
                if payment.status == SUCCESSFUL:
                    assert reversals.get(payment.id, 0) == 0, f"{label} delivered AND refunded"
                    assert order is not None and order.status == "delivered", label
                    assert payment.token == order.token, label
                if payment.status == REVERSED:
                    assert payment.token is None, f"{label} refunded but holds a token"
                    assert reversals.get(payment.id, 0) == 1, f"{label} refunded {reversals.get(payment.id)} times"
                    assert order is None or order.status != "delivered", \
                        f"{label} refunded although the provider delivered it"
            assert violations == [], violations
        return counts

    def close(self) -> None:
        with self.app.app_context():
            db.engine.dispose()


def test_sigkill_worker_repeatedly_while_200_payments_vend(tmp_path, postgres, redis_server):
    """SIGKILL the worker at random moments while 200 payments are made and
    vended; within two sweep intervals of the last restart all are final."""
    seed = int(os.environ.get("FAULT_SEED") or random.randrange(1_000_000))
    rng = random.Random(seed)
    print(f"FAULT_SEED={seed}")
    with running_stack(tmp_path, postgres, redis_server) as stack:
        books = Books(stack.env["DATABASE_URL"])
        customers = [Customer(stack.base_url) for _ in range(4)]
        references: list[str] = []
        lock = threading.Lock()

        def pay_many(index: int) -> None:
            customer = customers[index]
            for n in range(50):
                meter_number, meter_type = METERS[(index * 50 + n) % len(METERS)]
                # From ₦1,000: the postpaid test meter's minimum (every disco's).
                reference = customer.pay(meter_number, meter_type, 1000 + 25 * (n % 40))
                with lock:
                    references.append(reference)

        kills = 0
        with ThreadPoolExecutor(max_workers=len(customers)) as pool:
            futures = [pool.submit(pay_many, i) for i in range(len(customers))]
            deadline = time.monotonic() + 240
            kills_after_paid = 0
            # At least four kills, and two after the last payment was made:
            # on a fast machine the 200 payments are all in before the
            # second kill, and the vends are what must survive the kills.
            while (kills < 4 or kills_after_paid < 2) and time.monotonic() < deadline:
                time.sleep(rng.uniform(0.3, 2.0))
                stack.stop("worker", signal.SIGKILL)
                kills += 1
                time.sleep(rng.uniform(0.0, 0.5))
                last_start = start_worker(stack)
                if all(future.done() for future in futures):
                    kills_after_paid += 1
            for future in futures:
                future.result(timeout=60)  # re-raises a failed payment POST
        assert kills >= 4 and kills_after_paid >= 2, f"only {kills} kills before the deadline"
        assert len(references) == 200

        window_seconds = 2 * SWEEP_SECONDS
        books.wait_final(references, timeout_seconds=last_start + window_seconds - time.monotonic())
        final_after_seconds = time.monotonic() - last_start
        counts = books.assert_money_safe(references)
        redrives = re.findall(r"sweep re-drove (\{.*\})", stack.log("worker"))
        print(f"{kills} kills; all final {final_after_seconds:.1f} s after the last restart; {counts}; "
              f"sweeps that re-drove payments: {redrives}")
        assert counts.get(SUCCESSFUL, 0) > 0 and counts.get(REVERSED, 0) > 0
        books.close()


def test_redis_down_while_paying_then_back(tmp_path, postgres, redis_server):
    """Payments made while Redis is down are recorded, shown as queued, and
    vended exactly once when it is back."""
    with running_stack(tmp_path, postgres, redis_server) as stack:
        books = Books(stack.env["DATABASE_URL"])
        customer = Customer(stack.base_url)
        before = [customer.pay(*METERS[i % len(METERS)]) for i in range(4)]

        forms = [customer.pay_form(*METERS[i % len(METERS)], 1000) for i in range(8)]
        redis_server.stop()
        assert requests.get(stack.base_url + "/healthz", timeout=10).status_code == 503
        during = []
        for form in forms:
            response = customer.http.post(customer.url("/bills/electricity"), data=form, timeout=30)
            assert response.status_code == 200, response.text[:500]  # the payment page
            assert "recorded and queued" in response.text
            during.append(response.url.rsplit("/", 1)[-1])
        assert set(books.statuses(during).values()) == {"pending"}
        time.sleep(1.5)  # the worker and its scheduler meet the outage too
        redis_server.start()

        statuses = books.wait_final(before + during, timeout_seconds=2 + 3 * SWEEP_SECONDS)
        assert all(status in FINAL_STATUSES for status in statuses.values()), statuses
        books.assert_money_safe(before + during)
        with books.session() as session:
            pay_calls = dict(session.execute(
                sa.select(SimulatorOrder.request_id, SimulatorOrder.pay_calls)
                .where(SimulatorOrder.request_id.in_(during))).all())
        # Every payment accepted during the outage reached the provider exactly once.
        assert set(pay_calls) == set(during) and set(pay_calls.values()) == {1}
        books.close()


def test_web_dies_between_commit_and_enqueue(tmp_path, postgres, redis_server):
    """FAULT_SKIP_ENQUEUE: the payment is committed but never queued; the
    sweep vends it."""
    with running_stack(tmp_path, postgres, redis_server, FAULT_SKIP_ENQUEUE="1",
                       PENDING_GRACE_SECONDS="3") as stack:
        books = Books(stack.env["DATABASE_URL"])
        customer = Customer(stack.base_url)
        reference = customer.pay("1111111111111", "prepaid", 2500)
        assert books.statuses([reference]) == {reference: "pending"}
        statuses = books.wait_final([reference], timeout_seconds=3 + 3 * SWEEP_SECONDS)
        assert statuses == {reference: SUCCESSFUL}
        books.assert_money_safe([reference])
        books.close()


def test_postgresql_restart_app_recovers_by_itself(tmp_path, postgres, redis_server):
    """Restart PostgreSQL under the running web and worker: requests succeed
    again without restarting them (pool_pre_ping); while it is down the user
    gets the 503 page and nothing is debited; in-flight payments finish."""
    with running_stack(tmp_path, postgres, redis_server, SIMULATOR_DELAY_SECONDS="0.3") as stack:
        books = Books(stack.env["DATABASE_URL"])
        customer = Customer(stack.base_url, balance_naira=50_000)
        in_flight = [customer.pay(*METERS[i % len(METERS)]) for i in range(6)]

        # A restart while payments vend; then every pooled connection is stale.
        postgres.stop()
        postgres.start()
        for _ in range(6):  # both gunicorn workers, several times
            response = customer.http.get(customer.url("/"), timeout=30)
            assert response.status_code == 200 and "Wallet balance" in response.text

        books.wait_final(in_flight, timeout_seconds=4 + 3 * SWEEP_SECONDS)

        # Down: a clear 503 page, nothing debited.
        balance = re.compile(r"₦[\d,]+\.\d\d")
        balance_before = balance.search(customer.http.get(customer.url("/"), timeout=30).text).group(0)
        form = customer.pay_form("1111111111111", "prepaid", 3000)
        postgres.stop()
        try:
            response = customer.http.post(customer.url("/bills/electricity"), data=form, timeout=30)
            assert response.status_code == 503
            assert "nothing was charged" in response.text
            assert customer.http.get(customer.url("/"), timeout=30).status_code == 503
            assert requests.get(stack.base_url + "/healthz", timeout=10).status_code == 503
        finally:
            postgres.start()
        after = customer.http.get(customer.url("/"), timeout=30)
        assert after.status_code == 200
        assert balance.search(after.text).group(0) == balance_before
        with books.session() as session:
            assert session.scalar(sa.select(sa.func.count()).select_from(Payment).where(
                Payment.idempotency_key == form["idempotency_key"])) == 0

        # The worker recovered too: a new payment vends, old ones finish.
        after_restart = customer.pay("1111111111111", "prepaid", 1500)
        references = in_flight + [after_restart]
        books.wait_final(references, timeout_seconds=4 + 3 * SWEEP_SECONDS)
        books.assert_money_safe(references)
        books.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_lets_in_flight_vend_finish(tmp_path, postgres, redis_server, sig):
    """SIGTERM (what the platform sends) and SIGINT: the worker takes no new
    task, finishes the vend in flight, and exits."""
    with running_stack(tmp_path, postgres, redis_server, SIMULATOR_DELAY_SECONDS="1.5") as stack:
        books = Books(stack.env["DATABASE_URL"])
        customer = Customer(stack.base_url)
        reference = customer.pay("1111111111111", "prepaid", 1000)
        books.wait_status(reference, "vending", timeout_seconds=30)
        worker = stack.processes["worker"]
        os.killpg(worker.pid, sig)
        assert worker.wait(timeout=25) == 0
        stack.processes.pop("worker")
        assert books.statuses([reference]) == {reference: SUCCESSFUL}
        assert "All workers have stopped" in stack.log("worker")
        books.assert_money_safe([reference])
        books.close()


def test_sigterm_past_shutdown_timeout_leaves_payment_for_the_sweep(tmp_path, postgres, redis_server):
    """A vend still running when the shutdown timeout ends is abandoned in
    ``vending``; after a restart the sweep requeries it (never pays again)."""
    with running_stack(tmp_path, postgres, redis_server, SIMULATOR_DELAY_SECONDS="6",
                       WORKER_SHUTDOWN_TIMEOUT_SECONDS="1", VENDING_LEASE_SECONDS="8") as stack:
        books = Books(stack.env["DATABASE_URL"])
        customer = Customer(stack.base_url)
        reference = customer.pay("1111111111111", "prepaid", 1000)
        books.wait_status(reference, "vending", timeout_seconds=30)
        stopped_at = time.monotonic()
        stack.stop("worker", signal.SIGTERM)
        assert time.monotonic() - stopped_at < 5
        assert books.statuses([reference]) == {reference: "vending"}
        assert "Shutdown timeout of 1.0s elapsed" in stack.log("worker")
        start_worker(stack)
        # The provider never got the order (the call died in its delay), so the
        # requery says so and the payment is refunded, exactly once.
        statuses = books.wait_final([reference], timeout_seconds=8 + 3 * SWEEP_SECONDS)
        assert statuses == {reference: REVERSED}
        books.assert_money_safe([reference])
        books.close()


def _message_rows(engine) -> list[tuple[str, str, str, int]]:
    """(event_key, channel, status, attempts) of every outbox row, in order."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT event_key, channel, status, attempts FROM messages ORDER BY id")).all()]


def test_worker_sigkilled_between_commit_and_send_a_vends_token_arrives_once(tmp_path, postgres, redis_server):
    """A real vend commits its token email and SMS; the worker's senders
    claim them and the worker is SIGKILLed before it sends: nothing arrives,
    the claims expire (NOTIFY_CLAIM_SECONDS), the restarted worker's sweep
    sends them, and each arrives exactly once (the funding receipt and the
    signup's verification mail too)."""
    from billvend.sandbox import create_app as create_sandbox_app, serve_in_thread

    mail = MailServer()
    mail.start()
    sms_server, sms_url = serve_in_thread(create_sandbox_app({"SANDBOX_STATE_PATH": "none"}))
    try:
        with running_stack(tmp_path, postgres, redis_server, SMTP_URL=f"smtp://127.0.0.1:{mail.port}",
                           SMS_BASE_URL=sms_url, SMS_DEADLINE_SECONDS="2", NOTIFY_CLAIM_SECONDS="3",
                           SMTP_DEADLINE_SECONDS="2", FAULT_SEND_DELAY_SECONDS="60") as stack:
            engine = sa.create_engine(_database_url(stack.env["DATABASE_URL"]))
            customer = Customer(stack.base_url, balance_naira=5000)
            reference = customer.pay("1111111111111", "prepaid")
            books = Books(stack.env["DATABASE_URL"])
            assert books.wait_status(reference, SUCCESSFUL, timeout_seconds=30) == SUCCESSFUL
            books.close()
            with engine.connect() as conn:
                payment_id = conn.execute(sa.text("SELECT id FROM payments WHERE reference = :r"),
                                          {"r": reference}).scalar_one()
            token = f"payment:{payment_id}:token"
            deadline = time.monotonic() + 20
            # signup's verification mail, the receipt, the token email and SMS
            while [r[2:] for r in _message_rows(engine)] != [("pending", 1)] * 4:
                assert time.monotonic() < deadline, (_message_rows(engine), stack.log("worker")[-4000:])
                time.sleep(0.1)
            stack.stop("worker", signal.SIGKILL)
            assert {(r[0], r[1]) for r in _message_rows(engine)} >= {(token, "email"), (token, "sms")}
            assert mail.inbox.messages == []
            sms_list = f"{sms_url}/sandbox/sms/messages"
            assert requests.get(sms_list, timeout=5).json()["messages"] == []
            stack.env["FAULT_SEND_DELAY_SECONDS"] = "0"
            start_worker(stack)
            deadline = time.monotonic() + 3 + 3 * SWEEP_SECONDS
            while len(mail.inbox.messages) < 3 or not requests.get(sms_list, timeout=5).json()["messages"]:
                assert time.monotonic() < deadline, stack.log("worker")[-4000:]
                time.sleep(0.2)
            time.sleep(SWEEP_SECONDS + 1)  # another sweep sends nothing more
            subjects = sorted(str(m["Subject"]) for m in mail.inbox.messages)
            assert len(subjects) == 3 and sum("token" in s for s in subjects) == 1, subjects
            assert set(mail.inbox.to()) == {customer.email}
            [sms] = requests.get(sms_list, timeout=5).json()["messages"]
            assert sms["to"] == "2348031234567" and reference in sms["sms"]
            assert [r[2:] for r in _message_rows(engine)] == [("sent", 2)] * 4
            engine.dispose()
    finally:
        sms_server.shutdown()
        mail.stop()
