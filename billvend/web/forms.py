"""Form pieces shared by the blueprints: naira amounts and idempotency keys."""

from __future__ import annotations

import secrets
import unicodedata
from datetime import date

from flask import current_app, request
from wtforms import HiddenField, StringField
from wtforms.validators import DataRequired, Regexp, ValidationError

from billvend.platform.money import format_naira, parse_naira


#: The largest integer a query parameter may name: a 64-bit signed column
#: holds it, so a bigger one would fail in the database instead of simply
#: finding nothing.
MAX_QUERY_INT = 2**63 - 1


def parse_int(text: str | None, *, minimum: int = 0, maximum: int = MAX_QUERY_INT) -> int | None:
    """``text`` as an integer when it is ASCII digits only and within
    ``minimum..maximum``; else ``None``.

    ``str.isdigit()`` accepts ``"\u00b2"`` and ``"\u2460"``, which ``int()``
    then refuses (a 500), and ``int()`` accepts other scripts' digits,
    spaces, signs and underscores; a number in a URL or form is none of those.
    """
    if not text or len(text) > 19 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if minimum <= value <= maximum else None


def query_int(name: str, default: int | None = None, *, minimum: int = 0,
              maximum: int = MAX_QUERY_INT) -> int | None:
    """The request's query parameter ``name`` read by :func:`parse_int`
    (ids, page numbers, cursors): ``default`` when it is missing or not a
    plain number in range. The one reader of numeric query parameters."""
    value = parse_int(request.args.get(name), minimum=minimum, maximum=maximum)
    return default if value is None else value


def new_idempotency_key() -> str:
    """A fresh key for a money form, generated when the form is rendered."""
    return secrets.token_urlsafe(24)


class NairaField(StringField):
    """A naira amount typed as text; ``.kobo`` holds the exact value in kobo.

    Bounds come from config keys (``MIN_*_KOBO``/``MAX_*_KOBO``) so they can
    change per deployment.
    """

    def __init__(self, label=None, validators=None, *, min_key: str, max_key: str, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.min_key = min_key
        self.max_key = max_key
        self.kobo: int | None = None

    def pre_validate(self, form):
        self.kobo = None
        if not (self.data or "").strip():
            raise ValidationError("Enter an amount.")
        try:
            kobo = parse_naira(self.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        low = current_app.config[self.min_key]
        high = current_app.config[self.max_key]
        if kobo <= 0:
            raise ValidationError("Enter an amount greater than zero.")
        if kobo < low:
            raise ValidationError(f"The smallest amount is {format_naira(low)}.")
        if kobo > high:
            raise ValidationError(f"The largest amount is {format_naira(high)}.")
        self.kobo = kobo


#: Dates a filter may name. A statement cannot hold anything before 2000,
#: and outside these bounds the Lagos-midnight arithmetic overflows (a day
#: added to 9999-12-31, or 0001-01-01 turned into UTC): the filter form
#: says so instead of the page failing.
EARLIEST_FILTER_DATE = date(2000, 1, 1)
LATEST_FILTER_DATE = date(2100, 12, 31)


class FilterDate:
    """Validator for a filter's ``DateField``: the date, when given, lies in
    ``EARLIEST_FILTER_DATE``..``LATEST_FILTER_DATE`` (inclusive).

    :raises wtforms.validators.ValidationError: "Pick a date from 2000 to 2100."
    """

    def __call__(self, form, field):
        if field.data and not EARLIEST_FILTER_DATE <= field.data <= LATEST_FILTER_DATE:
            raise ValidationError(
                f"Pick a date from {EARLIEST_FILTER_DATE.year} to {LATEST_FILTER_DATE.year}.")


#: Bidirectional embeddings, overrides and isolates: they make a name display
#: differently from what it is ("Obi" shown as "ibO"); a name needs none.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class PlainText:
    """Validator for a name or nickname a person types: no control
    characters (NUL, which PostgreSQL cannot store; newlines; terminal
    escapes) and no bidirectional overrides. Letters of any script,
    accents, punctuation and emoji (zero-width joiners included) pass.

    :raises wtforms.validators.ValidationError: with a message for the field.
    """

    message = "Use letters, numbers, spaces and punctuation only."

    def __call__(self, form, field):
        text = field.data or ""
        if any(unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS for ch in text):
            raise ValidationError(self.message)


EXPIRED_FORM_MESSAGE = "This form has expired. Please check the details and submit again."


class IdempotencyKeyField(HiddenField):
    """The hidden ``idempotency_key`` of a money form (DESIGN.md, Money).

    A missing or malformed key is a form error shown above the form; the
    re-rendered form carries a fresh key, so the customer's next submit is a
    new request rather than the same bad one again.
    """

    def post_validate(self, form, validation_stopped):
        if self.errors:
            self.data = new_idempotency_key()


def idempotency_key_field() -> IdempotencyKeyField:
    return IdempotencyKeyField(
        validators=[
            DataRequired(message=EXPIRED_FORM_MESSAGE),
            Regexp(r"^[A-Za-z0-9_\-]{16,64}\Z", message=EXPIRED_FORM_MESSAGE),
        ],
        default=new_idempotency_key,
    )
