"""``POST /webhooks/paystack``: verify, store, answer 200, work in a task.

Paystack signs the raw body (``x-paystack-signature``: hex HMAC-SHA512 keyed
with the secret key; paystack.com/docs/payments/webhooks) and retries until
it gets a 200, so this view does only what must happen before answering:
check the signature over the bytes received, in constant time; store the
event once per (event, reference, body: a different body is its own event,
so a wrong one never hides the genuine one); enqueue processing after commit. A bad or
missing signature is 401 and nothing is stored. CSRF-exempt (the signature
is the proof of origin).
"""

from __future__ import annotations

import json
import logging

from flask import current_app, jsonify, request

from billvend.funding import events, references
from billvend.platform.extensions import csrf
from billvend.funding.gateways import signature_valid
from billvend.web.webhooks import bp

log = logging.getLogger(__name__)

# Rate-limited per client IP (RATELIMIT_WEBHOOK_IP) by billvend.web.security.ROUTE_LIMITS.


def _answer(message: str, status: int):
    return jsonify({"status": status < 400, "message": message}), status


@bp.post("/paystack")
@csrf.exempt
def paystack_webhook():
    limit = current_app.config["WEBHOOK_MAX_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        return _answer("body too large", 413)
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        return _answer("body too large", 413)
    if not signature_valid(current_app.config["PAYSTACK_SECRET_KEY"], raw,
                           request.headers.get("x-paystack-signature")):
        log.warning("paystack webhook with a bad or missing signature from %s", request.remote_addr)
        return _answer("invalid signature", 401)
    try:
        body = json.loads(raw)
    except ValueError:
        return _answer("body is not JSON", 400)
    event = body.get("event") if isinstance(body, dict) else None
    data = body.get("data") if isinstance(body, dict) else None
    reference = data.get("reference") if isinstance(data, dict) else None
    if (not isinstance(event, str) or not references.EXTERNAL_REFERENCE_RE.fullmatch(event)
            or not isinstance(reference, str) or not references.EXTERNAL_REFERENCE_RE.fullmatch(reference)):
        return _answer("event and data.reference are required (printable, at most 100 characters)", 400)
    stored = events.store_event("paystack", event, reference, raw)
    # Every delivery is processed: a retry may come after a crash that lost
    # the first one's task; processing is idempotent.
    from billvend.funding.tasks import enqueue_event

    enqueue_event(stored.event_id)
    return _answer("received", 200)
