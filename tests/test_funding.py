"""Money in through the Paystack-shaped gateway, over real sockets.

billvend (the test's app, served by werkzeug on a free port) and the Paystack
sandbox (``billvend.sandbox``, another free port) talk HTTP to each other:
``initialize``/``verify`` from billvend to the sandbox, signed webhooks from
the sandbox to billvend. The customer is a ``requests.Session`` driving the
same HTTP a browser does (forms, redirects, the hosted checkout's buttons).
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.serving import make_server

from billvend.funding import accounts, events as funding_events, invariants, reconciliation, verification
from billvend.platform.extensions import db
from billvend.funding import gateways
from billvend.funding.tasks import funding_sweep_once
from billvend.funding.models import DedicatedAccount, Funding, GatewayEvent
from billvend.ledger.models import Transfer
from billvend.accounts.models import User
from billvend.sandbox import create_app as create_sandbox_app
from billvend.sandbox import serve_in_thread
from billvend.funding import checkout as funding_checkout
from billvend.platform.clock import db_now
from tests.conftest import CSRF_RE, KEY_RE
from tests.helpers import assert_books_balance
from tests.stack import free_port

SECRET = "sk_test_funding_suite"
PASSWORD = "correct horse 1"


class Sandbox:
    """The running Paystack sandbox and its test hooks."""

    def __init__(self, url: str, app):
        self.url, self.app = url, app

    def settings(self, **values):
        r = requests.post(self.url + "/sandbox/paystack/settings", json=values, timeout=5)
        assert r.status_code == 200, r.text

    def transaction(self, reference: str) -> dict:
        return requests.get(f"{self.url}/sandbox/paystack/transactions/{reference}", timeout=5).json()

    def set_status(self, reference: str, status: str, **extra) -> dict:
        r = requests.post(f"{self.url}/sandbox/paystack/transactions/{reference}/status",
                          json={"status": status, **extra}, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def bank_transfer(self, account_number: str, amount_kobo: int, sync: bool = True) -> dict:
        r = requests.post(self.url + "/sandbox/bank-transfers",
                          json={"account_number": account_number, "amount": amount_kobo, "sync": sync},
                          timeout=15)
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def live(app):
    """``(billvend base URL, Sandbox)``: both served on free ports."""
    app.config.update(FUNDING_GATEWAY="paystack", PAYSTACK_SECRET_KEY=SECRET,
                      PAYSTACK_DEADLINE_SECONDS=8.0, PAYSTACK_READ_TIMEOUT_SECONDS=6.0,
                      FUNDING_VERIFY_AFTER_SECONDS=0)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    sandbox_app = create_sandbox_app({"PAYSTACK_SECRET_KEY": SECRET,
                                      "PAYSTACK_WEBHOOK_URL": base + "/webhooks/paystack",
                                      "PAYSTACK_SANDBOX_WEBHOOK": "normal"})
    sandbox_server, sandbox_url = serve_in_thread(sandbox_app)
    app.config["PAYSTACK_BASE_URL"] = sandbox_url
    try:
        yield base, Sandbox(sandbox_url, sandbox_app)
    finally:
        sandbox_server.shutdown()
        server.shutdown()


def tokens(s: requests.Session, url: str) -> dict:
    html = s.get(url, timeout=10).text
    data = {"csrf_token": CSRF_RE.search(html).group(1) or CSRF_RE.search(html).group(2)}
    key = KEY_RE.search(html)
    if key:
        data["idempotency_key"] = key.group(1)
    return data


def customer(base: str, email: str = "ada@example.com") -> requests.Session:
    s = requests.Session()
    r = s.post(base + "/signup", data=tokens(s, base + "/signup") | {
        "email": email, "password": PASSWORD, "confirm_password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return s


def start_checkout(s: requests.Session, base: str, amount: str = "5000") -> tuple[str, str]:
    """POST the fund form; returns (checkout URL, reference)."""
    r = s.post(base + "/wallet/fund", data=tokens(s, base + "/wallet/fund") | {"amount": amount},
               allow_redirects=False, timeout=15)
    assert r.status_code == 303, r.text
    checkout_url = r.headers["Location"]
    db.session.rollback()
    reference = db.session.scalars(sa.select(Funding.reference).order_by(Funding.id.desc())).first()
    return checkout_url, reference


def choose(s: requests.Session, checkout_url: str, outcome: str) -> str:
    """On the hosted checkout page, press the ``outcome`` button; returns the
    callback URL the gateway redirects to."""
    page = s.get(checkout_url, timeout=10)
    assert page.status_code == 200 and f'name="outcome" value="{outcome}"' in page.text
    r = s.post(checkout_url, data={"outcome": outcome}, allow_redirects=False, timeout=15)
    assert r.status_code == 302
    return r.headers["Location"]


def back_from_checkout(s: requests.Session, callback_url: str) -> requests.Response:
    return s.get(callback_url, timeout=20)  # follows our 303 to the result page


def balance_of(email: str) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(User).where(User.email == email)).wallet.balance_kobo


def credits_for(funding_reference: str) -> int:
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count(Transfer.id)).join(
        Funding, Funding.id == Transfer.funding_id).where(Funding.reference == funding_reference))


def funding_row(reference: str) -> Funding:
    db.session.rollback()
    return db.session.scalar(sa.select(Funding).where(Funding.reference == reference))


def wait_for(predicate, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.rollback()
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail("condition not met in time")


def signed_post(base: str, body: bytes, secret: str = SECRET, signature: str | None = None):
    headers = {"Content-Type": "application/json",
               "x-paystack-signature": signature if signature is not None else gateways.sign(secret, body)}
    return requests.post(base + "/webhooks/paystack", data=body, headers=headers, timeout=20)


# -- the card journey ---------------------------------------------------------

def test_card_journey_success(live):
    base, sandbox = live
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "5000")
    assert checkout_url.startswith(sandbox.url + "/checkout/")
    assert funding_row(reference).status == "pending"
    page = back_from_checkout(s, choose(s, checkout_url, "success"))
    assert page.url == base + "/"
    assert "₦5,000.00 added to your wallet" in page.text
    assert balance_of("ada@example.com") == 500_000  # what the customer paid, fees are ours
    row = funding_row(reference)
    assert row.status == "succeeded" and row.fees_kobo == 175_00 and row.channel == "card"
    # The webhook raced the redirect; whichever came second found it credited.
    event = wait_for(lambda: db.session.scalar(sa.select(GatewayEvent).where(
        GatewayEvent.reference == reference, GatewayEvent.processed_at.is_not(None))))
    assert event.event == "charge.success" and not event.needs_attention
    assert credits_for(reference) == 1
    assert sandbox.transaction(reference)["initializations"] == 1
    history = s.get(base + "/wallet/fundings", timeout=10).text
    assert reference in history and "Added to your wallet" in history
    statement = s.get(base + "/history", timeout=10).text
    assert "Wallet funding" in statement and "+₦5,000.00" in statement
    assert invariants.check_invariants() == []
    assert_books_balance()


AMOUNT_INPUT_RE = re.compile(r'<input[^>]*id="amount"[^>]*>')


def try_again_form(html: str) -> str:
    """The fund form's amount input, after checking the button says "Try again"."""
    assert re.search(r'<button type="submit" class="button block">Try again</button>', html), html
    return AMOUNT_INPUT_RE.search(html).group(0)


@pytest.mark.parametrize("outcome, words, history_words", [
    ("failed", "Your bank declined this card payment (the bank did not approve it): nothing was taken.",
     "Declined by your bank: nothing was taken"),
    ("abandoned", "You closed the checkout without paying: nothing was taken.",
     "Not paid: nothing was taken"),
])
def test_card_journey_declined_or_abandoned_takes_nothing(live, outcome, words, history_words):
    """A declined card and a cancelled checkout each say what happened in
    their own words, and offer "Try again" with the amount kept."""
    base, sandbox = live
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "2000")
    page = back_from_checkout(s, choose(s, checkout_url, outcome))
    assert words in page.text
    assert "still processing" not in page.text
    assert page.url.startswith(base + "/wallet/fund?retry=")
    assert 'value="2000"' in try_again_form(page.text)
    assert funding_row(reference).status == "failed"
    assert balance_of("ada@example.com") == 0 and credits_for(reference) == 0
    assert history_words in s.get(base + "/wallet/fundings", timeout=10).text
    assert_books_balance()


def test_a_declined_card_gives_the_gateways_reason_in_the_customers_words(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "1500.50")
    sandbox.set_status(reference, "failed", gateway_response="Insufficient Funds")
    page = s.get(f"{base}/wallet/fund/callback?reference={reference}", timeout=20)
    assert ("Your bank declined this card payment (there was not enough money in the account): "
            "nothing was taken.") in page.text
    assert "Insufficient Funds" not in page.text
    assert 'value="1500.50"' in try_again_form(page.text)
    # "Try again" is a new attempt with its own checkout, not a replay of the declined one.
    data = tokens(s, page.url) | {"amount": "1500.50"}
    r = s.post(base + "/wallet/fund", data=data, allow_redirects=False, timeout=15)
    assert r.status_code == 303 and r.headers["Location"].startswith(sandbox.url + "/checkout/")
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 2


@pytest.mark.parametrize("gateway_response, words", [
    ("Insufficient Funds", "there was not enough money in the account"),
    ("Expired Card", "the card has expired"),
    ("Incorrect PIN", "the card PIN was not accepted"),
    ("Token Authentication Failed", "the one-time code (OTP) was not accepted"),
    ("Transaction not permitted to cardholder",
     "the bank does not allow this card to pay online; ask your bank to enable it"),
    ("Do Not Honor", "the bank did not approve it"),
    ("Declined", "the bank did not approve it"),
    ("<script>alert(1)</script>", "the bank did not approve it"),
    (None, "the bank did not approve it"),
])
def test_decline_reasons_are_said_in_the_customers_words(gateway_response, words):
    from billvend.web.wallet.words import decline_reason

    assert decline_reason(gateway_response) == words


def test_try_again_prefills_only_the_customers_own_failed_funding(live):
    base, sandbox = live
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "2000")
    back_from_checkout(s, choose(s, checkout_url, "abandoned"))
    other = customer(base, "eve@example.com")
    page = other.get(f"{base}/wallet/fund?retry={reference}", timeout=10)
    assert page.status_code == 200 and 'value="2000"' not in page.text
    assert ">Fund wallet</button>" in page.text
    assert other.get(f"{base}/wallet/fund?retry=%C2%B2", timeout=10).status_code == 200


def test_a_checkout_closed_without_paying_never_says_it_is_processing(live):
    """The customer closed the checkout page (no button pressed) and checks
    from the funding history: while the gateway has no answer, billvend says
    it has not received the money, and nothing was taken if they did not pay;
    once the gateway says ``abandoned``, that nothing was taken."""
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "2000")
    history = s.get(base + "/wallet/fundings", timeout=10).text
    assert "Waiting for your payment" in history and "Processing" not in history
    page = s.get(f"{base}/wallet/fund/callback?reference={reference}", timeout=20)
    assert "still processing" not in page.text
    assert "We have not received your payment of ₦2,000.00 yet." in page.text
    assert "If you closed the checkout without paying, nothing was taken." in page.text
    sandbox.set_status(reference, "abandoned")
    page = s.get(f"{base}/wallet/fund/callback?reference={reference}", timeout=20)
    assert "You closed the checkout without paying: nothing was taken." in page.text
    assert 'value="2000"' in try_again_form(page.text)
    assert funding_row(reference).status == "failed" and credits_for(reference) == 0


def test_webhook_before_the_redirect(live):
    base, sandbox = live
    sandbox.settings(webhook="before_redirect")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    callback = choose(s, checkout_url, "success")
    # The webhook was processed before the gateway even answered the button.
    assert funding_row(reference).status == "succeeded" and credits_for(reference) == 1
    page = back_from_checkout(s, callback)
    assert "₦5,000.00 added to your wallet" in page.text
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_webhook_twice_and_late_credits_once(live):
    base, sandbox = live
    sandbox.settings(webhook="twice")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    back_from_checkout(s, choose(s, checkout_url, "success"))
    event = wait_for(lambda: db.session.scalar(sa.select(GatewayEvent).where(
        GatewayEvent.reference == reference, GatewayEvent.deliveries == 2,
        GatewayEvent.processed_at.is_not(None))))
    assert event is not None
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 1  # stored once
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_customer_never_comes_back_the_webhook_credits(live):
    base, sandbox = live
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    choose(s, checkout_url, "success")  # closes the tab: no callback
    wait_for(lambda: credits_for(reference) == 1)
    assert balance_of("ada@example.com") == 500_000
    assert_books_balance()


# -- killed between the gateway's success and the credit ----------------------

class DiesAfterHearing:
    """The real gateway client, but the process "dies" right after verify
    answers (before the credit is recorded)."""

    def __init__(self, real):
        self.real, self.name = real, real.name

    def verify(self, reference):
        answer = self.real.verify(reference)
        raise KeyboardInterrupt(f"killed after hearing {answer.status}")


def test_killed_between_success_and_credit_sweep_credits_once(live, app):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    choose(s, checkout_url, "success")
    row = funding_row(reference)
    with pytest.raises(KeyboardInterrupt):
        verification.verify_funding(row.id, DiesAfterHearing(gateways.gateway()))
    assert credits_for(reference) == 0 and funding_row(reference).status == "pending"
    assert funding_sweep_once() == 1
    assert credits_for(reference) == 1
    assert funding_sweep_once() == 0  # nothing open any more
    # Reconciliation afterwards finds it matched, credits nothing more.
    run = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date())
    assert (run.matched, run.credited, run.flagged) == (1, 0, 0)
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_reconciliation_credits_a_success_nobody_told_us_about(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "3000")
    choose(s, checkout_url, "success")  # no webhook, no callback, no sweep
    result = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date())
    assert (result.credited, result.flagged) == (1, 0)
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 300_000
    again = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date())
    assert (again.matched, again.credited) == (1, 0) and credits_for(reference) == 1
    assert_books_balance()


def test_abandoned_then_a_late_verified_success_is_credited_once(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    back_from_checkout(s, choose(s, checkout_url, "abandoned"))
    assert funding_row(reference).status == "failed"
    sandbox.set_status(reference, "success")  # the bank confirms after all
    data = json.dumps({"event": "charge.success",
                       "data": sandbox.transaction(reference)["transaction"] | {
                           "status": "success", "amount": 500_000, "currency": "NGN",
                           "reference": reference}}).encode()
    assert signed_post(base, data).status_code == 200
    assert signed_post(base, data).status_code == 200  # a retry
    assert credits_for(reference) == 1 and funding_row(reference).status == "succeeded"
    assert "Confirmed late by the bank" in s.get(base + "/wallet/fundings", timeout=10).text
    assert_books_balance()


def test_sweep_ends_an_abandoned_checkout_failed(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    sandbox.set_status(reference, "abandoned")  # the customer walked away from the page
    assert funding_sweep_once() == 1
    assert funding_row(reference).status == "failed" and credits_for(reference) == 0


def test_sweep_backs_off_while_the_gateway_says_ongoing(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    start_checkout(s, base)
    assert funding_sweep_once() == 1
    assert funding_sweep_once() == 0  # next_verify_at is in the future now
    db.session.rollback()
    row = db.session.scalar(sa.select(Funding))
    assert row.status == "pending" and row.verify_attempts == 1 and row.next_verify_at is not None


# -- amounts ------------------------------------------------------------------

def test_gateway_amount_different_from_stored_is_flagged_never_credited(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "5000")
    choose(s, checkout_url, "success")
    sandbox.set_status(reference, "success", amount=50_00)  # the gateway took ₦50, not ₦5,000
    page = back_from_checkout(s, f"{base}/wallet/fund/callback?reference={reference}")
    assert "checking this payment" in page.text
    row = funding_row(reference)
    assert row.needs_attention and "gateway amount 5000 kobo" in row.attention_reason
    assert credits_for(reference) == 0 and balance_of("ada@example.com") == 0
    assert funding_sweep_once() == 0  # flagged: waits for an admin


def test_signed_webhook_with_a_different_amount_credits_the_verified_amount_and_is_flagged(live):
    """The webhook's own amount is never trusted: the verify answer decides."""
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "5000")
    choose(s, checkout_url, "success")
    body = json.dumps({"event": "charge.success", "data": {
        "reference": reference, "status": "success", "amount": 9_999_999_00, "currency": "NGN",
        "channel": "card"}}).encode()
    assert signed_post(base, body).status_code == 200
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    event = db.session.scalar(sa.select(GatewayEvent))
    assert event.needs_attention and "the webhook said 999999900 kobo" in event.outcome


# -- the webhook endpoint -------------------------------------------------------

def charge_body(reference: str, amount: int = 500_000) -> bytes:
    return json.dumps({"event": "charge.success", "data": {
        "reference": reference, "status": "success", "amount": amount, "currency": "NGN"}}).encode()


def test_bad_or_missing_signature_is_401_and_stores_nothing(live):
    base, sandbox = live
    s = customer(base)
    _, reference = start_checkout(s, base)
    body = charge_body(reference)
    assert signed_post(base, body, secret="sk_test_someone_else").status_code == 401
    assert signed_post(base, body, signature="").status_code == 401
    r = requests.post(base + "/webhooks/paystack", data=body, timeout=10,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    # Tampered: signed, then the amount changed in transit.
    signature = gateways.sign(SECRET, body)
    tampered = body.replace(b"500000", b"900000")
    assert signed_post(base, tampered, signature=signature).status_code == 401
    # Re-serialised JSON is not the signed body either.
    reserialised = json.dumps(json.loads(body), indent=2).encode()
    assert signed_post(base, reserialised, signature=signature).status_code == 401
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0
    assert credits_for(reference) == 0


def test_unknown_reference_is_stored_and_flagged_never_credited(live):
    base, sandbox = live
    customer(base)
    r = signed_post(base, charge_body("T_not_ours_123"))
    assert r.status_code == 200
    db.session.rollback()
    event = db.session.scalar(sa.select(GatewayEvent))
    assert event.reference == "T_not_ours_123" and event.needs_attention
    assert "unknown reference" in event.outcome
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id))) == 0


@pytest.mark.parametrize("body,status", [
    (b"{not json", 400), (b"[]", 400), (b'{"event": "charge.success", "data": {}}', 400),
    (b'{"event": "charge.success", "data": {"reference": 12}}', 400),
    (b'{"event": "charge.success", "data": {"reference": "FND-\\u0000"}}', 400),
    (b'{"event": "charge.success", "data": {"reference": "' + b"x" * 101 + b'"}}', 400),
])
def test_broken_webhook_bodies_are_refused_cleanly(live, body, status):
    base, sandbox = live
    assert signed_post(base, body).status_code == status
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0


def test_a_one_megabyte_webhook_is_413(live):
    base, sandbox = live
    body = b'{"event": "charge.success", "data": {"reference": "x", "pad": "' + b"a" * 1_000_000 + b'"}}'
    assert signed_post(base, body).status_code == 413
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0


def test_other_events_are_stored_and_ignored(live):
    base, sandbox = live
    body = json.dumps({"event": "transfer.success", "data": {"reference": "TRF_1"}}).encode()
    assert signed_post(base, body).status_code == 200
    db.session.rollback()
    assert db.session.scalar(sa.select(GatewayEvent.outcome)).startswith("ignored")


# -- forged callbacks ---------------------------------------------------------

def test_forged_callbacks_change_nothing(live):
    base, sandbox = live
    victim = customer(base, "victim@example.com")
    checkout_url, reference = start_checkout(victim, base)
    choose(victim, checkout_url, "success")
    sandbox.settings(webhook="never")
    mallory = customer(base, "mallory@example.com")
    for ref in (reference, "FND-unknown", "x" * 500, "", "%00"):
        r = mallory.get(f"{base}/wallet/fund/callback?reference={ref}", timeout=10)
        assert r.status_code == 404 and "could not find that payment" in r.text
    assert balance_of("mallory@example.com") == 0


# -- bank transfer ------------------------------------------------------------

def test_an_account_without_a_full_name_gets_its_name_once_in_the_bank_account_name(live):
    base, sandbox = live
    s = customer(base, "bola@example.com")
    csrf = CSRF_RE.search(s.get(base + "/wallet/fund", timeout=10).text)
    r = s.post(base + "/wallet/bank-transfer", data={"csrf_token": csrf.group(1) or csrf.group(2)},
               timeout=15)
    assert r.status_code == 200
    assert "<dt>Account name</dt><dd>BILLVEND/BOLA</dd>" in r.text and "BOLA BOLA" not in r.text


@pytest.mark.parametrize("full_name, email, names", [
    (None, "bola@example.com", ("Bola", "")),
    ("", "ngozi.okafor92@example.com", ("Ngozi", "Okafor")),
    ("Bola", "x@example.com", ("Bola", "")),
    ("  Ada  Obi Eze ", "x@example.com", ("Ada", "Obi Eze")),
    (None, "1234@example.com", ("Customer", "")),
])
def test_the_names_given_to_the_gateway_for_a_bank_account(app, full_name, email, names):
    assert accounts.account_holder_names(User(email=email, full_name=full_name)) == names


def test_bank_transfer_journey(live):
    base, sandbox = live
    s = customer(base)
    page = s.get(base + "/wallet/fund", timeout=10)
    assert "Pay by bank transfer" in page.text
    csrf = CSRF_RE.search(page.text)
    r = s.post(base + "/wallet/bank-transfer", data={"csrf_token": csrf.group(1) or csrf.group(2)},
               timeout=15)
    assert r.status_code == 200 and r.url == base + "/wallet/bank-transfer"
    number = re.search(r'data-testid="account-number">(\d{10})<', r.text).group(1)
    assert "Test Bank" in r.text and "Copy account number" in r.text
    # The account is made once: asking again shows the same one.
    again = s.get(base + "/wallet/fund", timeout=10).text
    assert number in again
    first = sandbox.bank_transfer(number, 750_000)
    second = sandbox.bank_transfer(number, 120_000)
    assert balance_of("ada@example.com") == 870_000
    db.session.rollback()
    rows = db.session.scalars(sa.select(Funding).order_by(Funding.id)).all()
    assert [(f.method, f.status, f.amount_kobo, f.gateway_reference) for f in rows] == [
        ("bank_transfer", "succeeded", 750_000, first["reference"]),
        ("bank_transfer", "succeeded", 120_000, second["reference"])]
    assert rows[0].fees_kobo == 7_500
    history = s.get(base + "/wallet/fundings", timeout=10).text
    assert history.count("Bank transfer") == 2
    # The same arrival's webhook again: still two credits.
    body = json.dumps({"event": "charge.success", "data": first["data"]}).encode()
    assert signed_post(base, body).status_code == 200
    assert db.session.scalar(sa.select(sa.func.count(Transfer.id)).where(
        Transfer.funding_id.is_not(None))) == 2
    assert invariants.check_invariants() == []
    assert_books_balance()


# -- the double charge: a deadlock at every step ------------------------------

class FailNthCommit:
    """Makes the n-th COMMIT (counting from :meth:`arm`) raise a transient
    error, as a deadlock would, once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.count = 0
        self.fail_at = None
        self.failed = False

    def arm(self, n):
        with self.lock:
            self.count, self.fail_at, self.failed = 0, n, False

    def __call__(self, session):
        with self.lock:
            if self.fail_at is None or not session.new and not session.dirty and not session.deleted \
                    and not session.info.get("billvend.unit_of_work"):
                return
            self.count += 1
            if self.count == self.fail_at and not self.failed:
                self.failed = True
                raise StaleDataError("injected: deadlock at this commit")


def test_a_deadlock_at_every_step_never_charges_or_credits_twice(live, monkeypatch):
    """Each unit of work of a card funding (intent, checkout URL, webhook
    store, credit, event outcome, callback) fails once with a transient
    error in turn; the rerun never calls the gateway again (the sandbox
    counts initializations per reference) and never credits twice."""
    base, sandbox = live
    sandbox.settings(webhook="before_redirect")  # one fixed order of steps
    injector = FailNthCommit()
    sa.event.listen(db.session.registry().__class__, "before_commit", injector)
    try:
        n, done = 0, False
        while not done:
            n += 1
            email = f"step{n}@example.com"
            s = customer(base, email)
            injector.arm(n)
            checkout_url, reference = start_checkout(s, base, "1000")
            page = back_from_checkout(s, choose(s, checkout_url, "success"))
            done = not injector.failed  # the journey had fewer than n commits
            injector.arm(None)
            assert page.status_code == 200
            assert sandbox.transaction(reference)["initializations"] == 1, n
            db.session.rollback()
            assert db.session.scalar(sa.select(sa.func.count(Funding.id)).join(User).where(
                User.email == email)) == 1
            assert credits_for(reference) == 1, n
            assert balance_of(email) == 100_000, n
            assert n < 30
    finally:
        sa.event.remove(db.session.registry().__class__, "before_commit", injector)
    assert n > 4  # the journey really went through several units
    assert_books_balance()


# -- concurrency (PostgreSQL) ---------------------------------------------------

@pytest.mark.postgresql
def test_one_webhook_replayed_ten_times_with_the_callback_credits_once(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    callback = choose(s, checkout_url, "success")
    body = json.dumps({"event": "charge.success",
                       "data": sandbox.transaction(reference)["transaction"] | {
                           "reference": reference, "status": "success", "amount": 500_000,
                           "currency": "NGN"}}).encode()
    barrier = threading.Barrier(11)
    codes, errors = [], []

    def webhook():
        try:
            barrier.wait(10)
            codes.append(signed_post(base, body).status_code)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def come_back():
        try:
            barrier.wait(10)
            codes.append(back_from_checkout(s, callback).status_code)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=webhook) for _ in range(10)] + [threading.Thread(target=come_back)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and codes == [200] * 11
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    db.session.rollback()
    event = db.session.scalar(sa.select(GatewayEvent))
    assert event.deliveries == 10
    assert invariants.check_invariants() == []
    assert_books_balance()


def test_callback_when_the_database_fails_never_says_nothing_was_charged(live, monkeypatch):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    callback = choose(s, checkout_url, "success")

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("UPDATE fundings", {}, Exception("server closed the connection"))

    monkeypatch.setattr(verification, "apply_verification", down)
    page = s.get(callback, timeout=20)
    assert page.status_code == 503
    assert "money is safe" in page.text and "nothing was charged" not in page.text
    monkeypatch.undo()
    assert funding_sweep_once() == 1 and credits_for(reference) == 1


def test_gateway_unreachable_at_initialize_takes_nothing_and_the_sweep_ends_it(live, app):
    base, sandbox = live
    s = customer(base)
    app.config["PAYSTACK_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens
    r = s.post(base + "/wallet/fund", data=tokens(s, base + "/wallet/fund") | {"amount": "5000"},
               allow_redirects=False, timeout=20)
    assert r.status_code == 503
    assert "could not reach the payment page. Nothing was taken" in r.text
    db.session.rollback()
    row = db.session.scalar(sa.select(Funding))
    assert row.status == "initiated" and row.authorization_url is None
    app.config["PAYSTACK_BASE_URL"] = sandbox.url
    app.config["FUNDING_GIVE_UP_SECONDS"] = 0
    assert funding_sweep_once() == 1  # the gateway never heard of it: failed
    assert funding_row(row.reference).status == "failed" and credits_for(row.reference) == 0


def test_a_bank_transfer_webhook_whose_task_was_lost_is_processed_by_the_sweep(live, app, monkeypatch):
    base, sandbox = live
    s = customer(base)
    page = s.get(base + "/wallet/fund", timeout=10).text
    csrf = CSRF_RE.search(page)
    r = s.post(base + "/wallet/bank-transfer", data={"csrf_token": csrf.group(1) or csrf.group(2)}, timeout=15)
    number = re.search(r'data-testid="account-number">(\d{10})<', r.text).group(1)
    import billvend.funding.tasks as funding_tasks

    monkeypatch.setattr(funding_tasks, "process_gateway_event", lambda event_id: (_ for _ in ()).throw(
        ConnectionError("queue down")))
    sandbox.bank_transfer(number, 400_000)  # stored, 200, but never processed
    db.session.rollback()
    event = db.session.scalar(sa.select(GatewayEvent))
    assert event.processed_at is None and balance_of("ada@example.com") == 0
    db.session.execute(sa.update(GatewayEvent).values(received_at=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    db.session.commit()
    funding_sweep_once()
    assert balance_of("ada@example.com") == 400_000
    funding_sweep_once()
    assert balance_of("ada@example.com") == 400_000
    assert_books_balance()


def test_reconciliation_flags_a_credit_the_gateway_does_not_back(live):
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base, "3000")
    back_from_checkout(s, choose(s, checkout_url, "success"))
    assert credits_for(reference) == 1
    sandbox.set_status(reference, "failed")  # the gateway now says it never succeeded (a chargeback, a bug)
    run = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date())
    assert run.flagged == 1 and run.credited == 0
    assert [i.kind for i in run.items] == ["credit_without_success"]
    row = funding_row(reference)
    assert row.needs_attention and "Reconciliation: credited, but the gateway says failed" in row.attention_reason
    assert credits_for(reference) == 1  # flagged for an admin, nothing reversed automatically


def test_one_form_submitted_five_times_at_once_initializes_once(live):
    base, sandbox = live
    s = customer(base)
    data = tokens(s, base + "/wallet/fund") | {"amount": "1500"}
    barrier = threading.Barrier(5)
    answers = []

    def submit():
        barrier.wait(10)
        r = s.post(base + "/wallet/fund", data=data, allow_redirects=False, timeout=30)
        answers.append((r.status_code, r.headers.get("Location")))

    threads = [threading.Thread(target=submit) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 5 and {status for status, _ in answers} == {303}, answers
    (checkout,) = {location for _, location in answers}
    db.session.rollback()
    (reference,) = db.session.scalars(sa.select(Funding.reference)).all()
    assert sandbox.transaction(reference)["initializations"] == 1


# -- issue 20, item 1: a bank transfer is credited to the customer verify names ---

def open_bank_account(s: requests.Session, base: str) -> str:
    """Open the signed-in customer's dedicated account; its number."""
    page = s.get(base + "/wallet/fund", timeout=10).text
    csrf = CSRF_RE.search(page)
    r = s.post(base + "/wallet/bank-transfer", data={"csrf_token": csrf.group(1) or csrf.group(2)},
               timeout=15)
    return re.search(r'data-testid="account-number">(\d{10})<', r.text).group(1)


def customer_code_of(email: str) -> str:
    db.session.rollback()
    code = db.session.scalar(sa.select(DedicatedAccount.customer_code).join(User).where(User.email == email))
    db.session.rollback()
    return code


def test_a_webhook_naming_another_customer_credits_only_the_owner_verify_names(live):
    """The victim's N7,000 transfer into her dedicated account, announced by
    a signed ``charge.success`` naming the attacker: it credited the
    attacker, and the victim's genuine webhook was then "already credited".
    Now the funding is created only after verify, for the customer verify
    names; the forged event is flagged and creates nothing; the genuine one
    still credits the owner."""
    base, sandbox = live
    victim, attacker = customer(base, "victim@example.com"), customer(base, "attacker@example.com")
    number = open_bank_account(victim, base)
    open_bank_account(attacker, base)
    sandbox.settings(webhook="never")  # the genuine webhook is held back: the forgery comes first
    arrival = sandbox.bank_transfer(number, 700_000, sync=False)
    genuine = arrival["data"]
    assert genuine["customer"]["customer_code"] == customer_code_of("victim@example.com")
    forged = json.loads(json.dumps(genuine))
    forged["customer"] = {"email": "attacker@example.com",
                          "customer_code": customer_code_of("attacker@example.com")}
    assert signed_post(base, json.dumps({"event": "charge.success", "data": forged}).encode()).status_code == 200
    assert balance_of("attacker@example.com") == 0
    assert balance_of("victim@example.com") == 0
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    [event] = db.session.scalars(sa.select(GatewayEvent)).all()
    assert event.needs_attention and event.processed_at is not None and event.funding_id is None
    assert "customer" in event.outcome and "not credited" in event.outcome
    # The owner's genuine webhook for the same reference still credits her.
    assert signed_post(base, json.dumps({"event": "charge.success", "data": genuine}).encode()).status_code == 200
    assert balance_of("victim@example.com") == 700_000
    assert balance_of("attacker@example.com") == 0
    row = db.session.scalar(sa.select(Funding))
    assert (row.status, row.customer_code, row.gateway_reference) == (
        "succeeded", customer_code_of("victim@example.com"), arrival["reference"])
    run = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date())
    assert (run.matched, run.credited, run.flagged) == (1, 0, 0)
    assert_books_balance()


def test_a_forged_webhook_after_the_owners_credit_is_flagged_and_moves_nothing(live):
    base, sandbox = live
    victim, attacker = customer(base, "victim@example.com"), customer(base, "attacker@example.com")
    number = open_bank_account(victim, base)
    arrival = sandbox.bank_transfer(number, 300_000)  # genuine webhook, credited
    assert balance_of("victim@example.com") == 300_000
    forged = dict(arrival["data"], customer={"email": "attacker@example.com"})
    assert signed_post(base, json.dumps({"event": "charge.success", "data": forged}).encode()).status_code == 200
    db.session.rollback()
    events = db.session.scalars(sa.select(GatewayEvent).order_by(GatewayEvent.id)).all()
    assert [e.needs_attention for e in events] == [False, True]
    assert "customer" in events[1].outcome
    assert balance_of("victim@example.com") == 300_000 and balance_of("attacker@example.com") == 0
    assert_books_balance()


class _Gateway:
    """No HTTP: ``verify`` and the day's list answer what the test set."""

    name = "paystack"

    def __init__(self):
        self.verified: dict[str, gateways.GatewayTransaction] = {}
        self.listed: list[gateways.GatewayTransaction] = []

    def verify(self, reference):
        return self.verified[reference]

    def transactions(self, start, end):
        return list(self.listed)


def dva_user(email: str, code: str, number: str) -> User:
    from tests.helpers import make_user

    user = make_user(email)
    db.session.add(DedicatedAccount(user_id=user.id, gateway="paystack", customer_code=code,
                                    account_number=number, account_name="DVA", bank_name="Test Bank"))
    db.session.commit()
    return user


def dva_data(reference: str, amount_kobo: int, code: str, email: str) -> dict:
    return {"reference": reference, "status": "success", "amount": amount_kobo, "currency": "NGN",
            "channel": "dedicated_nuban", "authorization": {"channel": "dedicated_nuban"},
            "customer": {"customer_code": code, "email": email},
            "paid_at": datetime.now(timezone.utc).isoformat()}


def webhook(data: dict) -> int:
    return funding_events.store_event("paystack", "charge.success", data["reference"],
                                      json.dumps({"event": "charge.success", "data": data}).encode()).event_id


def test_an_arrival_is_recorded_for_the_customer_verify_names_not_the_webhooks(app):
    """Same as the sandbox test, without HTTP (both backends): the webhook
    names B, verify names A."""
    a = dva_user("a@example.com", "CUS_A", "9900000010")
    b = dva_user("b@example.com", "CUS_B", "9900000011")
    gw = _Gateway()
    gw.verified["DVA_1"] = gateways.transaction_from(dva_data("DVA_1", 500_000, "CUS_A", "a@example.com"))
    forged = webhook(dva_data("DVA_1", 500_000, "CUS_B", "b@example.com"))
    assert funding_events.process_event(forged, gw) != "credited"
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    event = db.session.get(GatewayEvent, forged)
    assert event.needs_attention and "CUS_B" in event.outcome and "CUS_A" in event.outcome
    genuine = webhook(dva_data("DVA_1", 500_000, "CUS_A", "a@example.com"))
    assert genuine != forged
    assert funding_events.process_event(genuine, gw) == "credited"
    assert balance_of("a@example.com") == 500_000 and balance_of("b@example.com") == 0
    row = db.session.scalar(sa.select(Funding))
    assert (row.user_id, row.customer_code, row.channel) == (a.id, "CUS_A", "dedicated_nuban")
    assert b.id != row.user_id
    assert_books_balance()


def test_an_arrival_verify_does_not_call_a_dedicated_account_transfer_creates_nothing(app):
    dva_user("a@example.com", "CUS_A", "9900000010")
    gw = _Gateway()
    card = dict(dva_data("DVA_2", 500_000, "CUS_A", "a@example.com"), channel="card",
                authorization={"channel": "card"})
    gw.verified["DVA_2"] = gateways.transaction_from(card)
    event_id = webhook(dva_data("DVA_2", 500_000, "CUS_A", "a@example.com"))
    funding_events.process_event(event_id, gw)
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0
    assert db.session.get(GatewayEvent, event_id).needs_attention
    assert balance_of("a@example.com") == 0


def test_a_bank_transfer_credit_outside_the_account_owners_wallet_is_reported(app):
    """The new invariant: a dedicated-account credit lands in the wallet of
    the owner of the account the funding names (here verify named A's
    account, and the money went to B, as the webhook said)."""
    from billvend.ledger import services as ledger
    from billvend.ledger import invariants as ledger_invariants

    a = dva_user("a@example.com", "CUS_A", "9900000010")
    b = dva_user("b@example.com", "CUS_B", "9900000011")
    row = Funding(reference="FND-wrong-owner", user_id=b.id, wallet_id=b.wallet.id, amount_kobo=200_000,
                  gateway="paystack", gateway_reference="DVA_3", status="pending",
                  idempotency_key="nuban:DVA_3", method="bank_transfer", customer_code="CUS_A")
    db.session.add(row)
    db.session.commit()
    ledger.post_transfer(kind="funding", debit_wallet_id=ledger.system_wallet_id("funding"),
                         credit_wallet_id=b.wallet.id, amount_kobo=200_000, funding_id=row.id)
    row.status = "succeeded"
    db.session.commit()
    found = [v for v in ledger_invariants.check_invariants() if v.invariant == "dedicated_account_owner"]
    assert [(v.subject, v.subject_id) for v in found] == [("funding", row.id)]
    assert a.id != b.id


def test_verify_naming_another_customer_than_the_arrivals_is_flagged_not_credited(app):
    b = dva_user("b@example.com", "CUS_B", "9900000011")
    dva_user("a@example.com", "CUS_A", "9900000010")
    row = Funding(reference="FND-verify-other", user_id=b.id, wallet_id=b.wallet.id, amount_kobo=200_000,
                  gateway="paystack", gateway_reference="DVA_4", status="pending",
                  idempotency_key="nuban:DVA_4", method="bank_transfer", customer_code="CUS_B")
    db.session.add(row)
    db.session.commit()
    result = verification.apply_verification(row.id, gateways.transaction_from(
        dva_data("DVA_4", 200_000, "CUS_A", "a@example.com")))
    assert result.outcome == "flagged" and "CUS_A" in result.detail
    assert balance_of("b@example.com") == 0


def test_reconciliation_flags_a_bank_transfer_credited_to_another_customer_than_the_gateway_lists(app):
    """Reconciliation compares the customer too: a credited arrival whose
    customer the gateway's list disagrees with is not "matched"."""
    dva_user("a@example.com", "CUS_A", "9900000010")
    dva_user("b@example.com", "CUS_B", "9900000011")
    gw = _Gateway()
    gw.verified["DVA_5"] = gateways.transaction_from(dva_data("DVA_5", 100_000, "CUS_B", "b@example.com"))
    assert funding_events.process_event(webhook(dva_data("DVA_5", 100_000, "CUS_B", "b@example.com")), gw) == "credited"
    gw.listed = [gateways.transaction_from(dva_data("DVA_5", 100_000, "CUS_A", "a@example.com"))]
    run = reconciliation.reconcile(datetime.now(reconciliation.LAGOS).date(), gw)
    assert (run.matched, run.flagged) == (0, 1)
    assert [i.kind for i in run.items] == ["customer_mismatch"]
    assert "CUS_A" in run.items[0].detail


def test_a_non_ascii_signature_header_is_401_not_500(live):
    base, sandbox = live
    body = json.dumps({"event": "charge.success", "data": {"reference": "T_1", "status": "success"}}).encode()
    for signature in ("\u00e9" * 128, gateways.sign(SECRET, body)[:-1] + "\u00ff"):
        r = requests.post(base + "/webhooks/paystack", data=body, timeout=10,
                          headers={"Content-Type": "application/json",
                                   "x-paystack-signature": signature.encode("latin-1")})
        assert r.status_code == 401, r.text
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(GatewayEvent.id))) == 0


def test_a_late_success_webhook_while_the_gateway_is_unreachable_is_not_lost(live, app):
    """Abandoned (failed), then the bank confirms: the webhook's verify cannot
    reach the gateway. The funding is closed, so the funding sweep never looks
    at it again; the event must stay open for the sweep to retry it."""
    base, sandbox = live
    sandbox.settings(webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    back_from_checkout(s, choose(s, checkout_url, "abandoned"))
    assert funding_row(reference).status == "failed"
    sandbox.set_status(reference, "success")
    body = json.dumps({"event": "charge.success", "data": sandbox.transaction(reference)["transaction"]
                       | {"status": "success", "amount": 500_000, "currency": "NGN"}}).encode()
    app.config["PAYSTACK_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # verify cannot get through
    assert signed_post(base, body).status_code == 200
    assert credits_for(reference) == 0
    app.config["PAYSTACK_BASE_URL"] = sandbox.url
    db.session.rollback()
    for event in db.session.scalars(sa.select(GatewayEvent)):
        event.received_at -= timedelta(minutes=5)  # the sweep retries events older than a minute
    db.session.commit()
    funding_sweep_once()
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    funding_sweep_once()
    assert credits_for(reference) == 1
    db.session.rollback()
    assert db.session.scalar(sa.select(GatewayEvent.processed_at)) is not None
    assert_books_balance()


def test_try_again_after_the_gateway_was_unreachable_reaches_the_checkout(live, app):
    """The 503 page says "please try again"; submitting that page again must
    not hang on the first (dead) attempt and refuse."""
    base, sandbox = live
    s = customer(base)
    app.config["PAYSTACK_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens
    first = tokens(s, base + "/wallet/fund")
    r = s.post(base + "/wallet/fund", data=first | {"amount": "5000"}, allow_redirects=False, timeout=20)
    assert r.status_code == 503
    app.config["PAYSTACK_BASE_URL"] = sandbox.url
    key = KEY_RE.search(r.text).group(1)
    assert key != first["idempotency_key"]
    again = s.post(base + "/wallet/fund", data={"csrf_token": first["csrf_token"], "idempotency_key": key,
                                                 "amount": "5000"}, allow_redirects=False, timeout=20)
    assert again.status_code == 303 and "/checkout/" in again.headers["Location"]
    db.session.rollback()
    refs = db.session.scalars(sa.select(Funding.reference).order_by(Funding.id)).all()
    assert len(refs) == 2
    assert sandbox.transaction(refs[0])["initializations"] == 0
    assert sandbox.transaction(refs[1])["initializations"] == 1


class _StubGateway:
    """Answers verify with a fixed transaction (no HTTP)."""

    name = "paystack"

    def __init__(self, tx):
        self.tx = tx

    def verify(self, reference):
        return self.tx


def test_a_bank_transfer_arrival_too_large_for_the_database_is_flagged_not_retried_for_ever(app):
    from tests.helpers import make_user

    user = make_user("big@example.com")
    db.session.add(DedicatedAccount(user_id=user.id, gateway="paystack", customer_code="CUS_big",
                                    account_number="9900000001", account_name="BIG", bank_name="Test Bank"))
    db.session.commit()
    huge = 2 ** 63  # one more than BIGINT holds
    data = {"reference": "DVA_huge", "status": "success", "amount": huge, "currency": "NGN",
            "channel": "dedicated_nuban", "customer": {"customer_code": "CUS_big"},
            "authorization": {"channel": "dedicated_nuban"}}
    stored = funding_events.store_event("paystack", "charge.success", "DVA_huge",
                                        json.dumps({"event": "charge.success", "data": data}).encode())
    gw = _StubGateway(gateways.transaction_from(data))
    funding_events.process_event(stored.event_id, gw)  # no exception
    db.session.rollback()
    event = db.session.get(GatewayEvent, stored.event_id)
    assert event.processed_at is not None and event.needs_attention
    assert "usable amount" in event.outcome
    assert db.session.scalar(sa.select(sa.func.count(Funding.id))) == 0


def test_verifying_a_funding_asked_about_many_times_still_backs_off(app):
    """Every callback visit counts a verify attempt; the backoff is
    2**attempts: past 1024 attempts the float overflowed and every verify of
    the funding raised (a 500 on the callback, an error in every sweep, and
    no next_verify_at, so the sweep asked the gateway every minute)."""
    from tests.helpers import make_user

    user = make_user()
    start = funding_checkout.begin_checkout(user, 100_000, "many-attempts-key-1", "http://x/cb",
                                            gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    row.verify_attempts = 1100
    db.session.commit()
    for status in ("ongoing", None):
        if status is None:  # the gateway could not be asked
            class Down(_StubGateway):
                def verify(self, reference):
                    raise gateways.GatewayError("down")
            gw = Down(None)
        else:
            gw = _StubGateway(gateways.GatewayTransaction(reference=start.reference, status=status))
        result = verification.verify_funding(row.id, gw)
        assert result.outcome in ("pending", "unknown")
        db.session.rollback()
        row = db.session.get(Funding, row.id)
        assert row.next_verify_at is not None
        assert row.next_verify_at - db_now() <= timedelta(
            seconds=app.config["FUNDING_VERIFY_MAX_DELAY_SECONDS"] + 5)


class _ListsButCannotVerify:
    """A gateway whose list works and whose verify times out."""

    name = "simulated"

    def __init__(self, txs):
        self.txs = txs

    def transactions(self, start, end):
        return self.txs

    def verify(self, reference):
        raise gateways.GatewayError("verify: no answer within 12 s")


def test_a_reconciliation_that_cannot_verify_an_open_funding_leaves_it_to_the_sweep(app):
    """The customer paid, the webhook was lost, the funding is open: the
    sweep would credit it. A reconciliation whose verify times out must not
    flag it (flagged fundings are skipped by the sweep and refused by the
    admin's "verify now"), turning an automatic credit into manual work."""
    from tests.helpers import make_user

    user = make_user()
    start = funding_checkout.begin_checkout(user, 100_000, "reconcile-timeout-1", "http://x/cb",
                                            gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    paid = gateways.GatewayTransaction(reference=start.reference, status="success", amount_kobo=100_000,
                                       currency="NGN")
    run = reconciliation.reconcile(db_now().date(), _ListsButCannotVerify([paid]))
    assert run.credited == 0 and len(run.items) == 1  # reported in the run
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.status == "pending" and not row.needs_attention and row.next_verify_at is not None
    # Once due, the sweep credits it.
    row.next_verify_at = db_now() - timedelta(seconds=1)
    db.session.commit()
    assert verification.due_fundings() == [row.id]
    assert verification.verify_funding(row.id, gateways.SimulatedGateway()).outcome == "credited"


def test_a_checkout_never_answered_ends_abandoned_and_a_late_payment_is_still_credited(live):
    """A customer who opens the checkout and walks away: Paystack then
    verifies the transaction as ``abandoned``. The sandbox kept it
    ``ongoing`` for ever, so the funding stayed pending and the sweep asked
    the gateway about it every hour, for ever."""
    import time

    base, sandbox = live
    sandbox.settings(abandon_after_seconds=0.5)
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    row = funding_row(reference)
    assert verification.verify_funding(row.id).outcome == "pending"  # still on the checkout page
    time.sleep(0.7)
    assert sandbox.transaction(reference)["transaction"]["status"] == "ongoing"  # the page still works
    result = verification.verify_funding(row.id)
    assert (result.outcome, result.detail) == ("failed", "abandoned")
    db.session.rollback()
    assert db.session.get(Funding, row.id).next_verify_at is None  # the sweep stops asking
    # The customer comes back to the open page and pays after all: credited once.
    back_from_checkout(s, choose(s, checkout_url, "success"))
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_a_funding_the_gateway_never_settles_is_closed_after_FUNDING_EXPIRE_SECONDS(app):
    """A gateway that says ``ongoing`` (or ``pending``, ``queued``...) for ever
    must not be asked every hour for ever: past ``FUNDING_EXPIRE_SECONDS``
    the funding is closed as failed. Nothing was credited, and a late
    success still credits it through the webhook or the reconciliation."""
    from tests.helpers import make_user

    user = make_user()
    start = funding_checkout.begin_checkout(user, 100_000, "never-settles-key-1", "http://x/cb",
                                            gateways.SimulatedGateway())
    row = db.session.scalar(sa.select(Funding).where(Funding.reference == start.reference))
    ongoing = _StubGateway(gateways.GatewayTransaction(reference=start.reference, status="ongoing"))
    assert verification.verify_funding(row.id, ongoing).outcome == "pending"
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    row.created_at = db_now() - timedelta(seconds=app.config["FUNDING_EXPIRE_SECONDS"] + 1)
    db.session.commit()
    result = verification.verify_funding(row.id, ongoing)
    assert result.outcome == "failed" and "no final answer" in result.detail
    db.session.rollback()
    row = db.session.get(Funding, row.id)
    assert row.status == "failed" and row.next_verify_at is None and row.id not in verification.due_fundings()
    paid = gateways.GatewayTransaction(reference=start.reference, status="success", amount_kobo=100_000,
                                       currency="NGN")
    assert verification.verify_funding(row.id, _StubGateway(paid)).outcome == "credited"
    assert_books_balance()


def test_a_closed_checkout_paid_days_later_without_a_webhook_is_credited_by_the_nightly_recheck(
        app, monkeypatch):
    """Found by the simulator (seed 1088530841, 29,000 steps, on the sim26
    branch): a checkout closed as failed (no final answer in 24 h, or
    abandoned), then paid about 57 hours after it began with every webhook
    lost and no return to the callback. The sweep no longer asks about a
    closed funding, and the nightly reconciliation lists the gateway's
    transactions by the day they began (2 days), so the money was at the
    gateway and on no page. The nightly run now verifies every uncredited
    card funding closed in the last FUNDING_RECHECK_FAILED_DAYS days again."""
    from billvend.funding import tasks as funding_tasks
    from tests.helpers import make_user

    user = make_user()
    start = funding_checkout.begin_checkout(user, 100_000, "paid-days-later-1", "http://x/cb",
                                            gateways.SimulatedGateway())
    old = funding_checkout.begin_checkout(user, 100_000, "paid-long-ago-1", "http://x/cb",
                                          gateways.SimulatedGateway())
    ongoing = _StubGateway(gateways.GatewayTransaction(reference=start.reference, status="ongoing"))
    for reference in (start.reference, old.reference):
        row = db.session.scalar(sa.select(Funding).where(Funding.reference == reference))
        row.created_at = db_now() - timedelta(seconds=app.config["FUNDING_EXPIRE_SECONDS"] + 1)
        db.session.commit()
        assert verification.verify_funding(row.id, ongoing).outcome == "failed"
    db.session.execute(sa.update(Funding).where(Funding.reference == start.reference)
                       .values(created_at=db_now() - timedelta(hours=57)))
    db.session.execute(sa.update(Funding).where(Funding.reference == old.reference)
                       .values(created_at=db_now() - timedelta(days=30)))
    db.session.commit()

    asked = []

    class PaidLate:
        name = "simulated"

        def verify(self, reference):
            asked.append(reference)
            return gateways.GatewayTransaction(reference=reference, status="success",
                                               amount_kobo=100_000, currency="NGN")

        def transactions(self, start, end):
            return []  # the gateway lists it under the day it began: no night's run sees it

    monkeypatch.setattr(gateways, "gateway", lambda: PaidLate())
    funding_tasks.daily_reconciliation.call_local()
    funding_tasks.daily_reconciliation.call_local()  # a second night changes nothing
    db.session.rollback()
    assert asked == [start.reference]  # once: credited the first night; the 30-day-old one is past the window
    assert credits_for(start.reference) == 1 and credits_for(old.reference) == 0
    assert balance_of(user.email) == 100_000
    assert_books_balance()


def test_a_sweep_stops_asking_once_the_gateway_is_unreachable(app, monkeypatch):
    """During a gateway outage every stored webhook still waiting was
    verified again at every sweep, each waiting out its deadline (12 s):
    a hundred of them made one sweep outlast its lease. The first
    unreachable answer ends the sweep; the next one tries again."""
    from tests.helpers import make_user

    user = make_user()
    for n in range(3):
        start = funding_checkout.begin_checkout(user, 100_000, f"outage-key-{n:04d}-x", "http://x/cb",
                                                gateways.SimulatedGateway())
        body = {"event": "charge.success", "data": {"reference": start.reference, "status": "success",
                                                   "amount": 100_000, "currency": "NGN"}}
        funding_events.store_event("simulated", "charge.success", start.reference, json.dumps(body).encode())
    db.session.execute(sa.update(GatewayEvent).values(
        received_at=db_now() - timedelta(seconds=600)))
    db.session.execute(sa.update(Funding).values(next_verify_at=db_now() - timedelta(seconds=1)))
    db.session.commit()
    calls = []

    class Down:
        name = "simulated"

        def verify(self, reference):
            calls.append(reference)
            raise gateways.GatewayError("no answer within 12 s")

    monkeypatch.setattr(gateways, "gateway", lambda: Down())
    funding_sweep_once()
    assert len(calls) == 1
    monkeypatch.setattr(gateways, "gateway", lambda: gateways.SimulatedGateway())
    funding_sweep_once()  # the gateway is back: everything is credited
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Funding.id)).where(Funding.status == "succeeded")) == 3
    assert_books_balance()


def test_an_abandoned_checkout_paid_later_without_a_webhook_is_credited_by_reconciliation(live):
    """Failed as abandoned, then paid after all; the webhook never came and
    the customer closed the tab before the redirect: only the
    reconciliation can find it, and it credits it once."""
    import time

    base, sandbox = live
    sandbox.settings(abandon_after_seconds=0.3, webhook="never")
    s = customer(base)
    checkout_url, reference = start_checkout(s, base)
    row = funding_row(reference)
    time.sleep(0.4)
    assert verification.verify_funding(row.id).outcome == "failed"
    choose(s, checkout_url, "success")  # paid; the redirect back is never followed
    today = datetime.now(reconciliation.LAGOS).date()
    run = reconciliation.reconcile(today)
    assert run.credited == 1
    reconciliation.reconcile(today)  # a second night's run of the same day credits nothing more
    assert credits_for(reference) == 1 and balance_of("ada@example.com") == 500_000
    assert_books_balance()


def test_a_webhook_with_another_amount_for_the_right_customer_never_blocks_the_genuine_credit(app):
    """A signed ``charge.success`` naming the right customer but another
    amount, processed before the genuine one: verify is the authority, so
    the arrival is recorded at verify's amount and credited to its owner
    once; the webhook that disagreed is flagged. (The arrival used to be
    recorded at the first webhook's amount: every later verify then found
    "gateway amount differs" and the genuine webhook could never credit.)"""
    dva_user("a@example.com", "CUS_A", "9900000010")
    gw = _Gateway()
    gw.verified["DVA_6"] = gateways.transaction_from(dva_data("DVA_6", 500_000, "CUS_A", "a@example.com"))
    wrong = webhook(dva_data("DVA_6", 100, "CUS_A", "a@example.com"))
    funding_events.process_event(wrong, gw)
    genuine = webhook(dva_data("DVA_6", 500_000, "CUS_A", "a@example.com"))
    funding_events.process_event(genuine, gw)
    assert balance_of("a@example.com") == 500_000
    row = db.session.scalar(sa.select(Funding))
    assert (row.status, row.amount_kobo, row.needs_attention) == ("succeeded", 500_000, False)
    assert db.session.get(GatewayEvent, wrong).needs_attention
    assert not db.session.get(GatewayEvent, genuine).needs_attention
    assert_books_balance()


def test_a_credited_funding_queues_one_receipt_email_with_the_new_balance(client, auth, fund):
    """Issue 23: the funding receipt is queued in the unit that credits the
    wallet; verifying again (callback reloaded) queues nothing more."""
    from billvend.notifications.models import Message

    auth.signup()
    first = fund("5000")
    assert first.status_code in (200, 302, 303)
    funding = db.session.scalar(sa.select(Funding))
    assert funding.status == "succeeded"
    verification.verify_funding(funding.id)
    # (signup's own mail, the address verification, is not the funding's)
    rows = db.session.scalars(sa.select(Message).where(Message.template != "verify_email")).all()
    assert [(m.event_key, m.channel, m.recipient, m.template) for m in rows] == [
        (f"funding:{funding.id}:credited", "email", "ada@example.com", "funding_receipt")]
    assert (rows[0].context["amount"], rows[0].context["balance"]) == ("₦5,000.00", "₦5,000.00")
