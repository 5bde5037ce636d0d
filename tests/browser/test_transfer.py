"""Sending money to another customer in a real browser (Chromium), phone-sized
(issue 27): from the dashboard's "Send money" to the review step (the
recipient's name masked, "No fee", the total), then the receipt, the
balance and the history line; the recipient sees "Transfer from". Against the
real gunicorn + Huey worker, on a 360 px phone with the layout checks of
test_accessibility (no overflow, big enough tap targets). A screenshot of the review and the receipt goes
to ``tests/artifacts/``."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import MOBILE, new_email, shoot
from tests.browser.flows import fund, sign_up
from tests.browser.test_accessibility import PHONE, layout_problems

pytestmark = pytest.mark.once


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_send_money_to_another_customer_on_a_phone(context_factory, javascript):
    recipient_page = context_factory(viewport=MOBILE).new_page()
    recipient_email = sign_up(recipient_page, new_email())

    page = context_factory(javascript=javascript, viewport=PHONE).new_page()
    sign_up(page)
    fund(page, "10000")
    page.get_by_role("link", name="Send money").click()
    expect(page.get_by_role("heading", name="Send money")).to_be_visible()
    problems = layout_problems(page)
    page.get_by_role("button", name="Review").click()  # empty: every field says what it needs
    expect(page.get_by_text("Enter their email address or phone number.")).to_be_visible()
    problems += layout_problems(page)
    page.get_by_label("Send to").fill(recipient_email)
    page.get_by_label("Amount (₦)").fill("2500")
    page.get_by_label("Note (optional)").fill("For the generator")
    page.get_by_role("button", name="Review").click()

    review = page.get_by_test_id("review")
    expect(review).to_be_visible()
    expect(page.get_by_test_id("recipient")).to_contain_text("Ngozi O.")
    expect(page.get_by_test_id("fee")).to_have_text("No fee")
    expect(page.get_by_test_id("total")).to_have_text("₦2,500.00")
    assert fits_the_screen(page)
    problems += layout_problems(page)
    shoot(page, f"transfer-review-phone-{'js' if javascript else 'no-js'}")

    page.get_by_role("button", name="Send ₦2,500.00").click()
    expect(page.get_by_role("heading", name="You sent ₦2,500.00")).to_be_visible()
    expect(page.get_by_test_id("note")).to_have_text("For the generator")
    assert "/wallet/transfers/" in page.url and fits_the_screen(page)
    problems += layout_problems(page)
    assert problems == [], problems
    shoot(page, f"transfer-receipt-phone-{'js' if javascript else 'no-js'}")

    page.goto("/")
    expect(page.get_by_test_id("balance")).to_have_text("₦7,500.00")
    page.goto("/history")
    expect(page.get_by_text("Transfer to Ngozi O.")).to_be_visible()

    recipient_page.goto("/")
    expect(recipient_page.get_by_test_id("balance")).to_have_text("₦2,500.00")
    recipient_page.goto("/history")
    expect(recipient_page.get_by_text("Transfer from Ngozi O.")).to_be_visible()
    expect(recipient_page.get_by_text("For the generator")).to_be_visible()
