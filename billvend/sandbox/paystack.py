"""The Paystack-shaped part of the sandbox server (``reference/paystack-api.md``).

Served by the same process as the VTpass sandbox (``python -m
billvend.sandbox``, 127.0.0.1:5055), so ``make run`` runs billvend's real
``paystack`` gateway code against it:

- ``POST /transaction/initialize``, ``GET /transaction/verify/<reference>``,
  ``GET /transaction`` (``from``/``to``/``perPage``/``page``),
  ``POST /customer``, ``POST /dedicated_account``; ``Authorization: Bearer
  <PAYSTACK_SECRET_KEY>`` on each; answers ``{status, message, data}`` with
  amounts in kobo and Paystack's local card fee (1.5% + ₦100, the ₦100
  waived under ₦2,500, capped at ₦2,000) in ``fees``.
- ``GET /checkout/<access_code>``: the hosted checkout page, a form with one
  submit button per outcome (all named ``outcome``: ``success``, ``failed``,
  ``abandoned``); choosing one redirects to ``callback_url?reference=&trxref=``
  and, for ``success``, POSTs a signed ``charge.success`` webhook to
  ``PAYSTACK_WEBHOOK_URL``.
- ``POST /sandbox/bank-transfers`` ``{account_number, amount}``: money into a
  dedicated account; sends the ``dedicated_nuban`` ``charge.success`` webhook.
- A checkout left unanswered for ``PAYSTACK_SANDBOX_ABANDON_SECONDS``
  (default 1800) verifies as ``abandoned``, as Paystack's does; its page
  still takes a late payment.
- Test hooks: ``POST /sandbox/paystack/settings`` ``{webhook: normal | late |
  twice | before_redirect | never, webhook_delay_seconds,
  abandon_after_seconds}``,
  ``GET /sandbox/paystack/transactions/<reference>`` (the transaction and how
  many initializations arrived for it), ``POST /sandbox/paystack/reset``.
- Customers, dedicated accounts and transactions (checkouts included) are
  kept in the sandbox's state file across restarts (``billvend.sandbox.store``).
- The Transfers API (the bank withdrawals go to) is ``billvend.sandbox.paystack_bank``.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import requests
from flask import Blueprint, Flask, current_app, jsonify, redirect, render_template_string, request

from billvend.funding.gateways import sign
from billvend.sandbox import store

log = logging.getLogger(__name__)

bp = Blueprint("paystack_sandbox", __name__)

WEBHOOK_MODES = ("normal", "late", "twice", "before_redirect", "never")
OUTCOMES = ("success", "failed", "abandoned")


def local_card_fee_kobo(amount_kobo: int) -> int:
    """Paystack's Nigerian local card fee: 1.5% + ₦100 (the ₦100 waived under
    ₦2,500), capped at ₦2,000 (paystack.com/pricing)."""
    fee = amount_kobo * 15 // 1000 + (100_00 if amount_kobo >= 2_500_00 else 0)
    return min(fee, 2_000_00)


def dva_fee_kobo(amount_kobo: int) -> int:
    """Dedicated virtual account arrivals: 1%, capped at ₦300."""
    return min(amount_kobo // 100, 300_00)


@dataclass
class Transaction:
    reference: str
    amount_kobo: int
    email: str
    status: str  # ongoing until the checkout is answered
    channel: str
    access_code: Optional[str] = None
    callback_url: Optional[str] = None
    customer_code: Optional[str] = None
    fees_kobo: Optional[int] = None
    paid_at: Optional[str] = None
    #: The bank's words when set by a test (``Insufficient Funds``), else the status's usual ones.
    gateway_response: Optional[str] = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    started_monotonic: float = field(default_factory=time.monotonic)

    def reported_status(self, abandon_after_seconds: float) -> str:
        """What verify and the list say: a checkout still unanswered after
        ``abandon_after_seconds`` is ``abandoned``, as Paystack reports a
        checkout the customer walked away from (the page itself stays open:
        paying later turns it into a success)."""
        if self.status == "ongoing" and time.monotonic() - self.started_monotonic >= abandon_after_seconds:
            return "abandoned"
        return self.status

    def data(self, abandon_after_seconds: float = float("inf")) -> dict[str, Any]:
        status = self.reported_status(abandon_after_seconds)
        return {
            "id": abs(hash(self.reference)) % 10**9, "reference": self.reference, "status": status,
            "amount": self.amount_kobo, "currency": "NGN", "fees": self.fees_kobo,
            "channel": self.channel, "paid_at": self.paid_at, "created_at": self.created_at,
            "gateway_response": self.gateway_response or {
                "success": "Successful", "failed": "Declined",
                "abandoned": "The transaction was not completed"}.get(status, "Pending"),
            "customer": {"email": self.email, "customer_code": self.customer_code},
            "authorization": {"channel": self.channel, "bank": "TEST BANK" if self.channel == "card" else None},
        }


@dataclass
class PaystackState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    by_access_code: dict[str, str] = field(default_factory=dict)
    initializations: Counter = field(default_factory=Counter)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> customer
    accounts: dict[str, str] = field(default_factory=dict)  # account number -> customer code
    webhook_mode: str = "normal"
    webhook_delay_seconds: float = 5.0
    abandon_after_seconds: float = 1800.0
    webhooks_sent: int = 0

    def to_json(self) -> dict[str, Any]:
        """Transactions (checkouts included), customers and dedicated
        accounts, for the state file (``billvend.sandbox.store``); the test
        settings come from the configuration at each start."""
        with self.lock:
            transactions = []
            for tx in self.transactions.values():
                row = asdict(tx)
                row["started_monotonic"] = store.monotonic_to_wall(tx.started_monotonic)
                transactions.append(row)
            return {"transactions": transactions, "initializations": dict(self.initializations),
                    "customers": dict(self.customers), "accounts": dict(self.accounts)}

    def load_json(self, data: dict[str, Any]) -> None:
        """Put back what :meth:`to_json` saved."""
        with self.lock:
            for row in data.get("transactions") or []:
                row = dict(row)
                row["started_monotonic"] = store.wall_to_monotonic(row["started_monotonic"])
                tx = Transaction(**row)
                self.transactions[tx.reference] = tx
                if tx.access_code:
                    self.by_access_code[tx.access_code] = tx.reference
            self.initializations.update(data.get("initializations") or {})
            self.customers.update(data.get("customers") or {})
            self.accounts.update(data.get("accounts") or {})

    def reset(self) -> None:
        with self.lock:
            self.transactions.clear()
            self.by_access_code.clear()
            self.initializations.clear()
            self.customers.clear()
            self.accounts.clear()
            self.webhooks_sent = 0


def state() -> PaystackState:
    return current_app.extensions["paystack_sandbox"]


def _ok(message: str, data: Any, status: int = 200, **extra: Any):
    return jsonify({"status": True, "message": message, "data": data, **extra}), status


def _refuse(message: str, status: int = 400):
    return jsonify({"status": False, "message": message}), status


API_PREFIXES = ("/transaction", "/customer", "/dedicated_account", "/bank", "/transfer", "/balance")


@bp.before_app_request
def _check_key():
    if request.path.startswith(API_PREFIXES):
        given = request.headers.get("Authorization", "")
        import hmac

        if not hmac.compare_digest(given, f"Bearer {current_app.config['PAYSTACK_SECRET_KEY']}"):
            return _refuse("Invalid key", 401)
    return None


@bp.post("/transaction/initialize")
def initialize():
    body = request.get_json(silent=True) or {}
    reference = str(body.get("reference") or "") or "T" + secrets.token_hex(8)
    amount = body.get("amount")
    email = body.get("email")
    sandbox = state()
    with sandbox.lock:
        sandbox.initializations[reference] += 1
        if reference in sandbox.transactions:
            return _refuse("Duplicate Transaction Reference")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 100:
        return _refuse("Invalid Amount Sent")
    if not isinstance(email, str) or "@" not in email:
        return _refuse("Invalid Email Address Passed")
    if body.get("currency", "NGN") != "NGN":
        return _refuse("Currency not supported by merchant")
    access_code = secrets.token_urlsafe(10)
    tx = Transaction(reference, amount, email, "ongoing", "card", access_code,
                     body.get("callback_url") if isinstance(body.get("callback_url"), str) else None)
    with sandbox.lock:
        if reference in sandbox.transactions:
            return _refuse("Duplicate Transaction Reference")
        sandbox.transactions[reference] = tx
        sandbox.by_access_code[access_code] = reference
    url = request.host_url.rstrip("/") + f"/checkout/{access_code}"
    return _ok("Authorization URL created",
               {"authorization_url": url, "access_code": access_code, "reference": reference})


@bp.get("/transaction/verify/<path:reference>")
def verify(reference: str):
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transactions.get(reference)
        data = tx.data(sandbox.abandon_after_seconds) if tx else None
    if data is None:
        return _refuse("Transaction reference not found", 404)
    return _ok("Verification successful", data)


def _parse_when(raw: Optional[str]) -> Optional[datetime]:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@bp.get("/transaction")
def list_transactions():
    start, end = _parse_when(request.args.get("from")), _parse_when(request.args.get("to"))
    per_page = max(1, min(int(request.args.get("perPage", 50) or 50), 200))
    page = max(1, int(request.args.get("page", 1) or 1))
    status = request.args.get("status")
    sandbox = state()
    with sandbox.lock:
        rows = [tx.data(sandbox.abandon_after_seconds) for tx in sandbox.transactions.values()]
    picked = []
    for row in rows:
        when = _parse_when(row["paid_at"] or row["created_at"])
        if start and when < start or end and when >= end:
            continue
        if status and row["status"] != status:
            continue
        picked.append(row)
    page_count = max(1, -(-len(picked) // per_page))
    chunk = picked[(page - 1) * per_page: page * per_page]
    return _ok("Transactions retrieved", chunk,
               meta={"total": len(picked), "perPage": per_page, "page": page, "pageCount": page_count})


@bp.post("/customer")
def create_customer():
    body = request.get_json(silent=True) or {}
    email = body.get("email")
    if not isinstance(email, str) or "@" not in email:
        return _refuse("Invalid Email Address Passed")
    sandbox = state()
    with sandbox.lock:
        for code, customer in sandbox.customers.items():
            if customer["email"] == email:
                return _ok("Customer retrieved", customer)
        code = "CUS_" + secrets.token_hex(7)
        customer = {"email": email, "customer_code": code, "first_name": body.get("first_name"),
                    "last_name": body.get("last_name"), "phone": body.get("phone")}
        sandbox.customers[code] = customer
    return _ok("Customer created", customer)


@bp.post("/dedicated_account")
def dedicated_account():
    body = request.get_json(silent=True) or {}
    code = body.get("customer")
    sandbox = state()
    with sandbox.lock:
        customer = sandbox.customers.get(code)
        if customer is None:
            return _refuse("Customer not found", 404)
        number = next((n for n, c in sandbox.accounts.items() if c == code), None)
        if number is None:
            while True:
                number = "99" + "".join(secrets.choice("0123456789") for _ in range(8))
                if number not in sandbox.accounts:
                    break
            sandbox.accounts[number] = code
    name = "BILLVEND/" + " ".join(filter(None, (customer.get("first_name"), customer.get("last_name"))))
    return _ok("NUBAN successfully created", {
        "account_number": number, "account_name": name.upper(),
        "bank": {"name": "Test Bank", "id": 1, "slug": "test-bank"},
        "customer": customer, "active": True, "currency": "NGN",
    })


# --- Webhooks ------------------------------------------------------------------


def _post_webhook(app: Flask, event: dict[str, Any]) -> None:
    raw = json.dumps(event, separators=(",", ":")).encode()
    url = app.config["PAYSTACK_WEBHOOK_URL"]
    headers = {"Content-Type": "application/json",
               "x-paystack-signature": sign(app.config["PAYSTACK_SECRET_KEY"], raw)}
    for attempt in range(3):
        try:
            response = requests.post(url, data=raw, headers=headers, timeout=10)
            app.extensions["paystack_sandbox"].webhooks_sent += 1
            if response.status_code == 200:
                return
            log.warning("webhook to %s answered %s", url, response.status_code)
        except requests.RequestException as exc:
            log.warning("webhook to %s failed: %s", url, exc)
        time.sleep(0.5 * (attempt + 1))


def send_webhook(event: dict[str, Any], *, mode: Optional[str] = None) -> None:
    """Deliver ``event`` as the settings say: ``before_redirect`` at once,
    before this function returns; ``normal`` on a thread now; ``late`` after
    the delay; ``twice`` two deliveries; ``never`` not at all."""
    app = current_app._get_current_object()  # noqa: SLF001
    sandbox = state()
    mode = mode or sandbox.webhook_mode
    if mode == "never":
        return
    if mode == "before_redirect":
        _post_webhook(app, event)
        return
    delay = sandbox.webhook_delay_seconds if mode == "late" else 0.0
    times = 2 if mode == "twice" else 1

    def deliver() -> None:
        time.sleep(delay)
        for _ in range(times):
            _post_webhook(app, event)

    threading.Thread(target=deliver, name="paystack-webhook", daemon=True).start()


CHECKOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Paystack sandbox checkout</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}
button{display:block;width:100%;margin:.5rem 0;padding:.8rem;font-size:1rem;border-radius:8px}</style>
</head><body><main>
<h1>Sandbox checkout</h1>
<p>Pay <strong>{{ naira }}</strong> to billvend ({{ tx.email }}).</p>
<p>Reference <code>{{ tx.reference }}</code></p>
{% if tx.status != "ongoing" %}<p role="alert">This checkout is already {{ tx.status }}.</p>{% else %}
<form method="post">
  <button type="submit" name="outcome" value="success">Pay {{ naira }} (success)</button>
  <button type="submit" name="outcome" value="failed">Card declined (failed)</button>
  <button type="submit" name="outcome" value="abandoned">Cancel payment (abandoned)</button>
</form>{% endif %}
</main></body></html>"""


def _naira(kobo: int) -> str:
    return f"₦{kobo // 100:,}.{kobo % 100:02d}"


@bp.route("/checkout/<access_code>", methods=["GET", "POST"])
def checkout(access_code: str):
    sandbox = state()
    with sandbox.lock:
        reference = sandbox.by_access_code.get(access_code)
        tx = sandbox.transactions.get(reference) if reference else None
    if tx is None:
        return "No such checkout", 404
    if request.method == "GET":
        return render_template_string(CHECKOUT_PAGE, tx=tx, naira=_naira(tx.amount_kobo))
    outcome = request.form.get("outcome")
    if outcome not in OUTCOMES:
        return "Choose success, failed or abandoned", 400
    with sandbox.lock:
        if tx.status != "ongoing":  # single use, as Paystack's URL is
            return render_template_string(CHECKOUT_PAGE, tx=tx, naira=_naira(tx.amount_kobo)), 409
        tx.status = outcome
        if outcome == "success":
            tx.fees_kobo = local_card_fee_kobo(tx.amount_kobo)
            tx.paid_at = datetime.now(timezone.utc).isoformat()
        data = tx.data()
    if outcome == "success":
        send_webhook({"event": "charge.success", "data": data})
    target = tx.callback_url or request.host_url
    sep = "&" if "?" in target else "?"
    return redirect(f"{target}{sep}reference={tx.reference}&trxref={tx.reference}", code=302)


@bp.post("/sandbox/bank-transfers")
def bank_transfer():
    """Simulate a transfer of ``amount`` kobo into ``account_number``."""
    body = request.get_json(silent=True) or {}
    number, amount = str(body.get("account_number") or ""), body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        return jsonify({"error": "amount must be a positive integer number of kobo"}), 400
    sandbox = state()
    with sandbox.lock:
        code = sandbox.accounts.get(number)
        customer = sandbox.customers.get(code) if code else None
        if customer is None:
            return jsonify({"error": "no such dedicated account"}), 404
        reference = "DVA_" + secrets.token_hex(8)
        tx = Transaction(reference, amount, customer["email"], "success", "dedicated_nuban",
                         customer_code=code, fees_kobo=dva_fee_kobo(amount),
                         paid_at=datetime.now(timezone.utc).isoformat())
        sandbox.transactions[reference] = tx
        data = tx.data()
    send_webhook({"event": "charge.success", "data": data},
                 mode="before_redirect" if body.get("sync") else None)
    return jsonify({"reference": reference, "data": data}), 201


@bp.post("/sandbox/paystack/settings")
def settings():
    body = request.get_json(silent=True) or {}
    sandbox = state()
    mode = body.get("webhook", sandbox.webhook_mode)
    if mode not in WEBHOOK_MODES:
        return jsonify({"error": f"webhook must be one of {', '.join(WEBHOOK_MODES)}"}), 400
    with sandbox.lock:
        sandbox.webhook_mode = mode
        if "webhook_delay_seconds" in body:
            sandbox.webhook_delay_seconds = float(body["webhook_delay_seconds"])
        if "abandon_after_seconds" in body:
            sandbox.abandon_after_seconds = float(body["abandon_after_seconds"])
    return jsonify({"webhook": sandbox.webhook_mode,
                    "webhook_delay_seconds": sandbox.webhook_delay_seconds,
                    "abandon_after_seconds": sandbox.abandon_after_seconds})


@bp.get("/sandbox/paystack/transactions/<path:reference>")
def show_transaction(reference: str):
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transactions.get(reference)
        return jsonify({"reference": reference, "initializations": sandbox.initializations[reference],
                        "transaction": asdict(tx) if tx else None})


@bp.post("/sandbox/paystack/transactions/<path:reference>/status")
def set_status(reference: str):
    """Test hook: change a transaction as the gateway would later (a late
    success after an abandoned checkout), without a webhook; optional
    ``gateway_response`` (the bank's words, ``Insufficient Funds``) and ``amount``."""
    body = request.get_json(silent=True) or {}
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transactions.get(reference)
        if tx is None or body.get("status") not in ("success", "failed", "abandoned", "ongoing"):
            return jsonify({"error": "no such transaction or bad status"}), 404
        tx.status = body["status"]
        if isinstance(body.get("gateway_response"), str):
            tx.gateway_response = body["gateway_response"][:200]
        if "amount" in body:
            tx.amount_kobo = int(body["amount"])
        if tx.status == "success":
            tx.fees_kobo = local_card_fee_kobo(tx.amount_kobo)
            tx.paid_at = tx.paid_at or datetime.now(timezone.utc).isoformat()
        return jsonify(tx.data())


@bp.post("/sandbox/paystack/reset")
def reset():
    state().reset()
    bank = current_app.extensions.get("paystack_bank_sandbox")
    if bank is not None:  # the sandbox's bank (paystack_bank), same process
        bank.reset(int(current_app.config["PAYSTACK_SANDBOX_BALANCE_KOBO"]))
    return jsonify({"ok": True})


def init_app(app: Flask) -> None:
    """Register the Paystack routes on the sandbox app."""
    app.extensions["paystack_sandbox"] = PaystackState(
        webhook_mode=app.config["PAYSTACK_SANDBOX_WEBHOOK"],
        webhook_delay_seconds=app.config["PAYSTACK_SANDBOX_WEBHOOK_DELAY_SECONDS"],
        abandon_after_seconds=app.config["PAYSTACK_SANDBOX_ABANDON_SECONDS"])
    app.register_blueprint(bp)
