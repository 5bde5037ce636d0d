"""Issue 12: a token we have seen is never refunded; one owner of every
transaction; the payment lifecycle in one place.

Each test names the defect it guards (the issue's list, 1 to 7). The VTpass
ones run the real client against the sandbox over a real socket, with
timings made small through the configuration.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa

from billvend.platform import leases, transactions
from billvend.platform.config import vend_deadline_seconds
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.vending import lifecycle as payments, tasks
from billvend.ledger import invariants as ledger_invariants
from billvend.platform import models as platform_models
from billvend.web.admin import services
from billvend.platform.extensions import db
from billvend.ledger.models import (
    BILLER_CLEARING_WALLET, KIND_ADJUSTMENT, KIND_REVERSAL, FUNDING_WALLET, Transfer,
)
from billvend.vending.models import (
    FAILED, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment, PaymentEvent,
)
from billvend.accounts.models import AdminAction, User
from billvend.vending.providers import get_provider, outcomes
from billvend.vending.providers.base import VendResult
from billvend.vending.providers.vtpass import VTpassProvider
from billvend.sandbox import create_app as create_sandbox_app
from billvend.sandbox import serve_in_thread
from tests.helpers import assert_books_balance, in_other_worker, make_payment, make_user, payment_read

API_KEY, SECRET_KEY = "lifecycle-api-key", "lifecycle-secret-key"
# The drip meter's answer: a piece every 0.3 s (inside the 1 s read timeout)
# for 3 s in all, longer than the 2 s vending lease; the late-record meter's
# order appears 1.5 s after its pay. The "never received" grace (3 s) covers
# both; the client's hard deadline is 1 s.
DRIP_SECONDS, DRIP_INTERVAL_SECONDS, LATE_RECORD_SECONDS = 3.0, 0.3, 1.5
VTPASS_TIMINGS = {
    "VTPASS_CONNECT_TIMEOUT_SECONDS": 1.0, "VTPASS_READ_TIMEOUT_SECONDS": 1.0,
    "VTPASS_SEND_ATTEMPTS": 1, "VTPASS_DEADLINE_SECONDS": 1.0, "VENDING_LEASE_SECONDS": 2,
    "PROVIDER_NOT_FOUND_GRACE_SECONDS": 3.0,
    "REQUERY_BASE_DELAY_SECONDS": 0.2, "REQUERY_MAX_DELAY_SECONDS": 0.5,
}


def reload(payment_id: int) -> Payment:
    db.session.expire_all()
    return db.session.get(Payment, payment_id)


def reversals(payment_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(
        Transfer.payment_id == payment_id, Transfer.kind == KIND_REVERSAL))


def balance(user_id: int) -> int:
    db.session.expire_all()
    return db.session.get(User, user_id).wallet.balance_kobo


def claimed(payment: Payment) -> Payment:
    assert payments.claim(payment.id)
    return reload(payment.id)


def set_status(payment_id: int, from_status: str, to_status: str, **fields) -> None:
    assert payments.transition(payment_id, from_status, to_status, code="TEST", **fields)
    db.session.commit()


def make_admin() -> User:
    admin = make_user("root@example.com")
    admin.is_admin = True
    db.session.commit()
    return admin


# --- Defect 1: token and refund (VTpass sandbox, real client, the sweep) --------


@pytest.fixture(scope="module")
def sandbox():
    sandbox_app = create_sandbox_app({
        "VTPASS_API_KEY": API_KEY, "VTPASS_SECRET_KEY": SECRET_KEY, "SIMULATOR_SUCCESS_RATE": 1.0,
        "SANDBOX_DRIP_SECONDS": DRIP_SECONDS, "SANDBOX_DRIP_INTERVAL_SECONDS": DRIP_INTERVAL_SECONDS,
        "SANDBOX_LATE_RECORD_SECONDS": LATE_RECORD_SECONDS,
    })
    server, url = serve_in_thread(sandbox_app)
    yield url
    server.shutdown()


@pytest.fixture
def vtpass(app, sandbox):
    app.config.update({"VENDING_PROVIDER": "vtpass", "VTPASS_BASE_URL": sandbox,
                       "VTPASS_API_KEY": API_KEY, "VTPASS_SECRET_KEY": SECRET_KEY, **VTPASS_TIMINGS})
    return sandbox


def pay_calls(sandbox_url: str, reference: str) -> int:
    return requests.get(f"{sandbox_url}/sandbox/orders/{reference}", timeout=5).json()["pay_calls"]


def sweep_until_final(payment_id: int, within_seconds: float = 15.0) -> Payment:
    """Run the sweep as a worker would, every 0.25 s, until the payment is final."""
    give_up = time.monotonic() + within_seconds
    while time.monotonic() < give_up:
        tasks.sweep_once()
        payment = reload(payment_id)
        if payment.status in (SUCCESSFUL, REVERSED):
            return payment
        time.sleep(0.25)
    return reload(payment_id)


def test_a_pay_that_drips_past_the_lease_ends_successful_never_refunded(vtpass, app):
    """Defect 1: the answer drips in (no single read times out) for longer
    than the lease. The client's hard deadline ends the call before the
    lease; the sweep's requeries hear "never received" inside the grace
    (pending, not failed) until the provider records the order; then the
    token."""
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.DRIP_METER, amount_kobo=100_000)
    worker = threading.Thread(target=tasks.vend, args=(payment.id,))
    worker.start()
    try:
        final = sweep_until_final(payment.id)
    finally:
        worker.join(30)
    assert (final.status, final.token) == (SUCCESSFUL, outcomes.token_for(final.reference)), \
        (final.provider_code, final.provider_message)
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert pay_calls(vtpass, final.reference) == 1
    assert not final.needs_attention
    assert_books_balance()


def test_requery_says_never_received_for_a_while_then_delivered(vtpass, app):
    """Defect 1: the provider records the order some seconds after the pay
    (the connection dropped meanwhile); "never received" inside the grace
    is pending, and the later requery delivers."""
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.LATE_RECORD_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    assert reload(payment.id).status == UNKNOWN
    final = sweep_until_final(payment.id)
    assert (final.status, final.token) == (SUCCESSFUL, outcomes.token_for(final.reference)), \
        (final.provider_code, final.provider_message)
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert "not trusted yet" in " ".join(e.message or "" for e in final.events)
    assert pay_calls(vtpass, final.reference) == 1
    assert_books_balance()


def test_never_received_is_trusted_once_the_grace_has_passed(vtpass, app):
    """The grace is not forever: the order never arrives, "never received"
    after the grace refunds the payment."""
    app.config["PROVIDER_NOT_FOUND_GRACE_SECONDS"] = 0.5
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.NO_RESPONSE_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    tasks.requery(payment.id, force=True)  # inside the grace: still unknown
    assert reload(payment.id).status == UNKNOWN
    time.sleep(0.6)
    final = sweep_until_final(payment.id)
    assert final.status == REVERSED and final.provider_code == "NOT_FOUND"
    assert balance(user.id) == 500_000
    assert_books_balance()


def sandbox_order(sandbox_url: str, reference: str) -> dict:
    return requests.get(f"{sandbox_url}/sandbox/orders/{reference}", timeout=5).json()["order"]


def test_a_drip_cut_by_the_deadline_is_never_refunded_on_never_received(vtpass, app):
    """Issue 20, item 4, under ``make run``'s proportions: the grace (0.5 s)
    ends before the drip does (3 s). The client's deadline ends the pay while
    the answer is still arriving; requeries say 015 past the grace. The
    provider plainly had the order (its answer had begun), so 015 is never
    believed: the payment stays unknown and the requery that finds the
    order delivers the token. Before: refunded, then delivered."""
    app.config["PROVIDER_NOT_FOUND_GRACE_SECONDS"] = 0.5
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.DRIP_METER, amount_kobo=100_000)
    tasks.vend(payment.id)  # returns at the 1 s deadline, the answer half in
    assert reload(payment.id).status == UNKNOWN
    final = sweep_until_final(payment.id)
    assert (final.status, final.token) == (SUCCESSFUL, outcomes.token_for(final.reference)), \
        (final.status, final.provider_code, final.provider_message)
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert final.pay_answer_began
    assert "not trusted" in " ".join(e.message or "" for e in final.events)
    assert sandbox_order(vtpass, final.reference)["status"] == "delivered"
    assert pay_calls(vtpass, final.reference) == 1
    assert_books_balance()


def test_the_client_says_when_a_cut_answer_had_begun(sandbox):
    """A deadline during the drip: the answer had begun (``answer_began``);
    a connection dropped before any answer: it had not."""
    provider = VTpassProvider(sandbox, API_KEY, SECRET_KEY, connect_timeout_seconds=1.0,
                              read_timeout_seconds=1.0, send_attempts=1, deadline_seconds=1.0)
    cut = provider.vend("202612010900" + "dd1ff0000002", "ikeja-electric", outcomes.DRIP_METER,
                        "prepaid", 100_000, "08031234567")
    assert (cut.status, cut.code, cut.answer_began) == ("pending", "TIMEOUT", True)
    dropped = provider.vend("202612010900" + "dd1ff0000003", "ikeja-electric",
                            outcomes.NO_RESPONSE_METER, "prepaid", 100_000, "08031234567")
    assert (dropped.status, dropped.answer_began) == ("pending", False)


def test_refunded_on_never_received_then_found_delivered_is_flagged_for_an_admin(vtpass, app, client, auth):
    """Issue 20, item 4: a refund on 015 (the late-record meter: the order
    appears 1.5 s after the pay, the grace is 0.2 s) is requeried again
    after the refund (here 2 s and 4 s; 1 h and 24 h by default), driven by
    the sweep from the database. The delivery it finds is flagged
    ``delivered_after_refund`` on the admin's stuck list and overview, with
    the token, for admins only."""
    app.config.update(PROVIDER_NOT_FOUND_GRACE_SECONDS=0.2, REQUERY_AFTER_REFUND_DELAYS_SECONDS=(2.0, 4.0))
    user = make_user("late@example.com", balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.LATE_RECORD_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    time.sleep(0.3)
    refunded = sweep_until_final(payment.id)
    assert (refunded.status, refunded.provider_code) == (REVERSED, "NOT_FOUND")
    assert refunded.recheck_after_refund_at is not None and not refunded.delivered_after_refund
    assert balance(user.id) == 500_000
    give_up = time.monotonic() + 15
    while time.monotonic() < give_up and not reload(payment.id).delivered_after_refund:
        tasks.sweep_once()
        time.sleep(0.25)
    found = reload(payment.id)
    token = outcomes.token_for(found.reference)
    assert (found.status, found.delivered_after_refund, found.late_token) == (REVERSED, True, token)
    assert found.needs_attention and found.recheck_after_refund_at is None  # found: no more rechecks
    assert balance(user.id) == 500_000 and reversals(payment.id) == 1
    assert_books_balance()

    admin = make_admin()
    auth.login(admin.email)
    auth.second_factor(admin)
    stuck = client.get("/admin/stuck").get_data(as_text=True)
    assert found.reference in stuck and "delivered after refund" in stuck.lower()
    assert token in stuck or "-".join(token[i:i + 4] for i in range(0, 20, 4)) in stuck
    overview = client.get("/admin/").get_data(as_text=True)
    assert "no stuck payments" not in overview.lower()
    assert "delivered after refund" in overview.lower()


def test_the_client_enforces_a_hard_deadline_on_a_dripping_answer(sandbox):
    """Per-read timeouts never fire on a drip: the deadline ends the call
    (a timeout: ambiguous, so pending)."""
    provider = VTpassProvider(sandbox, API_KEY, SECRET_KEY, connect_timeout_seconds=1.0,
                              read_timeout_seconds=1.0, send_attempts=1, deadline_seconds=1.0)
    started = time.monotonic()
    result = provider.vend("202612010900" + "dd1ff0000001", "ikeja-electric", outcomes.DRIP_METER,
                           "prepaid", 100_000, "08031234567")
    elapsed = time.monotonic() - started
    assert (result.status, result.code) == ("pending", "TIMEOUT")
    assert elapsed < DRIP_SECONDS  # the drip would have delivered at 3 s


def test_no_provider_call_inside_a_unit_of_work(app):
    payment = make_payment(make_user(balance_kobo=500_000))

    @transactions.unit_of_work
    def vend_inside():
        get_provider().requery(payment.reference)

    with pytest.raises(transactions.ExternalCallInTransaction):
        vend_inside()


def test_a_token_reported_on_a_failed_payment_stops_the_sweeps_refund(app):
    """Defect 1: the provider said failed, then a late answer carries the
    token: the refund is blocked, the payment flagged, the token kept."""
    app.config.update(PENDING_GRACE_SECONDS=0, VENDING_LEASE_SECONDS=0)
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    set_status(payment.id, VENDING, FAILED)  # the worker died before the refund
    payments.apply_result(payment.id, VENDING, VendResult("delivered", token="7" * 20))
    assert tasks.sweep_once()["failed"] == 0
    late = reload(payment.id)
    assert (late.status, late.token, late.needs_attention) == (FAILED, "7" * 20, True)
    assert not payments.reverse_payment(payment.id)
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert "needs an admin" in late.events[-1].message
    assert_books_balance()


def test_a_delivery_seen_on_an_unknown_payment_completes_it(app):
    """Defect 1: the pay's late answer arrives after the payment went
    ``unknown``: it is applied, not just written to the timeline."""
    payment = claimed(make_payment(make_user(balance_kobo=500_000)))
    set_status(payment.id, VENDING, UNKNOWN)
    payments.apply_result(payment.id, VENDING, VendResult("delivered", token="8" * 20, units_kwh="4.5"))
    done = reload(payment.id)
    assert (done.status, done.token, done.units_kwh) == (SUCCESSFUL, "8" * 20, "4.5")
    assert_books_balance()


@pytest.mark.parametrize("token", [None, "", "1234", "\u0661" * 20, "\uff11" * 20, "1" * 19 + "x"],
                         ids=["none", "empty", "short", "arabic-indic", "full-width", "not-digits"])
@pytest.mark.parametrize("from_status", [VENDING, UNKNOWN])
def test_a_prepaid_delivery_without_a_valid_token_is_not_a_delivery(app, token, from_status):
    """Any provider (or the simulator) saying "delivered" for a prepaid
    order without a valid token (20 ASCII digits): the lifecycle itself
    treats it as no definite answer (DESIGN.md: an unexpected answer is not
    a failure): ``unknown``, requeried, never ``successful`` without a
    token and never refunded for it."""
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    if from_status == UNKNOWN:
        set_status(payment.id, VENDING, UNKNOWN)
    follow = payments.apply_result(payment.id, from_status, VendResult(
        "delivered", code="delivered", token=token, units_kwh="4.5", receipt_reference="EXR1"))
    after = reload(payment.id)
    assert (after.status, follow.action) == (UNKNOWN, "requery")
    assert (after.token, after.receipt_reference, after.units_kwh) == (None, None, None)
    assert after.next_requery_at is not None and not after.needs_attention
    assert "without a readable token" in after.provider_message
    assert tasks.sweep_once()["failed"] == 0
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    payments.apply_result(payment.id, UNKNOWN, VendResult("delivered", token="8" * 20))
    assert (reload(payment.id).status, reload(payment.id).token) == (SUCCESSFUL, "8" * 20)
    assert_books_balance()


def test_a_postpaid_delivery_with_a_receipt_and_no_token_completes_it(app):
    """Postpaid orders carry a receipt, not a token: "delivered" with the
    receipt alone is a delivery."""
    payment = claimed(make_payment(make_user(balance_kobo=500_000), meter_type="postpaid",
                                   meter_number=outcomes.POSTPAID_SUCCESS_METER))
    payments.apply_result(payment.id, VENDING, VendResult("delivered", code="delivered",
                                                          receipt_reference="EXR2"))
    done = reload(payment.id)
    assert (done.status, done.token, done.receipt_reference) == (SUCCESSFUL, None, "EXR2")
    assert_books_balance()


def test_admin_refund_of_a_failed_payment_with_a_delivery_is_refused_resolve_allowed(app):
    admin = make_admin()
    payment = claimed(make_payment(make_user(balance_kobo=500_000)))
    set_status(payment.id, VENDING, FAILED)
    payments.apply_result(payment.id, VENDING, VendResult("delivered", token="7" * 20))
    outcome = services.refund(admin, payment.id, "customer asked")
    assert not outcome.ok and "reported a delivery" in outcome.message
    assert services.REFUND not in services.allowed_actions(reload(payment.id))
    outcome = services.resolve_delivered(admin, payment.id, "token checked with the provider",
                                         token="7" * 20, receipt_reference=None, units_kwh=None)
    assert outcome.ok and reload(payment.id).status == SUCCESSFUL
    assert reversals(payment.id) == 0
    assert_books_balance()


# --- Defect 3: the admin refund under contention ---------------------------------


class Silent:
    """A provider that cannot say (requery: pending)."""

    name = "silent"

    def requery(self, request_id, meter_type=None):
        return VendResult("pending", "TIMEOUT", "no answer")


def unknown_payment(user: User) -> Payment:
    payment = claimed(make_payment(user, amount_kobo=100_000))
    # As a pay that came back "pending" leaves it: the call has ended.
    set_status(payment.id, VENDING, UNKNOWN, pay_in_flight_until=payment.claimed_at)
    return reload(payment.id)


def test_admin_refund_of_an_unknown_payment_survives_a_deadlock(app, monkeypatch):
    """Defect 3: the refund's transaction loses a deadlock once; the whole
    unit (unknown -> failed, the reversal, the AdminAction) reruns."""
    admin = make_admin()
    user = make_user(balance_kobo=500_000)
    payment = unknown_payment(user)
    monkeypatch.setattr(services, "get_provider", Silent)
    real_post_transfer = ledger.post_transfer
    deadlocks = []

    class FakeDriverError(Exception):
        sqlstate = "40P01"

    def deadlock_once(**kwargs):
        if not deadlocks:
            deadlocks.append(1)
            raise sa.exc.OperationalError("UPDATE wallets ...", {}, FakeDriverError())
        return real_post_transfer(**kwargs)

    monkeypatch.setattr(ledger, "post_transfer", deadlock_once)
    outcome = services.refund(admin, payment.id, "provider support confirmed no token")
    assert deadlocks == [1]
    assert outcome.ok, outcome.message
    refunded = reload(payment.id)
    assert refunded.status == REVERSED and reversals(payment.id) == 1
    assert [(e.from_status, e.to_status) for e in refunded.events][-2:] == [(UNKNOWN, FAILED), (FAILED, REVERSED)]
    actions = db.session.scalars(sa.select(AdminAction).where(AdminAction.payment_id == payment.id)).all()
    assert [a.result.split(":")[0] for a in actions] == ["done"]
    assert balance(user.id) == 500_000
    assert_books_balance()


@pytest.mark.postgresql
@pytest.mark.parametrize("other_delivers", [False, True], ids=["holds", "delivers"])
def test_admin_refund_while_another_transaction_holds_the_row(app, monkeypatch, other_delivers):
    """Defect 3, with a real lock: another transaction holds the payment row
    while the admin refunds. The refund waits, then completes; or, if that
    transaction delivered the payment, is refused with the real reason."""
    admin = make_admin()
    user = make_user(balance_kobo=500_000)
    payment = unknown_payment(user)
    monkeypatch.setattr(services, "get_provider", Silent)
    admin_id, payment_id = admin.id, payment.id
    other = db.engine.connect()
    other_tx = other.begin()
    other.execute(sa.text("SELECT id FROM payments WHERE id = :id FOR UPDATE"), {"id": payment_id})
    if other_delivers:
        other.execute(sa.text("UPDATE payments SET status = 'successful', token = :token WHERE id = :id"),
                      {"id": payment_id, "token": "9" * 20})
    outcomes_seen = []

    def refund():
        with app.app_context():
            outcomes_seen.append(services.refund(db.session.get(User, admin_id), payment_id, "racing"))
            db.session.remove()

    thread = threading.Thread(target=refund)
    thread.start()
    time.sleep(0.5)  # the refund is now waiting for the row
    other_tx.commit()
    other.close()
    thread.join(30)
    [outcome] = outcomes_seen
    final = reload(payment_id)
    if other_delivers:
        assert not outcome.ok and "delivered" in outcome.message and "successful" in outcome.message
        assert final.status == SUCCESSFUL and reversals(payment_id) == 0
    else:
        assert outcome.ok, outcome.message
        assert final.status == REVERSED and reversals(payment_id) == 1


# --- Defect 4: backoff ---------------------------------------------------------------


def test_a_payment_requeried_5000_times_still_schedules_its_next_requery(app):
    payment = unknown_payment(make_user(balance_kobo=500_000))
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(requery_count=5000))
    db.session.commit()
    follow = payments.apply_result(payment.id, UNKNOWN, VendResult("pending", "PROCESSING", "still"))
    assert follow.action == "requery"
    assert follow.delay_seconds == app.config["REQUERY_MAX_DELAY_SECONDS"]
    assert reload(payment.id).next_requery_at is not None


# --- Issue 20, item 4: never received, after the provider had the order ----------------


def test_never_received_is_never_trusted_once_the_pay_answer_had_begun(app):
    """The pay's answer had begun to arrive when the call ended: a 015 is
    not believed, however late. The payment stays unknown, requeried with
    backoff, and is flagged for an admin past UNKNOWN_ALERT_AGE_SECONDS."""
    app.config.update(PROVIDER_NOT_FOUND_GRACE_SECONDS=0, UNKNOWN_ALERT_AGE_SECONDS=3600)
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    payments.apply_result(payment.id, VENDING, VendResult("pending", "TIMEOUT", "cut", answer_began=True),
                          source=payments.SOURCE_PAY)
    assert reload(payment.id).pay_answer_began
    follow = payments.apply_result(payment.id, UNKNOWN, VendResult("failed", "NOT_FOUND", "VTpass 015"))
    after = reload(payment.id)
    assert (after.status, follow.action) == (UNKNOWN, "requery")
    assert not after.needs_attention
    assert tasks.sweep_once()["failed"] == 0
    app.config["UNKNOWN_ALERT_AGE_SECONDS"] = 0
    payments.apply_result(payment.id, UNKNOWN, VendResult("failed", "NOT_FOUND", "VTpass 015"))
    flagged = reload(payment.id)
    assert (flagged.status, flagged.needs_attention) == (UNKNOWN, True)
    from billvend.web.admin import queries

    assert payment.id in [p.id for p in queries.stuck_page(None).items]
    assert reversals(payment.id) == 0 and balance(user.id) == 400_000
    assert_books_balance()


class Answers:
    """A provider whose requery gives the next of ``answers``."""

    name = "answers"

    def __init__(self, *answers):
        self.answers = list(answers)
        self.asked = []

    def requery(self, request_id, meter_type=None):
        self.asked.append(request_id)
        return self.answers.pop(0)


def test_an_admin_refund_of_an_unknown_payment_is_requeried_twice_after(app, monkeypatch):
    """An admin refund of an ``unknown`` payment (outcome uncertain) is
    requeried again REQUERY_AFTER_REFUND_DELAYS_SECONDS after the refund, by
    the sweep, and no more once every delay has passed."""
    app.config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"] = (0.0, 0.0)
    admin = make_admin()
    user = make_user(balance_kobo=500_000)
    payment = unknown_payment(user)
    monkeypatch.setattr(services, "get_provider", Silent)
    assert services.refund(admin, payment.id, "support confirmed").ok
    refunded = reload(payment.id)
    assert refunded.status == REVERSED and refunded.recheck_after_refund_at is not None
    provider = Answers(VendResult("failed", "NOT_FOUND", "VTpass 015"),
                       VendResult("failed", "NOT_FOUND", "VTpass 015"))
    monkeypatch.setattr(tasks, "get_provider", lambda: provider)
    assert tasks.sweep_once()["refunded"] == 1
    assert tasks.sweep_once()["refunded"] == 1
    assert tasks.sweep_once()["refunded"] == 0  # both done
    done = reload(payment.id)
    assert (done.rechecks_after_refund, done.recheck_after_refund_at) == (2, None)
    assert not done.delivered_after_refund and len(provider.asked) == 2
    assert not done.needs_attention  # the last answer was definite: nothing to flag
    assert balance(user.id) == 500_000
    assert_books_balance()


INCONCLUSIVE_RECHECKS = {
    "processing": VendResult("pending", "PROCESSING", "VTpass 099: processing"),
    "unreadable-token": VendResult("pending", "UNEXPECTED_RESPONSE", "Delivered without a readable token"),
    "http-503": VendResult("pending", "UNEXPECTED_RESPONSE", "Provider error HTTP 503"),
    "delivered-no-token": VendResult("delivered", code="delivered", message="Delivered"),
}


@pytest.mark.parametrize("last", INCONCLUSIVE_RECHECKS.values(), ids=INCONCLUSIVE_RECHECKS.keys())
def test_an_inconclusive_last_requery_after_a_refund_flags_the_payment(app, monkeypatch, client, auth, last):
    """The requeries after an uncertain refund (1 h, 24 h) ended silently on
    a non-answer (099 processing, a delivery without a readable token, a
    5xx): counted as done, and after the last one nothing told anyone the
    refund was never confirmed. Now the last one, inconclusive, flags the
    payment for an admin, with its reason on the stuck list; no money moves.
    An inconclusive earlier one just lets the next one run."""
    app.config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"] = (0.0, 0.0)
    admin = make_admin()
    user = make_user(balance_kobo=500_000)
    payment = unknown_payment(user)
    monkeypatch.setattr(services, "get_provider", Silent)
    assert services.refund(admin, payment.id, "support confirmed").ok
    monkeypatch.setattr(tasks, "get_provider", lambda: Answers(last))
    assert tasks.sweep_once()["refunded"] == 1
    first = reload(payment.id)
    assert (first.rechecks_after_refund, first.needs_attention) == (1, False)
    assert first.recheck_after_refund_at is not None  # the next one is still due
    assert tasks.sweep_once()["refunded"] == 1
    flagged = reload(payment.id)
    assert (flagged.status, flagged.needs_attention, flagged.delivered_after_refund) == (REVERSED, True, False)
    assert (flagged.rechecks_after_refund, flagged.recheck_after_refund_at) == (2, None)
    assert "needs an admin" in flagged.events[-1].message
    assert balance(user.id) == 500_000 and reversals(payment.id) == 1
    assert_books_balance()
    from billvend.web.admin import queries

    assert payment.id in [p.id for p in queries.stuck_page(None).items]
    auth.login(admin.email)
    auth.second_factor(admin)
    stuck = client.get("/admin/stuck").get_data(as_text=True)
    assert flagged.reference in stuck and "refund unconfirmed" in stuck.lower()


def test_a_delivery_found_after_an_admin_refund_is_flagged_with_its_token(app, monkeypatch):
    app.config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"] = (0.0, 3600.0)
    admin = make_admin()
    payment = unknown_payment(make_user(balance_kobo=500_000))
    monkeypatch.setattr(services, "get_provider", Silent)
    assert services.refund(admin, payment.id, "support confirmed").ok
    monkeypatch.setattr(tasks, "get_provider", lambda: Answers(
        VendResult("delivered", code="delivered", token="4" * 20, receipt_reference="EXR4")))
    assert tasks.sweep_once()["refunded"] == 1
    found = reload(payment.id)
    assert (found.status, found.delivered_after_refund, found.needs_attention) == (REVERSED, True, True)
    assert (found.late_token, found.late_receipt_reference, found.token) == ("4" * 20, "EXR4", None)
    assert found.recheck_after_refund_at is None
    from billvend.web.admin import queries

    assert payment.id in [p.id for p in queries.stuck_page(None).items]
    assert queries.overview()["delivered_after_refund"] == 1
    assert_books_balance()


def test_a_stale_requery_after_the_refund_never_uses_up_the_next_one(app, monkeypatch):
    """A worker whose requery-after-refund outlived its lease (a stall after
    the call) records its answer after another worker took the same
    requery again and recorded it: the stale record counted a second time,
    and the 24 h requery was never made. Only the holder of the claim
    schedules the next one."""
    app.config["REQUERY_AFTER_REFUND_DELAYS_SECONDS"] = (0.0, 86400.0)
    admin = make_admin()
    payment = unknown_payment(make_user(balance_kobo=500_000))
    monkeypatch.setattr(services, "get_provider", Silent)
    assert services.refund(admin, payment.id, "support confirmed").ok
    app.config["VENDING_LEASE_SECONDS"] = 0  # the first claim's lease ends at once
    stale = payments._claim_recheck(payment.id)
    assert stale is not None
    app.config["VENDING_LEASE_SECONDS"] = 120
    assert payments.requery_after_refund(payment.id, Answers(VendResult("failed", "NOT_FOUND", "VTpass 015")))
    payments._record_recheck(payment.id, VendResult("failed", "NOT_FOUND", "VTpass 015"), stale[2])
    after = reload(payment.id)
    assert after.rechecks_after_refund == 1
    assert after.recheck_after_refund_at is not None  # the 24 h requery is still due
    assert_books_balance()


def test_a_definite_failure_is_not_requeried_after_its_refund(app):
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.INVALID_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    refunded = reload(payment.id)
    assert refunded.status == REVERSED and refunded.recheck_after_refund_at is None


# --- Defect 5: the reason ------------------------------------------------------------


def test_a_refunded_payment_shows_the_providers_reason(client, auth):
    """The customer reads why in plain language; the reversal's own note is
    an event; the admin sees the code and the provider's text apart."""
    auth.signup()
    customer = db.session.scalar(sa.select(User).where(User.email == "ada@example.com"))
    from billvend.funding import seed

    seed.fund_wallet(customer, 500_000, "fund-key-1")
    payment = make_payment(customer, meter_number=outcomes.INVALID_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    refunded = reload(payment.id)
    assert refunded.status == REVERSED
    assert (refunded.provider_code, refunded.provider_message) == (
        "INVALID_ACCOUNT", "Meter number not found at the disco")
    assert refunded.events[-1].message == payments.REVERSAL_NOTE
    page = client.get(f"/payments/{payment.reference}").get_data(as_text=True)
    assert "Reason: The disco does not recognise this meter number." in page
    assert "Vend failed" not in page

    admin = make_admin()
    auth.logout()
    auth.login(admin.email)
    auth.second_factor(admin)
    page = client.get(f"/admin/payments/{payment.reference}").get_data(as_text=True)
    assert "<dt>Provider code</dt><dd><code>INVALID_ACCOUNT</code></dd>" in page
    assert "<dt>Provider said</dt><dd>Meter number not found at the disco</dd>" in page


# --- Defect 6: clocks and locks ----------------------------------------------------------


def test_the_lease_is_decided_on_the_database_clock(app, monkeypatch):
    """A worker whose clock runs an hour slow claims a payment; the sweep on
    a correct host must not see the claim as an hour old."""
    app.config.update(VENDING_LEASE_SECONDS=300)
    payment = make_payment(make_user(balance_kobo=500_000))
    slow = platform_models.utcnow() - timedelta(hours=1)
    monkeypatch.setattr(platform_models, "utcnow", lambda: slow)
    monkeypatch.setattr(payments, "utcnow", lambda: slow)
    assert payments.claim(payment.id)
    monkeypatch.undo()
    assert tasks.sweep_once()["vending"] == 0
    assert reload(payment.id).status == VENDING


def test_the_sweep_lease_expires_if_its_holder_dies(app):
    assert leases.acquire("sweep", "worker-a", 60)
    assert not leases.acquire("sweep", "worker-b", 60)  # a live sweep's lease is kept
    # worker-a dies without releasing; its lease runs out.
    db.session.execute(sa.update(platform_models.Lease).values(expires_at=platform_models.utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert leases.acquire("sweep", "worker-b", 60)
    assert leases.release("sweep", "worker-b")
    assert leases.acquire("sweep", "worker-a", 60)


def test_a_sweep_finding_the_lease_held_does_nothing(app):
    app.config.update(PENDING_GRACE_SECONDS=0)
    payment = make_payment(make_user(balance_kobo=500_000))
    assert leases.acquire("sweep", "another-worker", 60)
    tasks.sweep()
    assert reload(payment.id).status == PENDING
    assert leases.release("sweep", "another-worker")
    tasks.sweep()
    assert reload(payment.id).status == SUCCESSFUL


def test_a_starting_worker_never_clears_the_sweep_lease():
    from tests.stack import ROOT

    worker = next(line for line in (ROOT / "Procfile").read_text().splitlines()
                  if line.startswith("worker:"))
    assert "--flush-locks" not in worker


# --- Defect 7: audit -------------------------------------------------------------------------


def reversed_by_hand(payment: Payment, amount_kobo: int, credit_wallet_id: int) -> int:
    """Refund a failed payment behind the lifecycle's back."""
    clearing_id = ledger.system_wallet_id(BILLER_CLEARING_WALLET)
    posted = ledger.post_transfer(kind=KIND_REVERSAL, debit_wallet_id=clearing_id,
                                  credit_wallet_id=credit_wallet_id, amount_kobo=amount_kobo,
                                  payment_id=payment.id)
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(status=REVERSED))
    db.session.commit()
    return posted.transfer_id


def broken(invariant: str) -> list:
    return [v for v in ledger_invariants.check_invariants() if v.invariant == invariant]


def test_invariants_catch_a_reversal_of_the_wrong_amount(app):
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    set_status(payment.id, VENDING, FAILED)
    transfer_id = reversed_by_hand(payment, 90_000, user.wallet.id)
    [violation] = broken("reversal_amount")
    assert (violation.subject, violation.subject_id) == ("transfer", transfer_id)
    assert broken("biller_clearing_reconciles")  # 10,000 kobo left behind


def test_invariants_catch_a_reversal_to_the_wrong_wallet(app):
    user, stranger = make_user(balance_kobo=500_000), make_user()
    payment = claimed(make_payment(user, amount_kobo=100_000))
    set_status(payment.id, VENDING, FAILED)
    transfer_id = reversed_by_hand(payment, 100_000, stranger.wallet.id)
    assert [v.subject_id for v in broken("reversal_amount")] == [transfer_id]
    assert not broken("biller_clearing_reconciles")


def test_invariants_catch_a_biller_clearing_that_does_not_reconcile(app):
    user = make_user(balance_kobo=500_000)
    make_payment(user, amount_kobo=100_000)
    assert ledger_invariants.check_invariants() == []
    ledger.post_transfer(kind=KIND_ADJUSTMENT, debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
                         credit_wallet_id=ledger.system_wallet_id(BILLER_CLEARING_WALLET), amount_kobo=100)
    db.session.commit()
    violations = ledger_invariants.check_invariants()
    # The adjustment has no approval and takes the money out of the funding wallet too.
    assert {v.invariant for v in violations} == {
        "biller_clearing_reconciles", "funding_wallet_reconciles", "adjustment_approved"}
    [violation] = [v for v in violations if v.invariant == "biller_clearing_reconciles"]
    assert "100100" in violation.detail and "100000" in violation.detail
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1
    assert "FAIL biller_clearing_reconciles" in result.output
    assert "ok   reversal_amount" in result.output


def test_ledger_check_reports_both_new_invariants_when_the_books_balance(app):
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    set_status(payment.id, VENDING, FAILED)
    assert payments.reverse_payment(payment.id)
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 0, result.output
    assert "ok   reversal_amount" in result.output and "ok   biller_clearing_reconciles" in result.output


# --- The lifecycle module: admin eligibility from the one table -----------------------------


def test_admin_can_redrive_a_pending_payment_past_its_grace(app):
    admin = make_admin()
    app.config.update(PENDING_GRACE_SECONDS=3600)
    payment = make_payment(make_user(balance_kobo=500_000))
    assert services.REDRIVE not in services.allowed_actions(reload(payment.id))
    outcome = services.redrive_now(admin, payment.id, "stuck in the queue")
    assert not outcome.ok and "queued moments ago" in outcome.message
    app.config.update(PENDING_GRACE_SECONDS=0)
    assert services.allowed_actions(reload(payment.id)) == [services.REDRIVE]
    outcome = services.redrive_now(admin, payment.id, "stuck in the queue")
    assert outcome.ok, outcome.message
    assert reload(payment.id).status == SUCCESSFUL  # immediate mode: vended inline
    assert_books_balance()


def test_admin_redrive_through_the_page(client, auth, app):
    admin = make_admin()
    app.config.update(PENDING_GRACE_SECONDS=0)
    payment = make_payment(make_user(balance_kobo=500_000))
    auth.login(admin.email)
    auth.second_factor(admin)
    path = f"/admin/payments/{payment.reference}"
    page = client.get(path).get_data(as_text=True)
    assert 'id="redrive-form"' in page
    from tests.conftest import CSRF_RE

    token = [m.group(1) or m.group(2) for m in CSRF_RE.finditer(page)]
    response = client.post(f"{path}/redrive", data={"redrive-reason": "lost task",
                                                    "redrive-csrf_token": token[0]})
    assert response.status_code == 303
    assert reload(payment.id).status == SUCCESSFUL


def test_events_of_an_admin_refund_keep_the_provider_reason(app, monkeypatch):
    admin = make_admin()
    payment = unknown_payment(make_user(balance_kobo=500_000))
    monkeypatch.setattr(services, "get_provider", Silent)
    assert services.refund(admin, payment.id, "support confirmed").ok
    refunded = reload(payment.id)
    assert refunded.provider_code == "TIMEOUT"  # the last thing the provider said
    notes = [e.message for e in db.session.scalars(
        sa.select(PaymentEvent).where(PaymentEvent.payment_id == payment.id))]
    assert "Refunded by an admin: support confirmed" in notes


def test_invariants_catch_a_payment_debited_from_someone_elses_wallet(app):
    user, stranger = make_user(balance_kobo=500_000), make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=100_000)
    assert not broken("payment_debit_wallet")
    # The payment claims the stranger's wallet: a refund would go there.
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id)
                       .values(wallet_id=stranger.wallet.id))
    db.session.commit()
    [violation] = broken("payment_debit_wallet")
    assert (violation.subject, violation.subject_id) == ("payment", payment.id)
    assert f"from wallet {user.wallet.id}" in violation.detail


def test_invariants_catch_a_payment_whose_wallet_is_not_its_users(app):
    user, stranger = make_user(balance_kobo=500_000), make_user()
    payment = make_payment(user, amount_kobo=100_000)
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(user_id=stranger.id))
    db.session.commit()
    assert [v.subject_id for v in broken("payment_debit_wallet")] == [payment.id]
    result = app.test_cli_runner().invoke(args=["ledger", "check"])
    assert result.exit_code == 1 and "FAIL payment_debit_wallet" in result.output


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


def test_never_received_waits_for_the_lease_while_the_pay_has_not_reported_its_end(app):
    """A pay's own deadline starts only once its claim has committed, and its
    end is recorded after another write; on a loaded machine either can lag
    (a drip-meter pay was refunded on 015 in CI that way, then delivered).
    Until the pay reports its end, it may be in flight for as long as its
    worker holds the lease (which must outlast a vend call), so a "never
    received" is believed only PROVIDER_NOT_FOUND_GRACE_SECONDS after the
    lease, not after claim + the call's deadline."""
    app.config.update(VENDING_PROVIDER="simulated", SIMULATOR_DELAY_SECONDS=0.0,
                      VENDING_LEASE_SECONDS=1, PROVIDER_NOT_FOUND_GRACE_SECONDS=0.5)
    assert vend_deadline_seconds(app.config) < 0.5  # claim + deadline + grace < claim + lease
    user = make_user(balance_kobo=500_000)
    payment = claimed(make_payment(user, amount_kobo=100_000))
    assert payment.pay_in_flight_until == payment.claimed_at + timedelta(seconds=1)

    class NeverHeard:
        name = "never-heard"

        def requery(self, request_id, meter_type=None):
            return VendResult("failed", "NOT_FOUND", "VTpass 015")

    time.sleep(1.1)  # the lease has expired; claim + deadline + grace has passed
    payments.requery_payment(payment.id, NeverHeard(), include_vending=True)
    assert reload(payment.id).status == UNKNOWN and reversals(payment.id) == 0
    time.sleep(0.5)  # lease + grace has passed: the worker is gone, believe it
    payments.requery_payment(payment.id, NeverHeard(), force=True)
    assert reload(payment.id).status == FAILED  # believed: the task layer refunds it
