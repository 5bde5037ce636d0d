"""The admin area: access, pages, actions and their audit records, CSV export."""

from __future__ import annotations

import csv
import io
import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from billvend.ledger import services as ledger
from billvend.vending import lifecycle as payments
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.vending.models import (
    FAILED, PENDING, REVERSED, SUCCESSFUL, UNKNOWN, VENDING, Payment,
)
from billvend.accounts.models import AdminAction, User
from billvend.notifications.models import Message
from billvend.ledger.models import LedgerEntry, Transfer, Wallet
from billvend.platform.models import utcnow
from billvend.vending.providers import get_provider
from billvend.vending.providers.base import VendResult
from billvend.web.admin import services
from tests.conftest import CSRF_RE, Auth
from tests.helpers import assert_books_balance, in_other_worker, make_payment, make_user, payment_read

PASSWORD = "correct horse 1"


def make_admin(email="root@example.com") -> User:
    user = make_user(email)
    user.is_admin = True
    db.session.commit()
    return user


@pytest.fixture
def admin(client, auth):
    user = make_admin()
    assert auth.login("root@example.com", PASSWORD).status_code == 303
    auth.second_factor(user)
    return user


def to_status(payment: Payment, status: str) -> Payment:
    """Walk a fresh ``pending`` payment to ``status`` through the state machine."""
    pid = payment.id
    if status == PENDING:
        return payment
    assert payments.claim(pid)
    path = {VENDING: [], UNKNOWN: [UNKNOWN], FAILED: [FAILED], SUCCESSFUL: [SUCCESSFUL],
            REVERSED: [FAILED, REVERSED]}[status]
    current = VENDING
    for step in path:
        if step == REVERSED:
            assert payments.reverse_payment(pid)
        else:
            extra = {"token": "1" * 20} if step == SUCCESSFUL else {}
            if current == VENDING:  # as a pay's answer leaves it: the call has ended
                extra["pay_in_flight_until"] = Payment.claimed_at
            assert payments.transition(pid, current, step, code="TEST", **extra)
            db.session.commit()
        current = step
    db.session.expire_all()
    return db.session.get(Payment, pid)


def reload(payment_id: int) -> Payment:
    db.session.expire_all()
    return db.session.get(Payment, payment_id)


def actions_of(payment_id: int) -> list[AdminAction]:
    db.session.expire_all()
    return list(db.session.scalars(
        sa.select(AdminAction).where(AdminAction.payment_id == payment_id).order_by(AdminAction.id)))


def reversal_count(payment_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(
        Transfer.payment_id == payment_id, Transfer.kind == "reversal"))


def csrf_of(client, path: str) -> str:
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def post_action(client, payment: Payment, action: str, **fields):
    path = f"/admin/payments/{payment.reference}"
    prefix = {"requery": "requery-", "refund": "refund-", "resolve": ""}[action]
    data = {f"{prefix}{k}": v for k, v in fields.items()}
    data[f"{prefix}csrf_token"] = csrf_of(client, path)
    return client.post(f"{path}/{action}", data=data)


# --- Access matrix ---------------------------------------------------------------


def admin_urls(payment: Payment, wallet_id: int, transfer_id: int) -> list[tuple[str, str]]:
    ref = payment.reference
    return [
        ("GET", "/admin/"), ("GET", "/admin/invariants"), ("GET", "/admin/payments"),
        ("GET", "/admin/payments?status=pending"), ("GET", "/admin/payments.csv"),
        ("GET", f"/admin/payments/{ref}"), ("GET", "/admin/stuck"), ("GET", "/admin/wallets"),
        ("GET", f"/admin/wallets/{wallet_id}"), ("GET", f"/admin/transfers/{transfer_id}"),
        ("GET", "/admin/actions"),
        ("POST", f"/admin/payments/{ref}/requery"), ("POST", f"/admin/payments/{ref}/resolve"),
        ("POST", f"/admin/payments/{ref}/refund"),
        ("GET", "/admin/messages"), ("GET", "/admin/messages?status=failed"), ("GET", "/admin/p2p"),
        ("POST", "/admin/messages/1/retry"),
        ("GET", "/admin/adjustments"), ("GET", "/admin/adjustments?status=pending&direction=bonus"),
        ("POST", "/admin/adjustments"), ("POST", "/admin/adjustments/1/approve"),
        ("POST", "/admin/adjustments/1/reject"),
    ]


@pytest.fixture
def one_payment(app):
    customer = make_user("cus@example.com", balance_kobo=500_000)
    payment = make_payment(customer)
    transfer_id = db.session.scalar(sa.select(Transfer.id).where(Transfer.payment_id == payment.id))
    return payment, customer.wallet.id, transfer_id


def test_anonymous_is_sent_to_log_in_everywhere(client, one_payment):
    # A valid CSRF token, so POSTs reach the access guard, not the CSRF check.
    headers = {"X-CSRFToken": csrf_of(client, "/login")}
    for method, url in admin_urls(*one_payment):
        response = client.open(url, method=method, headers=headers,
                               data={"reason": "because I say so"})
        assert response.status_code == 302, (method, url)
        assert response.headers["Location"].startswith("/login?next="), (method, url)
    assert db.session.scalar(sa.select(sa.func.count(AdminAction.id))) == 0


def test_customer_gets_404_everywhere(client, auth, one_payment):
    auth.login("cus@example.com", PASSWORD)
    headers = {"X-CSRFToken": csrf_of(client, "/")}
    for method, url in admin_urls(*one_payment):
        response = client.open(url, method=method, headers=headers,
                               data={"reason": "because I say so"})
        assert response.status_code == 404, (method, url)
        assert b"Admin" not in response.data  # no nav link either
    assert db.session.scalar(sa.select(sa.func.count(AdminAction.id))) == 0
    assert reload(one_payment[0].id).status == PENDING


def test_admin_sees_every_page(client, admin, one_payment):
    for method, url in admin_urls(*one_payment):
        if method == "GET":
            response = client.get(url)
            assert response.status_code == 200, url
    assert b'href="/admin/"' in client.get("/").data  # the nav link
    # An admin POST without a reason is refused with a message; nothing changes.
    payment = one_payment[0]
    response = post_action(client, payment, "refund", reason="")
    assert response.status_code == 422 and b"Give a reason" in response.data
    assert actions_of(payment.id) == []


def test_admin_csrf_required(client, admin, one_payment):
    payment = to_status(one_payment[0], FAILED)
    response = client.post(f"/admin/payments/{payment.reference}/refund",
                           data={"refund-reason": "customer called twice"})
    assert response.status_code == 400
    assert reload(payment.id).status == FAILED and actions_of(payment.id) == []


def test_unknown_admin_payment_is_404(client, admin):
    assert client.get("/admin/payments/nope").status_code == 404
    assert client.get("/admin/wallets/999999").status_code == 404


# --- Actions ---------------------------------------------------------------------


def test_refund_failed_payment(client, admin):
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer, amount_kobo=200_000), FAILED)
    response = post_action(client, payment, "refund", reason="provider confirmed failure")
    assert response.status_code == 303
    assert response.headers["Location"] == f"/admin/payments/{payment.reference}"
    assert reload(payment.id).status == REVERSED
    assert reversal_count(payment.id) == 1
    assert db.session.get(Wallet, customer.wallet.id).balance_kobo == 500_000
    [action] = actions_of(payment.id)
    assert (action.action, action.admin_id, action.reason) == ("refund", admin.id, "provider confirmed failure")
    assert action.result.startswith("done: refunded ₦2,000.00")
    assert b"refunded" in client.get(response.headers["Location"]).data
    assert_books_balance()


def test_refund_unknown_asks_the_provider_first(client, admin):
    """The provider never got the order: the requery inside the action fails
    the payment and the ordinary refund follows."""
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)  # never sent to the simulator
    post_action(client, payment, "refund", reason="provider says never received")
    paid = reload(payment.id)
    assert paid.status == REVERSED and reversal_count(payment.id) == 1
    assert [(e.from_status, e.to_status) for e in paid.events][-2:] == [(UNKNOWN, FAILED), (FAILED, REVERSED)]
    assert paid.provider_code == "NOT_FOUND" or "NOT_FOUND" in [e.provider_code for e in paid.events]
    assert "(failed → reversed)" in actions_of(payment.id)[0].result
    assert_books_balance()


def test_refund_of_an_unknown_payment_the_disco_delivered_is_refused(client, admin):
    """A timeout after which the disco vended: the admin's refund finds the
    token instead, so the customer never has both."""
    customer = make_user(balance_kobo=500_000)
    payment = make_payment(customer, meter_number="300000000000")
    payments.vend_payment(payment.id, get_provider())
    assert reload(payment.id).status == UNKNOWN
    post_action(client, payment, "refund", reason="customer says no token")
    paid = reload(payment.id)
    assert paid.status == SUCCESSFUL and len(paid.token) == 20 and reversal_count(payment.id) == 0
    assert actions_of(payment.id)[0].result.startswith("refused: the provider says this order was delivered")
    assert_books_balance()


def test_refund_unknown_when_the_provider_cannot_say(client, admin, monkeypatch):
    """Still no definite answer: the admin's refund, with its reason, goes
    unknown -> failed -> reversed."""
    from billvend.web.admin import services
    from billvend.vending.providers.base import VendResult

    class Silent:
        name = "silent"

        def requery(self, request_id, meter_type=None):
            return VendResult("pending", "TIMEOUT", "no answer")

    monkeypatch.setattr(services, "get_provider", Silent)
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)
    post_action(client, payment, "refund", reason="provider support confirmed no token")
    paid = reload(payment.id)
    assert paid.status == REVERSED and reversal_count(payment.id) == 1
    assert [(e.from_status, e.to_status) for e in paid.events][-2:] == [(UNKNOWN, FAILED), (FAILED, REVERSED)]
    assert "unknown → failed → reversed" in actions_of(payment.id)[0].result
    assert_books_balance()


class Delivers:
    """A provider whose requery says the order was delivered."""

    name = "delivers"

    def requery(self, request_id, meter_type=None):
        return VendResult("delivered", code="delivered", message="TRANSACTION SUCCESSFUL",
                          token="5" * 20, receipt_reference="EXR9")


def test_refund_unknown_is_refused_when_the_delivered_answer_cannot_be_recorded(client, admin, monkeypatch):
    """Issue 20, item 3: the requery before the refund says "delivered", but
    recording that answer fails on the database. The refund must not go
    ahead on an answer that is not on record: a refusal with its reason,
    audited; the payment stays unknown (the sweep requeries it again)."""
    from billvend.web.admin import services

    monkeypatch.setattr(services, "get_provider", Delivers)

    def database_refuses(*args, **kwargs):
        raise sa.exc.DataError("UPDATE payments SET ...", {}, Exception("invalid byte sequence"))

    monkeypatch.setattr(payments, "_apply_delivery", database_refuses)
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)
    response = post_action(client, payment, "refund", reason="customer says no token")
    assert response.status_code == 303
    after = reload(payment.id)
    assert after.status == UNKNOWN and reversal_count(payment.id) == 0
    assert db.session.get(User, customer.id).wallet.balance_kobo == 400_000
    [action] = actions_of(payment.id)
    assert action.action == "refund" and action.reason == "customer says no token"
    assert action.result.startswith("refused: the provider's answer to the requery before the refund "
                                    "(delivered) could not be recorded (DataError)"), action.result
    assert_books_balance()


def test_refund_unknown_is_refused_when_the_requery_raises(client, admin, monkeypatch):
    """The provider call itself blew up: no answer, so no refund."""
    from billvend.web.admin import services

    class Broken:
        name = "broken"

        def requery(self, request_id, meter_type=None):
            raise RuntimeError("socket closed")

    monkeypatch.setattr(services, "get_provider", Broken)
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)
    post_action(client, payment, "refund", reason="customer says no token")
    assert reload(payment.id).status == UNKNOWN and reversal_count(payment.id) == 0
    [action] = actions_of(payment.id)
    assert action.result.startswith("refused: the provider could not be asked (RuntimeError)"), action.result
    assert_books_balance()


def test_refund_unknown_is_refused_while_another_requery_holds_it(client, admin, monkeypatch):
    """A sweep's requery took the payment a moment before: its answer is on
    its way, so the admin's refund waits for it instead of going ahead."""
    from billvend.web.admin import services

    monkeypatch.setattr(services, "get_provider", Delivers)
    monkeypatch.setattr(payments, "_claim_requery", lambda *args, **kwargs: None)
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)
    post_action(client, payment, "refund", reason="customer says no token")
    assert reload(payment.id).status == UNKNOWN and reversal_count(payment.id) == 0
    [action] = actions_of(payment.id)
    assert action.result.startswith("refused: another requery of this payment is in flight"), action.result


def test_requery_of_a_payment_a_worker_is_vending_is_refused(client, admin):
    """Inside the vending lease a pay call may be in flight: no requery yet."""
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), VENDING)
    post_action(client, payment, "requery", reason="impatient")
    assert reload(payment.id).status == VENDING and reload(payment.id).requery_count == 0
    assert actions_of(payment.id)[0].result.startswith("refused: a worker is vending this payment")


def test_refund_double_submit_refunds_once(client, admin):
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer, amount_kobo=100_000), UNKNOWN)
    path = f"/admin/payments/{payment.reference}"
    data = {"refund-reason": "double click", "refund-csrf_token": csrf_of(client, path)}
    first = client.post(f"{path}/refund", data=data)
    second = client.post(f"{path}/refund", data=data)  # the same form, submitted again
    assert first.status_code == second.status_code == 303
    assert reload(payment.id).status == REVERSED and reversal_count(payment.id) == 1
    assert db.session.get(Wallet, customer.wallet.id).balance_kobo == 500_000
    done, refused = actions_of(payment.id)
    assert done.result.startswith("done:")
    assert refused.result.startswith("refused: the payment is already refunded")
    assert_books_balance()


def test_refund_concurrent_double_submit_refunds_once(app):
    """Two admin requests race on separate threads (own app contexts, so own
    sessions and own ``g``)."""
    root = make_admin()
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer, amount_kobo=100_000), FAILED)
    ref = payment.reference
    clients = []
    for _ in range(2):
        c = app.test_client()
        with app.app_context():
            c.post("/login", data={"email": "root@example.com", "password": PASSWORD,
                                   "csrf_token": csrf_of(c, "/login")})
            Auth(c).second_factor(root)
            clients.append((c, csrf_of(c, f"/admin/payments/{ref}")))
            db.session.remove()
    barrier = threading.Barrier(2, timeout=30)
    codes = []

    def submit(c, token):
        with app.app_context():
            barrier.wait()
            codes.append(c.post(f"/admin/payments/{ref}/refund", data={
                "refund-reason": "racing submits", "refund-csrf_token": token}).status_code)
            db.session.remove()

    threads = [threading.Thread(target=submit, args=pair) for pair in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes == [303, 303]
    assert reload(payment.id).status == REVERSED and reversal_count(payment.id) == 1
    results = sorted(a.result.split(":")[0] for a in actions_of(payment.id))
    assert results == ["done", "refused"]
    assert_books_balance()


def test_refund_successful_payment_is_refused(client, admin):
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), SUCCESSFUL)
    response = post_action(client, payment, "refund", reason="customer wants money back")
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "a delivered payment is never refunded" in page
    assert reload(payment.id).status == SUCCESSFUL and reversal_count(payment.id) == 0
    assert db.session.get(Wallet, customer.wallet.id).balance_kobo == 400_000
    [action] = actions_of(payment.id)
    assert action.action == "refund" and action.result.startswith("refused:")
    assert_books_balance()


@pytest.mark.parametrize("status", [PENDING, VENDING, REVERSED])
def test_refund_refused_outside_failed_or_unknown(client, admin, status):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), status)
    post_action(client, payment, "refund", reason="just trying it")
    assert reload(payment.id).status == status
    assert reversal_count(payment.id) == (1 if status == REVERSED else 0)
    assert actions_of(payment.id)[0].result.startswith("refused:")


def test_resolve_unknown_as_delivered(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), UNKNOWN)
    response = post_action(client, payment, "resolve", token="1234 5678 9012 3456 7890",
                           units_kwh="12.5", reason="token seen in provider portal")
    assert response.status_code == 303
    paid = reload(payment.id)
    assert (paid.status, paid.token, paid.units_kwh) == (SUCCESSFUL, "12345678901234567890", "12.5")
    assert paid.events[-1].from_status == UNKNOWN and paid.events[-1].to_status == SUCCESSFUL
    [action] = actions_of(payment.id)
    assert action.action == "resolve_delivered" and "12345678901234567890" in action.result
    assert reversal_count(payment.id) == 0
    assert_books_balance()


def test_resolve_as_delivered_sends_the_customer_the_token(client, admin):
    # The customer paid and never saw the token the admin found in the
    # provider's portal: it goes out like any other delivery, once.
    user = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(user), UNKNOWN)
    for _ in range(2):  # a double submit queues nothing twice
        post_action(client, payment, "resolve", token="1234 5678 9012 3456 7890",
                    reason="token seen in provider portal")
    rows = db.session.scalars(sa.select(Message).where(
        Message.event_key == f"payment:{payment.id}:token")).all()
    assert sorted((row.channel, row.recipient, row.template) for row in rows) == [
        ("email", user.email, "token"), ("sms", "+2348031234567", "token")]
    assert all(row.secret and row.context["token_spaced"] == "1234 5678 9012 3456 7890"
               for row in rows)


def test_resolve_as_delivered_waits_while_a_worker_is_vending(app, client, admin):
    """While a worker's pay call may still be in flight (its lease is live),
    the provider's own answer is seconds away: an admin's token typed now
    could differ from it. Resolving waits for the lease, like requery."""
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), VENDING)
    post_action(client, payment, "resolve", token="1234 5678 9012 3456 7890", reason="seen in portal")
    assert reload(payment.id).status == VENDING
    [action] = actions_of(payment.id)
    assert action.result.startswith("refused:") and "lease" in action.result
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(
        claimed_at=utcnow() - timedelta(seconds=app.config["VENDING_LEASE_SECONDS"] + 1)))
    db.session.commit()
    post_action(client, payment, "resolve", token="1234 5678 9012 3456 7890", reason="seen in portal")
    assert reload(payment.id).status == SUCCESSFUL
    assert_books_balance()


@pytest.mark.parametrize("token,message", [
    ("", b"needs the 20-digit token"), ("1234", b"exactly 20 digits"), ("1" * 19 + "x", b"exactly 20 digits"),
])
def test_resolve_needs_a_valid_prepaid_token(client, admin, token, message):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), VENDING)
    response = post_action(client, payment, "resolve", token=token, reason="looked it up")
    assert response.status_code == 422 and message in response.data
    assert reload(payment.id).status == VENDING and actions_of(payment.id) == []


def test_resolve_postpaid_needs_receipt(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000), meter_number="1010101010101",
                                     meter_type="postpaid"), UNKNOWN)
    response = post_action(client, payment, "resolve", reason="looked it up")
    assert response.status_code == 422 and b"receipt reference" in response.data
    post_action(client, payment, "resolve", receipt_reference="RCP-77", reason="receipt in portal")
    paid = reload(payment.id)
    assert (paid.status, paid.receipt_reference, paid.token) == (SUCCESSFUL, "RCP-77", None)


def test_resolve_failed_payment_is_refused(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), FAILED)
    post_action(client, payment, "resolve", token="1" * 20, reason="wrong button")
    assert reload(payment.id).status == FAILED
    assert actions_of(payment.id)[0].result.startswith("refused:")


def test_requery_now_delivers(client, admin):
    payment = make_payment(make_user(balance_kobo=500_000), meter_number="201000000000")
    payments.vend_payment(payment.id, get_provider())  # the disco is still processing
    assert reload(payment.id).status == UNKNOWN
    response = post_action(client, payment, "requery", reason="customer on the phone")
    assert response.status_code == 303
    paid = reload(payment.id)
    assert paid.status == SUCCESSFUL and len(paid.token) == 20 and paid.requery_count == 1
    [action] = actions_of(payment.id)
    assert action.action == "requery" and action.result.startswith("done: requeried; unknown → successful")


def test_requery_not_found_fails_and_refunds(client, admin):
    """The provider never got the order: definite failure; the refund follows."""
    customer = make_user(balance_kobo=500_000)
    payment = to_status(make_payment(customer), UNKNOWN)  # never sent to the simulator
    post_action(client, payment, "requery", reason="stuck for hours")
    assert reload(payment.id).status == REVERSED and reversal_count(payment.id) == 1
    assert "unknown → failed" in actions_of(payment.id)[0].result
    assert_books_balance()


def test_requery_refused_for_final_payment(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), SUCCESSFUL)
    post_action(client, payment, "requery", reason="curious")
    assert actions_of(payment.id)[0].result.startswith("refused: the payment is already successful")


def test_audit_log_lists_actions_and_is_append_only(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), FAILED)
    post_action(client, payment, "refund", reason="the audit reason")
    page = client.get("/admin/actions").get_data(as_text=True)
    assert "the audit reason" in page and "root@example.com" in page and payment.reference in page
    for method in ("POST", "PUT", "DELETE"):
        assert client.open("/admin/actions", method=method).status_code == 405
    action = actions_of(payment.id)[0]
    action.result = "tampered"
    with pytest.raises(Exception, match="append-only"):
        db.session.commit()
    db.session.rollback()
    assert actions_of(payment.id)[0].result.startswith("done:")


# --- Pages -----------------------------------------------------------------------


def test_invariants_panel_shows_a_planted_violation(client, admin):
    customer = make_user(balance_kobo=500_000)
    payment = make_payment(customer)
    page = client.get("/admin/invariants").get_data(as_text=True)
    assert "Every invariant holds" in page and "VIOLATED" not in page
    # Tamper with the books behind the ledger's back.
    entry_id = db.session.scalar(sa.select(LedgerEntry.id).where(LedgerEntry.wallet_id == customer.wallet.id)
                                 .order_by(LedgerEntry.wallet_version.desc()).limit(1))
    db.session.execute(sa.update(LedgerEntry).where(LedgerEntry.id == entry_id)
                       .values(delta_kobo=LedgerEntry.delta_kobo + 1))
    db.session.commit()
    transfer_id = db.session.scalar(sa.select(LedgerEntry.transfer_id).where(LedgerEntry.id == entry_id))
    page = client.get("/admin/invariants").get_data(as_text=True)
    assert "the books do not balance" in page
    assert re.search(r'id="inv-transfer_balanced">.*?VIOLATED \(1\)', page, re.S)
    assert f'href="/admin/transfers/{transfer_id}"' in page
    assert re.search(r'id="inv-balance_matches">.*?VIOLATED', page, re.S)
    assert f'href="/admin/wallets/{customer.wallet.id}"' in page
    assert re.search(r'id="inv-user_wallet_negative">.*?holds', page, re.S)
    # The wallet statement marks the row whose stored balance disagrees.
    assert b"mismatch" in client.get(f"/admin/wallets/{customer.wallet.id}").data
    assert payment.reference  # the payment itself still debits once
    

def test_invariants_panel_shows_money_created_by_an_unexplained_adjustment(client, admin):
    customer = make_user(balance_kobo=100_000)
    assert "Every invariant holds" in client.get("/admin/invariants").get_data(as_text=True)
    posted = ledger.post_transfer(kind="adjustment", debit_wallet_id=ledger.system_wallet_id("funding"),
                                  credit_wallet_id=customer.wallet.id, amount_kobo=1_000_000_00)
    db.session.commit()
    page = client.get("/admin/invariants").get_data(as_text=True)
    assert re.search(r'id="inv-unexplained_movement">.*?VIOLATED \(1\)', page, re.S)
    assert re.search(r'id="inv-funding_wallet_reconciles">.*?VIOLATED \(1\)', page, re.S)
    assert f'href="/admin/transfers/{posted.transfer_id}"' in page


def test_invariants_panel_links_a_payment(client, admin):
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), FAILED)
    # A reversed status without a reversal transfer: invariant 4 broken.
    db.session.execute(sa.update(Payment).where(Payment.id == payment.id).values(status=REVERSED))
    db.session.commit()
    page = client.get("/admin/invariants").get_data(as_text=True)
    assert re.search(r'id="inv-payment_reversals">.*?VIOLATED', page, re.S)
    assert f'href="/admin/payments/{payment.reference}"' in page


def test_overview_totals(client, admin, fund):
    customer = make_user(balance_kobo=1_000_000)
    to_status(make_payment(customer, amount_kobo=100_000), SUCCESSFUL)
    to_status(make_payment(customer, amount_kobo=200_000), REVERSED)
    to_status(make_payment(customer, amount_kobo=300_000), UNKNOWN)
    page = client.get("/admin/").get_data(as_text=True)
    assert page.count("₦10,000.00") >= 2  # funded today and all time
    assert "₦1,000.00" in page and "₦2,000.00" in page  # vended, refunded
    assert "₦3,000.00" in page  # in flight
    assert "50.0%" in page  # one successful of two settled
    # biller_clearing holds the vended and in-flight money: 1,000 + 3,000.
    assert re.search(r'data-testid="biller-clearing">₦4,000.00<', page)
    assert "<svg" in page and "<rect" in page and "polyline" in page


def test_payment_detail_shows_timeline_ledger_customer(client, admin):
    customer = make_user("kemi@example.com", balance_kobo=500_000)
    payment = to_status(make_payment(customer), REVERSED)
    page = client.get(f"/admin/payments/{payment.reference}").get_data(as_text=True)
    assert "kemi@example.com" in page
    for change in ("new → pending", "pending → vending", "vending → failed", "failed → reversed"):
        assert change in page
    assert "bill_payment" in page and "reversal" in page and "biller_clearing" in page


def test_wallet_statement_running_balance(client, admin):
    customer = make_user(balance_kobo=500_000)
    make_payment(customer, amount_kobo=100_000)
    page = client.get(f"/admin/wallets/{customer.wallet.id}").get_data(as_text=True)
    assert "₦4,000.00" in page and "mismatch" not in page
    wallets = client.get("/admin/wallets").get_data(as_text=True)
    assert "biller_clearing" in wallets and "funding" in wallets and customer.email in wallets


def test_stuck_payments_listed(client, admin, app):
    customer = make_user(balance_kobo=1_000_000)
    fresh = make_payment(customer)
    old_pending = make_payment(customer)
    unknown = to_status(make_payment(customer), UNKNOWN)
    old = payments.utcnow() - timedelta(hours=3)
    db.session.execute(sa.update(Payment).where(Payment.id.in_([old_pending.id, unknown.id]))
                       .values(created_at=old))
    db.session.commit()
    page = client.get("/admin/stuck").get_data(as_text=True)
    assert old_pending.reference in page and unknown.reference in page
    assert fresh.reference not in page


# --- Payments list and CSV ---------------------------------------------------------


@pytest.fixture
def mixed_payments(app):
    ada = make_user("ada@example.com", balance_kobo=5_000_000)
    bola = make_user("bola@example.com", balance_kobo=5_000_000)
    made = {
        "ada_ok": to_status(make_payment(ada, amount_kobo=150_050), SUCCESSFUL),
        "ada_unknown": to_status(make_payment(ada, amount_kobo=100_000), UNKNOWN),
        "ada_post": to_status(make_payment(ada, meter_number="1010101010101", meter_type="postpaid",
                                           amount_kobo=120_000), SUCCESSFUL),
        "bola_ok": to_status(make_payment(bola, amount_kobo=300_000), SUCCESSFUL),
    }
    return made


def test_payments_filters_and_search(client, admin, mixed_payments):
    def refs(query):
        response = client.get("/admin/payments" + query)
        assert response.status_code == 200, query
        html = response.get_data(as_text=True)
        return {k for k, p in mixed_payments.items() if p.reference in html}

    assert refs("") == set(mixed_payments)
    assert refs("?status=successful") == {"ada_ok", "ada_post", "bola_ok"}
    assert refs("?email=ADA@example.com") == {"ada_ok", "ada_unknown", "ada_post"}
    assert refs("?meter_type=postpaid") == {"ada_post"}
    assert refs("?disco=eko-electric") == set()
    assert refs("?q=1010-1010-10101") == {"ada_post"}
    assert refs(f"?q={mixed_payments['bola_ok'].reference}") == {"bola_ok"}
    today = payments.utcnow().astimezone(payments.LAGOS).date()
    assert refs(f"?date_from={today}&date_to={today}") == set(mixed_payments)
    assert refs(f"?date_to={today - timedelta(days=1)}") == set()
    assert refs("?email=nobody@example.com") == set()


def test_payments_bad_filters_get_a_message(client, admin, mixed_payments):
    response = client.get("/admin/payments?date_from=2026-02-30&status=bogus")
    assert response.status_code == 422
    assert b"Not a valid date" in response.data or b"date" in response.data
    response = client.get("/admin/payments?date_from=2026-03-02&date_to=2026-03-01")
    assert response.status_code == 422 and b"before the start date" in response.data
    assert client.get("/admin/payments.csv?q=%3Cscript%3E").status_code == 400


def test_payments_keyset_pagination(client, admin, app):
    customer = make_user(balance_kobo=10_000_000)
    made = [make_payment(customer, amount_kobo=50_000) for _ in range(7)]
    import billvend.web.admin.queries as queries

    seen, cursor = [], None
    for _ in range(5):
        page = queries.payments_page({}, cursor, size=3)
        seen += [p.reference for p in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [p.reference for p in reversed(made)]
    html = client.get("/admin/payments?after=garbage").get_data(as_text=True)
    assert made[-1].reference in html  # a bad cursor is the first page


def test_csv_export_of_a_filtered_set(client, admin, mixed_payments):
    response = client.get("/admin/payments.csv?email=ada@example.com&status=successful")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    wanted = [mixed_payments["ada_post"], mixed_payments["ada_ok"]]  # newest first
    assert [r["reference"] for r in rows] == [p.reference for p in wanted]
    first, second = rows
    assert (second["amount_kobo"], second["amount_naira"], second["status"]) == ("150050", "1500.50", "successful")
    assert second["customer_email"] == "ada@example.com" and second["token"] == "1" * 20
    assert (first["meter_type"], first["meter_number"]) == ("postpaid", "1010101010101")
    assert all(r["disco"] == "ikeja-electric" for r in rows)


def test_create_admin_command(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "New@Example.com"],
                           input="short\nshort\nlong enough 1\nlong enough 1\n")
    assert result.exit_code == 0, result.output
    assert "created admin new@example.com" in result.output
    user = db.session.scalar(sa.select(User).where(User.email == "new@example.com"))
    assert user.is_admin and user.check_password("long enough 1") and user.wallet is not None
    customer = make_user("cus@example.com")
    result = runner.invoke(args=["create-admin", "cus@example.com"])
    assert result.exit_code == 0 and "promoted" in result.output
    db.session.expire_all()
    assert db.session.get(User, customer.id).is_admin
    mismatch = runner.invoke(args=["create-admin", "x@example.com"], input="long enough 1\nother one 12\n")
    assert mismatch.exit_code != 0
    assert db.session.scalar(sa.select(User).where(User.email == "x@example.com")) is None
    assert runner.invoke(args=["create-admin", "not-an-email"]).exit_code != 0


def test_overview_alerts_when_the_provider_float_is_low(client, admin):
    """VTpass 018 (merchant balance too low) fails the payment and must reach
    an admin (reference/vtpass-api.md: "failed, alert admins")."""
    assert b"float-alert" not in client.get("/admin/").data
    payment = to_status(make_payment(make_user(balance_kobo=500_000)), VENDING)
    payments.apply_result(payment.id, VENDING, VendResult("failed", "INSUFFICIENT_CREDIT", "low float"))
    page = client.get("/admin/").get_data(as_text=True)
    assert 'data-testid="float-alert"' in page and "1 payment in the last 24 hours" in page


# --- Numeric query parameters (issue 21, item 2) -----------------------------------

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: Every admin list and the query parameters it reads (the filters as well as
#: the page cursors): none of them may answer 500, whatever they are given.
ADMIN_LISTS = {
    "/admin/payments": ("after", "status", "disco", "meter_type", "email", "date_from", "date_to", "q"),
    "/admin/payments.csv": ("status", "disco", "meter_type", "email", "date_from", "date_to", "q"),
    "/admin/stuck": ("after",),
    "/admin/wallets": ("before", "email"),
    "/admin/wallets/{wallet_id}": ("before",),
    "/admin/actions": ("before",),
    "/admin/fundings": ("before", "status", "method", "flagged", "email", "q"),
    "/admin/gateway-events": ("before", "flagged"),
    "/admin/reconciliation": ("before", "day"),
    "/admin/funding-flags": ("before",),
}
#: Text that looks numeric to ``str.isdigit()`` (superscripts, circled and
#: other scripts' digits) or to ``int()`` (spaces, signs, underscores), and
#: numbers beyond 64 bits.
NUMERIC_LOOKALIKES = ["\u00b2", "\u2460", "12\u00b3", "\u0663\u0664", "\uff11\uff12", " 7 ", "+5", "-1",
                      "1_000", "0x10", "9" * 19, "9" * 40, "1e3", "", "\x00", "1.5", "3.1"]
query_values = st.one_of(st.sampled_from(NUMERIC_LOOKALIKES), st.text(max_size=30))


@pytest.mark.parametrize("value", ["%C2%B2", "%E2%91%A0", "%D9%A3", "99999999999999999999999"])
@pytest.mark.parametrize("path", ["/admin/wallets", "/admin/gateway-events", "/admin/fundings",
                                  "/admin/actions", "/admin/wallets/{wallet_id}"])
def test_a_unicode_digit_before_cursor_is_ignored_not_a_500(client, admin, path, value):
    wallet_id = db.session.scalar(sa.select(Wallet.id).where(Wallet.user_id == admin.id))
    response = client.get(path.format(wallet_id=wallet_id) + f"?before={value}")
    assert response.status_code == 200, response.status_code


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.dictionaries(st.sampled_from(sorted({n for ns in ADMIN_LISTS.values() for n in ns})),
                              query_values, max_size=4))
@example(values={"before": "\u00b2", "after": "\u2460"})
def test_no_query_parameter_on_any_admin_list_answers_500(client, admin, values):
    wallet_id = db.session.scalar(sa.select(Wallet.id).where(Wallet.user_id == admin.id))
    for path, names in ADMIN_LISTS.items():
        query = {name: value for name, value in values.items() if name in names}
        response = client.get(path.format(wallet_id=wallet_id), query_string=query)
        assert response.status_code < 500, (path, query, response.status_code)
        response.close()


def test_query_int_accepts_ascii_digits_only():
    from billvend.web.forms import parse_int

    assert parse_int("42") == 42 and parse_int("0") == 0
    for text in NUMERIC_LOOKALIKES[:12] + [None, "abc"]:
        assert parse_int(text) is None, text
    assert parse_int("123", maximum=100) is None and parse_int("100", maximum=100) == 100


def test_create_admin_refuses_the_email_only_when_the_password_contains_it(app):
    """"badminton" does not contain the address admin@…: only a password
    with the address, or its name part as a word of its own, is refused,
    and the message says which."""
    runner = app.test_cli_runner()
    accepted = runner.invoke(args=["create-admin", "admin@example.com"],
                             input="badminton lagoon 73\nbadminton lagoon 73\n")
    assert accepted.exit_code == 0, accepted.output
    assert "Do not use your email address" not in accepted.output
    assert db.session.scalar(sa.select(User).where(User.email == "admin@example.com")).is_admin
    refused = runner.invoke(args=["create-admin", "ops@example.com"],
                            input="ops2024 lagoon cobalt\n")
    assert refused.exit_code != 0
    assert "Do not use your email address or its name part (ops)" in refused.output
    assert db.session.scalar(sa.select(User).where(User.email == "ops@example.com")) is None


# --- resolve as delivered on a vending payment past its lease ----------------------------


def test_resolve_delivered_is_refused_when_a_requery_takes_the_vending_payment_meanwhile(app, interleave):
    """"Resolve as delivered" on a ``vending`` payment waits for its lease
    (today's change), but checks the lease in Python and then moves the
    payment with ``WHERE status = 'vending'`` alone. If the sweep takes the
    stale payment for a requery between that read and the UPDATE (a new
    ``claimed_at``: a provider call is in flight again), the admin's typed
    token still wins. The lease must be part of the conditional UPDATE."""
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, amount_kobo=100_000)
    payment_id = payment.id
    app.config["VENDING_LEASE_SECONDS"] = 60
    db.session.execute(sa.update(Payment).where(Payment.id == payment_id).values(
        status=VENDING, claimed_at=db_now() - timedelta(seconds=120),
        pay_in_flight_until=db_now() - timedelta(seconds=100)))
    db.session.commit()
    admin_user = make_user("root@example.com")
    admin_user.is_admin = True
    db.session.commit()
    taken = []
    hook = interleave(payment_read, 2, lambda: in_other_worker(
        app, lambda: taken.append(payments._claim_requery(payment_id, True, False))))
    outcome = services.resolve_delivered(admin_user, payment_id, "found it in the provider's console",
                                         token="1" * 20, receipt_reference=None, units_kwh=None)
    assert hook.fired and taken and taken[0] is not None, taken
    db.session.rollback()
    final = db.session.get(Payment, payment_id)
    assert final.status == VENDING, "resolved while a requery of the payment was in flight"
    assert not outcome.ok and outcome.message.startswith("refused:"), outcome
    assert final.token is None
    assert_books_balance()


# --- The outbox (issue 23): /admin/messages, its audited retry, the overview's oldest unsent age ---


def queue_messages():
    """One sent message (with the gateway's id), one failed (with its error), one
    pending secret one; returns them by status. Nothing sends (NOTIFY_CONCURRENCY=0)."""
    from billvend.notifications.models import Message
    from billvend.notifications.services import notify
    from billvend.platform.transactions import run

    def make():
        sent = notify("funding:1:credited", "email", "ada@example.com", "nothing", {})
        failed = notify("payment:1:token", "sms", "+2348031234567", "nothing", {})
        secret = notify("payment:2:token", "email", "ada@example.com", "nothing", {"token": "1234"},
                        secret=True)
        sent.status, sent.provider_message_id, sent.attempts = "sent", "<abc@billvend.ng>", 1
        failed.status, failed.last_error, failed.attempts = "failed", "Invalid Sender Id", 8
        secret.created_at = db_now() - timedelta(minutes=10)
        return sent.id, failed.id, secret.id

    ids = run(make)
    return {status: db.session.get(Message, i) for status, i in zip(("sent", "failed", "pending"), ids)}


def test_admin_messages_lists_each_state_and_hides_secret_content(client, admin):
    made = queue_messages()
    page = client.get("/admin/messages").get_data(as_text=True)
    assert "&lt;abc@billvend.ng&gt;" in page and "Invalid Sender Id" in page
    secret_row = page.split(f'data-testid="message-{made["pending"].id}"')[1].split("</tr>")[0]
    assert '<td data-testid="content">(hidden)</td>' in secret_row
    failed_only = client.get("/admin/messages?status=failed").get_data(as_text=True)
    assert f'data-testid="message-{made["failed"].id}"' in failed_only
    assert f'data-testid="message-{made["sent"].id}"' not in failed_only


def test_admin_retry_of_a_failed_message_queues_it_again_and_is_audited(client, admin):
    failed = queue_messages()["failed"]
    token = csrf_of(client, "/admin/messages")
    response = client.post(f"/admin/messages/{failed.id}/retry",
                           data={"retry-csrf_token": token, "retry-reason": "sender ID approved now"})
    assert response.status_code == 303
    db.session.expire_all()
    assert (failed.status, failed.attempts) == ("pending", 0)
    [action] = db.session.scalars(sa.select(AdminAction)).all()
    assert (action.admin_id, action.action, action.reason, action.result) == (
        admin.id, "retry_message", "sender ID approved now", f"message {failed.id}: done: queued again")


def test_admin_retry_refuses_a_sent_or_pending_message_or_no_reason_and_changes_nothing(client, admin):
    from billvend.notifications.models import Message

    made = queue_messages()
    token = csrf_of(client, "/admin/messages")
    response = client.post(f"/admin/messages/{made['sent'].id}/retry",
                           data={"retry-csrf_token": token, "retry-reason": "send it twice please"})
    assert response.status_code == 303
    response = client.post(f"/admin/messages/{made['pending'].id}/retry",
                           data={"retry-csrf_token": token, "retry-reason": "hurry it along"})
    assert response.status_code == 303
    response = client.post(f"/admin/messages/{made['failed'].id}/retry",
                           data={"retry-csrf_token": token, "retry-reason": ""})
    assert response.status_code == 303
    assert b"Give a reason" in client.get("/admin/messages").data
    assert client.post("/admin/messages/999/retry", data={"retry-csrf_token": token,
                                                          "retry-reason": "no such one"}).status_code == 404
    db.session.expire_all()
    ours = [made[status].id for status in ("sent", "failed", "pending")]
    assert [m.status for m in db.session.scalars(
        sa.select(Message).where(Message.id.in_(ours)).order_by(Message.id))] == ["sent", "failed", "pending"]
    assert [a.result for a in db.session.scalars(sa.select(AdminAction).order_by(AdminAction.id))] == [
        f"message {made['sent'].id}: refused: already sent",
        f"message {made['pending'].id}: refused: still pending"]


def test_overview_shows_the_oldest_unsent_message_age(client, admin):
    from billvend.notifications.models import Message
    from billvend.platform.transactions import run

    # The admin's own sign-in mail (a new device) is pending too: settle it first.
    run(lambda: db.session.execute(sa.update(Message).values(status="sent")))
    assert 'data-testid="oldest-unsent">none<' in client.get("/admin/").get_data(as_text=True)
    queue_messages()  # the pending one was queued 10 minutes ago
    page = client.get("/admin/").get_data(as_text=True)
    age = int(re.search(r'data-testid="oldest-unsent">(\d+) s<', page).group(1))
    assert 590 <= age <= 700
    assert "mail or SMS is not leaving" in page
