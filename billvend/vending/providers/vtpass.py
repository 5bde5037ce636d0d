"""The VTpass-style HTTP provider (``VENDING_PROVIDER=vtpass``).

Speaks the API shape summarised in ``reference/vtpass-api.md``:
``POST /api/merchant-verify``, ``/api/pay`` and ``/api/requery`` with JSON
bodies and ``api-key``/``secret-key`` headers. The payment ``reference`` is
the ``request_id`` (already ``YYYYMMDDHHII``-prefixed in Africa/Lagos time by
``payments.new_reference``), so the provider sees one order however often we
ask about it.

The one rule that matters: only an answer that says the order definitely did
not and will not vend is ``failed`` (safe to refund). A timeout, a dropped
connection after the request went out, a 5xx, ``099`` or any reply we do not
understand is ``pending``: the order may exist, so the payment goes
``unknown`` and is requeried. Requery answering ``015`` (the provider never
got this request_id) is as definite as a failure, except for a pay whose
answer had begun to arrive (a 2xx status line, then the deadline or a lost
connection; or a complete 2xx answer that leaves the order pending): the
result says so (``VendResult.answer_began``) and the lifecycle never
believes a ``015`` for it (``payments.not_found_trusted``).

Response code table (reference/vtpass-api.md, Response codes):

=========================  ==========================================
``000`` + delivered         delivered (token from ``purchased_code``)
``000`` + reversed          failed
``000`` + initiated/pending pending (requery)
``099``                     pending (processing)
``014`` on pay              requery that request_id at once
``015``                     failed (``NOT_FOUND``: never received)
``016``, ``091``            failed, final
``018``, ``019``,           failed, final on pay; on a requery pending
``011``-``013``, ``017``,   (``UNEXPECTED_RESPONSE``): they describe the
``030``                     requery request, not the order
anything else               pending (``UNEXPECTED_RESPONSE``)
=========================  ==========================================
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Optional

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from billvend.platform.phones import national
from billvend.vending.providers.base import (
    CODE_DUPLICATE, guard_external_call, CODE_INSUFFICIENT_CREDIT, CODE_NO_RESPONSE,
    CODE_NOT_FOUND, CODE_PROCESSING, CODE_SERVICE_UNAVAILABLE, CODE_TIMEOUT,
    CODE_UNEXPECTED_RESPONSE, DELIVERED, FAILED, PENDING, MeterVerification, VendResult,
)

log = logging.getLogger(__name__)

#: Definite failures: VTpass code -> (provider-neutral code, what it means).
#: ``015`` means "never received" on requery and "rejected request_id" on pay;
#: either way no order exists.
FAILURE_CODES: dict[str, tuple[str, str]] = {
    "015": (CODE_NOT_FOUND, "The provider has no order with this request_id"),
    "016": ("TRANSACTION_FAILED", "The provider says the transaction failed"),
    "091": ("NOT_PROCESSED", "The provider did not process or charge the transaction"),
    "018": (CODE_INSUFFICIENT_CREDIT, "The provider's merchant balance is too low"),
    "019": ("DUPLICATE_TRANSACTION", "Same meter and amount within 30 seconds"),
    "011": ("INVALID_ARGUMENTS", "The provider rejected the request's arguments"),
    "012": ("PRODUCT_NOT_FOUND", "The provider does not sell this product"),
    "013": ("BELOW_MINIMUM", "The amount is below the disco's minimum"),
    "017": ("ABOVE_MAXIMUM", "The amount is above the disco's maximum"),
    "030": (CODE_SERVICE_UNAVAILABLE, "The biller (disco) is unreachable"),
}
#: The failure codes that, on a requery, speak of the order itself.
REQUERY_FINAL_CODES = frozenset({"015", "016", "091"})
PROCESSING_CODE = "099"
DUPLICATE_REQUEST_CODE = "014"
OK_CODE = "000"

# ASCII digits only (``\d`` is any script's digit): a token is typed on a
# meter's 0-9 keypad, and the lifecycle keeps only ASCII digits, so a token
# in other digits read here would be dropped there and a prepaid payment
# finish without one; unreadable, it stays pending instead.
_TOKEN_RE = re.compile(r"([0-9][0-9\s\-]{18,}[0-9])")
_UNITS_RE = re.compile(r"(\d+(?:\.\d+)?)")


class _NotSent(Exception):
    """The request never left this machine (connection refused, connect timeout)."""


class DeadlineExceeded(requests.Timeout):
    """The whole call ran past its hard wall-clock deadline (a ``Timeout``:
    the request may have been sent, so the answer is ambiguous)."""


def _answer_began(exc: BaseException) -> bool:
    """True when ``exc`` ended a call after the provider's answer had begun:
    its status line (2xx) had arrived, so the request was fully sent and the
    provider was answering it (``_post`` notes the status on the error)."""
    status_code = getattr(exc, "answer_status_code", None)
    return isinstance(status_code, int) and 200 <= status_code < 300


# The deadline of the call running on this thread, for the connection guard.
_call = threading.local()


def _deadline_passed() -> bool:
    deadline = getattr(_call, "deadline", None)
    return deadline is not None and time.monotonic() >= deadline


class _GuardedConnectionMixin:
    """A connection that refuses to send once the call's deadline passed.

    ``requests`` timeouts bound each socket operation, not name lookup (a
    blocking ``getaddrinfo``) nor the whole call. A call abandoned at its
    deadline (see ``VTpassProvider._post``) may still be connecting on its
    thread; this check, right after the connection opens and again once it
    is ready (after the TLS handshake), before a byte of the request is
    written, makes sure no ``pay`` leaves after the
    deadline the payment recorded (``pay_in_flight_until``).
    """

    def _new_conn(self):
        sock = super()._new_conn()
        if _deadline_passed():
            sock.close()
            raise NewConnectionError(self, "the call's deadline passed before the request was sent")
        return sock

    def connect(self):
        # Over HTTPS the TLS handshake follows _new_conn, with its own
        # timeout: check again once the connection is ready to carry the
        # request, or a slow lookup plus a slow handshake sends it late.
        super().connect()
        if _deadline_passed():
            self.close()
            raise NewConnectionError(self, "the call's deadline passed before the request was sent")


class _GuardedHTTPConnection(_GuardedConnectionMixin, urllib3.connection.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_GuardedConnectionMixin, urllib3.connection.HTTPSConnection):
    pass


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """``requests`` adapter whose connections honour the call's deadline."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        # With HTTP(S)_PROXY set, requests sends through a proxy manager of
        # its own, not the pool manager above: guard its pools too (for an
        # HTTPS target, connect() returns after the CONNECT tunnel and the
        # TLS handshake, so the last check is still before the first byte).
        if proxy.lower().startswith("socks"):
            raise requests.exceptions.InvalidProxyURL(
                "a SOCKS proxy would bypass the provider call's deadline guard; use an HTTP proxy")
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}
        return manager


def default_deadline_seconds(connect_timeout_seconds: float, read_timeout_seconds: float,
                             send_attempts: int) -> float:
    """Every connection attempt (plus the pause after it), then the read:
    the longest a call could take with per-operation timeouts alone
    (``config.longest_vend_seconds`` for the vend)."""
    return send_attempts * (connect_timeout_seconds + 1.0) + read_timeout_seconds


def _never_sent(exc: requests.ConnectionError) -> bool:
    """True only if ``exc`` happened while opening the TCP connection, i.e.
    before a byte of the request was written; then a retry cannot create a
    second order. A connection reset or EOF after sending is NOT this."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, urllib3.exceptions.ProxyError):
        # Opening the connection to the proxy (or its tunnel) failed.
        reason = reason.original_error
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def parse_token(purchased_code: Any) -> Optional[str]:
    """The 20-digit token in ``"Token : 2636 2054 4059 8275 7802"`` (any
    spacing or dashes); None when there is no 20-digit number."""
    if not isinstance(purchased_code, str):
        return None
    match = _TOKEN_RE.search(purchased_code)
    if not match:
        return None
    digits = re.sub(r"[^0-9]", "", match.group(1))
    return digits if len(digits) == 20 else None


def parse_units_kwh(units: Any) -> Optional[str]:
    """``"79.9 kWh"`` (or ``79.9``) -> ``"79.9"``; None if absent or garbled."""
    if isinstance(units, (int, float)) and not isinstance(units, bool):
        units = str(units)
    if not isinstance(units, str):
        return None
    match = _UNITS_RE.search(units)
    if not match:
        return None
    try:
        return str(Decimal(match.group(1)))
    except InvalidOperation:
        return None


def parse_kobo(amount: Any) -> Optional[int]:
    """A naira amount VTpass sends as a string or number (``"350.00"``) ->
    kobo; None when absent, zero or garbled (a disco's optional field must
    never fail a delivery)."""
    if amount is None or isinstance(amount, bool) or amount == "":
        return None
    try:
        kobo = Decimal(str(amount).replace(",", "").strip()) * 100
    except InvalidOperation:
        return None
    if not kobo.is_finite() or kobo <= 0 or kobo != kobo.to_integral_value() or kobo > 10**15:
        return None
    return int(kobo)


def _text(value: Any, length: int) -> Optional[str]:
    """An optional text field, stripped and cut to its column; None if empty."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value).strip()
    return text[:length] or None


def naira_amount(amount_kobo: int) -> str:
    """Kobo -> the naira amount VTpass expects, exact: 150050 -> ``"1500.50"``,
    150000 -> ``"1500"``."""
    naira, kobo = divmod(amount_kobo, 100)
    return f"{naira}.{kobo:02d}" if kobo else str(naira)


class VTpassProvider:
    """HTTP client for a VTpass-style aggregator.

    :param base_url: e.g. ``https://sandbox.vtpass.com`` or the local sandbox
        ``http://127.0.0.1:5055``.
    :param connect_timeout_seconds: / ``read_timeout_seconds``: per request.
    :param verify_timeout_seconds: read timeout for meter verification, which
        runs inside a web request and so must be short.
    :param send_attempts: how many times to try a request whose connection
        could not even be opened (>= 1); nothing else is ever retried here.
    :param deadline_seconds: the hard wall-clock deadline of a whole ``pay``
        or ``requery`` call (``VTPASS_DEADLINE_SECONDS``); None: every
        connect attempt plus the read timeout. Verification gets the same
        rule with its own read timeout.
    :param session: a ``requests.Session`` (tests mount adapters on it);
        by default one whose connections honour the deadline.
    :param sleep: called between send attempts (tests pass a no-op).
    """

    name = "vtpass"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret_key: str,
        *,
        connect_timeout_seconds: float = 5.0,
        read_timeout_seconds: float = 30.0,
        verify_timeout_seconds: float = 10.0,
        send_attempts: int = 3,
        retry_delay_seconds: float = 0.5,
        deadline_seconds: Optional[float] = None,
        session: Optional[requests.Session] = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if send_attempts < 1:
            raise ValueError("send_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.headers = {
            "api-key": api_key,
            "secret-key": secret_key,
            # A fresh connection per call: a reused keep-alive connection the
            # server already closed fails *after* we start writing, which
            # would turn a harmless retry into an ambiguous vend.
            "Connection": "close",
        }
        self.connect_timeout_seconds = connect_timeout_seconds
        self.read_timeout_seconds = read_timeout_seconds
        self.verify_timeout_seconds = verify_timeout_seconds
        self.send_attempts = send_attempts
        self.retry_delay_seconds = retry_delay_seconds
        self.deadline_seconds = deadline_seconds or default_deadline_seconds(
            connect_timeout_seconds, read_timeout_seconds, send_attempts)
        self.verify_deadline_seconds = default_deadline_seconds(
            connect_timeout_seconds, verify_timeout_seconds, send_attempts)
        if session is None:
            session = requests.Session()
            adapter = DeadlineAdapter()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self.session = session
        self._sleep = sleep

    # -- transport -----------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], read_timeout_seconds: float,
              deadline_seconds: float) -> requests.Response:
        """POST ``body`` as JSON within a hard wall-clock deadline for the
        whole call, retrying only while the connection cannot be opened.

        The call runs on its own thread and the caller waits at most
        ``deadline_seconds``: name lookup, connection attempts and a body
        that drips in slower than any per-read timeout cannot hold it
        longer. A call abandoned at the deadline sends nothing afterwards
        (:class:`_GuardedConnectionMixin`) and ends by its own timeouts.

        :raises _NotSent: every attempt failed before sending.
        :raises DeadlineExceeded: the deadline passed (ambiguous: the
            request may have been sent).
        :raises requests.RequestException: anything else after sending
            (timeout, reset, ...); the caller treats it as ambiguous.
        """
        guard_external_call(f"VTpass {path}")
        deadline = time.monotonic() + deadline_seconds
        outcome: dict[str, Any] = {}
        # The answer's status code, once its status line arrived (the body
        # may still be on its way): an error after it carries it along.
        progress: dict[str, int] = {}
        finished = threading.Event()

        def call() -> None:
            _call.deadline = deadline
            try:
                outcome["response"] = self._post_until(path, body, read_timeout_seconds, deadline,
                                                       progress)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=call, name=f"vtpass{path}", daemon=True).start()
        if not finished.wait(max(0.0, deadline - time.monotonic())):
            log.warning("%s: no complete answer within the %g s deadline", path, deadline_seconds)
            error = DeadlineExceeded(f"{path}: no complete answer within {deadline_seconds:g} s")
            error.answer_status_code = progress.get("status_code")
            raise error
        if "error" in outcome:
            error = outcome["error"]
            if "status_code" in progress:
                error.answer_status_code = progress["status_code"]
            raise error
        return outcome["response"]

    def _post_until(self, path: str, body: dict[str, Any], read_timeout_seconds: float,
                    deadline: float, progress: Optional[dict[str, int]] = None) -> requests.Response:
        url = self.base_url + path
        for attempt in range(1, self.send_attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _NotSent("the deadline passed before a connection could be opened")
            try:
                response = self.session.post(
                    url, json=body, headers=self.headers, stream=True,
                    timeout=(min(self.connect_timeout_seconds, remaining),
                             min(read_timeout_seconds, remaining)),
                )
            except requests.ConnectionError as exc:
                if not _never_sent(exc):
                    raise
                log.warning("%s: could not connect (attempt %d/%d): %s",
                            path, attempt, self.send_attempts, exc)
                if attempt == self.send_attempts:
                    raise _NotSent(str(exc)) from exc
                self._sleep(max(0.0, min(self.retry_delay_seconds * attempt,
                                         deadline - time.monotonic())))
                continue
            if progress is not None:
                progress["status_code"] = response.status_code
            return self._read_body(response, deadline)
        raise AssertionError("unreachable")

    @staticmethod
    def _read_body(response: requests.Response, deadline: float) -> requests.Response:
        """Read the streamed body piece by piece, giving up at the deadline
        (a drip of bytes resets a per-read timeout forever)."""
        if response._content is not False:  # noqa: SLF001 - already read (a test adapter)
            return response
        chunks = []
        try:
            for chunk in response.iter_content(chunk_size=256):
                chunks.append(chunk)
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("the answer was still arriving at the deadline")
        finally:
            response.close()
        response._content = b"".join(chunks)  # noqa: SLF001 - what .content would hold
        return response

    @staticmethod
    def _json(response: requests.Response) -> Optional[dict[str, Any]]:
        try:
            data = response.json()
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # -- API -----------------------------------------------------------------

    def verify_meter(self, service_id: str, meter_number: str, meter_type: str) -> MeterVerification:
        """``POST /api/merchant-verify``: the customer on a meter.

        ``invalid`` for ``WrongBillersCode`` or a prepaid/postpaid mismatch;
        ``error`` when the provider or disco cannot answer (any non-``000``
        code, 5xx, timeout, garbage). Never raises for network trouble.
        """
        body = {"billersCode": meter_number, "serviceID": service_id, "type": meter_type}
        try:
            response = self._post("/api/merchant-verify", body, self.verify_timeout_seconds,
                                  self.verify_deadline_seconds)
        except (_NotSent, requests.RequestException) as exc:
            log.warning("merchant-verify failed: %s", exc)
            return MeterVerification("error", message="The disco could not be reached")
        data = self._json(response)
        if response.status_code != 200 or data is None or data.get("code") != OK_CODE:
            description = (data or {}).get("response_description") or f"HTTP {response.status_code}"
            return MeterVerification("error", message=str(description))
        content = data.get("content")
        if not isinstance(content, dict):
            return MeterVerification("error", message="Unexpected reply from the provider")
        if content.get("WrongBillersCode") or not content.get("Customer_Name"):
            return MeterVerification(
                "invalid", message=str(content.get("error") or "Meter number not found at the disco")
            )
        actual_type = str(content.get("Meter_Type") or meter_type).strip().lower()
        if actual_type in ("prepaid", "postpaid") and actual_type != meter_type:
            return MeterVerification("invalid", message=f"This is a {actual_type} meter, not {meter_type}",
                                     other_meter_type=actual_type)
        can_vend = str(content.get("Can_Vend", "yes")).strip().lower()
        if can_vend in ("no", "false", "0"):
            return MeterVerification("invalid", message="The disco does not allow vending to this meter")
        min_kobo = None
        try:
            raw_min = content.get("Min_Purchase_Amount")
            if raw_min in (None, ""):
                raw_min = content.get("Minimum_Amount")
            if raw_min not in (None, ""):
                min_kobo = int(Decimal(str(raw_min)) * 100)
        except (InvalidOperation, ValueError, OverflowError):  # garbage, NaN, Infinity
            min_kobo = None
        return MeterVerification(
            "valid",
            customer_name=str(content["Customer_Name"]).strip(),
            address=(str(content.get("Address") or "").strip() or None),
            meter_type=actual_type if actual_type in ("prepaid", "postpaid") else meter_type,
            min_purchase_kobo=min_kobo,
        )

    def vend(self, request_id: str, service_id: str, meter_number: str, meter_type: str,
             amount_kobo: int, phone: str) -> VendResult:
        """``POST /api/pay`` once for ``request_id`` (plus bounded re-sends
        while the connection cannot be opened). Never raises for network
        trouble; see the module docstring for the mapping."""
        body = {
            "request_id": request_id,
            "serviceID": service_id,
            "billersCode": meter_number,
            "variation_code": meter_type,
            "amount": naira_amount(amount_kobo),
            # Stored E.164; VTpass takes the national 080... form.
            "phone": national(phone),
        }
        try:
            response = self._post("/api/pay", body, self.read_timeout_seconds, self.deadline_seconds)
        except _NotSent as exc:
            # Never sent: requery will say 015 and the payment is refunded.
            return VendResult(PENDING, CODE_NO_RESPONSE, f"Could not connect to the provider: {exc}"[:500])
        except requests.Timeout as exc:  # a read timeout, or the call's hard deadline
            if _answer_began(exc):
                return VendResult(PENDING, CODE_TIMEOUT, "The provider's answer was still arriving "
                                  "when the call's deadline passed", answer_began=True)
            return VendResult(PENDING, CODE_TIMEOUT, "The provider did not answer in time")
        except requests.RequestException as exc:
            return VendResult(PENDING, CODE_NO_RESPONSE,
                              f"Connection lost after sending: {type(exc).__name__}",
                              answer_began=_answer_began(exc))
        result = self._interpret(response, meter_type)
        if result is _REQUERY_NOW:
            # 014: the provider already has this request_id. Ask what became
            # of it; a "never heard of it" here contradicts 014, so it stays
            # pending rather than refunding (and is never believed later).
            requeried = self.requery(request_id, meter_type=meter_type)
            if requeried.status == FAILED and requeried.code == CODE_NOT_FOUND:
                return VendResult(PENDING, CODE_DUPLICATE, "Duplicate request_id; requery found no order",
                                  answer_began=True)
            if requeried.status == PENDING:
                return dataclasses.replace(requeried, answer_began=True)
            return requeried
        if result.status == PENDING and 200 <= response.status_code < 300:
            # The provider answered this pay (processing, or a reply we could
            # not read): it has the order, whatever a requery says later.
            result = dataclasses.replace(result, answer_began=True)
        return result

    def requery(self, request_id: str, meter_type: Optional[str] = None) -> VendResult:
        """``POST /api/requery``: what became of ``request_id``. Never places
        an order; ``015`` -> ``failed``/``NOT_FOUND``.

        :param meter_type: when known, a delivered ``prepaid`` order without a
            readable token stays ``pending``; otherwise the response decides.
        """
        try:
            response = self._post("/api/requery", {"request_id": request_id},
                                  self.read_timeout_seconds, self.deadline_seconds)
        except _NotSent as exc:
            return VendResult(PENDING, CODE_NO_RESPONSE, f"Could not connect to the provider: {exc}"[:500])
        except requests.Timeout:
            return VendResult(PENDING, CODE_TIMEOUT, "The provider did not answer the requery in time")
        except requests.RequestException as exc:
            return VendResult(PENDING, CODE_NO_RESPONSE, f"Requery failed: {type(exc).__name__}")
        result = self._interpret(response, meter_type, requery=True)
        if result is _REQUERY_NOW:
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE, "Requery answered 014")
        return result

    # -- response mapping ----------------------------------------------------

    def _interpret(self, response: requests.Response, meter_type: Optional[str],
                   requery: bool = False) -> VendResult:
        data = self._json(response)
        if data is None:
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE,
                              f"Unreadable reply from the provider (HTTP {response.status_code})")
        code = str(data.get("code", "")).strip()
        description = str(data.get("response_description") or "").strip()
        if response.status_code >= 500:
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE,
                              f"Provider error HTTP {response.status_code} {description}".strip())
        if code == OK_CODE:
            return self._transaction(data, meter_type, description)
        if code == PROCESSING_CODE:
            return VendResult(PENDING, CODE_PROCESSING, description or "The provider is processing the order")
        if code == DUPLICATE_REQUEST_CODE:
            return _REQUERY_NOW
        if requery and code in FAILURE_CODES and code not in REQUERY_FINAL_CODES:
            # A requery of an order the provider has comes back 000 with the
            # transaction, of one it never got 015: any other failure code
            # describes the requery request, and refunding on it could
            # refund a delivered token.
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE,
                              f"Requery answered {code}: {description or FAILURE_CODES[code][1]}"[:500])
        if code in FAILURE_CODES:
            neutral, meaning = FAILURE_CODES[code]
            if code == "018":
                # Every purchase fails until someone tops up the float.
                log.error("VTpass 018: merchant balance too low; top up the provider wallet")
            return VendResult(FAILED, neutral, f"VTpass {code}: {description or meaning}"[:500])
        return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE,
                          f"Unexpected provider code {code or '(none)'}: {description}"[:500])

    @staticmethod
    def _transaction(data: dict[str, Any], meter_type: Optional[str], description: str) -> VendResult:
        content = data.get("content")
        transaction = content.get("transactions") if isinstance(content, dict) else None
        if not isinstance(transaction, dict):
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE, "000 without a transaction")
        status = str(transaction.get("status", "")).strip().lower()
        if status in ("initiated", "pending"):
            return VendResult(PENDING, CODE_PROCESSING, f"Transaction {status}")
        if status == "reversed":
            return VendResult(FAILED, "REVERSED", description or "The provider reversed the transaction")
        if status != "delivered":
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE, f"Unknown transaction status {status!r}")
        token = parse_token(data.get("purchased_code")) or parse_token(data.get("token")) \
            or parse_token(data.get("mainToken"))
        product_type = meter_type or str(transaction.get("type") or "").lower() or None
        if token is None and (product_type == "prepaid" or data.get("purchased_code")):
            # Delivered but the token is unreadable: never lose a token,
            # requery (which repeats it) rather than finish without one.
            return VendResult(PENDING, CODE_UNEXPECTED_RESPONSE, "Delivered without a readable token")
        receipt = data.get("exchangeReference") or transaction.get("transactionId")
        kct1, kct2 = parse_token(_text(data.get("kct1"), 60)), parse_token(_text(data.get("kct2"), 60))
        return VendResult(
            DELIVERED,
            code="delivered",
            message=description or "Transaction successful",
            token=token,
            units_kwh=parse_units_kwh(data.get("units")) if token else None,
            receipt_reference=str(receipt) if receipt else None,
            tariff=_text(data.get("tariff"), 100),
            debt_kobo=parse_kobo(data.get("debtAmount")),
            # Only as a pair: one key-change token alone cannot be entered.
            kct1=kct1 if kct1 and kct2 else None,
            kct2=kct2 if kct1 and kct2 else None,
            exchange_reference=_text(data.get("exchangeReference"), 64),
        )


# Sentinel for "014: requery this request_id now".
_REQUERY_NOW = VendResult(PENDING, CODE_DUPLICATE, "Duplicate request_id")

