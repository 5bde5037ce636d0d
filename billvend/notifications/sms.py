"""SMS in Termii's shape (issue 23; ``reference/notifications.md``): the
outbox's "sms" sender.

``POST {SMS_BASE_URL}/api/sms/send`` with ``{api_key, to, from, sms, type:
"plain", channel: "dnd"}``. ``SMS_BASE_URL`` defaults to ``SANDBOX_URL``
(``billvend.sandbox.termii`` answers there). Every billvend SMS is
transactional (tokens, refunds, sign-in notices), so each goes on ``dnd``:
Nigerian networks do not deliver the promotional ``generic`` route to numbers
on Do-Not-Disturb, and it must not carry tokens. Termii takes the number as
international digits without ``+`` (``2348031234567``).

Termii has no idempotency key: a send whose answer is lost may have gone out,
so a retry can deliver the same SMS twice (accepted: a token twice is better
than none). The call runs outside any transaction and gives up at
``SMS_DEADLINE_SECONDS`` wall clock, whatever the socket does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

import requests
from flask import current_app

from billvend.notifications.channels import SendError, register_sender
from billvend.platform.deadline import DeadlineExceeded, call_with_deadline
from billvend.platform.phones import international_digits, is_e164
from billvend.platform.text import clean_text
from billvend.platform.transactions import require_no_transaction

if TYPE_CHECKING:
    from billvend.notifications.models import Message
    from billvend.notifications.services import Rendered

#: The route every billvend SMS takes (transactional: tokens and codes).
CHANNEL = "dnd"
#: Answers that no retry can change: the number, sender ID or text is refused.
PERMANENT_STATUSES = frozenset({400, 404, 422})
MAX_ANSWER_BYTES = 65536


def termii_body(config: Mapping[str, Any], phone: str, text: str) -> dict[str, Any]:
    """The JSON Termii's ``/api/sms/send`` takes for one SMS of ``text`` to
    the E.164 ``phone``."""
    return {"api_key": config["SMS_API_KEY"], "to": international_digits(phone),
            "from": config["SMS_SENDER_ID"], "sms": text, "type": "plain", "channel": CHANNEL}


def _post(config: Mapping[str, Any], body: dict[str, Any]) -> tuple[int, bytes]:
    url = config["SMS_BASE_URL"].rstrip("/") + "/api/sms/send"
    deadline = float(config["SMS_DEADLINE_SECONDS"])
    timeouts = (min(config["SMS_CONNECT_TIMEOUT_SECONDS"], deadline),
                min(config["SMS_READ_TIMEOUT_SECONDS"], deadline))

    def send() -> tuple[int, bytes]:
        with requests.post(url, json=body, timeout=timeouts, stream=True,
                           headers={"Accept": "application/json"}) as response:
            raw = bytearray()
            for chunk in response.iter_content(8192):
                raw.extend(chunk)
                if len(raw) > MAX_ANSWER_BYTES:
                    break
            return response.status_code, bytes(raw)

    try:
        return call_with_deadline(send, deadline, "sms send")
    except DeadlineExceeded as exc:
        raise SendError(f"SMS gateway: {exc}", channel_down=True) from exc
    except requests.RequestException as exc:
        # Refused, timed out, hung up: the gateway, not this message.
        raise SendError(f"SMS gateway unreachable: {type(exc).__name__}", channel_down=True) from exc


def send_sms(phone: str, text: str, config: Mapping[str, Any] | None = None) -> str:
    """Send one SMS of ``text`` to the E.164 ``phone``.

    :returns: Termii's ``message_id`` (cleaned, at most 200 characters).
    :raises SendError: ``permanent`` for a phone that is not a Nigerian
        mobile in E.164, empty text, or a 400/404/422 answer (invalid number,
        "Invalid Sender Id"); temporary for a timeout, the deadline, a refused
        connection, 401/403 (a key or account an operator can fix), 429, 5xx
        or an answer without a message id.
    :raises billvend.platform.transactions.ExternalCallInTransaction: inside
        a unit of work.
    """
    config = config or current_app.config
    if not is_e164(phone):
        raise SendError(f"not a Nigerian mobile number in E.164: {phone!r}", permanent=True)
    if not text.strip():
        raise SendError("the message has no SMS text", permanent=True)
    require_no_transaction("sms send")
    status, raw = _post(config, termii_body(config, phone, text))
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {}
    words = clean_text(answer.get("message") if isinstance(answer, dict) else None, 200) or "no message"
    if status in PERMANENT_STATUSES:
        raise SendError(f"SMS gateway refused it: HTTP {status}: {words}", permanent=True)
    message_id = clean_text(answer.get("message_id") if isinstance(answer, dict) else None, 200)
    if status != 200 or not message_id:
        raise SendError(f"SMS gateway: HTTP {status}: {words}")
    return message_id


def send(message: "Message", rendered: "Rendered") -> str:
    """The outbox's "sms" sender: ``rendered.sms`` to ``message.recipient``
    (:func:`send_sms`)."""
    return send_sms(message.recipient, rendered.sms)


register_sender("sms", send)
