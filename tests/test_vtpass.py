"""The ``vtpass`` provider: its response-code mapping (canned replies), then
every test meter end to end against the sandbox server over a real socket.

Timeouts are short (client read timeout 3 s, the sandbox holds the timeout
meter's answer 5 s) so the file stays quick, yet generous enough that an
ordinary answer on a loaded machine never times out; nothing asserts on
durations.
"""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import requests
import sqlalchemy as sa
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from billvend.vending import lifecycle as payments, tasks
from billvend.platform.extensions import db
from billvend.ledger.models import KIND_REVERSAL, Transfer
from billvend.vending.models import Payment
from billvend.accounts.models import User
from billvend.vending.providers import get_provider, outcomes
from billvend.vending.providers.base import MeterVerification, VendResult
from billvend.vending.providers.vtpass import (
    VTpassProvider, naira_amount, parse_token, parse_units_kwh,
)
from billvend.sandbox import create_app as create_sandbox_app
from billvend.sandbox import serve_in_thread
from tests.helpers import assert_books_balance, make_payment
from tests.stack import free_port

READ_TIMEOUT_SECONDS = 3.0
SANDBOX_SLEEP_SECONDS = 5.0
API_KEY, SECRET_KEY = "test-api-key", "test-secret-key"
TOKEN = "26362054405982757802"


# -- canned replies: the response-code table --------------------------------

class CannedAdapter(requests.adapters.BaseAdapter):
    """Answers each request with the next canned reply: ``(status, body)``
    (a dict is sent as JSON, bytes as they are) or an exception to raise."""

    def __init__(self, *answers):
        super().__init__()
        self.answers = list(answers)
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        response.request, response.url = request, request.url
        return response

    def close(self):
        pass


def canned(*answers) -> tuple[VTpassProvider, CannedAdapter]:
    adapter = CannedAdapter(*answers)
    session = requests.Session()
    session.mount("http://", adapter)
    provider = VTpassProvider("http://vtpass.test", API_KEY, SECRET_KEY, session=session,
                              send_attempts=3, sleep=lambda seconds: None)
    return provider, adapter


def transaction(status, **extra):
    return {"code": "000", "response_description": "TRANSACTION " + status.upper(),
            "content": {"transactions": {"status": status, "transactionId": "17416"}}, **extra}


def refused() -> requests.ConnectionError:
    return requests.ConnectionError(MaxRetryError(None, "/api/pay", NewConnectionError(None, "refused")))


DELIVERED_PREPAID = transaction("delivered", purchased_code=f"Token : {TOKEN}", units="79.9 kWh",
                                exchangeReference="EXR1")


@pytest.mark.parametrize("reply,status,code", [
    ((200, DELIVERED_PREPAID), "delivered", "delivered"),
    ((200, transaction("delivered", purchased_code="Token : ")), "pending", "UNEXPECTED_RESPONSE"),
    ((200, transaction("reversed")), "failed", "REVERSED"),
    ((200, transaction("initiated")), "pending", "PROCESSING"),
    ((200, transaction("pending")), "pending", "PROCESSING"),
    ((200, transaction("weird")), "pending", "UNEXPECTED_RESPONSE"),
    ((200, {"code": "000", "content": {}}), "pending", "UNEXPECTED_RESPONSE"),
    ((200, {"code": "099", "response_description": "TRANSACTION IS PROCESSING"}), "pending", "PROCESSING"),
    ((200, {"code": "016", "response_description": "TRANSACTION FAILED"}), "failed", "TRANSACTION_FAILED"),
    ((200, {"code": "091"}), "failed", "NOT_PROCESSED"),
    ((200, {"code": "015"}), "failed", "NOT_FOUND"),
    ((200, {"code": "018"}), "failed", "INSUFFICIENT_CREDIT"),
    ((200, {"code": "019"}), "failed", "DUPLICATE_TRANSACTION"),
    ((200, {"code": "011"}), "failed", "INVALID_ARGUMENTS"),
    ((200, {"code": "012"}), "failed", "PRODUCT_NOT_FOUND"),
    ((200, {"code": "013"}), "failed", "BELOW_MINIMUM"),
    ((200, {"code": "017"}), "failed", "ABOVE_MAXIMUM"),
    ((200, {"code": "030"}), "failed", "SERVICE_UNAVAILABLE"),
    ((200, {"code": "042", "response_description": "SOMETHING NEW"}), "pending", "UNEXPECTED_RESPONSE"),
    ((200, {"message": "no code at all"}), "pending", "UNEXPECTED_RESPONSE"),
    ((500, {"code": "016"}), "pending", "UNEXPECTED_RESPONSE"),
    ((502, b"<html>Bad Gateway</html>"), "pending", "UNEXPECTED_RESPONSE"),
    ((200, b'{"code":"000","content":{"transac'), "pending", "UNEXPECTED_RESPONSE"),
    ((200, b""), "pending", "UNEXPECTED_RESPONSE"),
    ((200, b"[]"), "pending", "UNEXPECTED_RESPONSE"),
    (requests.ReadTimeout("read timed out"), "pending", "TIMEOUT"),
    (requests.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())), "pending", "NO_RESPONSE"),
])
def test_pay_response_codes(reply, status, code):
    provider, adapter = canned(reply)
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 150_050, "08031234567")
    assert (result.status, result.code) == (status, code)
    assert len(adapter.requests) == 1  # nothing after the request went out is ever re-sent
    sent = adapter.requests[0]
    assert sent.url == "http://vtpass.test/api/pay"
    assert sent.headers["api-key"] == API_KEY and sent.headers["secret-key"] == SECRET_KEY
    assert json.loads(sent.body) == {
        "request_id": "202611220900abc", "serviceID": "ikeja-electric", "billersCode": "1111111111111",
        "variation_code": "prepaid", "amount": "1500.50", "phone": "08031234567"}
    if status == "delivered":
        assert (result.token, result.units_kwh, result.receipt_reference) == (TOKEN, "79.9", "EXR1")


def test_vtpass_is_sent_the_national_form_of_the_stored_e164_phone():
    provider, adapter = canned((200, {"code": "016"}))
    provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "+2348031234567")
    assert json.loads(adapter.requests[0].body)["phone"] == "08031234567"


def test_requery_codes():
    provider, _ = canned((200, {"code": "015", "response_description": "INVALID REQUEST ID"}))
    result = provider.requery("202611220900abc")
    assert (result.status, result.code) == ("failed", "NOT_FOUND")
    provider, adapter = canned((200, DELIVERED_PREPAID))
    result = provider.requery("202611220900abc", meter_type="prepaid")
    assert result.status == "delivered" and result.token == TOKEN
    assert adapter.requests[0].url.endswith("/api/requery")
    assert json.loads(adapter.requests[0].body) == {"request_id": "202611220900abc"}
    postpaid, _ = canned((200, transaction("delivered", purchased_code="", exchangeReference="EXR9")))
    result = postpaid.requery("r", meter_type="postpaid")
    assert (result.status, result.token, result.receipt_reference) == ("delivered", None, "EXR9")


@pytest.mark.parametrize("code, status, neutral", [
    ("015", "failed", "NOT_FOUND"),  # the order was never received (the lifecycle adds a grace)
    ("016", "failed", "TRANSACTION_FAILED"),
    ("091", "failed", "NOT_PROCESSED"),
    # About the requery request, not the order: an existing order would have
    # come back as 000 + its transaction, a missing one as 015. Refunding on
    # these could refund a token: ask again later.
    ("011", "pending", "UNEXPECTED_RESPONSE"),
    ("012", "pending", "UNEXPECTED_RESPONSE"),
    ("013", "pending", "UNEXPECTED_RESPONSE"),
    ("017", "pending", "UNEXPECTED_RESPONSE"),
    ("018", "pending", "UNEXPECTED_RESPONSE"),
    ("019", "pending", "UNEXPECTED_RESPONSE"),
    ("030", "pending", "UNEXPECTED_RESPONSE"),
])
def test_only_codes_about_the_order_are_final_on_a_requery(code, status, neutral):
    provider, _ = canned((200, {"code": code, "response_description": "SOMETHING"}))
    result = provider.requery("202611220900abc", meter_type="prepaid")
    assert (result.status, result.code) == (status, neutral)
    assert code in result.message


def test_duplicate_request_id_is_requeried_not_reordered():
    provider, adapter = canned((200, {"code": "014"}), (200, DELIVERED_PREPAID))
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert result.status == "delivered" and result.token == TOKEN
    assert [r.path_url for r in adapter.requests] == ["/api/pay", "/api/requery"]
    # 014 then "never heard of it" contradict each other: no refund.
    provider, _ = canned((200, {"code": "014"}), (200, {"code": "015"}))
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert result.status == "pending"


def test_connection_refused_before_sending_is_retried_with_the_same_request_id():
    provider, adapter = canned(refused(), refused(), (200, DELIVERED_PREPAID))
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert result.status == "delivered"
    assert len(adapter.requests) == 3
    assert {json.loads(r.body)["request_id"] for r in adapter.requests} == {"202611220900abc"}
    provider, adapter = canned(refused(), refused(), refused(), (200, DELIVERED_PREPAID))
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert (result.status, result.code) == ("pending", "NO_RESPONSE")  # bounded: 3 attempts
    assert len(adapter.requests) == 3


def test_connection_refused_on_a_real_closed_port():
    sleeps = []
    provider = VTpassProvider(f"http://127.0.0.1:{free_port()}", API_KEY, SECRET_KEY,
                              connect_timeout_seconds=1, send_attempts=2, sleep=sleeps.append)
    result = provider.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert (result.status, result.code) == ("pending", "NO_RESPONSE")
    assert len(sleeps) == 1
    assert provider.verify_meter("ikeja-electric", "1111111111111", "prepaid").status == "error"


@pytest.mark.parametrize("reply,status,name", [
    ((200, {"code": "000", "content": {"Customer_Name": "ADA OKAFOR", "Address": "1 Allen Avenue",
                                       "Meter_Type": "PREPAID", "Min_Purchase_Amount": 500}}), "valid", "ADA OKAFOR"),
    ((200, {"code": "000", "content": {"error": "not valid", "WrongBillersCode": True}}), "invalid", None),
    ((200, {"code": "000", "content": {"Customer_Name": "ADA", "Meter_Type": "POSTPAID"}}), "invalid", None),
    ((200, {"code": "030", "response_description": "BILLER NOT REACHABLE"}), "error", None),
    ((503, b"down"), "error", None),
    (requests.ReadTimeout("slow"), "error", None),
])
def test_verify_meter_replies(reply, status, name):
    provider, adapter = canned(reply)
    result = provider.verify_meter("ikeja-electric", "1111111111111", "prepaid")
    assert (result.status, result.customer_name) == (status, name)
    assert json.loads(adapter.requests[0].body) == {
        "billersCode": "1111111111111", "serviceID": "ikeja-electric", "type": "prepaid"}
    if status == "valid":
        assert result.min_purchase_kobo == 50_000 and result.address == "1 Allen Avenue"


def test_parsers():
    assert parse_token("Token : 26362054405982757802") == TOKEN
    assert parse_token("Token: 2636 2054 4059 8275 7802") == TOKEN
    assert parse_token("Token : 1234") is None and parse_token(None) is None
    assert parse_units_kwh("79.9 kWh") == "79.9" and parse_units_kwh(12.5) == "12.5"
    assert parse_units_kwh("lots") is None
    assert (naira_amount(150_000), naira_amount(150_050), naira_amount(5)) == ("1500", "1500.50", "0.05")


# -- the sandbox over a real socket -----------------------------------------

class Sandbox:
    def __init__(self, url: str):
        self.url = url

    def order(self, request_id: str) -> dict:
        return requests.get(f"{self.url}/sandbox/orders/{request_id}", timeout=5).json()

    def pay_calls(self, request_id: str) -> int:
        return self.order(request_id)["pay_calls"]

    def disco(self, service_id: str, switch: str) -> None:
        requests.post(f"{self.url}/sandbox/discos/{service_id}/{switch}", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def sandbox():
    sandbox_app = create_sandbox_app({
        "VTPASS_API_KEY": API_KEY, "VTPASS_SECRET_KEY": SECRET_KEY,
        "SANDBOX_TIMEOUT_SLEEP_SECONDS": SANDBOX_SLEEP_SECONDS, "SIMULATOR_SUCCESS_RATE": 1.0,
    })
    server, url = serve_in_thread(sandbox_app)
    yield Sandbox(url)
    server.shutdown()


@pytest.fixture
def vtpass(app, sandbox):
    app.config.update({
        "VENDING_PROVIDER": "vtpass", "VTPASS_BASE_URL": sandbox.url,
        "VTPASS_API_KEY": API_KEY, "VTPASS_SECRET_KEY": SECRET_KEY,
        "VTPASS_CONNECT_TIMEOUT_SECONDS": 2.0, "VTPASS_READ_TIMEOUT_SECONDS": READ_TIMEOUT_SECONDS,
        "VTPASS_VERIFY_TIMEOUT_SECONDS": 5.0,
    })
    return sandbox


def balance(email="ada@example.com") -> int:
    db.session.expire_all()
    return db.session.scalar(sa.select(User).where(User.email == email)).wallet.balance_kobo


def reversals(payment_id: int) -> int:
    return db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(
        Transfer.payment_id == payment_id, Transfer.kind == KIND_REVERSAL))


@pytest.mark.parametrize("meter,meter_type,after_vend,code,final", [
    ("1111111111111", "prepaid", "successful", "delivered", "successful"),
    ("1010101010101", "postpaid", "successful", "delivered", "successful"),
    ("201000000000", "prepaid", "unknown", "PROCESSING", "successful"),
    ("300000000000", "prepaid", "unknown", "TIMEOUT", "successful"),
    ("400000000000", "prepaid", "unknown", "NO_RESPONSE", "reversed"),
    ("500000000000", "prepaid", "unknown", "UNEXPECTED_RESPONSE", "successful"),
])
def test_outcome_table_through_the_pay_form(vtpass, client, auth, fund, pay, meter, meter_type,
                                            after_vend, code, final):
    auth.signup()
    fund("5000")
    response = pay(meter, "1000", meter_type=meter_type)  # Huey immediate: vends inline
    assert response.status_code == 303
    reference = response.headers["Location"].rsplit("/", 1)[1]
    # The request and its inline vend may have left this Payment in the
    # session with older attributes; read what the database holds.
    db.session.expire_all()
    payment = db.session.scalar(sa.select(Payment).where(Payment.reference == reference))
    assert (payment.status, payment.provider_code) == (after_vend, code), payment.provider_message
    assert payment.customer_name  # verified through the sandbox before the debit
    assert balance() == 400_000  # debited; never refunded on an ambiguous answer
    if after_vend == "unknown":
        assert payment.next_requery_at is not None
        tasks.requery(payment.id, force=True)
        db.session.expire_all()
        payment = db.session.get(Payment, payment.id)
    assert payment.status == final, (payment.provider_code, payment.provider_message)
    if final == "successful":
        assert balance() == 400_000 and reversals(payment.id) == 0
        assert payment.receipt_reference == outcomes.receipt_reference_for(reference)
        if meter_type == "prepaid":
            assert payment.token == outcomes.token_for(reference)
            assert payment.units_kwh == outcomes.units_kwh_for(100_000)
        else:
            assert payment.token is None
    else:
        assert payment.provider_code == "NOT_FOUND"  # requery: 015, the sandbox never got it
        assert balance() == 500_000 and reversals(payment.id) == 1
    assert vtpass.pay_calls(reference) == 1  # one order per payment, the timeout included
    assert_books_balance()


def test_invalid_meter_that_slips_past_verification_is_refunded(vtpass, app):
    from tests.helpers import make_user

    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.INVALID_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    db.session.expire_all()
    payment = db.session.get(Payment, payment.id)
    assert (payment.status, payment.provider_code) == ("reversed", "TRANSACTION_FAILED")
    assert db.session.get(User, user.id).wallet.balance_kobo == 500_000
    assert vtpass.pay_calls(payment.reference) == 1
    assert_books_balance()


def test_second_pay_with_the_same_request_id_is_one_order(vtpass, app):
    provider = get_provider()
    request_id = "202611220900" + "feedc0ffee01"
    first = provider.vend(request_id, "eko-electric", "1111111111111", "prepaid", 100_000, "08031234567")
    again = provider.vend(request_id, "eko-electric", "1111111111111", "prepaid", 100_000, "08031234567")
    assert first.status == again.status == "delivered" and again.token == first.token  # 014 -> requery
    order = vtpass.order(request_id)
    assert (order["pay_calls"], order["requery_calls"]) == (2, 1)


def test_transient_connect_error_resends_the_same_order_once_it_connects(vtpass, app):
    class RefuseFirst(requests.adapters.HTTPAdapter):
        refusals = 0

        def send(self, request, **kwargs):
            if RefuseFirst.refusals < 1:
                RefuseFirst.refusals += 1
                raise refused()
            return super().send(request, **kwargs)

    session = requests.Session()
    session.mount("http://", RefuseFirst())
    provider = VTpassProvider(vtpass.url, API_KEY, SECRET_KEY, session=session, sleep=lambda s: None)
    request_id = "202611220900" + "feedc0ffee02"
    result = provider.vend(request_id, "eko-electric", "1111111111111", "prepaid", 100_000, "08031234567")
    assert result.status == "delivered" and RefuseFirst.refusals == 1
    assert vtpass.pay_calls(request_id) == 1


def verify(client, auth, meter, disco="ikeja-electric", meter_type="prepaid"):
    return client.post("/bills/electricity/verify",
                       headers={"HX-Request": "true", "X-CSRFToken": auth.csrf("/bills/electricity")},
                       data={"disco": disco, "meter_type": meter_type, "meter_number": meter})


def test_meter_verification_over_http(vtpass, client, auth, fund, pay):
    auth.signup()
    fund("5000")
    name, address = outcomes.customer_for("1111111111111", "ikeja-electric")
    valid = verify(client, auth, "1111111111111")
    assert valid.status_code == 200
    html = valid.get_data(as_text=True)
    assert name in html and address in html
    # The check shows the name; only the review step marks the form reviewed.
    assert "verified_meter" not in html
    assert "Meter not found" in verify(client, auth, "0000000000000").get_data(as_text=True)
    mismatch = verify(client, auth, "1010101010101").get_data(as_text=True)  # a postpaid meter
    assert "this is a postpaid meter" in mismatch
    assert 'name="switch_meter_type" value="postpaid"' in mismatch

    invalid = pay("0000000000000", "1000")
    assert invalid.status_code == 422 and b"not a valid" in invalid.data
    assert balance() == 500_000
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0


def test_disco_down(vtpass, client, auth, fund, pay):
    auth.signup()
    fund("5000")
    vtpass.disco("ikeja-electric", "down")
    try:
        partial = verify(client, auth, "1111111111111").get_data(as_text=True)
        assert "could not reach the disco" in partial and "verified_meter" not in partial
        refused_pay = pay("1111111111111", "1000")
        assert refused_pay.status_code == 422 and b"could not reach the disco" in refused_pay.data
        assert balance() == 500_000
        assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 0
        assert "Customer:" in verify(client, auth, "1111111111111", disco="eko-electric").get_data(as_text=True)
    finally:
        vtpass.disco("ikeja-electric", "up")
    assert "Customer:" in verify(client, auth, "1111111111111").get_data(as_text=True)


def test_sandbox_checks_credentials(vtpass):
    reply = requests.post(vtpass.url + "/api/requery", json={"request_id": "x"},
                          headers={"api-key": "wrong", "secret-key": "wrong"}, timeout=5).json()
    assert reply["code"] == "087"
    wrong_keys = VTpassProvider(vtpass.url, "wrong", "wrong")
    result = wrong_keys.vend("202611220900abc", "ikeja-electric", "1111111111111", "prepaid", 100_000, "080")
    assert result.status == "pending"  # not understood: never a refund on its own
    assert re.search(r"087", result.message)


def test_unknown_past_the_alert_age_stays_unknown_and_is_flagged(vtpass, app):
    from tests.helpers import make_user

    app.config["UNKNOWN_ALERT_AGE_SECONDS"] = 0
    user = make_user(balance_kobo=500_000)
    payment = make_payment(user, meter_number=outcomes.TIMEOUT_METER, amount_kobo=100_000)
    tasks.vend(payment.id)
    app.config["VTPASS_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # the provider goes away
    app.config["VTPASS_SEND_ATTEMPTS"] = 1
    for _ in range(2):
        tasks.requery(payment.id, force=True)
    db.session.expire_all()
    payment = db.session.get(Payment, payment.id)
    assert (payment.status, payment.needs_attention) == ("unknown", True)
    assert payment.requery_count == 2 and reversals(payment.id) == 0
    assert db.session.get(User, user.id).wallet.balance_kobo == 400_000  # never refunded silently
    assert vtpass.pay_calls(payment.reference) == 1
    assert_books_balance()


# -- issue 20, item 2: provider text with NUL and control characters ---------

NUL_DELIVERED = transaction(
    "delivered", purchased_code=f"Token : {TOKEN}\u0000", units="79.9 kWh\u0000",
    exchangeReference="EXR\u00001", tariff="R2 SINGLE\u0000 PHASE", customerName="ADA\u0000",
    response_description="TRANSACTION SUCCESSFUL\u0000")


def test_a_delivered_answer_with_a_nul_completes_the_payment(app):
    """A ``000`` delivered whose texts carry NUL: PostgreSQL refuses NUL in
    text, so every attempt to record it failed and the payment stayed
    ``vending`` for ever. Cleaned at the provider boundary, it is recorded."""
    provider, _ = canned((200, NUL_DELIVERED))
    payment = make_payment(make_user_with(500_000), amount_kobo=100_000)
    payments.vend_payment(payment.id, provider)
    db.session.expire_all()
    payment = db.session.get(Payment, payment.id)
    assert (payment.status, payment.token) == ("successful", TOKEN), payment.provider_message
    assert payment.provider_message == "TRANSACTION SUCCESSFUL"
    assert (payment.exchange_reference, payment.tariff) == ("EXR1", "R2 SINGLE PHASE")
    assert all("\x00" not in (e.message or "") for e in payment.events)
    assert_books_balance()


def test_a_failure_with_a_nul_is_refunded(app):
    """A ``016`` whose description carries a NUL is recorded and refunded."""
    provider, _ = canned((200, {"code": "016", "response_description": "TRANSACTION FAILED\u0000\x1b[2J"}))
    user = make_user_with(500_000)
    payment = make_payment(user, amount_kobo=100_000)
    follow_up = payments.vend_payment(payment.id, provider)
    assert follow_up.action == "reverse"
    assert payments.reverse_payment(payment.id)
    db.session.expire_all()
    payment = db.session.get(Payment, payment.id)
    assert payment.status == "reversed"
    assert payment.provider_message == "VTpass 016: TRANSACTION FAILED[2J"
    assert db.session.get(User, user.id).wallet.balance_kobo == 500_000
    assert_books_balance()


def test_a_token_in_another_scripts_digits_never_completes_a_prepaid_payment_without_it(app):
    """A ``000`` delivered whose token is 20 Arabic-Indic (or full-width)
    digits: the client read them as a token (``\\d`` is any script's digit),
    the lifecycle's check (ASCII digits) dropped it, and the prepaid payment
    became ``successful`` with no token anywhere: paid, and nothing to type
    on the meter. Unreadable, it stays unknown for a requery or an admin."""
    arabic = TOKEN.translate(str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664"
                                                         "\u0665\u0666\u0667\u0668\u0669"))
    answer = (200, transaction("delivered", purchased_code=f"Token : {arabic}", units="79.9 kWh"))
    provider, _ = canned(answer, answer)
    payment = make_payment(make_user_with(500_000), amount_kobo=100_000)
    payments.vend_payment(payment.id, provider)
    db.session.expire_all()
    payment = db.session.get(Payment, payment.id)
    assert payment.status == "unknown", (payment.status, payment.token, payment.provider_message)
    assert provider.requery("202611220900abc", meter_type="prepaid").status == "pending"
    assert_books_balance()


def test_requery_answers_are_cleaned_too(app):
    provider, _ = canned((200, NUL_DELIVERED))
    result = provider.requery("202611220900abc", meter_type="prepaid")
    assert (result.status, result.token, result.message) == ("delivered", TOKEN, "TRANSACTION SUCCESSFUL")
    assert result.exchange_reference == "EXR1" and result.receipt_reference == "EXR1"


def test_meter_verification_text_is_cleaned_and_clipped():
    provider, _ = canned((200, {"code": "000", "content": {
        "Customer_Name": "ADA\u0000 OKAFOR\u200e", "Address": "1 Allen Avenue\u0000" + "x" * 400,
        "Meter_Type": "PREPAID"}}))
    verification = provider.verify_meter("ikeja-electric", "1111111111111", "prepaid")
    assert verification.is_valid
    assert verification.customer_name == "ADA OKAFOR"
    assert "\x00" not in verification.address and len(verification.address) == 300
    provider, _ = canned((200, {"code": "030", "response_description": "BILLER\u0000 DOWN"}))
    assert provider.verify_meter("ikeja-electric", "1", "prepaid").message == "BILLER DOWN"


def test_every_provider_string_is_cleaned_at_the_boundary():
    """One place (the result types) cleans what any provider says: NUL,
    control characters, bidi controls and lone surrogates dropped, each
    field clipped to its column."""
    result = VendResult("delivered", code="delivered\x00", message="ok\x00\x07" + "m" * 600,
                        token="\x00" + TOKEN, units_kwh="1.5\x00", receipt_reference="R\ud800" * 40,
                        tariff="T\x00", kct1="1" * 20 + "\x00", kct2="2" * 25,
                        exchange_reference="E\u202e\x00")
    assert result.code == "delivered" and result.token == TOKEN and result.units_kwh == "1.5"
    assert result.message.startswith("ok") and len(result.message) == 500 and "\x07" not in result.message
    assert result.receipt_reference == "R" * 40 and result.tariff == "T"
    assert (result.kct1, result.kct2) == ("1" * 20, None)  # a token is never cut: too long, dropped
    assert result.exchange_reference == "E"
    assert VendResult("pending", message="line one\nline\ttwo").message == "line one line two"
    assert VendResult("pending", receipt_reference="\x00\x00").receipt_reference is None
    verification = MeterVerification("valid", customer_name="A\x00" * 150, address="B\x00",
                                     meter_type="prepaid\x00", message="m\x00")
    assert verification.customer_name == "A" * 150 and verification.address == "B"
    assert (verification.meter_type, verification.message) == ("prepaid", "m")


def make_user_with(balance_kobo: int) -> User:
    from tests.helpers import make_user

    return make_user(balance_kobo=balance_kobo)


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
