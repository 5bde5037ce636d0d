"""Small parts of money in: the deadline helper, the signature, invariant 6's
funding check, the sandbox's fees, the transaction rule on gateway calls."""

from __future__ import annotations

import json
import secrets
import threading
import time

import pytest
import sqlalchemy as sa

from billvend.funding import accounts, checkout, reconciliation, seed
from billvend.ledger import services as ledger
from billvend.ledger import invariants as ledger_invariants
from billvend.platform import transactions
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.platform.deadline import DeadlineExceeded, call_with_deadline
from billvend.ledger.models import FUNDING_WALLET, KIND_FUNDING, Transfer
from billvend.funding.models import FUNDING_SUCCEEDED, DedicatedAccount, Funding, GatewayEvent
from billvend.sandbox.paystack import dva_fee_kobo, local_card_fee_kobo
from billvend.funding import events, verification
from tests.helpers import assert_books_balance, make_user, wallet_balance


def test_deadline_returns_results_and_errors():
    assert call_with_deadline(lambda: 42, 1.0) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(lambda: 1 / 0, 1.0)


def test_deadline_is_wall_clock_whatever_the_call_does():
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        call_with_deadline(lambda: release.wait(30), 0.3, "slow call")
    assert time.monotonic() - started < 5  # not the call's 30 s
    release.set()


def test_gateway_call_through_a_trickling_server_gives_up_at_the_deadline(app):
    """A server that sends a byte now and then never trips a per-read
    timeout; the deadline still ends the call."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while not stop.is_set():
            try:
                conn.sendall(b" ")
            except OSError:
                break
            time.sleep(0.2)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    gw = gateways.PaystackGateway(f"http://127.0.0.1:{listener.getsockname()[1]}", "sk",
                                  connect_timeout_seconds=1, read_timeout_seconds=1, deadline_seconds=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(gateways.GatewayError, match="no answer within"):
            gw.verify("FND-x")
    finally:
        stop.set()
        listener.close()
    assert time.monotonic() - started < 5


def test_signature_is_over_the_raw_body_in_constant_time():
    body = b'{"event":"charge.success"}'
    good = gateways.sign("sk_test", body)
    assert len(good) == 128
    assert gateways.signature_valid("sk_test", body, good)
    assert gateways.signature_valid("sk_test", body, good.upper())  # hex is case-insensitive
    assert not gateways.signature_valid("sk_test", body + b" ", good)
    assert not gateways.signature_valid("sk_other", body, good)
    assert not gateways.signature_valid("sk_test", body, None)
    assert not gateways.signature_valid("sk_test", body, "")


def test_gateway_calls_are_refused_inside_a_unit_of_work(app):
    @transactions.unit_of_work
    def bad():
        gateways.SimulatedGateway().verify("FND-x")

    with pytest.raises(transactions.ExternalCallInTransaction):
        bad()


@pytest.mark.parametrize("amount_kobo,fee_kobo", [
    (1_000_00, 15_00), (2_499_00, 3748), (2_500_00, 137_50), (5_000_00, 175_00), (1_000_000_00, 2_000_00),
])
def test_sandbox_card_fee_is_paystacks_local_fee(amount_kobo, fee_kobo):
    assert local_card_fee_kobo(amount_kobo) == fee_kobo


def test_sandbox_dva_fee_is_capped():
    assert dva_fee_kobo(7_500_00) == 75_00 and dva_fee_kobo(100_000_00) == 300_00


def test_invariant_six_catches_a_credit_without_a_verified_success(app):
    user = make_user()
    start = checkout.begin_checkout(user, 100_000, secrets.token_urlsafe(16), "http://x/cb",
                                    gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    assert ledger_invariants.check_invariants() == []
    # Money moved by someone who skipped the gateway's verify:
    ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
                         credit_wallet_id=user.wallet.id, amount_kobo=100_000, funding_id=row.id)
    db.session.commit()
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_credits"]
    assert len(found) == 1 and found[0].subject == "transfer" and "pending" in found[0].detail


def test_a_second_credit_for_one_funding_is_refused_by_the_database(app):
    user = make_user()
    row, _ = seed.fund_wallet(user, 100_000, secrets.token_urlsafe(16))
    with pytest.raises(sa.exc.IntegrityError):
        ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=ledger.system_wallet_id(FUNDING_WALLET),
                             credit_wallet_id=user.wallet.id, amount_kobo=100_000, funding_id=row.id)
        db.session.commit()
    db.session.rollback()
    # And one funding per gateway reference:
    db.session.add(Funding(reference="FND-other", user_id=user.id, wallet_id=user.wallet.id,
                           amount_kobo=1, gateway=row.gateway, gateway_reference=row.gateway_reference,
                           status="pending", idempotency_key="other-key-123456"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()


def test_daily_reconciliation_takes_yesterday_in_lagos():
    from datetime import datetime, timezone

    from billvend.funding.tasks import yesterday_in_lagos

    # 23:30 UTC on 1 March is already 00:30 on 2 March in Lagos.
    assert str(yesterday_in_lagos(datetime(2026, 3, 1, 23, 30, tzinfo=timezone.utc))) == "2026-03-01"
    assert str(yesterday_in_lagos(datetime(2026, 3, 1, 22, 30, tzinfo=timezone.utc))) == "2026-02-28"


def test_lagos_day_bounds_are_utc_plus_one():
    from datetime import date, datetime, timezone

    start, end = reconciliation.lagos_day_bounds(date(2026, 3, 1))
    assert start == datetime(2026, 2, 28, 23, 0, tzinfo=timezone.utc)
    assert (end - start).total_seconds() == 86400


def test_config_names_the_gateway():
    from billvend.platform.config import from_env

    assert from_env({})["FUNDING_GATEWAY"] == "paystack"
    assert from_env({})["PAYSTACK_WEBHOOK_URL"] == "http://127.0.0.1:5000/webhooks/paystack"
    assert from_env({"PORT": "8000"})["PAYSTACK_WEBHOOK_URL"] == "http://127.0.0.1:8000/webhooks/paystack"
    with pytest.raises(ValueError, match="FUNDING_GATEWAY"):
        from_env({"FUNDING_GATEWAY": "flutterwave"})


def test_the_funding_sweep_runs_only_under_its_lease_and_gives_it_back(app, monkeypatch):
    from billvend.funding import tasks as funding_tasks
    from billvend.platform import leases

    runs = []
    monkeypatch.setattr(funding_tasks, "funding_sweep_once", lambda: runs.append(1) or 0)
    assert leases.acquire("funding-sweep", "another-worker", 60)
    funding_tasks.funding_sweep.call_local()
    assert runs == []  # another worker's sweep is running
    assert leases.release("funding-sweep", "another-worker")
    funding_tasks.funding_sweep.call_local()
    assert runs == [1]
    assert leases.acquire("funding-sweep", "another-worker", 60)  # given back after the run


def test_a_lease_is_given_back_when_the_work_raises(app):
    from billvend.platform import leases

    with pytest.raises(RuntimeError):
        with leases.held("funding-reconcile", 3600) as mine:
            assert mine
            raise RuntimeError("gateway down")
    with leases.held("funding-reconcile", 3600) as mine:
        assert mine
        with leases.held("funding-reconcile", 3600) as second:
            assert not second  # one holder at a time, even in one process


def test_the_nightly_reconciliation_looks_at_the_last_few_days(app, monkeypatch):
    """Paystack lists transactions by the day they began: a checkout begun
    late on day D and paid after D's reconciliation ran (its webhook lost,
    the funding already failed as abandoned) showed up in no later run. The
    nightly task reconciles the last FUNDING_RECONCILE_DAYS days."""
    from datetime import datetime, timezone

    from billvend.funding import tasks as funding_tasks

    days = []

    class Run:
        day, gateway_transactions, credited, flagged, error = None, 0, 0, 0, None

    monkeypatch.setattr(reconciliation, "reconcile", lambda day: days.append(str(day)) or Run())
    monkeypatch.setattr(funding_tasks, "_lagos_now",
                        lambda: datetime(2026, 3, 3, 0, 30, tzinfo=timezone.utc).astimezone(reconciliation.LAGOS))
    app.config["FUNDING_RECONCILE_DAYS"] = 2
    funding_tasks.daily_reconciliation.call_local()
    assert days == ["2026-03-01", "2026-03-02"]  # oldest first, yesterday last


class _StubGateway:
    """A gateway whose ``verify`` confirms each arrival as it was announced
    (no HTTP): the webhook and the server-side verify agree."""

    name = "paystack"

    def __init__(self):
        self.transactions: dict[str, gateways.GatewayTransaction] = {}

    def verify(self, reference):
        return self.transactions[reference]


def _dva_user(email: str, code: str, number: str):
    user = make_user(email)
    db.session.add(DedicatedAccount(user_id=user.id, gateway="paystack", customer_code=code,
                                    account_number=number, account_name="DVA", bank_name="Test Bank"))
    db.session.commit()
    return user


def _arrival(gw: _StubGateway, reference: str, amount_kobo: int, code: str) -> int:
    """Store a signed-and-verified ``charge.success`` for a bank transfer into
    the dedicated account ``code``; returns the event id."""
    data = {"reference": reference, "status": "success", "amount": amount_kobo, "currency": "NGN",
            "channel": "dedicated_nuban", "customer": {"customer_code": code},
            "authorization": {"channel": "dedicated_nuban"}}
    gw.transactions[reference] = gateways.transaction_from(data)
    return events.store_event("paystack", "charge.success", reference,
                              json.dumps({"event": "charge.success", "data": data}).encode()).event_id


def test_two_bank_transfers_with_long_references_sharing_a_prefix_are_both_credited(app):
    """Each arrival got the idempotency key ``nuban:`` + its reference cut to
    64 characters: two references (the gateway allows 64) that differ only
    after character 58 collided on UNIQUE (user, key), the second arrival's
    task raised IntegrityError on every retry and the customer's money never
    reached the wallet."""
    user = _dva_user("long@example.com", "CUS_long", "9900000002")
    wallet_id = user.wallet.id
    gw = _StubGateway()
    prefix = "NIP" + "7" * 57
    for reference in (prefix + "0001", prefix + "0002"):
        events.process_event(_arrival(gw, reference, 500_000, "CUS_long"), gw)
    assert wallet_balance(wallet_id) == 1_000_000
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(Transfer.kind == KIND_FUNDING)) == 2
    assert all(e.processed_at is not None and not e.needs_attention
               for e in db.session.scalars(sa.select(GatewayEvent)))
    # A redelivery of either is still one credit.
    events.process_event(_arrival(gw, prefix + "0002", 500_000, "CUS_long"), gw)
    assert wallet_balance(wallet_id) == 1_000_000
    assert_books_balance()


def test_bank_transfers_too_large_for_a_balance_are_flagged_not_credited(app):
    """A verified arrival of 2**62 kobo fitted a BIGINT, so it was credited;
    a second one overflowed the wallet: on SQLite the balance silently became
    a float (9.2e18, REAL) and the invariant check itself crashed; on
    PostgreSQL the credit raised out of the task on every retry."""
    user = _dva_user("huge@example.com", "CUS_huge", "9900000003")
    wallet_id = user.wallet.id
    gw = _StubGateway()
    for n in range(2):
        event_id = _arrival(gw, f"DVA_HUGE_{n}", 2 ** 62, "CUS_huge")
        events.process_event(event_id, gw)  # no exception
        db.session.rollback()
        event = db.session.get(GatewayEvent, event_id)
        assert event.processed_at is not None and event.needs_attention
        assert "usable amount" in event.outcome
    assert wallet_balance(wallet_id) == 0
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    assert_books_balance()


def test_a_funding_credited_to_another_customers_wallet_is_reported(app):
    """The invariant check looked at a funding credit's amount and status,
    never at where it went: a credit of Ada's card funding into Bob's wallet
    (or out of a wallet other than ``funding``) passed ``flask ledger check``
    and the audit page."""
    ada, bob = make_user("ada@example.com"), make_user("bob@example.com")
    start = checkout.begin_checkout(ada, 100_000, "review-money-key-01", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    bob_wallet, funding_wallet = bob.wallet.id, ledger.system_wallet_id(FUNDING_WALLET)
    db.session.rollback()

    def credit_the_wrong_wallet():
        ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=funding_wallet,
                             credit_wallet_id=bob_wallet, amount_kobo=100_000, funding_id=funding_id)
        db.session.get(Funding, funding_id).status = FUNDING_SUCCEEDED

    transactions.run(credit_the_wrong_wallet)
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_credits"]
    assert len(found) == 1 and found[0].subject == "transfer", found
    assert f"wallet {bob_wallet}" in found[0].detail


def test_a_funding_credit_out_of_a_user_wallet_is_reported(app):
    ada, bob = make_user("ada@example.com"), make_user("bob@example.com", balance_kobo=200_000)
    start = checkout.begin_checkout(ada, 100_000, "review-money-key-02", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    ada_wallet, bob_wallet = ada.wallet.id, bob.wallet.id
    db.session.rollback()

    def credit_from_bob():
        ledger.post_transfer(kind=KIND_FUNDING, debit_wallet_id=bob_wallet,
                             credit_wallet_id=ada_wallet, amount_kobo=100_000, funding_id=funding_id)
        db.session.get(Funding, funding_id).status = FUNDING_SUCCEEDED

    transactions.run(credit_from_bob)
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "funding_credits"]
    assert len(found) == 1 and f"from wallet {bob_wallet}" in found[0].detail, found


def test_honest_fundings_raise_no_funding_credit_violation(app):
    make_user("ada@example.com", balance_kobo=300_000)
    make_user("bob@example.com", balance_kobo=100_000)
    assert_books_balance()


def test_a_gateway_answer_with_a_nul_character_still_credits(app):
    """PostgreSQL refuses NUL in text: a verify answer whose
    ``gateway_response`` carried one made every verify of the funding raise
    (a 500 on the callback, an error in every sweep), so a paid funding was
    never credited. (SQLite stores NUL, so this failed on PostgreSQL only.)"""
    user = make_user("nul@example.com")
    wallet_id = user.wallet.id
    start = checkout.begin_checkout(user, 100_000, "review-money-key-03", "http://x/cb",
                                    gateways.SimulatedGateway())
    funding_id = db.session.scalar(sa.select(Funding.id).where(Funding.reference == start.reference))
    db.session.rollback()
    gw = _StubGateway()
    gw.name = "simulated"
    gw.transactions[start.reference] = gateways.transaction_from({
        "reference": start.reference, "status": "success", "amount": 100_000, "currency": "NGN",
        "channel": "ca\u0000rd", "gateway_response": "Appro\u0000ved"})
    assert verification.verify_funding(funding_id, gw).outcome == "credited"
    assert wallet_balance(wallet_id) == 100_000
    row = db.session.get(Funding, funding_id)
    assert row.gateway_message == "Approved" and row.channel == "card"
    assert_books_balance()


def _dedicated_account_gateway(monkeypatch, customer: dict, account: dict) -> gateways.PaystackGateway:
    """The Paystack client whose ``POST /customer`` and ``POST /dedicated_account``
    answer ``customer`` and ``account`` (the ``data`` objects)."""
    gw = gateways.PaystackGateway("http://127.0.0.1:9", "sk_test_units")
    answers = {"/customer": {"status": True, "data": customer},
               "/dedicated_account": {"status": True, "data": account}}
    monkeypatch.setattr(gw, "_call", lambda method, path, **kwargs: answers[path])
    return gw


def test_a_dedicated_account_answer_with_a_nul_character_is_stored_cleaned(app, monkeypatch):
    """The gateway's dedicated-account answer was stored as sent: a NUL in
    it made opening the account fail on PostgreSQL (a 500 on "Pay by bank
    transfer"), every time. The client cleans it (clean_text, clipped to
    the columns) like its other answers."""
    gw = _dedicated_account_gateway(
        monkeypatch, {"customer_code": "CUS_\x00nul"},
        {"account_number": "01234\x0056789", "account_name": "BILLVEND/A\x00DA\u202e" + "N" * 300,
         "bank": {"name": "Test\x00 Bank\n", "slug": "test\x00-bank"}})
    user = make_user("dva-nul@example.com")
    user_id = user.id
    accounts.ensure_dedicated_account(user, gw)
    db.session.expire_all()
    row = db.session.scalar(sa.select(DedicatedAccount).where(DedicatedAccount.user_id == user_id))
    assert (row.customer_code, row.account_number) == ("CUS_nul", "0123456789")
    assert row.account_name == ("BILLVEND/ADA" + "N" * 300)[:200]
    assert (row.bank_name, row.bank_slug) == ("Test Bank", "test-bank")


def test_a_dedicated_account_answer_with_nothing_left_after_cleaning_is_refused(app, monkeypatch):
    gw = _dedicated_account_gateway(monkeypatch, {"customer_code": "CUS_ok"},
                                    {"account_number": "\x00\x00", "account_name": "BILLVEND/ADA"})
    user = make_user("dva-empty@example.com")
    with pytest.raises(gateways.GatewayError):
        accounts.ensure_dedicated_account(user, gw)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(DedicatedAccount.id))) == 0


def test_gateway_amounts_in_unicode_digits_are_unusable_not_a_crash():
    for raw in ("\u00b2", "\u0661\u0662", "5\u00b2", "9" * 5000, str(2 ** 63), 2 ** 63, -2 ** 64):
        tx = gateways.transaction_from({"reference": "R", "status": "success", "amount": raw,
                                        "fees": raw})
        assert tx.amount_kobo is None and tx.fees_kobo is None
    assert gateways.transaction_from({"reference": "R", "status": "success", "amount": "500"}).amount_kobo == 500
