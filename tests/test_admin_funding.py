"""Admin pages for money in: fundings, webhook events, reconciliation, flags,
and their audited actions; ``flask funding reconcile``. The in-process
simulated gateway stands in (no HTTP needed here; tests/test_funding.py
drives the Paystack sandbox)."""

from __future__ import annotations

import json
import secrets
import threading

import pytest
import sqlalchemy as sa

from billvend.funding import checkout, seed, verification
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.accounts.models import AdminAction, User
from billvend.funding.models import DedicatedAccount, Funding, GatewayEvent, ReconciliationRun
from billvend.ledger.models import Transfer
from billvend.funding import admin_credit, invariants
from tests.conftest import CSRF_RE, selected_backend
from tests.helpers import assert_books_balance, in_other_worker, make_user

PASSWORD = "correct horse 1"


@pytest.fixture
def admin(client, auth):
    user = make_user("root@example.com")
    user.is_admin = True
    db.session.commit()
    assert auth.login("root@example.com", PASSWORD).status_code == 303
    auth.second_factor(user)
    return user


def csrf(client, path):
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    return match.group(1) or match.group(2)


def open_funding(amount_kobo=250_000) -> Funding:
    """A checkout started but not yet verified (the customer is on the
    gateway's page)."""
    user = make_user()
    start = checkout.begin_checkout(user, amount_kobo, secrets.token_urlsafe(16), "http://x/cb",
                                    gateways.SimulatedGateway())
    return db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))


@pytest.mark.parametrize("path", ["/admin/fundings", "/admin/gateway-events", "/admin/reconciliation",
                                  "/admin/funding-flags"])
def test_admin_only(client, auth, path):
    assert client.get(path).status_code in (302, 303)  # signed out: log in first
    auth.signup()
    assert client.get(path).status_code == 404


def test_list_filters_and_detail(client, admin):
    credited, _ = seed.fund_wallet(make_user(), 500_000, "k" * 20)
    pending = open_funding()
    page = client.get("/admin/fundings").get_data(as_text=True)
    assert credited.reference in page and pending.reference in page
    page = client.get("/admin/fundings?status=pending").get_data(as_text=True)
    assert pending.reference in page and credited.reference not in page
    page = client.get(f"/admin/fundings?q={credited.reference}").get_data(as_text=True)
    assert credited.reference in page and pending.reference not in page
    assert client.get("/admin/fundings?status=bogus").status_code == 200  # ignored, not a 500
    detail = client.get(f"/admin/fundings/{credited.reference}").get_data(as_text=True)
    assert "Transfer" in detail and "₦5,000.00" in detail
    assert client.get("/admin/fundings/FND-nope").status_code == 404


def test_verify_now_is_audited_and_credits_once(client, admin, app):
    app.config["FUNDING_GATEWAY"] = "simulated"
    row = open_funding()
    path = f"/admin/fundings/{row.reference}"
    data = {"verify-reason": "customer called", "verify-csrf_token": csrf(client, path)}
    assert client.post(path + "/verify", data=data).status_code == 303
    assert client.post(path + "/verify", data=data).status_code == 303
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.funding_id == row.id)) == 1
    actions = db.session.scalars(sa.select(AdminAction).where(AdminAction.funding_id == row.id)
                                 .order_by(AdminAction.id)).all()
    assert [a.result for a in actions] == ["done: credited ₦2,500.00", "done: already credited, nothing more"]
    assert actions[0].reason == "customer called"
    empty = client.post(path + "/verify", data={"verify-reason": "", "verify-csrf_token": data["verify-csrf_token"]})
    assert empty.status_code == 422
    assert_books_balance()


def test_flagged_funding_is_not_credited_by_verify_and_the_flag_is_cleared_with_a_reason(client, admin):
    row = open_funding()
    verification.apply_verification(row.id, gateways.GatewayTransaction(
        row.gateway_reference, "success", amount_kobo=1, currency="NGN"))
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.needs_attention
    path = f"/admin/fundings/{row.reference}"
    assert client.get("/admin/funding-flags").get_data(as_text=True).count(row.reference) >= 1
    token = csrf(client, path)
    r = client.post(path + "/verify", data={"verify-reason": "try again please", "verify-csrf_token": token})
    assert r.status_code == 303, r.get_data(as_text=True)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.funding_id == row.id)) == 0
    client.post(path + "/dismiss", data={"dismiss-reason": "gateway refunded the customer",
                                         "dismiss-csrf_token": token})
    client.post(path + "/dismiss", data={"dismiss-reason": "again, by mistake", "dismiss-csrf_token": token})
    db.session.rollback()
    assert not db.session.get(Funding, row.id).needs_attention
    results = db.session.scalars(sa.select(AdminAction.result).where(AdminAction.funding_id == row.id)
                                 .order_by(AdminAction.id)).all()
    assert results[0].startswith("refused: flagged")
    assert results[1].startswith("done: flag cleared (Not credited: gateway amount 1 kobo")
    assert results[2] == "refused: the funding is not flagged"


def test_webhook_events_pages_show_an_unknown_reference(client, admin, app):
    body = json.dumps({"event": "charge.success", "data": {"reference": "T_ghost", "status": "success",
                                                           "amount": 100, "currency": "NGN"}}).encode()
    response = client.post("/webhooks/paystack", data=body, content_type="application/json",
                           headers={"x-paystack-signature": gateways.sign(app.config["PAYSTACK_SECRET_KEY"], body)})
    assert response.status_code == 200
    event = db.session.scalar(sa.select(GatewayEvent))
    assert "T_ghost" in client.get("/admin/gateway-events?flagged=yes").get_data(as_text=True)
    assert "T_ghost" in client.get(f"/admin/gateway-events/{event.id}").get_data(as_text=True)
    assert "T_ghost" in client.get("/admin/funding-flags").get_data(as_text=True)


def test_reconcile_from_the_admin_page_is_audited(client, admin):
    token = csrf(client, "/admin/reconciliation")
    response = client.post("/admin/reconciliation", data={"day": "2026-03-01", "reason": "month end",
                                                          "csrf_token": token})
    assert response.status_code == 303
    action = db.session.scalar(sa.select(AdminAction))
    assert action.action == "reconcile 2026-03-01" and action.result.startswith("done: 0 gateway")
    assert "2026-03-01" in client.get("/admin/reconciliation").get_data(as_text=True)
    bad = client.post("/admin/reconciliation", data={"day": "yesterday", "reason": "x", "csrf_token": token})
    assert bad.status_code == 422


def test_reconcile_cli(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["funding", "reconcile", "--date", "2026-03-01"])
    assert result.exit_code == 0, result.output
    assert "reconciled 2026-03-01" in result.output
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationRun.id))) == 1
    bad = runner.invoke(args=["funding", "reconcile", "--date", "01/03/2026"])
    assert bad.exit_code == 2 and "YYYY-MM-DD" in bad.output


class _Verifies:
    """A gateway whose verify answers with a fixed transaction."""

    name = "simulated"

    def __init__(self, tx):
        self.tx = tx

    def verify(self, reference):
        return self.tx


def flagged_arrival(amount_kobo=250_000, gateway_amount_kobo=300_000) -> Funding:
    """A bank-transfer arrival into the dedicated account ``CUS_ada`` (its
    user's), recorded at the webhook's amount, flagged because the gateway's
    verify says another amount."""
    row = open_funding(amount_kobo)
    db.session.add(DedicatedAccount(user_id=row.user_id, gateway="simulated", customer_code="CUS_ada",
                                    account_number="0000000001", account_name="Test account",
                                    bank_name="Test Bank"))
    db.session.execute(sa.update(Funding).where(Funding.id == row.id).values(
        method="bank_transfer", customer_code="CUS_ada"))
    db.session.commit()
    verification.apply_verification(row.id, gateways.GatewayTransaction(
        row.gateway_reference, "success", amount_kobo=gateway_amount_kobo, currency="NGN"))
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.needs_attention and row.status != "succeeded"
    return row


def test_a_flagged_bank_transfer_is_credited_with_the_amount_the_gateway_verifies(client, admin, monkeypatch):
    """The money arrived (the gateway verifies a success) but the webhook's
    amount differed, so the arrival was flagged: "verify now" refuses flagged
    fundings and clearing the flag only flags it again. The admin credits the
    amount the gateway verifies, once, audited."""
    row = flagged_arrival()
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    page = client.get(path).get_data(as_text=True)
    assert "Credit the verified amount" in page
    data = {"credit-reason": "bank confirmed N3,000 arrived", "credit-csrf_token": csrf(client, path)}
    assert client.post(path + "/credit-verified", data=data).status_code == 303
    assert client.post(path + "/credit-verified", data=data).status_code == 303  # a double click
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert (row.status, row.amount_kobo, row.needs_attention) == ("succeeded", 300_000, False)
    credits = db.session.scalars(sa.select(Transfer.amount_kobo).where(Transfer.funding_id == row.id)).all()
    assert credits == [300_000]
    assert db.session.get(User, row.user_id).wallet.balance_kobo == 300_000
    results = db.session.scalars(sa.select(AdminAction.result).where(
        AdminAction.funding_id == row.id, AdminAction.action == "credit_verified").order_by(AdminAction.id)).all()
    assert results[0].startswith("done: credited ₦3,000.00") and "₦2,500.00" in results[0]
    assert results[1].startswith("refused: already credited")
    assert_books_balance()


@pytest.mark.parametrize("tx_kwargs, why", [
    ({"status": "failed", "amount_kobo": 300_000}, "the gateway says failed"),
    ({"status": "success", "amount_kobo": 300_000, "currency": "USD"}, "currency"),
    ({"status": "success", "amount_kobo": 0}, "amount"),
    ({"status": "success", "amount_kobo": 300_000, "reference": "someone-else"}, "reference"),
])
def test_credit_verified_refuses_anything_but_a_verified_success(client, admin, monkeypatch, tx_kwargs, why):
    row = flagged_arrival()
    fields = {"reference": row.gateway_reference, "currency": "NGN", **tx_kwargs}
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(gateways.GatewayTransaction(**fields)))
    path = f"/admin/fundings/{row.reference}"
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "try it", "credit-csrf_token": csrf(client, path)})
    assert response.status_code == 303, response.get_data(as_text=True)[:3000]
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.funding_id == row.id)) == 0
    [result] = db.session.scalars(sa.select(AdminAction.result).where(AdminAction.funding_id == row.id)).all()
    assert result.startswith("refused:") and why in result
    assert db.session.get(Funding, row.id).needs_attention


def test_credit_verified_is_only_for_flagged_bank_transfers(client, admin, monkeypatch):
    card = open_funding()
    verification.apply_verification(card.id, gateways.GatewayTransaction(
        card.gateway_reference, "success", amount_kobo=1, currency="NGN"))  # a tampered card amount
    paid = gateways.GatewayTransaction(card.gateway_reference, "success", amount_kobo=1, currency="NGN")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{card.reference}"
    assert "Credit the verified amount" not in client.get(path).get_data(as_text=True)
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "try it", "credit-csrf_token": csrf(client, path)})
    assert response.status_code == 303
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.funding_id == card.id)) == 0
    [result] = db.session.scalars(sa.select(AdminAction.result).where(AdminAction.funding_id == card.id)).all()
    assert result.startswith("refused:") and "bank transfer" in result


def _open_account(user_id: int, customer_code: str, account_number: str) -> None:
    db.session.add(DedicatedAccount(user_id=user_id, gateway="simulated", customer_code=customer_code,
                                    account_number=account_number, account_name="Test account",
                                    bank_name="Test Bank"))
    db.session.commit()


def _credit_verified_results(funding_id: int) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(AdminAction.result).where(
        AdminAction.funding_id == funding_id, AdminAction.action == "credit_verified")
        .order_by(AdminAction.id)))


def _credits(funding_id: int) -> list[int]:
    db.session.rollback()
    return list(db.session.scalars(sa.select(Transfer.amount_kobo).where(Transfer.funding_id == funding_id)))


# --- credit_verified_arrival: whose money is it? ---------------------------------------


def test_credit_verified_refuses_a_verified_transfer_into_another_customers_account(
        client, admin, monkeypatch):
    """The arrival was recorded for Ada (the webhook named her customer
    code) at an amount the gateway's verify contradicts. The admin action
    trusts verify for the amount; verify also says whose dedicated account
    the money went into: Bob's. Crediting Ada's wallet with it is crediting
    the wrong wallet (the webhook was already wrong once about this
    arrival). It must be refused, nothing moves, the flag stays."""
    row = flagged_arrival()  # into Ada's account, CUS_ada
    bob = make_user("bob@example.com")
    _open_account(bob.id, "CUS_bob", "0000000002")
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_code="CUS_bob",
                                       customer_email="bob@example.com")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(path)
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "customer" in result, result
    assert db.session.get(Funding, row.id).needs_attention
    assert db.session.get(User, row.user_id).wallet.balance_kobo == 0
    assert invariants.check_invariants() == []
    assert_books_balance()


def test_credit_verified_refuses_a_verified_transfer_naming_another_customers_email(client, admin, monkeypatch):
    """Without a customer code, the gateway's customer email is the other
    way to say whose money it is (as ``_account_for`` reads a webhook)."""
    row = flagged_arrival()
    make_user("bob@example.com")
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_email="Bob@Example.com")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "customer" in result, result


def test_credit_verified_refuses_a_verified_card_payment(client, admin, monkeypatch):
    """The action exists because a bank transfer has no amount we asked
    for. If verify says this reference was paid by card, it is not that
    bank transfer (a card amount that differs is the tampering Paystack
    warns about): refused, whatever the funding row says."""
    row = flagged_arrival()
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="card")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == []
    [result] = _credit_verified_results(row.id)
    assert result.startswith("refused:") and "card" in result, result


def test_credit_verified_credits_when_the_gateway_names_the_fundings_own_customer(client, admin, monkeypatch):
    """The control: verify naming the funding's own customer (code and
    email) is credited once, at the verified amount."""
    row = flagged_arrival()  # into Ada's account, CUS_ada
    email = db.session.get(User, row.user_id).email
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN",
                                       channel="dedicated_nuban", customer_code="CUS_ada",
                                       customer_email=email.upper())
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))
    path = f"/admin/fundings/{row.reference}"
    assert client.post(path + "/credit-verified", data={
        "credit-reason": "bank says it arrived", "credit-csrf_token": csrf(client, path)}).status_code == 303
    assert _credits(row.id) == [300_000]
    [result] = _credit_verified_results(row.id)
    assert result.startswith("done:"), result
    assert db.session.get(User, row.user_id).wallet.balance_kobo == 300_000
    assert invariants.check_invariants() == []
    assert_books_balance()


# --- credit_verified_arrival racing itself and every other path that credits ----------


@pytest.mark.postgresql
def test_credit_verified_racing_itself_the_webhook_and_reconciliation_credits_once(app):
    """Four admins clicking at once, while the webhook task and "verify now"
    ask about the same funding: one credit, at the verified amount; the
    others are refused (or find it credited); both invariant checks clean."""
    row = flagged_arrival()
    admin_user = make_user("root@example.com")
    funding_id, admin_id = row.id, admin_user.id
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN")
    barrier = threading.Barrier(8)
    results, errors = [], []

    def click():
        with app.app_context():
            try:
                barrier.wait(10)
                results.append(admin_credit.credit_verified_arrival(funding_id, admin_id, "race", _Verifies(paid)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                db.session.remove()

    def verify():
        with app.app_context():
            try:
                barrier.wait(10)
                results.append(verification.verify_funding(funding_id, _Verifies(paid)).outcome)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=click) for _ in range(4)] + [threading.Thread(target=verify)
                                                                    for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert _credits(funding_id) == [300_000]
    assert sum(1 for r in results if r.startswith("done:")) == 1, results
    final = db.session.get(Funding, funding_id)
    assert (final.status, final.amount_kobo) == ("succeeded", 300_000)
    assert invariants.check_invariants() == []
    assert_books_balance()


@pytest.mark.skipif(selected_backend() == "postgresql",
                    reason="on PostgreSQL the funding's row lock makes this interleaving impossible")
def test_credit_verified_losing_the_race_after_its_check_is_a_refusal_not_a_500(client, admin, app,
                                                                               monkeypatch, interleave):
    """SQLite ignores ``FOR UPDATE``: two clicks served by two threads (or
    processes) can both find no credit, then both post one. UNIQUE
    (funding_id) stops the second credit, but the IntegrityError escaped:
    the second admin got the 500 page and no ``AdminAction`` recorded the
    attempt. It must be the ordinary "refused: already credited"."""
    row = flagged_arrival()
    funding_id, admin_id = row.id, admin.id
    paid = gateways.GatewayTransaction(row.gateway_reference, "success", amount_kobo=300_000, currency="NGN")
    monkeypatch.setattr(gateways, "gateway", lambda: _Verifies(paid))

    def credit_check(statement: str) -> bool:
        text = " ".join(statement.split())
        return text.startswith("SELECT transfers.id FROM transfers WHERE transfers.funding_id =")

    path = f"/admin/fundings/{row.reference}"
    token = csrf(client, path)
    hook = interleave(credit_check, 1, lambda: in_other_worker(app, lambda: admin_credit.credit_verified_arrival(
        funding_id, admin_id, "the other click", _Verifies(paid))))
    response = client.post(path + "/credit-verified",
                           data={"credit-reason": "bank confirmed", "credit-csrf_token": token})
    assert hook.fired
    assert response.status_code == 303, response.status_code
    assert _credits(funding_id) == [300_000]
    results = _credit_verified_results(funding_id)
    assert len(results) == 2 and results[0].startswith("done:"), results
    assert results[1].startswith("refused: already credited"), results
    assert invariants.check_invariants() == []
    assert_books_balance()
