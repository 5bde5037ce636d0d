"""Phone numbers: stored E.164 (``+2348031234567``), Nigerian mobiles only
(issue 23).

Parsing and validity come from ``phonenumbers`` (Google's libphonenumber
metadata: which prefixes are Nigerian mobile ranges), not a regex of our
own. Each outside system gets the spelling it wants from the stored form:
VTpass the national ``08031234567`` (:func:`national`), Termii the
international digits without ``+`` (:func:`international_digits`).
"""

from __future__ import annotations

import functools
from typing import Optional

import phonenumbers
from phonenumbers import PhoneNumberFormat, PhoneNumberType

#: Which numbers are taken: mobiles only (a landline never receives an SMS);
#: FIXED_LINE_OR_MOBILE is where the metadata cannot tell the two apart.
MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
#: Longest text looked at: a phone field is never longer, and parsing a page of
#: text would be wasted work.
MAX_INPUT_LENGTH = 40
ALLOWED_CHARACTERS = "0123456789+ -()."


@functools.lru_cache(maxsize=4096)
def to_e164(text: Optional[str]) -> Optional[str]:
    """``08031234567``, ``0803 123 4567``, ``2348031234567`` or
    ``+234 803 123 4567`` -> ``+2348031234567``.

    :returns: None for anything that is not a valid Nigerian mobile number
        (empty, not a number, too short, a landline, a foreign number).
        Pure, so cached: pages check the stored phones on every load.
    """
    raw = (text or "").strip()
    # phonenumbers reads past letters ("0803...x", vanity numbers); a phone
    # field holding anything but digits and separators is a typo, not a number.
    if not raw or len(raw) > MAX_INPUT_LENGTH or raw.strip(ALLOWED_CHARACTERS):
        return None
    if raw.startswith("234"):
        # Typed without the +: read as international, not as a national number.
        raw = "+" + raw
    try:
        number = phonenumbers.parse(raw, "NG")
    except phonenumbers.NumberParseException:
        return None
    if (phonenumbers.region_code_for_number(number) != "NG"
            or not phonenumbers.is_valid_number(number)
            or phonenumbers.number_type(number) not in MOBILE_TYPES):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def is_e164(phone: Optional[str]) -> bool:
    """True when ``phone`` is already in the stored form (a valid Nigerian
    mobile in E.164)."""
    return bool(phone) and to_e164(phone) == phone


def national(phone: str) -> str:
    """The stored ``+2348031234567`` as ``08031234567`` (what VTpass takes).
    A value that is not E.164 (a payment made before 0015_phones that could
    not be normalised) is returned unchanged."""
    if phone and phone.startswith("+234") and len(phone) > 4:
        return "0" + phone[4:]
    return phone


def international_digits(phone: str) -> str:
    """The stored ``+2348031234567`` as ``2348031234567`` (what Termii takes)."""
    return phone[1:] if phone.startswith("+") else phone


def display(phone: Optional[str]) -> str:
    """How a page shows a stored phone: ``08031234567`` (what Nigerians
    write and type); empty for none."""
    return national(phone) if phone else ""
