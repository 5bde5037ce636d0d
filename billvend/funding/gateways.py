"""Funding gateways: the Paystack-shaped HTTP client and the in-process test double.

Both speak the same shape (``reference/paystack-api.md``): ``initialize`` a
hosted checkout for our reference, ``verify`` a reference server-side, open a
customer's dedicated virtual account, list a period's transactions for
reconciliation. Every method is an outside call: it refuses to run inside a
database transaction (:func:`billvend.platform.transactions.require_no_transaction`)
and gives up at a hard wall-clock deadline (:mod:`billvend.platform.deadline`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional, Protocol

import requests
from flask import current_app

from billvend.platform.deadline import DeadlineExceeded, call_with_deadline
from billvend.platform.text import clean_text
from billvend.platform.transactions import require_no_transaction

#: Paystack's transaction statuses (``GET /transaction/verify``).
SUCCESS = "success"
#: Final "no": nothing was or will be taken for this reference.
FAILED_STATUSES = frozenset({"failed", "abandoned", "reversed"})
#: Our own word for "the gateway has no transaction with that reference".
NOT_FOUND = "not_found"

#: Largest answer body read from the gateway (bytes).
MAX_ANSWER_BYTES = 2_000_000


class GatewayError(Exception):
    """The gateway could not be asked, or answered something unusable: the
    outcome is unknown (never read as "failed")."""


@dataclass(frozen=True)
class Checkout:
    """``initialize``'s answer: where to send the customer."""

    authorization_url: str
    access_code: str
    reference: str


@dataclass(frozen=True)
class GatewayTransaction:
    """One transaction as the gateway reports it (``verify`` or the list).

    ``status`` is Paystack's (``success``, ``failed``, ``abandoned``,
    ``ongoing``, ``pending``, ``processing``, ``queued``, ``reversed``) or
    :data:`NOT_FOUND`; amounts are kobo.
    """

    reference: str
    status: str
    amount_kobo: Optional[int] = None
    currency: Optional[str] = None
    fees_kobo: Optional[int] = None
    channel: Optional[str] = None
    paid_at: Optional[datetime] = None
    customer_email: Optional[str] = None
    customer_code: Optional[str] = None
    message: str = ""


@dataclass(frozen=True)
class AccountDetails:
    """A dedicated virtual account (``POST /dedicated_account``)."""

    customer_code: str
    account_number: str
    account_name: str
    bank_name: str
    bank_slug: Optional[str]


class FundingGateway(Protocol):
    name: str

    def initialize(self, *, email: str, amount_kobo: int, reference: str,
                   callback_url: str) -> Checkout: ...

    def verify(self, reference: str) -> GatewayTransaction: ...

    def open_dedicated_account(self, *, email: str, first_name: str, last_name: str,
                               phone: Optional[str]) -> AccountDetails: ...

    def transactions(self, start: datetime, end: datetime) -> list[GatewayTransaction]: ...


def sign(secret_key: str, raw_body: bytes) -> str:
    """Paystack's ``x-paystack-signature``: hex HMAC-SHA512 of the raw body
    keyed with the secret key (paystack.com/docs/payments/webhooks)."""
    return hmac.new(secret_key.encode(), raw_body, hashlib.sha512).hexdigest()


def signature_valid(secret_key: str, raw_body: bytes, signature: Optional[str]) -> bool:
    """True when ``signature`` is :func:`sign` of ``raw_body``, compared in
    constant time; False for a missing one."""
    if not signature or not signature.isascii():
        # compare_digest raises TypeError on non-ASCII str: a hostile
        # header must be a 401, not a 500.
        return False
    return hmac.compare_digest(sign(secret_key, raw_body), signature.strip().lower())


def _parse_time(raw: Any) -> Optional[datetime]:
    if not raw or not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None


#: The largest amount a BIGINT column holds; a larger one is unusable.
MAX_KOBO = 2 ** 63 - 1


def _int_or_none(raw: Any) -> Optional[int]:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        # isdigit() alone lets "\u00b2" through, and int() refuses more than
        # 4300 digits: neither may raise out of a gateway answer.
        text = raw.strip()
        raw = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None
    if isinstance(raw, int) and -MAX_KOBO <= raw <= MAX_KOBO:
        return raw
    return None


def _text(raw: Any) -> Optional[str]:
    """A string from a gateway answer, without NUL characters (PostgreSQL
    refuses them in text columns: one in, say, ``gateway_response`` would
    make every attempt to record the answer fail); None if not a string."""
    return raw.replace("\x00", "") if isinstance(raw, str) else None


def _clean(raw: Any, max_length: int) -> Optional[str]:
    """A string from a gateway answer as storable text (``clean_text``,
    clipped to ``max_length``); None if not a string or nothing is left."""
    return clean_text(raw, max_length) if isinstance(raw, str) else None


def transaction_from(data: dict[str, Any]) -> GatewayTransaction:
    """A :class:`GatewayTransaction` from Paystack's ``data`` object (verify
    answer, list item or ``charge.success`` webhook).

    :raises GatewayError: ``data`` has no reference or status.
    """
    if not isinstance(data, dict):
        raise GatewayError("transaction data is not an object")
    reference = data.get("reference")
    status = data.get("status")
    if not isinstance(reference, str) or not isinstance(status, str):
        raise GatewayError("transaction data without reference or status")
    authorization = data.get("authorization") if isinstance(data.get("authorization"), dict) else {}
    customer = data.get("customer") if isinstance(data.get("customer"), dict) else {}
    channel = authorization.get("channel") or data.get("channel")
    # The reference is kept as sent: it is compared with ours (a mismatch is
    # shown with repr), and funding_for_transaction refuses one that is not
    # printable ASCII before anything is looked up or stored by it.
    return GatewayTransaction(
        reference=reference, status=_text(status).lower(),
        amount_kobo=_int_or_none(data.get("amount")),
        currency=_text(data.get("currency")),
        fees_kobo=_int_or_none(data.get("fees")),
        channel=_text(channel),
        paid_at=_parse_time(data.get("paid_at") or data.get("paidAt")),
        customer_email=_text(customer.get("email")),
        customer_code=_text(customer.get("customer_code")),
        message=_text(str(data.get("gateway_response") or ""))[:200],
    )


class PaystackGateway:
    """The HTTP client for Paystack's API (or its sandbox).

    :param base_url: ``PAYSTACK_BASE_URL`` (``https://api.paystack.co`` live).
    :param secret_key: ``PAYSTACK_SECRET_KEY`` (sent as ``Bearer``).
    :param connect_timeout_seconds, read_timeout_seconds: per socket operation.
    :param deadline_seconds: the whole call, wall clock.
    """

    name = "paystack"

    def __init__(self, base_url: str, secret_key: str, *, connect_timeout_seconds: float = 5.0,
                 read_timeout_seconds: float = 10.0, deadline_seconds: float = 12.0,
                 preferred_bank: str = "test-bank"):
        self.base_url = base_url.rstrip("/")
        self.secret_key = secret_key
        self.deadline_seconds = deadline_seconds
        self.timeouts = (min(connect_timeout_seconds, deadline_seconds),
                         min(read_timeout_seconds, deadline_seconds))
        self.preferred_bank = preferred_bank

    def _call(self, method: str, path: str, *, what: str, json: Any = None,
              params: Optional[dict] = None, not_found_ok: bool = False) -> Optional[dict]:
        """One API call: ``{status, message, data}`` → ``data`` (or the
        whole body for lists). None for a 404 when ``not_found_ok``.

        :raises GatewayError: unreachable, deadline passed, not JSON, or
            ``status`` false.
        """
        require_no_transaction(f"paystack {what}")
        url = self.base_url + path
        headers = {"Authorization": f"Bearer {self.secret_key}", "Accept": "application/json"}

        def send() -> tuple[int, bytes]:
            with requests.request(method, url, json=json, params=params, headers=headers,
                                  timeout=self.timeouts, stream=True) as response:
                body = bytearray()
                for chunk in response.iter_content(65536):
                    body.extend(chunk)
                    if len(body) > MAX_ANSWER_BYTES:
                        raise GatewayError(f"{what}: answer larger than {MAX_ANSWER_BYTES} bytes")
                return response.status_code, bytes(body)

        try:
            status_code, raw = call_with_deadline(send, self.deadline_seconds, f"paystack {what}")
        except DeadlineExceeded as exc:
            raise GatewayError(str(exc)) from exc
        except requests.RequestException as exc:
            raise GatewayError(f"{what}: {type(exc).__name__}: {exc}") from exc
        if status_code == 404 and not_found_ok:
            return None
        try:
            import json as _json

            body = _json.loads(raw)
        except ValueError as exc:
            raise GatewayError(f"{what}: HTTP {status_code}, not JSON") from exc
        if not isinstance(body, dict) or body.get("status") is not True:
            message = body.get("message") if isinstance(body, dict) else None
            raise GatewayError(f"{what}: HTTP {status_code}: {message or 'refused'}")
        return body

    def initialize(self, *, email: str, amount_kobo: int, reference: str,
                   callback_url: str) -> Checkout:
        """``POST /transaction/initialize`` for our ``reference``.

        :raises GatewayError: see :meth:`_call` (also "Duplicate Transaction
            Reference" for a reference already initialized).
        """
        body = self._call("POST", "/transaction/initialize", what="initialize", json={
            "email": email, "amount": amount_kobo, "reference": reference,
            "callback_url": callback_url, "currency": "NGN", "channels": ["card", "bank_transfer"],
            "metadata": {"source": "billvend"},
        })
        data = body.get("data") or {}
        url = data.get("authorization_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise GatewayError("initialize: no authorization_url in the answer")
        return Checkout(url, str(data.get("access_code") or ""), str(data.get("reference") or reference))

    def verify(self, reference: str) -> GatewayTransaction:
        """``GET /transaction/verify/{reference}``; status :data:`NOT_FOUND`
        when the gateway has no such reference (HTTP 404).

        :raises GatewayError: the outcome is unknown.
        """
        from urllib.parse import quote

        body = self._call("GET", f"/transaction/verify/{quote(reference, safe='')}",
                          what="verify", not_found_ok=True)
        if body is None:
            return GatewayTransaction(reference=reference, status=NOT_FOUND)
        return transaction_from(body.get("data"))

    def open_dedicated_account(self, *, email: str, first_name: str, last_name: str,
                               phone: Optional[str]) -> AccountDetails:
        """``POST /customer`` then ``POST /dedicated_account`` (Paystack DVA).

        Every string of the answer is cleaned (``clean_text``: NUL, control
        and bidi characters dropped) and clipped to its column in
        ``dedicated_accounts`` (customer code 64, number 20, name 200, bank
        100, slug 64): PostgreSQL refuses a NUL, so one in the answer made
        every opening of the account fail.

        :raises GatewayError: either call failed, or no customer code,
            account number or name is left.
        """
        customer = self._call("POST", "/customer", what="create customer", json={
            "email": email, "first_name": first_name, "last_name": last_name, "phone": phone or ""})
        code = _clean((customer.get("data") or {}).get("customer_code"), 64)
        if code is None:
            raise GatewayError("create customer: no customer_code")
        account = self._call("POST", "/dedicated_account", what="dedicated account", json={
            "customer": code, "preferred_bank": self.preferred_bank})
        data = account.get("data") or {}
        bank = data.get("bank") if isinstance(data.get("bank"), dict) else {}
        number, name = _clean(data.get("account_number"), 20), _clean(data.get("account_name"), 200)
        if number is None or name is None:
            raise GatewayError("dedicated account: no account number")
        return AccountDetails(code, number, name, clean_text(bank.get("name"), 100) or "",
                              _clean(bank.get("slug"), 64))

    def transactions(self, start: datetime, end: datetime) -> list[GatewayTransaction]:
        """``GET /transaction?from=&to=`` for ``[start, end)``, every page.

        :raises GatewayError: any page failed.
        """
        found: list[GatewayTransaction] = []
        page = 1
        while True:
            body = self._call("GET", "/transaction", what="list transactions", params={
                "from": start.isoformat(), "to": end.isoformat(), "perPage": 100, "page": page})
            for item in body.get("data") or []:
                try:
                    found.append(transaction_from(item))
                except GatewayError:
                    continue
            meta = body.get("meta") or {}
            page_count = _int_or_none(meta.get("pageCount")) or 1
            if page >= page_count:
                return found
            page += 1


class SimulatedGateway:
    """In-process test double with the same shape: ``initialize`` sends the
    customer straight back to the callback (an instantly approved test
    card), ``verify`` says ``success`` for the amount we stored, as if the
    card paid. No HTTP; for tests that need none."""

    name = "simulated"

    def initialize(self, *, email: str, amount_kobo: int, reference: str,
                   callback_url: str) -> Checkout:
        require_no_transaction("simulated initialize")
        sep = "&" if "?" in callback_url else "?"
        return Checkout(f"{callback_url}{sep}reference={reference}&trxref={reference}",
                        "SIM-" + reference, reference)

    def verify(self, reference: str) -> GatewayTransaction:
        require_no_transaction("simulated verify")
        import sqlalchemy as sa

        from billvend.platform.extensions import db
        from billvend.funding.models import Funding

        row = db.session.execute(
            sa.select(Funding.amount_kobo, Funding.created_at)
            .where(Funding.gateway == self.name, Funding.gateway_reference == reference)
        ).first()
        db.session.rollback()  # a read: end it, so the caller's unit starts clean
        if row is None:
            return GatewayTransaction(reference=reference, status=NOT_FOUND)
        return GatewayTransaction(reference=reference, status=SUCCESS, amount_kobo=row.amount_kobo,
                                  currency="NGN", fees_kobo=0, channel="card", paid_at=row.created_at,
                                  message="Approved")

    def open_dedicated_account(self, *, email: str, first_name: str, last_name: str,
                               phone: Optional[str]) -> AccountDetails:
        require_no_transaction("simulated dedicated account")
        digits = str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:10]
        return AccountDetails("CUS_sim" + digits, digits, "BILLVEND/" + " ".join(filter(None, (first_name, last_name))),
                              "Simulated Bank", "simulated-bank")

    def transactions(self, start: datetime, end: datetime) -> list[GatewayTransaction]:
        return []


def gateway_from_config(config) -> FundingGateway:
    """The gateway ``FUNDING_GATEWAY`` names (``paystack`` or ``simulated``).

    :raises ValueError: another name.
    """
    name = config["FUNDING_GATEWAY"]
    if name == "paystack":
        return PaystackGateway(
            config["PAYSTACK_BASE_URL"], config["PAYSTACK_SECRET_KEY"],
            connect_timeout_seconds=config["PAYSTACK_CONNECT_TIMEOUT_SECONDS"],
            read_timeout_seconds=config["PAYSTACK_READ_TIMEOUT_SECONDS"],
            deadline_seconds=config["PAYSTACK_DEADLINE_SECONDS"],
            preferred_bank=config["PAYSTACK_PREFERRED_BANK"])
    if name == "simulated":
        return SimulatedGateway()
    raise ValueError(f"FUNDING_GATEWAY must be paystack or simulated, not {name!r}")


def gateway() -> FundingGateway:
    """The configured gateway (``FUNDING_GATEWAY``, :func:`gateway_from_config`).

    Every funding step asks for it through this one name, so a test can put
    its own gateway here (``monkeypatch.setattr(gateways, "gateway", ...)``).
    """
    return gateway_from_config(current_app.config)
