"""The sandbox's bank (issue 28): Paystack's Transfers API over a real
socket, every outcome by account number, its signed ``transfer.*`` webhooks
to a real receiver, the business balance, bad input, and a restart."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from flask import Flask, request

from billvend.funding.gateways import signature_valid
from billvend.sandbox import create_app, paystack_bank, serve_in_thread

SECRET = "sk_test_sandbox_bank_suite"
KEY = {"Authorization": f"Bearer {SECRET}"}
BALANCE_KOBO = 10_000_000  # ₦100,000
SETTLE_SECONDS, REVERSE_SECONDS = 0.3, 0.6


class Receiver:
    """billvend's webhook endpoint, as far as the sandbox can tell: it
    keeps each event whose signature is right, and counts the others."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.forged = 0
        self.lock = threading.Lock()
        app = Flask("receiver")

        @app.post("/webhooks/paystack")
        def receive():
            raw = request.get_data()
            with self.lock:
                if signature_valid(SECRET, raw, request.headers.get("x-paystack-signature")):
                    self.events.append(json.loads(raw))
                else:
                    self.forged += 1
            return "", 200

        self.server, self.url = serve_in_thread(app)

    def of(self, reference: str) -> list[str]:
        with self.lock:
            return [e["event"] for e in self.events if e["data"]["reference"] == reference]


@pytest.fixture(scope="module")
def receiver_server():
    catcher = Receiver()
    yield catcher
    catcher.server.shutdown()


@pytest.fixture
def receiver(receiver_server):
    with receiver_server.lock:
        receiver_server.events.clear()
        receiver_server.forged = 0
    return receiver_server


def start_bank(receiver: Receiver, state_path: str = "none", **config):
    app = create_app({
        "PAYSTACK_SECRET_KEY": SECRET, "SANDBOX_STATE_PATH": state_path,
        "PAYSTACK_WEBHOOK_URL": f"{receiver.url}/webhooks/paystack",
        "PAYSTACK_SANDBOX_BALANCE_KOBO": BALANCE_KOBO,
        "PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS": SETTLE_SECONDS,
        "PAYSTACK_SANDBOX_TRANSFER_REVERSE_SECONDS": REVERSE_SECONDS,
        "PAYSTACK_READ_TIMEOUT_SECONDS": 0.5, **config})
    return serve_in_thread(app)


@pytest.fixture(scope="module")
def bank_server(receiver_server):
    server, url = start_bank(receiver_server)
    yield url
    server.shutdown()


@pytest.fixture
def bank(bank_server, receiver):
    """The module's bank, emptied: no recipients, no transfers, the balance full."""
    assert requests.post(f"{bank_server}/sandbox/paystack/reset", timeout=5).status_code == 200
    return bank_server


def recipient(url: str, account_number: str, bank_code: str = "058") -> str:
    answer = requests.post(f"{url}/transferrecipient", headers=KEY, timeout=5, json={
        "type": "nuban", "name": "Ada", "account_number": account_number, "bank_code": bank_code,
        "currency": "NGN"})
    assert answer.status_code in (200, 201), answer.text
    return answer.json()["data"]["recipient_code"]


def initiate(url: str, code: str, reference: str, amount_kobo: int = 500_000, **kwargs):
    return requests.post(f"{url}/transfer", headers=KEY, timeout=kwargs.pop("timeout", 5), json={
        "source": "balance", "amount": amount_kobo, "recipient": code, "reference": reference,
        "reason": "Withdrawal", **kwargs})


def verify(url: str, reference: str) -> dict:
    return requests.get(f"{url}/transfer/verify/{reference}", headers=KEY, timeout=5).json()


def balance(url: str) -> int:
    return requests.get(f"{url}/balance", headers=KEY, timeout=5).json()["data"][0]["balance"]


def wait_for(check, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_the_bank_list_is_paginated_and_every_call_needs_the_key(bank):
    assert requests.get(f"{bank}/bank", timeout=5).status_code == 401
    first = requests.get(f"{bank}/bank", params={"perPage": 5, "country": "nigeria"}, headers=KEY,
                         timeout=5).json()
    assert len(first["data"]) == 5 and first["meta"]["total"] == len(paystack_bank.BANKS)
    every = requests.get(f"{bank}/bank", params={"perPage": 100}, headers=KEY, timeout=5).json()["data"]
    assert {"Guaranty Trust Bank", "Kuda Bank", "OPay Digital Services Limited (OPay)"} <= {
        b["name"] for b in every}
    assert all(set(b) >= {"name", "slug", "code", "longcode", "active", "currency", "type"} for b in every)


@pytest.mark.parametrize(("number", "bank_code", "words"), [
    ("0000000000", "058", "Could not resolve account name"),
    ("012345678", "058", "10 digits"),
    ("01234567890", "058", "10 digits"),
    ("0123456789", "999", "Unknown bank code"),
])
def test_an_account_that_cannot_be_resolved_is_refused(bank, number, bank_code, words):
    answer = requests.get(f"{bank}/bank/resolve", params={"account_number": number, "bank_code": bank_code},
                          headers=KEY, timeout=5)
    assert answer.status_code == 422 and words in answer.json()["message"]
    made = requests.post(f"{bank}/transferrecipient", headers=KEY, timeout=5, json={
        "type": "nuban", "account_number": number, "bank_code": bank_code, "currency": "NGN"})
    assert made.status_code == 422 and made.json()["status"] is False


def test_resolve_names_the_holder_and_a_recipient_is_made_once_per_account(bank):
    resolved = requests.get(f"{bank}/bank/resolve", params={"account_number": "0123456789", "bank_code": "058"},
                            headers=KEY, timeout=5).json()["data"]
    assert resolved["account_name"] == paystack_bank.account_name("0123456789")
    code = recipient(bank, "0123456789")
    assert code.startswith("RCP_") and recipient(bank, "0123456789") == code
    assert recipient(bank, "0123456789", bank_code="044") != code  # same number, another bank


def test_a_transfer_to_the_success_account_is_pending_then_success_with_one_signed_webhook(bank, receiver):
    code = recipient(bank, paystack_bank.SUCCESS_ACCOUNT)
    answer = initiate(bank, code, "wdr_success_1", 500_000)
    assert answer.status_code == 200 and answer.json()["data"]["status"] == "pending"
    fee = paystack_bank.transfer_fee_kobo(500_000)
    assert fee == 1_000 and balance(bank) == BALANCE_KOBO - 500_000 - fee
    wait_for(lambda: receiver.of("wdr_success_1") == ["transfer.success"])
    data = verify(bank, "wdr_success_1")["data"]
    assert (data["status"], data["amount"], data["fee_charged"]) == ("success", 500_000, fee)
    assert data["recipient"]["details"]["account_number"] == paystack_bank.SUCCESS_ACCOUNT
    time.sleep(SETTLE_SECONDS + REVERSE_SECONDS)
    assert receiver.of("wdr_success_1") == ["transfer.success"] and receiver.forged == 0


def test_a_failed_transfer_gives_the_business_its_money_back(bank, receiver):
    code = recipient(bank, paystack_bank.FAILED_ACCOUNT)
    assert initiate(bank, code, "wdr_failed_1", 6_000_000).json()["data"]["status"] == "pending"
    assert balance(bank) == BALANCE_KOBO - 6_000_000 - 5_000
    wait_for(lambda: receiver.of("wdr_failed_1") == ["transfer.failed"])
    assert verify(bank, "wdr_failed_1")["data"]["status"] == "failed"
    assert balance(bank) == BALANCE_KOBO


def test_a_transfer_to_the_reversal_account_succeeds_then_is_reversed(bank, receiver):
    code = recipient(bank, paystack_bank.REVERSED_ACCOUNT)
    initiate(bank, code, "wdr_reversed_1", 1_000_000)
    wait_for(lambda: receiver.of("wdr_reversed_1") == ["transfer.success"])
    assert balance(bank) == BALANCE_KOBO - 1_000_000 - 2_500
    wait_for(lambda: receiver.of("wdr_reversed_1") == ["transfer.success", "transfer.reversed"])
    assert verify(bank, "wdr_reversed_1")["data"]["status"] == "reversed"
    assert balance(bank) == BALANCE_KOBO


def test_an_initiate_that_never_answers_went_through_and_a_retry_sends_nothing_more(bank, receiver):
    code = recipient(bank, paystack_bank.NO_ANSWER_ACCOUNT)
    with pytest.raises(requests.Timeout):
        initiate(bank, code, "wdr_silent_1", 500_000, timeout=1.0)
    assert verify(bank, "wdr_silent_1")["data"]["status"] in ("pending", "success")
    again = initiate(bank, code, "wdr_silent_1", 500_000)
    assert again.status_code == 200 and again.json()["data"]["reference"] == "wdr_silent_1"
    wait_for(lambda: receiver.of("wdr_silent_1") == ["transfer.success"])
    shown = requests.get(f"{bank}/sandbox/paystack/transfers/wdr_silent_1", timeout=5).json()
    assert shown["initiations"] == 2 and shown["balance_kobo"] == BALANCE_KOBO - 500_000 - 1_000


def test_an_otp_transfer_waits_for_the_otp_then_succeeds(bank, receiver):
    code = recipient(bank, paystack_bank.OTP_ACCOUNT)
    data = initiate(bank, code, "wdr_otp_1").json()["data"]
    assert data["status"] == "otp"
    time.sleep(SETTLE_SECONDS * 2)
    assert verify(bank, "wdr_otp_1")["data"]["status"] == "otp" and receiver.of("wdr_otp_1") == []
    finalize = f"{bank}/transfer/finalize_transfer"
    wrong = requests.post(finalize, headers=KEY, timeout=5, json={"transfer_code": data["transfer_code"],
                                                                  "otp": "000000"})
    assert wrong.status_code == 400 and verify(bank, "wdr_otp_1")["data"]["status"] == "otp"
    right = requests.post(finalize, headers=KEY, timeout=5, json={"transfer_code": data["transfer_code"],
                                                                  "otp": paystack_bank.SANDBOX_OTP})
    assert right.status_code == 200
    wait_for(lambda: receiver.of("wdr_otp_1") == ["transfer.success"])


def test_an_otp_never_given_is_abandoned_and_the_balance_restored(receiver):
    server, url = start_bank(receiver, PAYSTACK_SANDBOX_ABANDON_SECONDS=0.5)
    try:
        code = recipient(url, paystack_bank.OTP_ACCOUNT)
        assert initiate(url, code, "wdr_otp_late").json()["data"]["status"] == "otp"
        wait_for(lambda: verify(url, "wdr_otp_late")["data"]["status"] == "abandoned")
        wait_for(lambda: balance(url) == BALANCE_KOBO)
        assert receiver.of("wdr_otp_late") == []  # Paystack sends no transfer.* event for it
    finally:
        server.shutdown()


@pytest.mark.parametrize(("change", "status", "words"), [
    ({"reference": "WDR-UPPER"}, 400, "lowercase"),
    ({"reference": "wdr with space"}, 400, "lowercase"),
    ({"amount_kobo": 9_999}, 400, "at least 10000"),
    ({"amount_kobo": 100.5}, 400, "at least 10000"),
    ({"source": "card"}, 400, "balance"),
    ({"code": "RCP_nobody"}, 404, "Recipient not found"),
    ({"amount_kobo": BALANCE_KOBO}, 400, "balance is not enough"),
])
def test_a_bad_initiate_is_refused_and_moves_nothing(bank, change, status, words):
    code = change.pop("code", None) or recipient(bank, paystack_bank.SUCCESS_ACCOUNT)
    reference = change.pop("reference", "wdr_bad_1")
    amount = change.pop("amount_kobo", 500_000)
    answer = initiate(bank, code, reference, amount, **change)
    assert answer.status_code == status and words in answer.json()["message"]
    assert balance(bank) == BALANCE_KOBO
    assert verify(bank, reference).get("status") is False


def test_the_same_reference_with_other_fields_is_refused_and_the_same_fields_answer_the_transfer(bank):
    code = recipient(bank, paystack_bank.SUCCESS_ACCOUNT)
    first = initiate(bank, code, "wdr_same_1", 500_000).json()["data"]
    other = initiate(bank, code, "wdr_same_1", 600_000)
    assert other.status_code == 400 and "Duplicate Transfer Reference" in other.json()["message"]
    same = initiate(bank, code, "wdr_same_1", 500_000).json()["data"]
    assert same["transfer_code"] == first["transfer_code"]
    assert balance(bank) == BALANCE_KOBO - 500_000 - 1_000


def test_a_restarted_bank_keeps_its_transfers_and_still_settles_them(receiver, tmp_path):
    path = str(tmp_path / "sandbox-state.json")
    server, url = start_bank(receiver, path, PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS=1.5)
    code = recipient(url, paystack_bank.SUCCESS_ACCOUNT)
    initiate(url, code, "wdr_restart_1", 500_000)
    server.app.extensions["paystack_bank_sandbox"].stop_timers()  # it "dies" before settling
    server.app.extensions["sandbox_state_file"].flush()
    server.shutdown()
    server.server_close()
    again, url = start_bank(receiver, path, PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS=1.5)
    try:
        assert recipient(url, paystack_bank.SUCCESS_ACCOUNT) == code
        assert balance(url) == BALANCE_KOBO - 500_000 - 1_000
        wait_for(lambda: receiver.of("wdr_restart_1") == ["transfer.success"])
        assert verify(url, "wdr_restart_1")["data"]["status"] == "success"
    finally:
        again.shutdown()
