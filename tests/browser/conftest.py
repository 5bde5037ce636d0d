"""Browser fixtures: Debian's Chromium driven by Playwright, against the real
processes of the Procfile (gunicorn ``web`` + ``huey_consumer`` ``worker``)
started by :class:`tests.stack.Stack` on a private SQLite database.

Playwright's own browser download does not work here, so the tests use the
system Chromium (``CHROMIUM_PATH``, default ``/usr/bin/chromium``). Without it
they skip, saying how to install it; with ``CI=true`` a missing Chromium fails
the run (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.stack import ROOT, Stack

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
MOBILE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
PASSWORD = "correct horse 1"
#: Generous: an idle huey_consumer polls with backoff up to 10 s, and a refund
#: takes three queue hops (vend, requery, reverse).
SETTLE_MS = 60_000


def _chromium_or_skip() -> str:
    """The Chromium binary to drive; skip (fail under CI) when there is none."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "the Python package playwright is not installed (pip install -r requirements-dev.txt)"
    else:
        if os.path.isfile(CHROMIUM_PATH) and os.access(CHROMIUM_PATH, os.X_OK):
            return CHROMIUM_PATH
        problem = (f"Chromium not found at {CHROMIUM_PATH}: install it with "
                   "`apt-get install chromium` (Debian/Ubuntu), or point CHROMIUM_PATH at one")
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI, but {problem}")
    pytest.skip(f"browser tests skipped: {problem}")


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    executable = _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def live_server(browser, tmp_path_factory):
    """The base URL of a running web + worker pair.

    The simulated disco answers after 1 s, so each state of a payment stays
    on screen long enough to be seen; requeries start after 1 s so the
    no-answer meter is refunded within seconds.
    """
    tmp_path = tmp_path_factory.mktemp("browser-stack")
    stack = Stack(tmp_path, {
        "SIMULATOR_DELAY_SECONDS": "1",
        "SIMULATOR_SUCCESS_RATE": "1",
        "REQUERY_BASE_DELAY_SECONDS": "1",
        "REQUERY_MAX_DELAY_SECONDS": "2",
    })
    try:
        stack.migrate()
        stack.start("web")
        stack.start("worker")
        yield stack
    finally:
        stack.close()


@pytest.fixture
def context_factory(browser, live_server, request):
    """``context_factory(javascript=True, viewport=DESKTOP)`` -> a new browser
    context on the live server, closed after the test. Console errors,
    page errors and failed sub-resource or htmx requests are collected on
    ``context.problems``."""
    contexts = []

    def make(javascript: bool = True, viewport: dict = DESKTOP):
        ctx = browser.new_context(
            base_url=live_server.base_url, viewport=viewport, java_script_enabled=javascript,
            locale="en-NG", timezone_id="Africa/Lagos",
        )
        if javascript:
            ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.base_url)
        ctx.set_default_timeout(15_000)
        ctx.problems = []
        ctx.on("console", lambda msg: msg.type == "error" and ctx.problems.append(msg.text))
        ctx.on("weberror", lambda err: ctx.problems.append(str(err.error)))
        ctx.on("response", lambda r: r.status >= 400 and r.request.resource_type != "document"
               and ctx.problems.append(f"{r.status} {r.url}"))
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(context_factory):
    """A page with JavaScript on, desktop size."""
    return context_factory().new_page()


def new_email() -> str:
    return f"browser-{secrets.token_hex(5)}@example.com"


def shoot(page, name: str) -> Path:
    """Save a full-page screenshot to ``tests/artifacts/<name>.png`` (CI keeps the folder)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
