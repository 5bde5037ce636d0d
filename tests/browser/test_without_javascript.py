"""The same journeys with JavaScript switched off: every step is a full page
load (forms post, the payment page refreshes itself until it is final), and
nothing that needs JavaScript is offered."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.flows import (
    field_error, fill_payment, fund, press_pay, sign_up, submit_payment, wait_final,
)

pytestmark = pytest.mark.once


@pytest.fixture
def page(context_factory):
    page = context_factory(javascript=False).new_page()
    page.loads = []
    page.on("load", lambda: page.loads.append(page.url))
    return page


def test_sign_up_fund_pay_and_get_the_token_with_full_page_loads(page):
    sign_up(page)
    fund(page, "10000")
    expect(page.get_by_test_id("balance")).to_have_text("₦10,000.00")

    # Errors come back on the re-rendered form, next to the field.
    fill_payment(page, "1111111111111", "20000")
    press_pay(page)
    expect(field_error(page, "amount")).to_contain_text("Your wallet balance is ₦10,000.00")
    page.get_by_label("Amount (₦)").fill("1.001")
    press_pay(page)
    expect(field_error(page, "amount")).to_have_text("Use at most two decimal places (kobo).")

    page.get_by_label("Amount (₦)").fill("2500")
    submit_payment(page)
    loads_on_arrival = len(page.loads)
    first_status = page.locator("#payment-status").get_attribute("data-status")
    wait_final(page, "successful")
    if first_status != "successful":
        # No htmx: the page reloaded itself (meta refresh) to show progress.
        assert len(page.loads) > loads_on_arrival, page.loads
    expect(page.get_by_test_id("token")).to_have_text(re.compile(r"^\s*\d{4}(-\d{4}){4}\s*$"))
    # The copy button needs JavaScript: not offered; the token is plain text.
    expect(page.get_by_role("button", name="Copy token")).to_be_hidden()
    expect(page.locator("meta[http-equiv=refresh]")).to_have_count(0)

    page.get_by_role("link", name="History").first.click()
    expect(page.locator("table.statement tbody tr").filter(has_text="Electricity · Ikeja Electric (IKEDC)")).to_contain_text("-₦2,500.00")
    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦7,500.00")


def test_a_refund_shows_up_with_full_page_loads(page):
    sign_up(page)
    fund(page, "3000")
    fill_payment(page, "400000000000", "1000")
    submit_payment(page)
    wait_final(page, "reversed")
    expect(page.locator("#payment-status")).to_contain_text("₦1,000.00 has been refunded to your wallet")
    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦3,000.00")


def test_a_bad_funding_amount_is_explained_next_to_the_field(page):
    sign_up(page)
    page.goto("/wallet/fund")
    page.get_by_label("Amount (₦)").fill("-5")
    page.get_by_role("button", name="Fund wallet").click()
    expect(field_error(page, "amount")).to_have_text("Enter a positive amount.")
    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦0.00")
