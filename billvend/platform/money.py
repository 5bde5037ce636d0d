"""Naira and kobo: exact parsing of what people type, and display with Babel.

Amounts inside billvend are ``int`` kobo (1 naira = 100 kobo). People type
naira ("1500", "1,500.50", "₦2,000"); :func:`parse_naira` turns that into kobo
with ``decimal.Decimal`` (never a float) and refuses anything that is not a
whole number of kobo.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

from babel.numbers import format_currency

_NAIRA_RE = re.compile(r"^\d{1,12}(\.\d{1,2})?$", re.ASCII)
_GROUPED_RE = re.compile(r"^\d{1,3}(,\d{3})+(\.\d{1,2})?$", re.ASCII)


def parse_naira(text: str) -> int:
    """Parse a naira amount typed by a person into kobo.

    Accepts digits with an optional ``.`` and at most two decimals, optionally
    grouped with commas in threes and prefixed with ``₦`` or ``NGN``.

    :returns: the amount in kobo (an ``int``, possibly 0).
    :raises ValueError: with a message fit to show the person.
    """
    cleaned = (text or "").strip().replace(" ", "")
    for prefix in ("₦", "NGN", "ngn", "N"):
        if cleaned.startswith(prefix):
            cleaned = cleaned[len(prefix):]
            break
    if _GROUPED_RE.fullmatch(cleaned):
        cleaned = cleaned.replace(",", "")
    if not _NAIRA_RE.fullmatch(cleaned):
        if cleaned.startswith("-"):
            raise ValueError("Enter a positive amount.")
        if re.match(r"^\d+\.\d{3,}$", cleaned):
            raise ValueError("Use at most two decimal places (kobo).")
        raise ValueError("Enter an amount in naira, like 1500 or 1500.50.")
    try:
        kobo = Decimal(cleaned) * 100
    except InvalidOperation:  # pragma: no cover - the regex already rules this out
        raise ValueError("Enter an amount in naira, like 1500 or 1500.50.") from None
    return int(kobo)


def format_naira(amount_kobo: int, *, signed: bool = False) -> str:
    """Format kobo as naira for display: ``150050`` -> ``₦1,500.50``.

    :param signed: prefix ``+`` on positive amounts (statements).
    """
    text = _babel_naira(amount_kobo)
    if signed and amount_kobo > 0:
        text = "+" + text
    return text


@functools.lru_cache(maxsize=4096)
def _babel_naira(amount_kobo: int) -> str:
    # Babel's formatting is pure (same kobo, same text) and costs ~0.1 ms a
    # call; a dashboard shows the same few amounts on every load.
    return format_currency(Decimal(amount_kobo) / 100, "NGN", locale="en_NG")


def kobo_to_naira_input(amount_kobo: int) -> str:
    """Kobo as a plain naira string for a form field: ``150050`` -> ``1500.50``."""
    naira = Decimal(amount_kobo) / 100
    return f"{naira:.2f}"
