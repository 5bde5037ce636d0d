"""The steps a customer takes, written once for the browser tests.

Each step uses what a person sees (labels, button names, headings), so the
tests also check that the pages can be used that way.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD, SETTLE_MS, new_email

PAYMENT_URL = re.compile(r"/payments/[^/]+$")


def sign_up(page: Page, email: str | None = None) -> str:
    """Create an account through the form; lands on the dashboard."""
    email = email or new_email()
    page.goto("/signup")
    page.get_by_label("Full name").fill("Ngozi Okafor")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Phone number").fill("08031234567")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Confirm password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_test_id("balance")).to_have_text("₦0.00")
    return email


def fund(page: Page, amount: str) -> None:
    """Fund the wallet through the form; lands on the dashboard with a flash."""
    page.goto("/wallet/fund")
    page.get_by_label("Amount (₦)").fill(amount)
    page.get_by_role("button", name="Fund wallet").click()
    expect(page.get_by_role("status").filter(has_text="added to your wallet")).to_be_visible()


def fill_payment(page: Page, meter_number: str, amount: str, *, disco: str = "Ikeja Electric (IKEDC)",
                 meter_type: str = "Prepaid", phone: str = "08031234567") -> None:
    """Fill the electricity form (without submitting)."""
    page.goto("/bills/electricity")
    page.get_by_label("Distribution company (disco)").select_option(label=disco)
    page.get_by_label(meter_type, exact=True).check()
    page.get_by_label("Meter number").fill(meter_number)
    page.get_by_label("Amount (₦)").fill(amount)
    page.get_by_label("Phone number").fill(phone)


def press_pay(page: Page) -> None:
    """Press "Continue" on the form, then, on the review step (one summary
    before any money moves, with or without JavaScript), its "Pay ₦..."
    button. Ends on the payment page, or on the form showing what was wrong."""
    page.get_by_role("button", name=re.compile(r"^(Continue|Pay)", re.I)).click()
    page.wait_for_load_state()
    confirm = page.get_by_role("button", name=re.compile(r"^Pay ₦"))
    if not PAYMENT_URL.search(page.url) and confirm.count() == 1:
        expect(page.get_by_test_id("customer")).to_be_visible()
        confirm.click()
        page.wait_for_load_state()


def submit_payment(page: Page) -> None:
    """Pay (confirming if asked); ends on the payment page."""
    press_pay(page)
    expect(page).to_have_url(PAYMENT_URL)


def wait_final(page: Page, status: str) -> None:
    """Wait (bounded) until the payment on screen reaches ``status``."""
    expect(page.locator("#payment-status")).to_have_attribute("data-status", status, timeout=SETTLE_MS)


def field_error(page: Page, field_id: str):
    """The error message tied to an input, checking the tie on the way:
    the input is marked invalid and its aria-describedby names the message."""
    field = page.locator(f"#{field_id}")
    expect(field).to_have_attribute("aria-invalid", "true")
    described_by = field.get_attribute("aria-describedby") or ""
    assert f"{field_id}-error" in described_by.split(), described_by
    error = page.locator(f"#{field_id}-error")
    expect(error).to_have_attribute("role", "alert")
    return error


def admin_second_factor(page: Page) -> None:
    """An admin's first visit to /admin in this session: confirm the password,
    enrol the authenticator (the key shown as text, as a person would type it
    into their app), give the code, pass the recovery codes. Ends on /admin."""
    import pyotp

    page.goto("/admin/")
    if page.get_by_role("heading", name="Confirm your password").count():
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Confirm").click()
    secret = page.get_by_test_id("totp-secret").text_content().strip()
    page.get_by_role("textbox", name="Code").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("link", name="I have saved them: continue").click()
    expect(page).to_have_url(re.compile(r"/admin/\??$"))
