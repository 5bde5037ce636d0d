"""A customer in a real browser (Chromium), with JavaScript and htmx on.

Against the real gunicorn + Huey worker: sign up, fund, choose the disco and
meter and see the customer's name appear (htmx), pay, watch the status move
without a reload until the token appears, copy it, find it in the history;
a payment the disco never receives ends refunded with the balance restored;
wrong amounts get their message next to the field. Screenshots of the
dashboard, the pay form and a successful payment, on a phone and a desktop,
go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, MOBILE, shoot
from tests.browser.flows import (
    field_error, fill_payment, fund, press_pay, sign_up, submit_payment, wait_final,
)

pytestmark = pytest.mark.once

# Records every status the payment panel shows, from the first paint on, so a
# test can tell the status moved on screen (not just that it ended well).
RECORD_STATUSES = """
window.__statuses = [];
const note = () => {
  const panel = document.getElementById("payment-status");
  const status = panel && panel.dataset.status;
  if (status && window.__statuses[window.__statuses.length - 1] !== status) window.__statuses.push(status);
};
document.addEventListener("DOMContentLoaded", () => {
  note();
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
});
"""


def test_sign_up_fund_verify_pay_copy_token_and_find_it_in_history(context_factory):
    context = context_factory()
    context.add_init_script(RECORD_STATUSES)
    page = context.new_page()
    sign_up(page)
    fund(page, "10000")
    expect(page.get_by_test_id("balance")).to_have_text("₦10,000.00")

    # The customer's name appears while they fill the form, without a reload.
    with page.expect_request(lambda r: r.url.endswith("/bills/electricity/verify")) as verify:
        fill_payment(page, "1111111111111", "2500")
    # An htmx request (not a page load), carrying the CSRF token as a header
    # (hx-headers on <body>).
    assert verify.value.resource_type in {"xhr", "fetch"}, verify.value.resource_type
    assert verify.value.headers.get("x-csrftoken"), verify.value.headers
    page.evaluate("window.__sameDocument = true")
    customer = page.get_by_test_id("customer")
    expect(customer).to_be_visible()
    expect(customer).to_contain_text(re.compile(r"Customer:\s+[A-Z]+ [A-Z]+"))
    assert page.evaluate("window.__sameDocument") is True

    submit_payment(page)
    page.evaluate("window.__sameDocument = true")
    expect(page.get_by_role("heading", name="Electricity · Ikeja Electric (IKEDC)")).to_be_visible()
    wait_final(page, "successful")
    # Same document all along: htmx swapped the status panel, nothing reloaded.
    assert page.evaluate("window.__sameDocument") is True
    statuses = page.evaluate("window.__statuses")
    assert statuses[-1] == "successful" and len(statuses) >= 2, statuses
    assert set(statuses[:-1]) <= {"pending", "vending"}, statuses
    assert "hx-trigger" not in page.locator("#payment-status").evaluate("e => e.outerHTML")
    # Screen readers hear the change, once, from a region that is not swapped.
    expect(page.locator("#status-announcer")).to_have_text("Payment status: Token issued.")

    token_text = page.get_by_test_id("token").inner_text().strip()
    assert re.fullmatch(r"\d{4}(-\d{4}){4}", token_text), token_text
    expect(page.locator("#payment-status")).to_contain_text("Token issued")

    page.get_by_role("button", name="Copy token").click()
    expect(page.locator("#copy-feedback")).to_have_text("Token copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == token_text.replace("-", "")

    # History lists the payment, with its outcome, linking back to it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    row = page.locator("table.statement tbody tr").filter(has_text="Electricity · Ikeja Electric (IKEDC)")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("1111111111111")
    expect(row.get_by_test_id("row-token")).to_have_text(token_text)
    expect(row).to_contain_text("-₦2,500.00")
    expect(row).to_contain_text("Token issued")
    expect(page.locator("table.statement tbody tr").filter(has_text="Wallet funding")).to_contain_text("+₦10,000.00")
    page.get_by_role("link", name="Electricity · Ikeja Electric (IKEDC)").click()
    expect(page.get_by_test_id("token")).to_have_text(token_text)

    # The printable receipt carries the token and the amount.
    page.locator(".receipt-menu > summary").click()
    page.get_by_role("link", name="Print or view receipt").click()
    expect(page.get_by_role("heading", name="Electricity receipt")).to_be_visible()
    expect(page.locator(".receipt")).to_contain_text(token_text)
    expect(page.locator(".receipt .amount")).to_have_text("₦2,500.00")
    shoot(page, "receipt-desktop")
    page.emulate_media(media="print")
    shoot(page, "receipt-print")
    page.emulate_media(media="screen")

    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦7,500.00")
    assert context.problems == []


def test_screenshots_of_dashboard_pay_form_and_successful_payment(context_factory):
    """The three pages customers see most, on a phone and a desktop."""
    for name, viewport in (("mobile", MOBILE), ("desktop", DESKTOP)):
        page = context_factory(viewport=viewport).new_page()
        sign_up(page)
        shoot(page, f"dashboard-empty-{name}")
        fund(page, "20000")
        fill_payment(page, "1111111111111", "1500")
        expect(page.get_by_test_id("customer")).to_be_visible()
        shoot(page, f"pay-form-{name}")
        submit_payment(page)
        shoot(page, f"payment-in-progress-{name}")
        wait_final(page, "successful")
        # Horizontal scrolling on a phone is a layout bug.
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
        shoot(page, f"payment-successful-{name}")
        page.goto("/")
        expect(page.get_by_test_id("balance")).to_have_text("₦18,500.00")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
        shoot(page, f"dashboard-{name}")
        page.goto("/history")
        shoot(page, f"history-{name}")
        page.goto("/no-such-page")
        shoot(page, f"not-found-{name}")


def test_a_payment_the_disco_never_receives_is_refunded_on_screen(context_factory):
    context = context_factory()
    context.add_init_script(RECORD_STATUSES)
    page = context.new_page()
    sign_up(page)
    fund(page, "5000")
    # 400000000000: the provider never answers and never vended; the requery
    # says so, and the payment is refunded (exactly once).
    fill_payment(page, "400000000000", "2000")
    expect(page.get_by_test_id("customer")).to_be_visible()
    submit_payment(page)
    page.evaluate("window.__sameDocument = true")
    wait_final(page, "reversed")
    assert page.evaluate("window.__sameDocument") is True
    panel = page.locator("#payment-status")
    expect(panel).to_contain_text("Refunded")
    expect(panel).to_contain_text("₦2,000.00 has been refunded to your wallet")
    expect(page.locator(".steps [aria-current=step]")).to_have_text("Refunded to your wallet")
    assert "successful" not in page.evaluate("window.__statuses")
    shoot(page, "payment-refunded-desktop")

    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦5,000.00")
    recent = page.locator("table.statement")
    expect(recent.locator("tr").filter(has_text="Refund · Ikeja Electric (IKEDC)")).to_contain_text("+₦2,000.00")
    expect(page.get_by_role("heading", name="In progress")).to_have_count(0)


def test_wrong_amounts_and_meters_are_explained_next_to_the_field(page):
    sign_up(page)

    page.goto("/wallet/fund")
    page.get_by_label("Amount (₦)").fill("50")
    page.get_by_role("button", name="Fund wallet").click()
    expect(field_error(page, "amount")).to_have_text("The smallest amount is ₦100.00.")
    page.get_by_label("Amount (₦)").fill("1000")
    page.get_by_role("button", name="Fund wallet").click()
    expect(page.get_by_test_id("balance")).to_have_text("₦1,000.00")

    # More than the wallet holds: refused, the balance is named, nothing moves.
    fill_payment(page, "1111111111111", "5000")
    expect(page.get_by_test_id("customer")).to_be_visible()
    press_pay(page)
    expect(field_error(page, "amount")).to_contain_text("Your wallet balance is ₦1,000.00")
    # What the customer typed is still there to correct.
    expect(page.get_by_label("Meter number")).to_have_value("1111111111111")

    for typed, message in (("12.345", "Use at most two decimal places (kobo)."),
                           ("abc", "Enter an amount in naira, like 1500 or 1500.50."),
                           ("100", "The smallest amount is ₦500.00.")):
        page.get_by_label("Amount (₦)").fill(typed)
        press_pay(page)
        expect(field_error(page, "amount")).to_have_text(message)

    # A meter the disco does not know is flagged while typing (htmx) ...
    page.get_by_label("Meter number").fill("0000000000000")
    expect(page.locator("#verification [role=alert]")).to_contain_text("Meter not found")
    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦1,000.00")
    expect(page.get_by_role("heading", name="In progress")).to_have_count(0)
