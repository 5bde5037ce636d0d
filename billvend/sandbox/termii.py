"""The Termii-shaped SMS part of the sandbox server (issue 23;
``reference/notifications.md``).

Served by the same process as the VTpass and Paystack sandboxes (``python -m
billvend.sandbox``, 127.0.0.1:5055), so billvend's real SMS client
(``billvend.notifications.sms``) sends over a real socket:

- ``POST /api/sms/send`` JSON ``{api_key, to, from, sms, type, channel}``:
  ``to`` is international digits without ``+`` (``2348031234567``) or a list of
  up to 100; ``from`` a sender ID of 3-11 letters and digits; ``channel``
  ``generic``, ``dnd`` or ``whatsapp``. Answers ``{message_id, message:
  "Successfully Sent", balance, user}``, or Termii's error statuses with a
  ``message`` (401 wrong key, 400 "Invalid Sender Id", 422 a bad field).
- ``GET /sandbox/sms/messages`` (``?to=2348031234567`` to filter): every
  message received, newest first, as ``{to, from, sms, channel, time,
  message_id}``; kept in the sandbox's state file across restarts
  (``billvend.sandbox.store``).
- Test hooks: ``POST /sandbox/sms/settings`` ``{fail_status: 0 | 4xx | 5xx,
  delay_seconds}`` (answer every send with that status; hold each answer),
  ``POST /sandbox/sms/reset``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

bp = Blueprint("termii_sandbox", __name__)

CHANNELS = ("generic", "dnd", "whatsapp")
SENDER_ID_RE = re.compile(r"^[A-Za-z0-9]{3,11}$")
#: Nigerian numbers in Termii's spelling: 234 and ten digits.
TO_RE = re.compile(r"^234[0-9]{10}$")
MAX_RECIPIENTS = 100
#: Longest text taken (Termii's own cap is about this: several concatenated parts).
MAX_SMS_CHARS = 918


#: What one SMS page costs the sandbox account: a whole ₦4, so the balance
#: Termii's answer reports in naira is always a whole number (exact as a
#: JSON integer).
SMS_PRICE_KOBO = 400


@dataclass
class TermiiState:
    """The messages received and the test switches, shared by request threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Oldest first; each ``{to, from, sms, channel, time, message_id}``.
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: The sandbox account's credit, integer kobo (money is never a float).
    balance_kobo: int = 1_000_000
    fail_status: int = 0
    delay_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The messages and balance, for the state file; the switches are not kept."""
        with self.lock:
            return {"messages": list(self.messages), "balance_kobo": self.balance_kobo}

    def load_json(self, data: dict[str, Any]) -> None:
        """Put back what :meth:`to_json` saved."""
        with self.lock:
            self.messages.extend(dict(row) for row in data.get("messages") or [])
            self.balance_kobo = int(data.get("balance_kobo", self.balance_kobo))

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.fail_status = 0
            self.delay_seconds = 0.0


def state() -> TermiiState:
    return current_app.extensions["termii_sandbox"]


def _refuse(message: str, status: int):
    return jsonify({"message": message, "status": "error"}), status


def _problem(body: dict[str, Any]) -> tuple[str, int] | None:
    """What Termii would refuse in ``body``: (message, HTTP status), or None."""
    if not hmac.compare_digest(str(body.get("api_key") or ""), current_app.config["SMS_API_KEY"]):
        return "Invalid API key", 401
    if not SENDER_ID_RE.fullmatch(str(body.get("from") or "")):
        return "Invalid Sender Id", 400
    to = body.get("to")
    numbers = to if isinstance(to, list) else [to]
    if not numbers or len(numbers) > MAX_RECIPIENTS or not all(
            isinstance(n, str) and TO_RE.fullmatch(n) for n in numbers):
        return "Invalid phone number: to must be 234 and ten digits, or a list of up to 100", 422
    sms = body.get("sms")
    if not isinstance(sms, str) or not sms.strip() or len(sms) > MAX_SMS_CHARS:
        return "sms must be text of 1 to 918 characters", 422
    if body.get("channel") not in CHANNELS:
        return f"channel must be one of {', '.join(CHANNELS)}", 422
    if body.get("type", "plain") != "plain":
        return "type must be plain", 422
    return None


@bp.post("/api/sms/send")
def send():
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _refuse("The body must be a JSON object", 400)
    sandbox = state()
    if sandbox.delay_seconds:
        time.sleep(sandbox.delay_seconds)
    if sandbox.fail_status:
        return _refuse("The sandbox was told to fail this send", sandbox.fail_status)
    problem = _problem(body)
    if problem:
        return _refuse(*problem)
    numbers = body["to"] if isinstance(body["to"], list) else [body["to"]]
    message_id = secrets.token_hex(12)
    now = datetime.now(timezone.utc).isoformat()
    with sandbox.lock:
        for number in numbers:
            sandbox.messages.append({"to": number, "from": body["from"], "sms": body["sms"],
                                     "channel": body["channel"], "time": now, "message_id": message_id})
        sandbox.balance_kobo -= SMS_PRICE_KOBO * len(numbers)
        balance_kobo = sandbox.balance_kobo
    return jsonify({"message_id": message_id, "message": "Successfully Sent",
                    "balance": balance_kobo // 100, "user": "billvend sandbox"})


@bp.get("/sandbox/sms/messages")
def messages():
    """Every SMS received, newest first (``?to=`` filters by number)."""
    to = request.args.get("to")
    with state().lock:
        rows = [row for row in state().messages if not to or row["to"] == to]
    return jsonify({"messages": rows[::-1]})


@bp.post("/sandbox/sms/settings")
def settings():
    body = request.get_json(silent=True) or {}
    sandbox = state()
    try:
        fail_status = int(body.get("fail_status", sandbox.fail_status) or 0)
        delay_seconds = float(body.get("delay_seconds", sandbox.delay_seconds) or 0)
    except (TypeError, ValueError):
        return jsonify({"error": "fail_status is an HTTP status or 0, delay_seconds a number"}), 400
    if fail_status and not 400 <= fail_status <= 599:
        return jsonify({"error": "fail_status is an HTTP status 400-599, or 0 for none"}), 400
    with sandbox.lock:
        sandbox.fail_status, sandbox.delay_seconds = fail_status, max(0.0, delay_seconds)
    return jsonify({"fail_status": fail_status, "delay_seconds": sandbox.delay_seconds})


@bp.post("/sandbox/sms/reset")
def reset():
    state().reset()
    return jsonify({"ok": True})


def init_app(app: Flask) -> None:
    """Register the Termii routes on the sandbox app."""
    app.extensions["termii_sandbox"] = TermiiState()
    app.register_blueprint(bp)
