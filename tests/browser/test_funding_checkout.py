"""Chromium through the gateway's hosted checkout: the real processes
(gunicorn ``web``, Huey ``worker`` and the ``sandbox`` of the Procfile) with
``FUNDING_GATEWAY=paystack`` against the Paystack-shaped sandbox, as
``make run`` runs them. The card journey leaves billvend for the sandbox's
checkout page and comes back; the bank transfer journey shows the customer's
account number and credits a transfer into it."""

from __future__ import annotations

import re
import time

import pytest
import requests
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP
from tests.browser.flows import sign_up
from tests.stack import Stack, free_port

pytestmark = pytest.mark.once


@pytest.fixture(scope="module")
def paystack_stack(browser, tmp_path_factory):
    sandbox_url = f"http://127.0.0.1:{free_port()}"
    stack = Stack(tmp_path_factory.mktemp("paystack-stack"), {
        "FUNDING_GATEWAY": "paystack",
        "SANDBOX_URL": sandbox_url,  # where `python -m billvend.sandbox` listens; both base URLs follow
        "SIMULATOR_DELAY_SECONDS": "0",
    })
    try:
        stack.migrate()
        stack.start("sandbox")
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(sandbox_url + "/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError("sandbox did not start:\n" + stack.log("sandbox"))
                time.sleep(0.2)
        stack.start("web")
        stack.start("worker")
        yield stack, sandbox_url
    finally:
        stack.close()


@pytest.fixture
def page(browser, paystack_stack):
    stack, _ = paystack_stack
    context = browser.new_context(base_url=stack.base_url, viewport=DESKTOP, locale="en-NG",
                                  timezone_id="Africa/Lagos")
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()


def test_card_checkout_through_the_hosted_page(page, paystack_stack):
    stack, sandbox_url = paystack_stack
    sign_up(page)
    page.goto("/wallet/fund")
    page.get_by_label("Amount (₦)").fill("2500")
    page.get_by_role("button", name="Fund wallet").click()
    # On the gateway's own page now.
    expect(page.get_by_role("heading", name="Sandbox checkout")).to_be_visible()
    assert page.url.startswith(sandbox_url + "/checkout/")
    page.get_by_role("button", name="Pay ₦2,500.00 (success)").click()
    # Back on billvend, verified server-side.
    expect(page.get_by_role("status").filter(has_text="₦2,500.00 added to your wallet")).to_be_visible()
    expect(page.get_by_test_id("balance")).to_have_text("₦2,500.00")
    page.goto("/wallet/fundings")
    expect(page.get_by_test_id("fundings").locator("tbody tr").first).to_contain_text("Added to your wallet")


@pytest.mark.parametrize("button, words", [
    ("Card declined (failed)", "Your bank declined this card payment (the bank did not approve it): nothing was taken."),
    ("Cancel payment (abandoned)", "You closed the checkout without paying: nothing was taken."),
])
def test_a_declined_card_or_a_cancelled_checkout_takes_nothing_and_can_be_tried_again(
        page, paystack_stack, button, words):
    sign_up(page)
    page.goto("/wallet/fund")
    page.get_by_label("Amount (₦)").fill("1000")
    page.get_by_role("button", name="Fund wallet").click()
    page.get_by_role("button", name=button).click()
    expect(page.get_by_role("alert")).to_have_text(words)
    expect(page.get_by_test_id("balance")).to_have_text("₦0.00")
    # "Try again" with the amount kept: a new checkout for the same amount.
    expect(page.get_by_label("Amount (₦)")).to_have_value("1000")
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", name="Sandbox checkout")).to_be_visible()
    expect(page.get_by_text("Pay ₦1,000.00 to billvend")).to_be_visible()


def test_bank_transfer_account_and_credit(page, paystack_stack):
    stack, sandbox_url = paystack_stack
    sign_up(page)
    page.goto("/wallet/fund")
    page.get_by_role("button", name="Pay by bank transfer").click()
    number = page.get_by_test_id("account-number").inner_text()
    assert re.fullmatch(r"\d{10}", number)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.base_url)
    page.get_by_role("button", name="Copy account number").click()
    expect(page.locator("#account-copy-feedback")).to_have_text("Account number copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == number
    r = requests.post(sandbox_url + "/sandbox/bank-transfers",
                      json={"account_number": number, "amount": 300_000}, timeout=10)
    assert r.status_code == 201
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page.goto("/")
        if page.get_by_test_id("balance").inner_text() == "₦3,000.00":
            break
        time.sleep(0.5)
    expect(page.get_by_test_id("balance")).to_have_text("₦3,000.00")
    page.goto("/wallet/fundings")
    expect(page.get_by_test_id("fundings")).to_contain_text("Bank transfer")
