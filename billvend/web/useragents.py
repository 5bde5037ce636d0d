"""A session's browser in a customer's words ("Chrome on Android"), from
its stored ``User-Agent`` string.

Parsed with ``ua-parser`` (the maintained Python port of the uap-core rules,
with ``ua-parser-builtins``' precompiled rules): the raw string is for
machines, and a customer deciding which session to end needs the browser and
the system.
"""

from __future__ import annotations

import functools
from typing import Optional

UNKNOWN = "Unknown browser"

#: uap-core's family names, shortened to what a person calls the browser.
_BROWSERS = {
    "Chrome Mobile": "Chrome", "Chrome Mobile iOS": "Chrome", "Chrome Mobile WebView": "Android app",
    "HeadlessChrome": "Headless Chrome", "Mobile Safari": "Safari", "Mobile Safari UI/WKWebView": "iOS app",
    "Firefox Mobile": "Firefox", "Firefox iOS": "Firefox", "Edge Mobile": "Edge", "Opera Mobile": "Opera",
}
_SYSTEMS = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS"}


@functools.lru_cache(maxsize=512)
def device_name(user_agent: Optional[str]) -> str:
    """``"Chrome on Android"``, ``"Safari on iPhone"``, ``"Firefox on macOS"``;
    the browser alone when the system is unknown (``"Python Requests"``);
    :data:`UNKNOWN` for an empty or unrecognised string. Never raises."""
    if not user_agent or not user_agent.isprintable():
        return UNKNOWN
    try:
        from ua_parser import parse

        result = parse(user_agent[:500])
    except Exception:  # noqa: BLE001 - a label is never worth a 500
        return UNKNOWN
    browser = result.user_agent.family if result.user_agent else None
    if not browser or browser == "Other":
        return UNKNOWN
    browser = _BROWSERS.get(browser, browser)
    device = result.device.family if result.device else None
    system = result.os.family if result.os else None
    if device in ("iPhone", "iPad"):
        system = device
    system = _SYSTEMS.get(system, system)
    return f"{browser} on {system}" if system and system != "Other" else browser
