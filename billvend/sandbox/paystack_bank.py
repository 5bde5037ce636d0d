"""The sandbox's bank: the Paystack Transfers API that withdrawals use
(``reference/paystack-api.md``, "Transfers"), served by the same process as
the rest of the Paystack sandbox and behind the same secret key.

- ``GET /bank`` (``perPage``, ``page``): Nigerian banks ``{name, slug, code,
  longcode, active, currency, type}``, with ``meta``.
- ``GET /bank/resolve?account_number=&bank_code=``: the account holder's name.
- ``POST /transferrecipient`` ``{type: "nuban", name, account_number,
  bank_code, currency}``: ``recipient_code``; the same bank account again
  gives back the existing recipient, as Paystack does.
- ``POST /transfer`` ``{source: "balance", amount, recipient, reference,
  reason}``; ``GET /transfer/verify/<reference>``; ``POST
  /transfer/finalize_transfer`` ``{transfer_code, otp}``; ``GET /balance``.
- The ``transfer.success``, ``transfer.failed`` and ``transfer.reversed``
  webhooks, signed and timed like the other sandbox webhooks
  (``paystack.send_webhook``).

What happens goes by the recipient's account number:

============  ==============================================================
0123456789    success (``pending`` at initiate, ``success`` after the settle delay)
1111111111    failed after the settle delay ("Could not credit account")
2222222222    success, then ``reversed`` after the reverse delay
3333333333    the first initiate never answers (it sleeps past the client's
              read timeout, then drops the answer), but the transfer went
              through: verify finds it, a retry with the same reference gets it
4444444444    ``otp``: waits for ``finalize_transfer`` (OTP ``123456``), then
              succeeds; ``abandoned`` after ``PAYSTACK_SANDBOX_ABANDON_SECONDS``
0000000000    cannot be resolved (nor made a recipient)
any other     success, as 0123456789
============  ==============================================================

A reference is lowercase letters, digits, ``-`` and ``_``. Initiating again
with the SAME reference and the same amount and recipient sends nothing
more: it answers the transfer as it stands (that is how a non-conclusive
transfer is retried without paying twice); with other fields it is refused.
The business balance (``PAYSTACK_SANDBOX_BALANCE_KOBO``) pays the amount
and the fee at initiate and gets them back on failure or reversal.

A transfer's status is worked out from the wall clock at each read, so a
restart (the state file) loses no settlement; the webhooks of a transfer
are sent by a timer, re-armed after a restart for those not yet sent.
Test hooks: ``GET /sandbox/paystack/transfers/<reference>`` (the transfer
and how many initiations arrived), ``POST
/sandbox/paystack/transfers/<reference>/status`` ``{status}``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from flask import Blueprint, Flask, current_app, jsonify, request

from billvend.sandbox import paystack

bp = Blueprint("paystack_bank_sandbox", __name__)

SUCCESS_ACCOUNT = "0123456789"
FAILED_ACCOUNT = "1111111111"
REVERSED_ACCOUNT = "2222222222"
NO_ANSWER_ACCOUNT = "3333333333"
OTP_ACCOUNT = "4444444444"
UNRESOLVABLE_ACCOUNT = "0000000000"
#: The one OTP the sandbox's business accepts at ``finalize_transfer``.
SANDBOX_OTP = "123456"
#: Paystack's dashboard minimum for a transfer from the balance: ₦100.
MINIMUM_TRANSFER_KOBO = 10_000

#: A few of the banks Paystack lists for Nigeria (their real CBN/NIP codes).
BANKS = (
    ("Access Bank", "access-bank", "044", "044150149"),
    ("Ecobank Nigeria", "ecobank-nigeria", "050", "050150010"),
    ("Fidelity Bank", "fidelity-bank", "070", "070150003"),
    ("First Bank of Nigeria", "first-bank-of-nigeria", "011", "011151003"),
    ("First City Monument Bank", "first-city-monument-bank", "214", "214150018"),
    ("Guaranty Trust Bank", "guaranty-trust-bank", "058", "058152036"),
    ("Keystone Bank", "keystone-bank", "082", "082150017"),
    ("Kuda Bank", "kuda-bank", "50211", ""),
    ("Moniepoint MFB", "moniepoint-mfb-ng", "50515", ""),
    ("OPay Digital Services Limited (OPay)", "paycom", "999992", ""),
    ("PalmPay", "palmpay", "999991", ""),
    ("Polaris Bank", "polaris-bank", "076", "076151006"),
    ("Providus Bank", "providus-bank", "101", ""),
    ("Stanbic IBTC Bank", "stanbic-ibtc-bank", "221", "221159522"),
    ("Sterling Bank", "sterling-bank", "232", "232150016"),
    ("Union Bank of Nigeria", "union-bank-of-nigeria", "032", "032080474"),
    ("United Bank For Africa", "united-bank-for-africa", "033", "033153513"),
    ("Wema Bank", "wema-bank", "035", "035150103"),
    ("Zenith Bank", "zenith-bank", "057", "057150013"),
)
BANK_NAMES = {code: name for name, _slug, code, _long in BANKS}

ACCOUNT_NUMBER_RE = re.compile(r"\d{10}")
REFERENCE_RE = re.compile(r"[a-z0-9_-]{1,100}")
FIRST_NAMES = ("ADA", "CHIDI", "FUNMI", "IBRAHIM", "NGOZI", "TUNDE", "AMAKA", "EMEKA", "HALIMA", "SEGUN")
LAST_NAMES = ("OKAFOR", "ADEYEMI", "BELLO", "EZE", "NWOSU", "OGUNLEYE", "ABUBAKAR", "OBI", "ADEBAYO", "UCHE")

# Statuses (the reference's list).
PENDING, OTP, SUCCESS, FAILED, REVERSED, ABANDONED = "pending", "otp", "success", "failed", "reversed", "abandoned"


def transfer_fee_kobo(amount_kobo: int) -> int:
    """Paystack's Nigerian transfer fee: ₦10 up to ₦5,000, ₦25 up to
    ₦50,000, ₦50 above (paystack.com/pricing, "Transfers")."""
    if amount_kobo <= 500_000:
        return 1_000
    if amount_kobo <= 5_000_000:
        return 2_500
    return 5_000


def account_name(account_number: str) -> str:
    """The holder's name the sandbox's bank gives ``account_number``: made
    up, but the same every time (a hash, not Python's salted ``hash``)."""
    digest = hashlib.sha256(account_number.encode()).digest()
    return f"{FIRST_NAMES[digest[0] % len(FIRST_NAMES)]} {LAST_NAMES[digest[1] % len(LAST_NAMES)]}"


def _iso(wall_seconds: float) -> str:
    return datetime.fromtimestamp(wall_seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class Transfer:
    """One transfer as the sandbox's bank sees it; times are ``time.time()``."""

    reference: str
    transfer_code: str
    amount_kobo: int
    fee_kobo: int
    recipient_code: str
    account_number: str
    reason: str
    created_wall: float
    #: When it settles (success or failed); None while waiting for an OTP.
    settle_wall: Optional[float]
    #: When a settled success turns ``reversed`` (2222222222 only).
    reverse_wall: Optional[float] = None
    #: A status a test hook forced, winning over the timeline.
    forced_status: Optional[str] = None
    #: Webhook events already sent (``transfer.success`` ...).
    sent: list[str] = field(default_factory=list)
    refunded_to_balance: bool = False

    def status(self, now_wall: float, abandon_after_seconds: float) -> str:
        """The status at ``now_wall``."""
        if self.forced_status:
            return self.forced_status
        if self.settle_wall is None:
            return ABANDONED if now_wall - self.created_wall >= abandon_after_seconds else OTP
        if now_wall < self.settle_wall:
            return PENDING
        if self.account_number == FAILED_ACCOUNT:
            return FAILED
        if self.reverse_wall is not None and now_wall >= self.reverse_wall:
            return REVERSED
        return SUCCESS

    def data(self, status: str, recipient: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` of verify, initiate and the webhooks."""
        return {
            "amount": self.amount_kobo, "currency": "NGN", "reference": self.reference,
            "transfer_code": self.transfer_code, "status": status, "reason": self.reason,
            "source": "balance", "fee_charged": self.fee_kobo, "recipient": recipient,
            "failures": None,
            "gateway_response": {FAILED: "Could not credit account", REVERSED: "Transfer reversed by the bank",
                                 ABANDONED: "OTP not given in time"}.get(status),
            "createdAt": _iso(self.created_wall), "updatedAt": _iso(time.time()),
        }


@dataclass
class BankState:
    """Recipients, transfers and the business balance, behind one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> recipient
    transfers: dict[str, Transfer] = field(default_factory=dict)  # reference -> transfer
    by_code: dict[str, str] = field(default_factory=dict)  # transfer_code -> reference
    initiations: Counter = field(default_factory=Counter)
    balance_kobo: int = 0
    settle_seconds: float = 2.0
    reverse_seconds: float = 10.0
    abandon_after_seconds: float = 1800.0
    no_answer_seconds: float = 15.0
    #: The settlement timers armed, so a test can stop a sandbox it restarts.
    timers: list[threading.Timer] = field(default_factory=list)

    def stop_timers(self) -> None:
        """Cancel every armed timer (a sandbox being replaced by another)."""
        with self.lock:
            timers, self.timers = self.timers, []
        for timer in timers:
            timer.cancel()

    def to_json(self) -> dict[str, Any]:
        """Recipients, transfers and the balance, for the state file."""
        with self.lock:
            return {"recipients": dict(self.recipients),
                    "transfers": [asdict(tx) for tx in self.transfers.values()],
                    "initiations": dict(self.initiations), "balance_kobo": self.balance_kobo}

    def load_json(self, data: dict[str, Any]) -> None:
        """Put back what :meth:`to_json` saved."""
        with self.lock:
            self.recipients.update(data.get("recipients") or {})
            for row in data.get("transfers") or []:
                tx = Transfer(**row)
                self.transfers[tx.reference] = tx
                self.by_code[tx.transfer_code] = tx.reference
            self.initiations.update(data.get("initiations") or {})
            if isinstance(data.get("balance_kobo"), int):
                self.balance_kobo = data["balance_kobo"]

    def reset(self, balance_kobo: int) -> None:
        """Forget every recipient and transfer, stop their timers, refill the balance."""
        self.stop_timers()
        with self.lock:
            self.recipients.clear()
            self.transfers.clear()
            self.by_code.clear()
            self.initiations.clear()
            self.balance_kobo = balance_kobo


def state() -> BankState:
    return current_app.extensions["paystack_bank_sandbox"]


def _problem(message: str, status: int = 400):
    return paystack._refuse(message, status)  # noqa: SLF001 - one answer shape for the whole sandbox


# --- Banks and account names --------------------------------------------------------


def _page_args() -> tuple[int, int]:
    try:
        per_page = max(1, min(int(request.args.get("perPage", 50) or 50), 100))
        page = max(1, int(request.args.get("page", 1) or 1))
    except ValueError:
        per_page, page = 50, 1
    return per_page, page


@bp.get("/bank")
def list_banks():
    country = (request.args.get("country") or "nigeria").lower()
    if country != "nigeria" or (request.args.get("currency") or "NGN") != "NGN":
        return paystack._ok("Banks retrieved", [], meta={"total": 0})  # noqa: SLF001
    per_page, page = _page_args()
    rows = [{"id": index + 1, "name": name, "slug": slug, "code": code, "longcode": longcode,
             "active": True, "country": "Nigeria", "currency": "NGN", "type": "nuban"}
            for index, (name, slug, code, longcode) in enumerate(BANKS)]
    chunk = rows[(page - 1) * per_page: page * per_page]
    return paystack._ok("Banks retrieved", chunk, meta={  # noqa: SLF001
        "total": len(rows), "perPage": per_page, "page": page,
        "pageCount": max(1, -(-len(rows) // per_page))})


def _resolvable(account_number: Any, bank_code: Any) -> Optional[str]:
    """Why ``account_number`` at ``bank_code`` cannot be resolved, or None."""
    if not isinstance(bank_code, str) or bank_code not in BANK_NAMES:
        return "Unknown bank code"
    if not isinstance(account_number, str) or not ACCOUNT_NUMBER_RE.fullmatch(account_number):
        return "Account number must be 10 digits"
    if account_number == UNRESOLVABLE_ACCOUNT:
        return "Could not resolve account name. Check parameters or try again."
    return None


@bp.get("/bank/resolve")
def resolve_account():
    number, bank_code = request.args.get("account_number"), request.args.get("bank_code")
    problem = _resolvable(number, bank_code)
    if problem:
        return _problem(problem, 422)
    return paystack._ok("Account number resolved", {  # noqa: SLF001
        "account_number": number, "account_name": account_name(number),
        "bank_id": next(i + 1 for i, bank in enumerate(BANKS) if bank[2] == bank_code)})


@bp.post("/transferrecipient")
def create_recipient():
    body = request.get_json(silent=True) or {}
    if body.get("type") != "nuban":
        return _problem("Recipient type must be nuban")
    if body.get("currency", "NGN") != "NGN":
        return _problem("Currency not supported")
    number, bank_code = body.get("account_number"), body.get("bank_code")
    problem = _resolvable(number, bank_code)
    if problem:
        return _problem(problem, 422)
    sandbox = state()
    with sandbox.lock:
        for recipient in sandbox.recipients.values():
            details = recipient["details"]
            if details["account_number"] == number and details["bank_code"] == bank_code:
                return paystack._ok("Transfer recipient created successfully", recipient)  # noqa: SLF001
        code = "RCP_" + secrets.token_hex(8)
        name = body.get("name") if isinstance(body.get("name"), str) else ""
        recipient = {
            "active": True, "currency": "NGN", "name": name[:100] or account_name(number),
            "recipient_code": code, "type": "nuban", "createdAt": _iso(time.time()),
            "details": {"account_number": number, "account_name": account_name(number),
                        "bank_code": bank_code, "bank_name": BANK_NAMES[bank_code]},
        }
        sandbox.recipients[code] = recipient
    return paystack._ok("Transfer recipient created successfully", recipient, 201)  # noqa: SLF001


# --- Transfers -----------------------------------------------------------------------


def _initiate_problem(body: dict[str, Any]) -> Optional[str]:
    if body.get("source") != "balance":
        return "Source must be balance"
    amount = body.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < MINIMUM_TRANSFER_KOBO:
        return "Amount must be at least 10000 kobo"
    if not isinstance(body.get("reference"), str) or not REFERENCE_RE.fullmatch(body["reference"]):
        return "Reference may contain only lowercase letters, digits, - and _"
    if body.get("currency", "NGN") != "NGN":
        return "Currency not supported"
    return None


def _answer(sandbox: BankState, tx: Transfer, message: str, http_status: int = 200):
    status = tx.status(time.time(), sandbox.abandon_after_seconds)
    return paystack._ok(message, tx.data(status, sandbox.recipients[tx.recipient_code]),  # noqa: SLF001
                        http_status)


def _plan(account_number: str, now_wall: float, sandbox: BankState) -> tuple[Optional[float], Optional[float]]:
    """``(settle_wall, reverse_wall)`` of a new transfer to ``account_number``."""
    if account_number == OTP_ACCOUNT:
        return None, None
    settle = now_wall + sandbox.settle_seconds
    return settle, (settle + sandbox.reverse_seconds if account_number == REVERSED_ACCOUNT else None)


@bp.post("/transfer")
def initiate():
    body = request.get_json(silent=True) or {}
    problem = _initiate_problem(body)
    if problem:
        return _problem(problem)
    sandbox = state()
    reference, amount = body["reference"], body["amount"]
    with sandbox.lock:
        sandbox.initiations[reference] += 1
        recipient = sandbox.recipients.get(body.get("recipient"))
        if recipient is None:
            return _problem("Recipient not found", 404)
        existing = sandbox.transfers.get(reference)
        if existing is not None:
            if (existing.amount_kobo, existing.recipient_code) != (amount, body["recipient"]):
                return _problem("Duplicate Transfer Reference: it names another transfer")
            return _answer(sandbox, existing, "Transfer has been queued")
        fee = transfer_fee_kobo(amount)
        if sandbox.balance_kobo < amount + fee:
            return _problem("Your balance is not enough to fulfil this request")
        sandbox.balance_kobo -= amount + fee
        now = time.time()
        settle, reverse = _plan(recipient["details"]["account_number"], now, sandbox)
        tx = Transfer(reference, "TRF_" + secrets.token_hex(8), amount, fee, body["recipient"],
                      recipient["details"]["account_number"], str(body.get("reason") or "")[:100],
                      now, settle, reverse)
        sandbox.transfers[reference] = tx
        sandbox.by_code[tx.transfer_code] = reference
        first_silent = tx.account_number == NO_ANSWER_ACCOUNT and sandbox.initiations[reference] == 1
    _arm(current_app._get_current_object(), tx)  # noqa: SLF001
    if first_silent:
        # The transfer went through; the answer never comes back in time.
        time.sleep(sandbox.no_answer_seconds)
        return _problem("Gateway timeout", 504)
    if tx.settle_wall is None:
        return _answer(sandbox, tx, "Transfer requires OTP to continue")
    return _answer(sandbox, tx, "Transfer has been queued")


@bp.post("/transfer/finalize_transfer")
def finalize():
    body = request.get_json(silent=True) or {}
    sandbox = state()
    with sandbox.lock:
        reference = sandbox.by_code.get(body.get("transfer_code"))
        tx = sandbox.transfers.get(reference) if reference else None
        if tx is None:
            return _problem("Transfer not found", 404)
        if tx.status(time.time(), sandbox.abandon_after_seconds) != OTP:
            return _problem("Transfer is not waiting for an OTP")
        if body.get("otp") != SANDBOX_OTP:
            return _problem("Invalid OTP")
        tx.settle_wall = time.time() + sandbox.settle_seconds
    _arm(current_app._get_current_object(), tx)  # noqa: SLF001
    return _answer(sandbox, tx, "Transfer has been queued")


@bp.get("/transfer/verify/<path:reference>")
def verify(reference: str):
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transfers.get(reference)
        if tx is None:
            return _problem("Transfer not found", 404)
        return _answer(sandbox, tx, "Transfer retrieved")


@bp.get("/balance")
def balance():
    sandbox = state()
    with sandbox.lock:
        return paystack._ok("Balances retrieved", [{"currency": "NGN", "balance": sandbox.balance_kobo}])  # noqa: SLF001


# --- Settlement: webhooks and the balance ----------------------------------------------


EVENTS = {SUCCESS: "transfer.success", FAILED: "transfer.failed", REVERSED: "transfer.reversed"}


def _due_events(tx: Transfer, status: str) -> list[str]:
    """The webhook events ``tx`` owes at ``status``, oldest first (a reversal
    is announced after its success)."""
    owed = {SUCCESS: [SUCCESS], FAILED: [FAILED], REVERSED: [SUCCESS, REVERSED]}.get(status, [])
    return [EVENTS[s] for s in owed if EVENTS[s] not in tx.sent]


def settle(app: Flask, reference: str) -> None:
    """Bring ``reference`` up to date: give the business back the money of a
    failed, reversed or abandoned transfer (once), and send the webhooks it
    owes. Called by the transfer's timers; safe to call again."""
    with app.app_context():
        sandbox = state()
        with sandbox.lock:
            tx = sandbox.transfers.get(reference)
            if tx is None:
                return
            status = tx.status(time.time(), sandbox.abandon_after_seconds)
            if status in (FAILED, REVERSED, ABANDONED) and not tx.refunded_to_balance:
                tx.refunded_to_balance = True
                sandbox.balance_kobo += tx.amount_kobo + tx.fee_kobo
            events = _due_events(tx, status)
            tx.sent.extend(events)
            recipient = sandbox.recipients.get(tx.recipient_code, {})
            payloads = [{"event": event, "data": tx.data(event.split(".")[1], recipient)} for event in events]
        state_file = app.extensions.get("sandbox_state_file")
        if state_file is not None and (events or status in (FAILED, REVERSED, ABANDONED)):
            state_file.mark_dirty()
        for payload in payloads:
            paystack.send_webhook(payload)


def _arm(app: Flask, tx: Transfer) -> None:
    """Timers that settle ``tx`` when its timeline says (each just calls
    :func:`settle`, which works out what is due)."""
    now = time.time()
    sandbox: BankState = app.extensions["paystack_bank_sandbox"]
    moments = [tx.settle_wall, tx.reverse_wall]
    if tx.settle_wall is None:
        moments.append(tx.created_wall + sandbox.abandon_after_seconds)
    for moment in moments:
        if moment is None:
            continue
        timer = threading.Timer(max(0.0, moment - now) + 0.01, settle, (app, tx.reference))
        timer.daemon = True
        with sandbox.lock:
            sandbox.timers = [t for t in sandbox.timers if t.is_alive()] + [timer]
        timer.start()


def rearm(app: Flask) -> None:
    """After a restart: arm the timers of every transfer that still has a
    settlement, a refund to the balance or a webhook ahead of it."""
    with app.app_context():
        sandbox = state()
        now = time.time()
        with sandbox.lock:
            open_ = [tx for tx in sandbox.transfers.values() if _still_moving(tx, now, sandbox)]
        for tx in open_:
            _arm(app, tx)


def _still_moving(tx: Transfer, now_wall: float, sandbox: BankState) -> bool:
    status = tx.status(now_wall, sandbox.abandon_after_seconds)
    if status in (PENDING, OTP) or _due_events(tx, status):
        return True
    if status in (FAILED, REVERSED, ABANDONED):
        return not tx.refunded_to_balance
    return tx.reverse_wall is not None  # a success that will be reversed


# --- Test hooks ----------------------------------------------------------------------


@bp.get("/sandbox/paystack/transfers/<path:reference>")
def show_transfer(reference: str):
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transfers.get(reference)
        return jsonify({"reference": reference, "initiations": sandbox.initiations[reference],
                        "status": tx.status(time.time(), sandbox.abandon_after_seconds) if tx else None,
                        "transfer": asdict(tx) if tx else None, "balance_kobo": sandbox.balance_kobo})


@bp.post("/sandbox/paystack/transfers/<path:reference>/status")
def force_status(reference: str):
    """Test hook: force a transfer's status (``success``, ``failed``,
    ``reversed``, ``abandoned``, ``pending``, ``otp``) and send what it owes."""
    body = request.get_json(silent=True) or {}
    sandbox = state()
    with sandbox.lock:
        tx = sandbox.transfers.get(reference)
        if tx is None or body.get("status") not in (PENDING, OTP, SUCCESS, FAILED, REVERSED, ABANDONED):
            return jsonify({"error": "no such transfer or bad status"}), 404
        tx.forced_status = body["status"]
    settle(current_app._get_current_object(), reference)  # noqa: SLF001
    return show_transfer(reference)


def init_app(app: Flask) -> None:
    """Register the bank's routes and its state on the sandbox app."""
    app.extensions["paystack_bank_sandbox"] = BankState(
        balance_kobo=int(app.config["PAYSTACK_SANDBOX_BALANCE_KOBO"]),
        settle_seconds=float(app.config["PAYSTACK_SANDBOX_TRANSFER_SETTLE_SECONDS"]),
        reverse_seconds=float(app.config["PAYSTACK_SANDBOX_TRANSFER_REVERSE_SECONDS"]),
        abandon_after_seconds=float(app.config["PAYSTACK_SANDBOX_ABANDON_SECONDS"]),
        no_answer_seconds=float(app.config["PAYSTACK_READ_TIMEOUT_SECONDS"]) + 5)
    app.register_blueprint(bp)
