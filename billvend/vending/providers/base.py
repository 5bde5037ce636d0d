"""The vending provider interface (DESIGN.md, Vending).

A provider verifies meters and vends electricity. Every implementation
answers with the same small result types, so the payment state machine never
sees a provider's wire format:

- ``VendResult.status`` is ``delivered`` (token or receipt issued), ``failed``
  (the provider definitely did not and will not vend: safe to refund) or
  ``pending`` (anything else: processing, timeout, no answer, a reply we do not
  understand; the payment becomes ``unknown`` and is requeried, never refunded
  on that alone).
- ``MeterVerification.status`` is ``valid``, ``invalid`` (no such meter) or
  ``error`` (the provider could not answer; the customer may retry).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional, Protocol

from billvend.vending.models import MeterVerificationCache, Payment
from billvend.platform.text import clean_text

DELIVERED = "delivered"
FAILED = "failed"
PENDING = "pending"

VendStatus = Literal["delivered", "failed", "pending"]

# Provider-neutral codes. ``NOT_FOUND`` on a requery means the provider never
# received the order (VTpass ``015``), which is as definite as a failure.
CODE_INVALID_ACCOUNT = "INVALID_ACCOUNT"
CODE_SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
CODE_TIMEOUT = "TIMEOUT"
CODE_INSUFFICIENT_CREDIT = "INSUFFICIENT_CREDIT"
CODE_NO_RESPONSE = "NO_RESPONSE"
CODE_UNEXPECTED_RESPONSE = "UNEXPECTED_RESPONSE"
CODE_PROCESSING = "PROCESSING"
CODE_NOT_FOUND = "NOT_FOUND"
CODE_DUPLICATE = "DUPLICATE_REQUEST"


def guard_external_call(what: str) -> None:
    """Refuse a provider call made inside a database transaction (DESIGN.md,
    "Transactions and external calls"): every client calls this before any
    network I/O. Outside a Flask app context (a client used on its own)
    there is no session to check.

    :raises billvend.platform.transactions.ExternalCallInTransaction: inside a unit
        of work, or with uncommitted writes in the session.
    """
    from flask import has_app_context

    if has_app_context():
        from billvend.platform.transactions import require_no_transaction

        require_no_transaction(what)


def _column_length(model, name: str) -> int:
    return model.__table__.c[name].type.length


#: The provider boundary: every string field of a result -> the length of
#: the column it is stored in. Proof of delivery (tokens) is never clipped:
#: a cut token would be a different, wrong token, so one too long is dropped.
_VEND_TEXT = {name: _column_length(Payment, column) for name, column in {
    "code": "provider_code", "message": "provider_message", "units_kwh": "units_kwh",
    "receipt_reference": "receipt_reference", "tariff": "tariff",
    "exchange_reference": "exchange_reference"}.items()}
_VEND_PROOF = {name: _column_length(Payment, name) for name in ("token", "kct1", "kct2")}
_VERIFICATION_TEXT = {name: _column_length(MeterVerificationCache, name)
                      for name in ("customer_name", "address", "meter_type", "message",
                                   "other_meter_type")}


def _clean_fields(result, text_lengths: dict[str, int], proof_lengths: dict[str, int]) -> None:
    """Clean every string field of a frozen result in place (``clean_text``:
    NUL, control characters, lone surrogates and bidi controls dropped, then
    clipped to the column), whichever provider built it: one place, so no
    provider's text can make recording an answer fail on the database
    (issue 20: a NUL kept a payment in ``vending`` for ever on PostgreSQL)."""
    for field in fields(result):
        name = field.name
        value = getattr(result, name)
        if value is None or isinstance(value, (bool, int, float)):
            continue
        if name in proof_lengths:
            cleaned = clean_text(value)
            if cleaned is not None and len(cleaned) > proof_lengths[name]:
                cleaned = None
        else:
            cleaned = clean_text(value, text_lengths.get(name, 500))
        if name == "message" and cleaned is None:
            cleaned = ""
        object.__setattr__(result, name, cleaned)


@dataclass(frozen=True)
class VendResult:
    """What a ``vend`` or ``requery`` call learnt about one order.

    ``units_kwh`` is a decimal string ("79.9"); ``token`` is 20 digits for a
    delivered prepaid order; ``receipt_reference`` is the provider's
    reference for the order (the only proof for postpaid).

    Extra details a disco may return with a delivery (reference/vtpass-api.md,
    "pay / requery, prepaid, extra fields"), each None when absent:
    ``tariff`` (the tariff class, e.g. "R2 SINGLE PHASE RESIDENTIAL"),
    ``debt_kobo`` (arrears deducted before units were computed), ``kct1`` and
    ``kct2`` (20-digit key-change tokens, entered before the token) and
    ``exchange_reference`` (the disco's own reference, for disputes).
    """

    status: VendStatus
    code: Optional[str] = None
    message: str = ""
    token: Optional[str] = None
    units_kwh: Optional[str] = None
    receipt_reference: Optional[str] = None
    tariff: Optional[str] = None
    debt_kobo: Optional[int] = None
    kct1: Optional[str] = None
    kct2: Optional[str] = None
    exchange_reference: Optional[str] = None
    #: True when the request was fully sent and the provider's answer (a 2xx
    #: status line) had begun to arrive before the call ended: the provider
    #: plainly had the order, so a later "never received" (015) is not
    #: believed for it (``payments.not_found_trusted``).
    answer_began: bool = False

    def __post_init__(self) -> None:
        _clean_fields(self, _VEND_TEXT, _VEND_PROOF)


@dataclass(frozen=True)
class MeterVerification:
    """The customer behind a meter, as the disco knows them."""

    status: Literal["valid", "invalid", "error"]
    customer_name: Optional[str] = None
    address: Optional[str] = None
    meter_type: Optional[str] = None
    min_purchase_kobo: Optional[int] = None
    message: str = ""
    #: On ``invalid`` because the meter is of the other type: that type
    #: (the page offers a one-tap switch); else None.
    other_meter_type: Optional[str] = None

    def __post_init__(self) -> None:
        _clean_fields(self, _VERIFICATION_TEXT, {})

    @property
    def is_valid(self) -> bool:
        return self.status == "valid"


class Provider(Protocol):
    """A vending provider. ``request_id`` is the payment's ``reference``."""

    name: str

    def verify_meter(
        self, service_id: str, meter_number: str, meter_type: str
    ) -> MeterVerification: ...

    def vend(
        self,
        request_id: str,
        service_id: str,
        meter_number: str,
        meter_type: str,
        amount_kobo: int,
        phone: str,
    ) -> VendResult: ...

    def requery(self, request_id: str, meter_type: Optional[str] = None) -> VendResult:
        """What became of ``request_id``; never places an order. ``meter_type``
        (when known) lets a provider tell a prepaid order that came back
        without its token from a postpaid one."""
        ...
