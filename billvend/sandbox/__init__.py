"""A VTpass-style sandbox server: the aggregator billvend's ``vtpass`` provider talks to.

A small Flask app (not part of the billvend web app) speaking the API shape of
``reference/vtpass-api.md`` with the deterministic outcome table of
``billvend.vending.providers.outcomes`` (the same table the in-process simulator
uses), so the HTTP path, timeouts included, is exercised over a real socket:

- ``300000000000``: the order is recorded as delivered, then the answer is
  held back longer than the client's read timeout (a real read timeout);
- ``400000000000``: the connection is dropped without an answer and the order
  is never recorded (requery says ``015``);
- ``500000000000``: the order is recorded as delivered and the answer is
  garbage (truncated JSON);
- ``201000000000``: ``000`` with status ``pending``; delivered on requery;
- ``0000000000000``: no such meter (``WrongBillersCode``; pay says ``016``);
- ``600000000000``: the ``pay`` answer drips in, a piece every
  ``SANDBOX_DRIP_INTERVAL_SECONDS`` (each gap inside the client's read
  timeout) for ``SANDBOX_DRIP_SECONDS`` in all (longer than the vending
  lease), and delivers; the order exists (requery finds it) only once the
  answer is complete, as with a provider that commits at the end (requery
  says ``015`` until then, which the client never believes for a pay whose
  answer had begun);
- ``700000000000``: the connection is dropped; the order is recorded
  ``SANDBOX_LATE_RECORD_SECONDS`` later, so a requery says ``015`` until
  then and ``delivered`` after.

Start it with one command (it listens where ``SANDBOX_URL`` points,
``127.0.0.1:5055`` by default, and both providers' base URLs default there)::

    python -m billvend.sandbox          # or: make sandbox
    flask --app billvend.sandbox run -p 5055

The order book lives in memory, so run ONE process (threads are fine); it
is kept in ``SANDBOX_STATE_PATH`` (``instance/sandbox-state.json``;
``none`` keeps nothing) so a restart finds it again (``store``).
Control endpoints for tests and demos (no auth; bind to localhost):
``GET /sandbox/orders/<request_id>`` (pay and requery call counts, the
order), ``POST /sandbox/discos/<serviceID>/down`` and ``.../up`` (make
verification and payments answer ``030`` biller unreachable), and
``POST /sandbox/reset``. The Termii-shaped SMS API (``POST /api/sms/send``,
``GET /sandbox/sms/messages``) is :mod:`billvend.sandbox.termii`.
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Optional

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from billvend.platform.config import ConfigError, from_env, sandbox_allowed
from billvend.vending.providers import DISCOS, outcomes
from billvend.sandbox import store

log = logging.getLogger(__name__)

bp = Blueprint("sandbox", __name__)

REQUEST_ID_RE = re.compile(r"^(\d{12})[A-Za-z0-9_\-]*$")
# VTpass's electricity limits, in kobo: the lowest any disco takes (each
# meter's own minimum, outcomes.min_purchase_kobo, is what merchant-verify
# answers and pay enforces).
MIN_PURCHASE_KOBO = outcomes.DEFAULT_MIN_PURCHASE_KOBO
MAX_PURCHASE_KOBO = 500_000_00

#: outcome-table failure code -> the VTpass answer to ``pay``.
FAILURE_ANSWERS: dict[str, tuple[str, str]] = {
    "INVALID_ACCOUNT": ("016", "TRANSACTION FAILED: INVALID METER NUMBER"),
    "SERVICE_UNAVAILABLE": ("030", "BILLER NOT REACHABLE AT THIS POINT"),
    "INSUFFICIENT_CREDIT": ("018", "LOW WALLET BALANCE"),
}


@dataclass
class Order:
    """One order the sandbox accepted. ``status``: pending/delivered/failed."""

    request_id: str
    service_id: str
    meter_number: str
    meter_type: str
    amount_kobo: int
    phone: str
    status: str
    code: Optional[str]
    created_at: str
    #: ``time.monotonic()`` before which a requery says 015 (late-record meter).
    visible_after: float = 0.0


@dataclass
class SandboxState:
    """The sandbox's order book and switches, shared by its request threads."""

    success_rate: float
    timeout_sleep_seconds: float
    drip_seconds: float = 10.0
    drip_interval_seconds: float = 1.0
    late_record_seconds: float = 30.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    orders: dict[str, Order] = field(default_factory=dict)
    pay_calls: Counter = field(default_factory=Counter)
    requery_calls: Counter = field(default_factory=Counter)
    discos_down: set[str] = field(default_factory=set)

    def pay_calls_for(self, request_id: str) -> int:
        """How many ``/api/pay`` calls arrived for ``request_id``."""
        with self.lock:
            return self.pay_calls[request_id]

    def disco_down(self, service_id: str) -> bool:
        with self.lock:
            return service_id in self.discos_down or "all" in self.discos_down

    #: Called after a change made outside a request (the drip meter's
    #: late record), so the state file hears of it (``create_app`` sets it).
    on_change: Any = field(default=lambda: None, repr=False)

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.pay_calls.clear()
            self.requery_calls.clear()
            self.discos_down.clear()

    def to_json(self) -> dict[str, Any]:
        """The order book and call counts, for the state file
        (``billvend.sandbox.store``); the switches (discos down) are not kept."""
        with self.lock:
            orders = []
            for order in self.orders.values():
                row = asdict(order)
                row["visible_after"] = store.monotonic_to_wall(order.visible_after) if order.visible_after else 0.0
                orders.append(row)
            return {"orders": orders, "pay_calls": dict(self.pay_calls),
                    "requery_calls": dict(self.requery_calls)}

    def load_json(self, data: Mapping[str, Any]) -> None:
        """Put back what :meth:`to_json` saved."""
        with self.lock:
            for row in data.get("orders") or []:
                row = dict(row)
                row["visible_after"] = store.wall_to_monotonic(row["visible_after"]) if row.get(
                    "visible_after") else 0.0
                order = Order(**row)
                self.orders[order.request_id] = order
            self.pay_calls.update(data.get("pay_calls") or {})
            self.requery_calls.update(data.get("requery_calls") or {})


def state() -> SandboxState:
    """The current sandbox app's state."""
    return current_app.extensions["vtpass_sandbox"]


def _answer(code: str, description: str, **extra: Any) -> Response:
    return jsonify({"code": code, "response_description": description, **extra})


def _naira(amount_kobo: int) -> str:
    naira, kobo = divmod(amount_kobo, 100)
    return f"{naira}.{kobo:02d}"


def _transaction_answer(order: Order, status: str) -> Response:
    """A ``000`` answer for ``order`` with ``content.transactions.status``."""
    name, _address = outcomes.customer_for(order.meter_number, order.service_id)
    body: dict[str, Any] = {
        "code": "000",
        "content": {
            "transactions": {
                "status": status,
                "product_name": f"{DISCOS.get(order.service_id, order.service_id)} Payment",
                "unique_element": order.meter_number,
                "unit_price": _naira(order.amount_kobo),
                "quantity": 1,
                "type": "Electricity Bill",
                "phone": order.phone,
                "amount": _naira(order.amount_kobo),
                "transactionId": outcomes.receipt_reference_for(order.request_id)[3:],
            }
        },
        "response_description": {
            "delivered": "TRANSACTION SUCCESSFUL",
            "reversed": "TRANSACTION REVERSED",
        }.get(status, "TRANSACTION PROCESSING"),
        "requestId": order.request_id,
        "amount": _naira(order.amount_kobo),
        "transaction_date": order.created_at,
        "purchased_code": "",
    }
    if status == "delivered":
        body["exchangeReference"] = outcomes.receipt_reference_for(order.request_id)
        body["customerName"] = name
        if order.meter_type == "prepaid":
            token = outcomes.token_for(order.request_id)
            details = outcomes.delivery_details_for(order.meter_number, order.request_id,
                                                    order.amount_kobo)
            debt_kobo = details.debt_kobo or 0
            net_kobo = int(Decimal(order.amount_kobo - debt_kobo) / (1 + outcomes.VAT_RATE))
            body.update({
                "purchased_code": f"Token : {token}",
                "token": f"Token : {token}",
                "units": f"{details.units_kwh} kWh",
                "tokenAmount": _naira(net_kobo),
                "taxAmount": _naira(order.amount_kobo - debt_kobo - net_kobo),
                "debtAmount": _naira(debt_kobo),
                "tariff": details.tariff,
            })
            if details.kct1:
                body.update({"kct1": details.kct1, "kct2": details.kct2})
    return jsonify(body)


def _authorised() -> bool:
    config = current_app.config
    given_key = request.headers.get("api-key", "")
    given_secret = request.headers.get("secret-key", "")
    return hmac.compare_digest(given_key, config["VTPASS_API_KEY"]) and hmac.compare_digest(
        given_secret, config["VTPASS_SECRET_KEY"]
    )


@bp.before_request
def _check_credentials():
    if request.path.startswith("/api/") and not _authorised():
        return _answer("087", "INVALID CREDENTIALS")
    return None


def _drop_connection() -> Response:
    """Close the client's connection without a byte of answer."""
    sock = request.environ.get("werkzeug.socket") or request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # The server's attempt to write this response fails quietly.
        return Response(b"", status=500)
    # A server that hides its socket: an empty 502 is just as ambiguous.
    return Response(b"", status=502)


@bp.post("/api/merchant-verify")
def merchant_verify():
    body = request.get_json(silent=True) or {}
    meter_number = str(body.get("billersCode") or "").strip()
    service_id = str(body.get("serviceID") or "").strip()
    meter_type = str(body.get("type") or "").strip().lower()
    if service_id not in DISCOS:
        return _answer("012", "PRODUCT DOES NOT EXIST")
    if not meter_number or meter_type not in ("prepaid", "postpaid"):
        return _answer("011", "INVALID ARGUMENTS")
    if state().disco_down(service_id):
        return _answer("030", "BILLER NOT REACHABLE AT THIS POINT")
    if not outcomes.is_known_meter(meter_number):
        return _answer("000", "", content={
            "error": "This meter is not correct or is not a valid "
                     f"{DISCOS[service_id]} meter. Please check and try again.",
            "WrongBillersCode": True,
        })
    name, address = outcomes.customer_for(meter_number, service_id)
    actual_type = outcomes.METER_TYPES_OF_TEST_METERS.get(meter_number, meter_type)
    return _answer("000", "", content={
        "Customer_Name": name,
        "Address": address,
        "Meter_Number": meter_number,
        "Meter_Type": actual_type.upper(),
        "Customer_Account_Type": "NMD",
        "Can_Vend": "yes",
        "Min_Purchase_Amount": outcomes.min_purchase_kobo(service_id, actual_type) // 100,
        "Customer_Arrears": "0.00",
        "WrongBillersCode": False,
    })


def _parse_amount_kobo(raw: Any) -> Optional[int]:
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        naira = Decimal(str(raw).strip())
    except InvalidOperation:
        return None
    kobo = naira * 100
    if not kobo.is_finite() or kobo != kobo.to_integral_value():
        return None
    return int(kobo)


@bp.post("/api/pay")
def pay():
    sandbox = state()
    body = request.get_json(silent=True) or {}
    request_id = str(body.get("request_id") or "").strip()
    with sandbox.lock:
        sandbox.pay_calls[request_id] += 1
    match = REQUEST_ID_RE.fullmatch(request_id)
    if not match:
        return _answer("015", "INVALID REQUEST ID")
    try:
        datetime.strptime(match.group(1), "%Y%m%d%H%M")
    except ValueError:
        return _answer("015", "INVALID REQUEST ID")
    service_id = str(body.get("serviceID") or "").strip()
    meter_number = str(body.get("billersCode") or "").strip()
    meter_type = str(body.get("variation_code") or "").strip().lower()
    phone = str(body.get("phone") or "").strip()
    amount_kobo = _parse_amount_kobo(body.get("amount"))
    if service_id not in DISCOS:
        return _answer("012", "PRODUCT DOES NOT EXIST")
    if not meter_number or not phone or meter_type not in ("prepaid", "postpaid") or amount_kobo is None:
        return _answer("011", "INVALID ARGUMENTS")
    if amount_kobo < outcomes.min_purchase_kobo(service_id, meter_type):
        return _answer("013", "BELOW MINIMUM AMOUNT ALLOWED")
    if amount_kobo > MAX_PURCHASE_KOBO:
        return _answer("017", "ABOVE MAXIMUM AMOUNT ALLOWED")
    if sandbox.disco_down(service_id):
        return _answer("030", "BILLER NOT REACHABLE AT THIS POINT")

    behaviour = outcomes.behaviour_for(meter_number, request_id, sandbox.success_rate)
    if behaviour.recorded:
        status = "pending" if behaviour.answer == "pending" else behaviour.final
    else:
        status = None
    order = Order(request_id, service_id, meter_number, meter_type, amount_kobo, phone,
                  status or "not_received", behaviour.code,
                  datetime.now(timezone.utc).isoformat(timespec="seconds"))
    with sandbox.lock:
        if request_id in sandbox.orders:
            return _answer("014", "REQUEST ID ALREADY EXIST")
        if status is not None and behaviour.answer not in ("drip", "late_record"):
            sandbox.orders[request_id] = order

    if behaviour.answer == "drip":
        return _drip(sandbox, order)
    if behaviour.answer == "late_record":
        order.visible_after = time.monotonic() + sandbox.late_record_seconds
        with sandbox.lock:
            sandbox.orders[request_id] = order
        return _drop_connection()
    if behaviour.answer == "no_response":
        return _drop_connection()
    if behaviour.answer == "unexpected":
        # Claims to be JSON, is not: a proxy cut the answer short.
        return Response(b'{"code":"000","content":{"transactions":{"status":"deliv',
                        status=200, mimetype="application/json")
    if behaviour.answer == "timeout":
        # The order stands (or not, per the table); the client gives up first.
        time.sleep(sandbox.timeout_sleep_seconds)
    if order.status == "failed":
        code, description = FAILURE_ANSWERS.get(behaviour.code or "", ("016", "TRANSACTION FAILED"))
        return _answer(code, description, requestId=request_id)
    if order.status == "not_received":
        return _answer("016", "TRANSACTION FAILED", requestId=request_id)
    return _transaction_answer(order, order.status)


@bp.post("/api/requery")
def requery():
    sandbox = state()
    body = request.get_json(silent=True) or {}
    request_id = str(body.get("request_id") or "").strip()
    with sandbox.lock:
        sandbox.requery_calls[request_id] += 1
        order = sandbox.orders.get(request_id)
        if order is not None and order.status == "pending":
            # A processing order settles by the time anyone asks again.
            behaviour = outcomes.behaviour_for(order.meter_number, request_id, sandbox.success_rate)
            order.status = behaviour.final
    if order is None or time.monotonic() < order.visible_after:
        return _answer("015", "INVALID REQUEST ID")
    return _transaction_answer(order, "reversed" if order.status == "failed" else order.status)


def _drip(sandbox: SandboxState, order: Order) -> Response:
    """The delivered answer for ``order``, a few bytes at a time over
    ``drip_seconds``; the order is recorded when the answer completes,
    whether or not the client is still listening."""
    body = _transaction_answer(order, "delivered").get_data()
    pieces = max(2, int(sandbox.drip_seconds / sandbox.drip_interval_seconds))
    size = -(-len(body) // pieces)

    def record() -> None:
        with sandbox.lock:
            sandbox.orders.setdefault(order.request_id, order)
        sandbox.on_change()

    threading.Timer(sandbox.drip_seconds, record).start()

    def generate():
        for start in range(0, len(body), size):
            time.sleep(sandbox.drip_interval_seconds)
            yield body[start:start + size]

    return Response(generate(), status=200, mimetype="application/json",
                    headers={"Content-Length": str(len(body))})


@bp.get("/sandbox/orders/<request_id>")
def show_order(request_id: str):
    """Test hook: call counts and the order (``null`` if never recorded)."""
    sandbox = state()
    with sandbox.lock:
        order = sandbox.orders.get(request_id)
        return jsonify({
            "request_id": request_id,
            "pay_calls": sandbox.pay_calls[request_id],
            "requery_calls": sandbox.requery_calls[request_id],
            "order": asdict(order) if order else None,
        })


@bp.post("/sandbox/discos/<service_id>/<switch>")
def switch_disco(service_id: str, switch: str):
    """``down``: verification and payments for ``service_id`` (or ``all``)
    answer ``030`` biller unreachable; ``up`` restores it."""
    if (service_id not in DISCOS and service_id != "all") or switch not in ("down", "up"):
        return jsonify({"error": "use /sandbox/discos/<serviceID|all>/<down|up>"}), 404
    sandbox = state()
    with sandbox.lock:
        if switch == "down":
            sandbox.discos_down.add(service_id)
        else:
            sandbox.discos_down.discard(service_id)
        return jsonify({"discos_down": sorted(sandbox.discos_down)})


@bp.post("/sandbox/reset")
def reset():
    state().reset()
    return jsonify({"ok": True})


@bp.get("/")
def index():
    return jsonify({"service": "billvend VTpass sandbox",
                    "endpoints": ["/api/merchant-verify", "/api/pay", "/api/requery", "/api/sms/send",
                                  "/sandbox/sms/messages"]})


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """The sandbox app. Reads the same configuration as billvend
    (``VTPASS_API_KEY``/``VTPASS_SECRET_KEY`` it accepts,
    ``SIMULATOR_SUCCESS_RATE`` for ordinary meters,
    ``SANDBOX_TIMEOUT_SLEEP_SECONDS`` for the timeout meter, defaulting to
    ``VTPASS_READ_TIMEOUT_SECONDS`` + 5).

    :param config: overrides on top of the environment's config.
    :raises billvend.platform.config.ConfigError: with ``BILLVEND_ENV=production``: a
        sandbox never runs, or is mounted, in production.
    """
    app = Flask(__name__)
    app.config.update(from_env())
    if config:
        app.config.update(config)
    if not sandbox_allowed(app.config):
        raise ConfigError("BILLVEND_ENV=production: the sandbox servers do not run in production")
    sleep_seconds = app.config["SANDBOX_TIMEOUT_SLEEP_SECONDS"] or (
        app.config["VTPASS_READ_TIMEOUT_SECONDS"] + 5
    )
    app.extensions["vtpass_sandbox"] = SandboxState(
        success_rate=app.config["SIMULATOR_SUCCESS_RATE"],
        timeout_sleep_seconds=sleep_seconds,
        drip_seconds=app.config["SANDBOX_DRIP_SECONDS"] or app.config["VENDING_LEASE_SECONDS"] + 5,
        drip_interval_seconds=(app.config["SANDBOX_DRIP_INTERVAL_SECONDS"]
                               or app.config["VTPASS_READ_TIMEOUT_SECONDS"] / 2),
        late_record_seconds=app.config["SANDBOX_LATE_RECORD_SECONDS"],
    )
    app.register_blueprint(bp)
    from billvend.sandbox import paystack  # the Paystack-shaped API, same process (issue 15)

    paystack.init_app(app)
    from billvend.sandbox import paystack_bank  # its Transfers API: the bank withdrawals go to (issue 28)

    paystack_bank.init_app(app)
    from billvend.sandbox import termii  # the Termii-shaped SMS API, same process (issue 23)

    termii.init_app(app)
    _keep_state(app)
    return app


def _keep_state(app: Flask) -> None:
    """Load the state file (``SANDBOX_STATE_PATH``) and keep it up to date:
    every request that may change something (not GET/HEAD) marks it dirty
    (issue 20: a restart of ``make run`` forgot every account, checkout and
    order)."""
    raw = str(app.config.get("SANDBOX_STATE_PATH") or "")
    app.extensions["sandbox_state_file"] = None
    if not raw or raw.strip().lower() in store.IN_MEMORY:
        return
    path = Path(raw)
    vtpass_state, paystack_state = app.extensions["vtpass_sandbox"], app.extensions["paystack_sandbox"]
    termii_state, bank_state = app.extensions["termii_sandbox"], app.extensions["paystack_bank_sandbox"]
    saved = store.load(path)
    if saved:
        vtpass_state.load_json(saved.get("vtpass") or {})
        paystack_state.load_json(saved.get("paystack") or {})
        termii_state.load_json(saved.get("termii") or {})
        bank_state.load_json(saved.get("paystack_bank") or {})
    state_file = store.StateFile(path, lambda: {"vtpass": vtpass_state.to_json(),
                                                "paystack": paystack_state.to_json(),
                                                "termii": termii_state.to_json(),
                                                "paystack_bank": bank_state.to_json()})
    vtpass_state.on_change = state_file.mark_dirty
    app.extensions["sandbox_state_file"] = state_file
    from billvend.sandbox import paystack_bank

    paystack_bank.rearm(app)  # transfers that settle, reverse or owe a webhook after the restart

    @app.after_request
    def _note_change(response: Response) -> Response:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            state_file.mark_dirty()
        return response


def serve_in_thread(app: Flask, host: str = "127.0.0.1", port: int = 0) -> tuple[BaseWSGIServer, str]:
    """Serve ``app`` on a background thread (port 0: any free port).

    :returns: ``(server, base_url)``; stop with ``server.shutdown()``.
    """
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="vtpass-sandbox", daemon=True)
    thread.start()
    return server, f"http://{host}:{server.server_port}"
