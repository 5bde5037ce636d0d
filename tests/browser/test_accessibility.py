"""Checks a customer with a keyboard or a screen reader depends on, run on
every customer page in Chromium: one h1, a language, a label for every
control, a name for every button and link, unique ids, text contrast of at
least WCAG AA, and a keyboard-only journey with a visible focus ring."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.flows import fill_payment, fund, sign_up, submit_payment, wait_final

pytestmark = pytest.mark.once

# Returns a list of problems found on the current page (empty when fine).
AUDIT = r"""
() => {
  const problems = [];
  // Content of a closed <details> (the phone menu) is hidden from everyone,
  // although Chromium still gives it boxes (content-visibility: hidden).
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
                          && getComputedStyle(el).visibility !== "hidden"
                          && !el.closest("details:not([open]) > :not(summary)");
  if (!document.documentElement.lang) problems.push("html has no lang");
  const h1s = [...document.querySelectorAll("h1")];
  if (h1s.length !== 1) problems.push(`${h1s.length} h1 elements`);
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden" || !visible(el)) continue;
    const named = el.labels.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!named) problems.push(`unlabelled ${el.tagName.toLowerCase()}#${el.id || el.name}`);
  }
  for (const el of document.querySelectorAll("a[href], button")) {
    if (!visible(el)) continue;
    if (!(el.innerText.trim() || el.getAttribute("aria-label"))) problems.push(`nameless ${el.outerHTML.slice(0, 80)}`);
  }
  const ids = [...document.querySelectorAll("[id]")].map((el) => el.id);
  for (const id of new Set(ids)) if (ids.filter((x) => x === id).length > 1) problems.push(`duplicate id ${id}`);
  for (const el of document.querySelectorAll("[aria-describedby]")) {
    for (const id of el.getAttribute("aria-describedby").split(/\s+/)) {
      if (!document.getElementById(id)) problems.push(`aria-describedby points at missing #${id}`);
    }
  }

  // Contrast (WCAG 2.x relative luminance) of every visible text against the
  // first opaque background behind it; gradients are skipped (checked by eye).
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const style = getComputedStyle(node);
      if (style.backgroundImage !== "none") return null;
      const c = rgb(style.backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || !visible(el) || el.closest(".skip-link, noscript")) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    if (!bg) continue;
    const fg = rgb(style.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) problems.push(`contrast ${ratio.toFixed(2)} < ${needed}: "${node.textContent.trim().slice(0, 40)}"`);
  }
  return problems;
}
"""


def audit(page) -> list[str]:
    """The audit's findings on the page as loaded. A click on a link returns
    once the navigation has started, so wait for the new document first (an
    audit of a page still loading once found no <body>)."""
    page.wait_for_load_state("load")
    return [f"{page.url}: {problem}" for problem in page.evaluate(AUDIT)]


def test_every_customer_page_passes_the_basic_accessibility_audit(page):
    problems = []
    for path in ("/", "/signup", "/login", "/forgot-password", "/reset-password/not-a-real-token"):
        page.goto(path)
        problems += audit(page)
    page.goto("/signup")
    page.get_by_role("button", name="Create account").click()  # an empty form: errors shown
    problems += audit(page)

    sign_up(page)
    problems += audit(page)  # the dashboard's empty state, with a flash
    fund(page, "5000")
    problems += audit(page)
    page.goto("/wallet/fund")
    problems += audit(page)
    page.goto("/history?kind=reversal")
    problems += audit(page)  # the filtered empty state
    fill_payment(page, "1111111111111", "1000")
    expect(page.get_by_test_id("customer")).to_be_visible()
    problems += audit(page)
    submit_payment(page)
    problems += audit(page)  # in progress
    wait_final(page, "successful")
    problems += audit(page)
    page.locator(".receipt-menu > summary").click()
    page.get_by_role("link", name="Print or view receipt").click()
    expect(page).to_have_url(re.compile(r"/receipt$"))
    problems += audit(page)
    page.goto("/history")
    problems += audit(page)
    for path in ("/account", "/account/email"):  # the email's state, the verification banner
        page.goto(path)
        problems += audit(page)
    page.goto("/no-such-page")
    problems += audit(page)
    assert problems == []


def test_a_keyboard_user_can_skip_to_content_and_fund_the_wallet(page):
    sign_up(page)
    page.goto("/wallet/fund")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "amount":
            break
    amount = page.get_by_label("Amount (₦)")
    expect(amount).to_be_focused()
    # The focus ring is visible (not removed by the stylesheet).
    assert amount.evaluate("e => getComputedStyle(e).outlineStyle") != "none"
    page.keyboard.type("2500")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("balance")).to_have_text("₦2,500.00")
    expect(page.get_by_role("status").filter(has_text=re.compile("added to your wallet"))).to_be_visible()


# -- Every page on a narrow phone (issue 21) -----------------------------------

#: The narrowest common Android screen.
PHONE = {"width": 360, "height": 740}

# Returns the layout problems of the page as shown (empty when fine): the page
# or an element wider than the screen, an element sticking out of its card,
# content cut by a box that scrolls or clips it ("Processin"), and tap targets
# below WCAG 2.2 AA sizes as this project states them: buttons and stand-alone
# links (navigation, actions, card links) 44 px tall, links inside running
# text 24 px (2.5.8 Target Size (Minimum)).
LAYOUT_AUDIT = r"""
() => {
  const problems = [];
  const screen = document.documentElement.clientWidth;
  const hidden = (el) => !!el.closest(".visually-hidden, .skip-link, noscript, details:not([open]) > :not(summary)");
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
                          && getComputedStyle(el).visibility !== "hidden" && !hidden(el);
  const name = (el) => {
    const cls = typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\s+/).join(".") : "";
    return `<${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}${cls}> "${(el.innerText || el.value || "").trim().replace(/\s+/g, " ").slice(0, 30)}"`;
  };
  // Admin tables are wide by nature and scroll inside their card, never the page.
  const scrolls = (el) => el.matches(".admin-page .card, .admin-page .table-wrap");
  const insideScroller = (el) => {
    for (let node = el.parentElement; node && node !== document.body; node = node.parentElement) {
      if (scrolls(node)) return true;
    }
    return false;
  };
  if (document.documentElement.scrollWidth > screen + 1) {
    problems.push(`the page is ${document.documentElement.scrollWidth} px wide on a ${screen} px screen`);
  }
  for (const el of document.body.querySelectorAll("*")) {
    if (!visible(el) || insideScroller(el)) continue;
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height) continue;
    if (box.right > screen + 1 || box.left < -1) {
      problems.push(`${name(el)} sticks out of the screen (${Math.round(box.left)} to ${Math.round(box.right)} px)`);
      continue;
    }
    const card = el.parentElement && el.parentElement.closest(".card");
    if (card) {
      const edge = card.getBoundingClientRect();
      if (box.right > edge.right + 1 || box.left < edge.left - 1) problems.push(`${name(el)} sticks out of its card`);
    }
    const style = getComputedStyle(el);
    if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX) && !scrolls(el)
        && el.scrollWidth > el.clientWidth + 1 && !el.matches("input, select, textarea")) {
      problems.push(`${name(el)} cuts its content (${el.scrollWidth} px in ${el.clientWidth} px)`);
    }
  }
  // Text cut off by a box that clips or scrolls it (a status that reads
  // "Processin"), or running out of its card: measured on the text itself,
  // since a word wider than its cell overflows without growing any element.
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || !visible(el) || insideScroller(el)) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const line of range.getClientRects()) {
      if (!line.width) continue;
      for (let box = el; box && box !== document.documentElement; box = box.parentElement) {
        const clips = getComputedStyle(box).overflowX !== "visible" || box.matches(".card");
        if (!clips || scrolls(box)) continue;
        const edge = box.getBoundingClientRect();
        if (line.right > edge.right + 1 || line.left < edge.left - 1) {
          problems.push(`text "${node.textContent.trim().slice(0, 30)}" is cut by ${name(box)}`);
          break;
        }
      }
    }
  }
  for (const el of document.querySelectorAll("a[href], button, summary, input[type=submit], input[type=button]")) {
    if (!visible(el)) continue;
    // A history row's title link covers its whole row (a.row-title::after).
    const target = el.matches("a.row-title") && el.closest("tr.row-link") ? el.closest("tr.row-link") : el;
    const height = target.getBoundingClientRect().height;
    let standalone = !el.matches("a") || el.matches(".button");
    if (!standalone) {
      const block = el.parentElement.closest("p, li, dd, dt, td, th, div, h1, h2, h3, span.share-fallback, form, section");
      standalone = !!el.closest("nav, .actions, .page-head, .menu-list, .meter-actions")
                   || (block && block.innerText.trim() === el.innerText.trim());
    }
    const needed = standalone ? 44 : 24;
    if (height < needed - 0.5) {
      problems.push(`${standalone ? "stand-alone" : "inline"} ${name(el)} is ${height.toFixed(1)} px tall (needs ${needed})`);
    }
  }
  return problems;
}
"""


def layout_problems(page) -> list[str]:
    """:data:`LAYOUT_AUDIT` of the page as loaded, each problem with its URL."""
    page.wait_for_load_state("load")
    return [f"{page.url}: {problem}" for problem in page.evaluate(LAYOUT_AUDIT)]


def _insert_fundings(live_server, email: str) -> str:
    """Card fundings in every state the funding history words (the gateway is
    the in-process one here, which approves every card at once); returns the
    reference of a declined one."""
    import secrets
    import sqlite3

    db_path = live_server.env["DATABASE_URL"].removeprefix("sqlite:///")
    rows = [("pending", None, None, "https://checkout.example/abc"),
            ("failed", "abandoned", "The transaction was not completed", None),
            ("failed", "failed", "Insufficient Funds", None),
            ("initiated", None, None, None)]
    with sqlite3.connect(db_path) as conn:
        user_id, wallet_id = conn.execute(
            "SELECT users.id, wallets.id FROM users JOIN wallets ON wallets.user_id = users.id "
            "WHERE users.email = ?", (email,)).fetchone()
        references = []
        for status, gateway_status, message, url in rows:
            reference = "FND-" + secrets.token_hex(12)
            references.append(reference)
            conn.execute(
                "INSERT INTO fundings (reference, user_id, wallet_id, amount_kobo, gateway, gateway_reference,"
                " status, idempotency_key, created_at, updated_at, method, authorization_url, gateway_status,"
                " gateway_message, verify_attempts, needs_attention)"
                " VALUES (?, ?, ?, 1250050, 'simulated', ?, ?, ?, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 'card',"
                " ?, ?, ?, 0, 0)",
                (reference, user_id, wallet_id, reference, status, secrets.token_hex(8), url, gateway_status,
                 message))
    return references[2]


def _make_admin(live_server, email: str) -> None:
    import subprocess

    from tests.stack import ROOT

    subprocess.run([str(ROOT / ".venv" / "bin" / "flask"), "--app", "wsgi", "create-admin", email],
                   cwd=ROOT, env=live_server.env, check=True, capture_output=True, timeout=60)


def _pay_and_settle(page, meter_number: str, amount: str, status: str, meter_type: str = "Prepaid") -> list[str]:
    from tests.browser.flows import fill_payment, submit_payment, wait_final

    fill_payment(page, meter_number, amount, meter_type=meter_type)
    page.get_by_role("button", name=re.compile(r"^Continue")).click()
    page.wait_for_load_state()
    found = layout_problems(page)  # the review, or the form for a meter the disco refused
    submit_payment(page)
    found += layout_problems(page)  # in progress
    wait_final(page, status)
    return found + layout_problems(page)


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "nojs"])
def test_every_page_fits_a_360px_phone_with_big_enough_tap_targets(context_factory, live_server, javascript):
    from tests.browser.conftest import shoot
    from tests.browser.flows import admin_second_factor, fund, sign_up

    page = context_factory(javascript=javascript, viewport=PHONE).new_page()
    problems: list[str] = []

    def visit(path: str) -> None:
        page.goto(path)
        problems.extend(layout_problems(page))

    for path in ("/", "/login", "/signup", "/no-such-page"):
        visit(path)
    page.goto("/signup")
    page.get_by_role("button", name="Create account").click()
    problems += layout_problems(page)  # a form full of errors

    email = sign_up(page)
    problems += layout_problems(page)
    fund(page, "50000")
    problems += layout_problems(page)
    visit("/wallet/fund")
    page.get_by_role("button", name="Pay by bank transfer").click()
    problems += layout_problems(page)  # the account number, with its copy button
    declined = _insert_fundings(live_server, email)
    visit("/wallet/fundings")
    shoot(page, f"issue21-fundings-360-{'js' if javascript else 'nojs'}")
    visit(f"/wallet/fund?retry={declined}")

    visit("/bills/electricity")
    page.get_by_role("button", name=re.compile(r"^Continue")).click()
    problems += layout_problems(page)  # an empty pay form: errors
    problems += _pay_and_settle(page, "1111111111111", "1000", "successful")
    shoot(page, f"issue21-token-360-{'js' if javascript else 'nojs'}")
    if javascript:
        page.locator(".receipt-menu > summary").click()
        problems += layout_problems(page)  # the receipt menu open
    page.goto(page.url + "/receipt")
    problems += layout_problems(page)
    problems += _pay_and_settle(page, "1212121212121", "2000", "successful")  # two key-change tokens
    problems += _pay_and_settle(page, "1010101010101", "1500", "successful", meter_type="Postpaid")
    problems += _pay_and_settle(page, "400000000000", "1000", "reversed")

    visit("/")  # the dashboard with "Buy again" and recent activity
    for path in ("/history", "/history?kind=reversal", "/history?q=1111111111111&date_from=2026-01-01&date_to=2026-12-31"):
        visit(path)
    shoot(page, f"issue21-history-360-{'js' if javascript else 'nojs'}")
    visit("/meters")
    for link in ("Rename", "Remove"):
        page.goto("/meters")
        page.get_by_role("link", name=re.compile(f"^{link}")).first.click()
        problems += layout_problems(page)
    visit("/account")
    visit("/account/password")

    _make_admin(live_server, email)
    page.goto("/admin/")
    problems += layout_problems(page)  # confirm the password
    admin_second_factor(page)
    problems += layout_problems(page)
    for path in ("/admin/", "/admin/payments", "/admin/wallets", "/admin/fundings", "/admin/gateway-events",
                 "/admin/actions", "/admin/stuck", "/admin/invariants", "/admin/reconciliation",
                 "/admin/funding-flags"):
        visit(path)
        if path in ("/admin/payments", "/admin/wallets", "/admin/fundings"):
            detail = page.locator(f"main a[href^='{path}/']").first
            if detail.count():
                detail.click()
                problems += layout_problems(page)
    assert problems == [], "\n".join(problems)
