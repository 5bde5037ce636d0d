"""Cleaning text that comes from outside systems before anything stores it
(DESIGN.md, "text from outside is cleaned before stored").

PostgreSQL refuses NUL (U+0000) in text columns and cannot encode a lone
surrogate (``json.loads('"\\ud800"')`` makes one) as UTF-8: one such character
in a provider's answer makes every attempt to record that answer fail, and
the payment never leaves ``vending``. Other control characters (terminal
escapes, bidirectional overrides) are never wanted on a page or in a log.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Optional

#: Bidirectional embedding, override and isolate controls (Unicode UAX #9)
#: and the marks (U+061C ARABIC LETTER MARK too): they can make text on a
#: page read backwards.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Whitespace controls become a space, so "line one\nline two" stays readable.
_AS_SPACE = {"\t": " ", "\n": " ", "\r": " ", "\x0b": " ", "\x0c": " "}


def clean_text(value: Any, max_length: Optional[int] = None) -> Optional[str]:
    """``value`` as storable text: control characters (Unicode category
    ``Cc``, NUL included; tabs and line breaks become one space), lone
    surrogates (``Cs``) and bidi controls dropped, surrounding space
    stripped, then clipped to ``max_length`` characters (a column's length).

    :param value: a string, or None; anything else (a number from a JSON
        answer) is turned into its ``str`` first.
    :returns: the cleaned text, or None when nothing is left.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    kept = []
    for ch in text:
        if ch in _AS_SPACE:
            kept.append(" ")
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cs") or ch in BIDI_CONTROLS:
            continue
        kept.append(ch)
    cleaned = "".join(kept).strip()
    if max_length is not None:
        cleaned = cleaned[:max_length].rstrip()
    return cleaned or None
