"""Review of issue 12: races and paths the lifecycle tests did not cover.

Each test forces one interleaving deterministically: a hook on the
database engine lets "another worker" commit its step (in its own app
context, so its own session and connection) at the exact moment between
the lifecycle code's read of a payment and its conditional UPDATE. The
hook fires only for statements of the test's own thread.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.vending import lifecycle as payments, tasks
from billvend.ledger import invariants as ledger_invariants
from billvend.web.admin import services
from billvend.platform.extensions import db
from billvend.vending.models import FAILED, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment
from billvend.accounts.models import User
from billvend.vending.providers import outcomes
from billvend.vending.providers.base import VendResult
from tests.helpers import assert_books_balance, make_payment, make_user
from tests.test_lifecycle import (  # noqa: F401 - fixtures
    LATE_RECORD_SECONDS,
    balance,
    claimed,
    make_admin,
    reload,
    reversals,
    sandbox,
    set_status,
    sweep_until_final,
    vtpass,
)


def in_other_worker(app, fn) -> None:
    """Run ``fn()`` to completion in another thread with its own app
    context (another worker or admin), and wait for it."""
    errors = []

    def run():
        with app.app_context():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive() and not errors, errors


class Interleave:
    """Call ``action()`` once, right after the ``n``-th statement of this
    thread that ``matches``; the statement has already run, nothing after
    it has."""

    def __init__(self, matches, n, action):
        self.matches, self.n, self.action = matches, n, action
        self.seen, self.fired, self.thread = 0, False, threading.get_ident()

    def __call__(self, conn, cursor, statement, parameters, context, executemany):
        if self.fired or threading.get_ident() != self.thread or not self.matches(statement):
            return
        self.seen += 1
        if self.seen == self.n:
            self.fired = True
            self.action()


def payment_read(statement: str) -> bool:
    text = " ".join(statement.split())
    return text.startswith("SELECT payments.id") and "FROM payments WHERE payments.id =" in text


@pytest.fixture
def interleave(app):
    hooks = []

    def install(matches, n, action):
        hook = Interleave(matches, n, action)
        sa.event.listen(db.engine, "after_cursor_execute", hook)
        hooks.append(hook)
        return hook

    yield install
    for hook in hooks:
        sa.event.remove(db.engine, "after_cursor_execute", hook)


# --- A delivery racing another step of the same payment -------------------------------


def test_a_delivery_racing_the_refund_is_still_flagged(app, interleave):
    """The provider's late answer carries a token for a ``failed`` payment
    while the refund task runs. If the refund commits between the
    delivery's read of the payment (``failed``) and its UPDATE, the
    payment is ``reversed`` and the customer holds the token AND the
    money: it must at least be flagged for an admin (DESIGN.md: on
    ``reversed`` a delivery is flagged), never dropped silently."""
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    set_status(payment.id, VENDING, FAILED)  # "never received", trusted; refund queued
    payment_id = payment.id
    hook = interleave(payment_read, 2,
                      lambda: in_other_worker(app, lambda: payments.reverse_payment(payment_id)))
    payments.apply_result(payment_id, VENDING, VendResult("delivered", token="7" * 20))
    assert hook.fired
    final = reload(payment_id)
    assert final.status == REVERSED and reversals(payment_id) == 1
    assert final.needs_attention, "a token was reported for a refunded payment; nobody was told"
    assert_books_balance()


def test_a_delivery_racing_the_move_to_unknown_completes_the_payment(app, interleave):
    """The sweep's requery of a stale ``vending`` payment hears
    ``delivered`` while the original worker's timed-out pay moves it
    ``vending -> unknown``. The delivery must still complete it
    (DESIGN.md: on ``vending``/``unknown`` a delivery completes the
    payment), not just be noted on the timeline."""
    payment = claimed(make_payment(make_user(balance_kobo=500_000), amount_kobo=100_000))
    payment_id = payment.id

    def pay_timed_out():
        payments.apply_result(payment_id, VENDING, VendResult("pending", "TIMEOUT", "no answer"),
                              source=payments.SOURCE_PAY)

    hook = interleave(payment_read, 1, lambda: in_other_worker(app, pay_timed_out))
    payments.apply_result(payment_id, VENDING, VendResult("delivered", token="8" * 20),
                          source=payments.SOURCE_REQUERY)
    assert hook.fired
    final = reload(payment_id)
    assert (final.status, final.token) == (SUCCESSFUL, "8" * 20), (final.status, final.provider_message)
    assert reversals(payment_id) == 0
    assert_books_balance()


# --- check_invariants on a live system -------------------------------------------------


def test_biller_clearing_check_has_no_false_alarm_under_traffic(app, interleave):
    """The audit page and ``flask ledger check`` run while customers pay.
    The check reads biller_clearing's balance and the payments' total; a
    payment committed between the two reads must not look like money
    missing from biller_clearing."""
    user = make_user(balance_kobo=500_000)
    make_payment(user, amount_kobo=100_000)
    user_id = user.id

    def customer_pays():
        make_payment(db.session.get(User, user_id), amount_kobo=50_000)

    hook = interleave(lambda s: " ".join(s.split()).startswith("SELECT wallets.balance_kobo"), 1,
                      lambda: in_other_worker(app, customer_pays))
    violations = ledger_invariants.check_invariants()
    db.session.rollback()
    assert hook.fired
    assert violations == []
    assert_books_balance()


# --- An admin refund while a pay may still be on its way ----------------------------------


def test_admin_refund_is_refused_while_never_received_cannot_be_trusted(vtpass, app):
    """The connection dropped after the pay was sent; the provider records
    the order some seconds later. An admin refunding at once hears "never
    received" (not trusted yet: inside PROVIDER_NOT_FOUND_GRACE_SECONDS)
    and must not refund on it: nothing ever requeries a reversed payment,
    so the token the provider issues next would go unnoticed, with the
    money back in the wallet."""
    admin = make_admin()
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.LATE_RECORD_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    assert reload(payment.id).status == UNKNOWN
    outcome = services.refund(admin, payment.id, "customer says no token")
    assert not outcome.ok, outcome.message
    assert reversals(payment.id) == 0
    time.sleep(LATE_RECORD_SECONDS)
    final = sweep_until_final(payment.id)
    assert (final.status, final.token) == (SUCCESSFUL, outcomes.token_for(final.reference))
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert_books_balance()


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


def test_two_workers_vending_the_same_payment_pay_once(app, monkeypatch):
    """A re-drive (sweep or admin) while the first vend task is claiming:
    only one claim, one pay."""
    payment = make_payment(make_user(balance_kobo=500_000), amount_kobo=100_000)
    calls = []

    class Counting:
        name = "counting"

        def vend(self, **order):
            calls.append(order["request_id"])
            if len(calls) == 1:  # the re-drive arrives while this pay is in flight
                in_other_worker(app, lambda: payments.vend_payment(payment_id, Counting()))
            return VendResult("delivered", token="5" * 20)

    payment_id = payment.id
    payments.vend_payment(payment_id, Counting())
    assert calls == [payment.reference]
    assert reload(payment_id).status == SUCCESSFUL
    assert_books_balance()


def test_backoff_is_capped_for_any_count(app):
    cap = app.config["REQUERY_MAX_DELAY_SECONDS"]
    assert payments.requery_delay_seconds(10 ** 9) == cap
    assert payments.requery_delay_seconds(-5) == app.config["REQUERY_BASE_DELAY_SECONDS"]


def test_never_received_on_a_stale_vending_payment_waits_for_the_pay_deadline(app):
    """A worker killed mid-pay: the sweep requeries after the lease. The
    "never received" is believed only PROVIDER_NOT_FOUND_GRACE_SECONDS
    after claim + deadline, never at once."""
    app.config.update(PROVIDER_NOT_FOUND_GRACE_SECONDS=3600, VENDING_LEASE_SECONDS=0)
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))

    class NeverHeard:
        name = "never-heard"

        def requery(self, request_id, meter_type=None):
            return VendResult("failed", "NOT_FOUND", "VTpass 015")

    time.sleep(0.01)
    payments.requery_payment(payment.id, NeverHeard(), include_vending=True)
    after = reload(payment.id)
    assert after.status == UNKNOWN and reversals(payment.id) == 0
    assert balance(user.id) == 400_000


# --- The hard deadline over HTTPS --------------------------------------------------------


def _self_signed(tmp_path):
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_no_pay_leaves_after_the_deadline_when_the_tls_handshake_is_slow(tmp_path, monkeypatch):
    """The deadline guard checked the clock once the TCP connection was
    open (name lookup included); over HTTPS the TLS handshake comes after
    that, with its own timeout (the connect timeout). A slow name lookup
    then a slow handshake let an abandoned call send the pay after the
    deadline, i.e. after the ``pay_in_flight_until`` the payment recorded.
    No request may reach the provider after the deadline."""
    import socket
    import ssl
    import types

    import requests
    import urllib3.util.connection

    from billvend.vending.providers.vtpass import DeadlineAdapter, VTpassProvider

    cert, key = _self_signed(tmp_path)
    received = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    front = socket.create_server(("127.0.0.1", 0))
    backend = socket.create_server(("127.0.0.1", 0))

    def provider_side():  # records when a request reaches it
        conn, _ = backend.accept()
        try:
            with tls.wrap_socket(conn, server_side=True) as s:
                s.settimeout(10)
                if s.recv(65536):
                    received.append(time.monotonic())
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        except OSError:
            pass

    def slow_network():  # server-to-client bytes arrive in pieces, 0.25 s apart
        client, _ = front.accept()
        upstream = socket.create_connection(backend.getsockname())

        def up():
            try:
                while (chunk := client.recv(65536)):
                    upstream.sendall(chunk)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        try:
            while (chunk := upstream.recv(65536)):
                for i in range(0, len(chunk), 500):
                    time.sleep(0.25)
                    client.sendall(chunk[i:i + 500])
        except OSError:
            pass

    class SlowResolver(types.ModuleType):  # the client's name lookup takes 0.8 s
        def __getattr__(self, name):
            return getattr(socket, name)

        def getaddrinfo(self, *args, **kwargs):
            time.sleep(0.8)
            return socket.getaddrinfo(*args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "socket", SlowResolver("socket"))
    for target in (provider_side, slow_network):
        threading.Thread(target=target, daemon=True).start()
    session = requests.Session()
    session.trust_env = False
    session.verify = str(cert)
    session.mount("https://", DeadlineAdapter())
    provider = VTpassProvider(f"https://127.0.0.1:{front.getsockname()[1]}", "k", "s",
                              connect_timeout_seconds=1.0, read_timeout_seconds=1.0,
                              send_attempts=1, deadline_seconds=1.0, session=session)
    started = time.monotonic()
    result = provider.vend("202612010900" + "dd1ff0000002", "ikeja-electric", "1111111111111",
                           "prepaid", 100_000, "08031234567")
    assert (result.status, result.code) == ("pending", "TIMEOUT")
    time.sleep(2.5)
    front.close()
    backend.close()
    late = [round(t - started, 2) for t in received if t - started > 1.0]
    assert not late, f"the pay reached the provider {late[0]} s after the call began (deadline 1 s)"


def test_a_pay_returning_after_its_recorded_deadline_moves_pay_in_flight_until(app):
    """``pay_in_flight_until`` starts as claim time + the call's deadline
    (database clock), but the client's own deadline starts later (after the
    claim commits), and the simulator records its order after its delay.
    A pay whose call returns after the recorded moment was in flight until
    it returned: a "never received" right after it must not be believed."""
    app.config.update(SIMULATOR_DELAY_SECONDS=0.0, PROVIDER_NOT_FOUND_GRACE_SECONDS=0.4)
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=100_000)

    class LateAnswer:
        name = "late"

        def vend(self, **order):
            time.sleep(0.6)  # past claim + deadline (0 s here)
            return VendResult("pending", "TIMEOUT", "no answer in time")

        def requery(self, request_id, meter_type=None):
            return VendResult("failed", "NOT_FOUND", "VTpass 015")

    payments.vend_payment(payment.id, LateAnswer())
    assert reload(payment.id).status == UNKNOWN
    payments.requery_payment(payment.id, LateAnswer(), force=True)
    assert reload(payment.id).status == UNKNOWN and reversals(payment.id) == 0
    assert balance(user.id) == 400_000


def test_no_pay_leaves_after_the_deadline_through_a_proxy_from_the_environment(monkeypatch):
    """``requests`` sends through ``HTTP_PROXY``/``HTTPS_PROXY`` when the
    environment names one, on a proxy connection pool of its own, which the
    deadline guard did not cover: an abandoned call could still send its pay
    after the deadline. The guard must hold through a proxy too."""
    import socket

    from billvend.vending.providers import vtpass

    received = []
    proxy = socket.create_server(("127.0.0.1", 0))

    def proxy_side():
        proxy.settimeout(3)
        try:
            conn, _ = proxy.accept()
            conn.settimeout(3)
            if conn.recv(65536):
                received.append("request")
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            conn.close()
        except OSError:
            pass

    watcher = threading.Thread(target=proxy_side, daemon=True)
    watcher.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setattr(vtpass, "_deadline_passed", lambda: True)  # the call was abandoned
    provider = vtpass.VTpassProvider("http://vtpass.example", "k", "s", connect_timeout_seconds=1.0,
                                     read_timeout_seconds=1.0, send_attempts=1, deadline_seconds=5.0)
    result = provider.vend("202612010900" + "dd1ff0000003", "ikeja-electric", "1111111111111",
                           "prepaid", 100_000, "08031234567")
    watcher.join(4)
    proxy.close()
    assert received == [], "the pay went out through the proxy after its deadline"
    # Known never sent (the guard refused before the first byte), and still
    # only pending: a requery after the grace decides, as without a proxy.
    assert (result.status, result.code) == ("pending", "NO_RESPONSE")
    assert result.message.startswith("Could not connect to the provider")
