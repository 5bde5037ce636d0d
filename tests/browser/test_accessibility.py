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
    for path in ("/", "/signup", "/login"):
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
    page.get_by_role("link", name="Receipt", exact=True).click()
    expect(page).to_have_url(re.compile(r"/receipt$"))
    problems += audit(page)
    page.goto("/history")
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
