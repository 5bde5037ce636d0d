"""Gateway events: webhooks stored once (:func:`store_event`, by the webhook
route, after its signature check) and acted on by a Huey task
(:func:`process_event`): a ``charge.success`` finds or creates its funding
(:mod:`billvend.funding.arrivals`) and verifies it; the webhook's own fields
are never trusted for money (``reference/paystack-api.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa

from billvend.funding import gateways, verification
from billvend.funding.arrivals import funding_for_transaction
from billvend.funding.gateways import FundingGateway, GatewayError, transaction_from
from billvend.funding.models import Funding, GatewayEvent
from billvend.platform import transactions
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.platform.models import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredEvent:
    """What :func:`store_event` did: the event's row, and whether it is new
    (False: a repeat delivery of the same body)."""

    event_id: int
    created: bool


@transactions.unit_of_work
def _store_event(gateway_name: str, event: str, reference: str, raw_body: bytes) -> StoredEvent:
    digest = hashlib.sha256(raw_body).hexdigest()
    existing = db.session.scalar(sa.select(GatewayEvent).where(
        GatewayEvent.gateway == gateway_name, GatewayEvent.event == event,
        GatewayEvent.reference == reference, GatewayEvent.payload_sha256 == digest).with_for_update())
    if existing is not None:
        existing.deliveries += 1
        existing.last_received_at = utcnow()
        return StoredEvent(existing.id, False)
    row = GatewayEvent(gateway=gateway_name, event=event, reference=reference,
                       payload=raw_body.decode("utf-8", "replace"), payload_sha256=digest)
    db.session.add(row)
    db.session.flush()
    return StoredEvent(row.id, True)


def store_event(gateway_name: str, event: str, reference: str, raw_body: bytes) -> StoredEvent:
    """Store a verified webhook once per (gateway, event, reference, body);
    a repeat delivery of the same body only counts itself, a different body
    for the same reference is a new row (processed on its own, so a forged
    or wrong one never blocks the genuine one). One unit of work.

    :param reference: ``data.reference`` (at most 100 characters).
    """
    try:
        return _store_event(gateway_name, event[:64], reference[:100], raw_body)
    except sa.exc.IntegrityError:
        return _store_event(gateway_name, event[:64], reference[:100], raw_body)


@transactions.unit_of_work
def _finish_event(event_id: int, outcome: str, *, funding_id: Optional[int] = None,
                  attention: bool = False) -> None:
    row = db.session.get(GatewayEvent, event_id)
    row.outcome = outcome[:300]
    row.processed_at = utcnow()
    if funding_id is not None:
        row.funding_id = funding_id
    if attention:
        row.needs_attention = True


def process_event(event_id: int, gw: Optional[FundingGateway] = None) -> str:
    """Act on a stored webhook (the Huey task's body): for ``charge.success``
    find (or, for a dedicated-account arrival, create after the gateway's
    verify, :func:`funding_for_transaction`) the funding, then verify it:
    the webhook's own fields are never trusted for money. An unknown
    reference, or a webhook naming another customer than verify does, is
    flagged for an admin, never credited, and creates no funding.
    Safe to run any number of times.

    :returns: the outcome recorded on the event.
    """
    gw = gw or gateways.gateway()
    row = db.session.get(GatewayEvent, event_id)
    if row is None:
        return "missing"
    event, payload = row.event, row.payload
    db.session.rollback()
    if event != "charge.success":
        _finish_event(event_id, f"ignored: {event} is not handled")
        return "ignored"
    try:
        tx = transaction_from(json.loads(payload).get("data"))
    except (ValueError, AttributeError, GatewayError) as exc:
        _finish_event(event_id, f"unusable payload: {exc}", attention=True)
        return "unusable"
    try:
        found = funding_for_transaction(tx, gw)
    except GatewayError as exc:
        # verify could not be asked: nothing recorded; the event stays open
        # for the sweep (unprocessed_events).
        log.warning("gateway event %s: verify failed: %s", event_id, exc)
        return "unknown"
    funding_id = found.funding_id
    if funding_id is None:
        _finish_event(event_id, f"not credited: {found.why}", attention=True)
        return "customer_mismatch" if found.customer_mismatch else found.why
    result = (verification.apply_answer(funding_id, found.verified) if found.verified is not None
              else verification.verify_funding(funding_id, gw))
    if result.outcome == "unknown":
        # The gateway could not be asked. Leave the event open: the sweep
        # (unprocessed_events) processes it again. A funding already closed
        # (an abandoned checkout paid late) is not verified by anything else.
        return result.outcome
    stored = db.session.scalar(sa.select(Funding.amount_kobo).where(Funding.id == funding_id))
    db.session.rollback()
    attention = result.outcome == "flagged" or (tx.amount_kobo is not None and tx.amount_kobo != stored)
    detail = result.outcome + (f": {result.detail}" if result.detail else "")
    if tx.amount_kobo is not None and tx.amount_kobo != stored:
        detail += f" (the webhook said {tx.amount_kobo} kobo, stored {stored} kobo)"
    _finish_event(event_id, detail, funding_id=funding_id, attention=attention)
    return result.outcome


def unprocessed_events(older_than_seconds: int = 60, limit: int = 500) -> list[int]:
    """Stored webhooks whose task never finished (a lost enqueue, a killed
    worker), older than ``older_than_seconds`` by the database clock."""
    cutoff = db_now() - timedelta(seconds=older_than_seconds)
    ids = db.session.scalars(
        sa.select(GatewayEvent.id).where(GatewayEvent.processed_at.is_(None),
                                         GatewayEvent.received_at < cutoff)
        .order_by(GatewayEvent.id).limit(limit)).all()
    db.session.rollback()
    return list(ids)
