"""Chromium through "Forgot password?" (issue 24): the real processes
(gunicorn ``web`` and the Huey ``worker``, which sends the outbox) with
``SMTP_URL`` pointing at a real SMTP server (aiosmtpd in this process, the
mail catcher of tests/servers.py). The customer asks for a link, reads it
from the mail, chooses a new password, signs in with it; the old session in
another browser is logged out, and the link does not work twice."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import DESKTOP, PASSWORD
from tests.browser.flows import sign_up
from tests.servers import MailServer
from tests.stack import Stack

pytestmark = pytest.mark.once

NEW_PASSWORD = "violet tractor window 42"
LINK_RE = re.compile(r"https?://[^\s]+/reset-password/[A-Za-z0-9_-]+")


@pytest.fixture(scope="module")
def mail_stack(browser, tmp_path_factory):
    mail = MailServer()
    mail.start()
    stack = Stack(tmp_path_factory.mktemp("reset-stack"), {
        "SMTP_URL": f"smtp://127.0.0.1:{mail.port}", "SMTP_DEADLINE_SECONDS": "5"})
    try:
        stack.migrate()
        stack.start("web")
        stack.start("worker")
        yield stack, mail
    finally:
        stack.close()
        mail.stop()


def new_context(browser, stack):
    context = browser.new_context(base_url=stack.base_url, viewport=DESKTOP, locale="en-NG",
                                  timezone_id="Africa/Lagos")
    context.set_default_timeout(20_000)
    return context


def wait_for_mail(mail: MailServer, to: str, subject: str, timeout_seconds: float = 60):
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        for message in mail.inbox.messages:
            if message["To"] == to and message["Subject"] == subject:
                return message
        time.sleep(0.2)
    raise AssertionError(f"no mail {subject!r} to {to}; got {[(m['To'], m['Subject']) for m in mail.inbox.messages]}")


def test_forgot_password_mail_new_password_signed_in(browser, mail_stack):
    stack, mail = mail_stack
    first = new_context(browser, stack)
    old_page = first.new_page()
    email = sign_up(old_page)

    context = new_context(browser, stack)
    page = context.new_page()
    page.goto("/login")
    page.get_by_role("link", name="Forgot password?").click()
    page.get_by_label("Email").fill(email)
    page.get_by_role("button", name="Send me a link").click()
    expect(page.get_by_test_id("reset-sent")).to_contain_text("If an account uses that address")

    message = wait_for_mail(mail, email, "Reset your BillVend password")
    link = LINK_RE.search(message.get_body(("plain",)).get_content()).group(0)
    page.goto(link)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Confirm new password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("status").filter(has_text="Your password is changed")).to_be_visible()

    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Wrong email or password.")).to_be_visible()
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("balance")).to_have_text("₦0.00")

    # The session that was open before the reset has ended.
    old_page.goto("/account")
    expect(old_page).to_have_url(re.compile(r"/login"))
    # The link worked once.
    page.goto(link)
    expect(page.get_by_test_id("link-problem")).to_contain_text("already been used")
    first.close()
    context.close()
