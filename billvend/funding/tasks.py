"""Huey tasks for money in: webhook processing, the funding sweep, the daily
reconciliation. Registered on billvend's one ``huey`` (the app factory,
``billvend.create_app``, imports this module).

Every task is safe to run twice or concurrently: the funding steps
(``billvend.funding.events``, ``.verification``, ``.reconciliation``) verify with the
gateway before any credit, and the database allows one credit per gateway reference.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from flask import current_app
from huey import crontab

from billvend.funding import events, reconciliation, verification
from billvend.platform import leases
from billvend.platform.models import utcnow
from billvend.platform.queue import huey
from billvend.platform.queue import in_app_context

log = logging.getLogger(__name__)


@huey.task()
@in_app_context
def process_gateway_event(event_id: int) -> None:
    """Act on a stored webhook (``events.process_event``)."""
    outcome = events.process_event(event_id)
    log.info("gateway event %s: %s", event_id, outcome)


@huey.task()
@in_app_context
def verify_funding(funding_id: int) -> None:
    """Verify one open funding with the gateway and apply the answer."""
    result = verification.verify_funding(funding_id)
    log.info("funding %s verified: %s %s", funding_id, result.outcome, result.detail)


def enqueue_event(event_id: int) -> bool:
    """Queue processing of a just-stored webhook. False when the queue is
    unreachable: the event row stays unprocessed and the funding sweep (and
    reconciliation) still find its funding."""
    try:
        process_gateway_event(event_id)
    except Exception:  # noqa: BLE001 - Redis down, SQLite locked, ...
        log.exception("could not enqueue gateway event %s; the sweep will catch up", event_id)
        return False
    return True


def funding_sweep_once() -> int:
    """Process webhooks whose task was lost, then verify every open funding
    that is due (``verification.due_fundings``).

    The first answer "the gateway could not be asked" ends the sweep: during
    an outage every further verify would wait out its deadline too, and a
    sweep of many would outlast its lease. The next sweep tries again.

    :returns: how many fundings were verified.
    """
    for event_id in events.unprocessed_events():
        try:
            if events.process_event(event_id) == "unknown":
                log.warning("funding sweep stopped: the gateway cannot be reached")
                return 0
        except Exception:  # noqa: BLE001 - one bad row must not stop the sweep
            log.exception("funding sweep: gateway event %s failed", event_id)
    ids = verification.due_fundings()
    verified = 0
    for funding_id in ids:
        try:
            outcome = verification.verify_funding(funding_id).outcome
        except Exception:  # noqa: BLE001 - one bad row must not stop the sweep
            log.exception("funding sweep: verify of funding %s failed", funding_id)
            continue
        if outcome == "unknown":
            log.warning("funding sweep stopped: the gateway cannot be reached")
            break
        verified += 1
    return verified


def _funding_sweep() -> None:
    count = funding_sweep_once()
    if count:
        log.info("funding sweep verified %d fundings", count)


@huey.periodic_task(crontab(minute="*"))
@in_app_context
def funding_sweep() -> None:
    """Every minute: verify stale ``initiated``/``pending`` fundings again
    (with the backoff ``apply_verification`` sets), one sweeper at a time
    (the ``funding-sweep`` lease, expiring after ``SWEEP_LOCK_SECONDS``)."""
    with leases.held("funding-sweep", current_app.config["SWEEP_LOCK_SECONDS"]) as mine:
        if mine:
            _funding_sweep()


def yesterday_in_lagos(now: datetime | None = None) -> date:
    """The previous calendar day in Africa/Lagos."""
    now = now or _lagos_now()
    return (now.astimezone(reconciliation.LAGOS) - timedelta(days=1)).date()


def _lagos_now() -> datetime:
    return utcnow().astimezone(reconciliation.LAGOS)


# 00:30 UTC is 01:30 in Lagos: yesterday is over, late webhooks have had time.
@huey.periodic_task(crontab(minute="30", hour="0"))
@in_app_context
def daily_reconciliation() -> None:
    """Once a day: reconcile each of the last ``FUNDING_RECONCILE_DAYS``
    days (Africa/Lagos, oldest first, yesterday last) with the gateway, one
    worker at a time (the ``funding-reconcile`` lease; a run can take long
    against a slow gateway, so the lease lasts an hour).

    More than yesterday because the gateway lists a transaction under the
    day it began: one begun late on day D and paid after D's run (with its
    webhook lost) is found by the next night's run of D.
    """
    yesterday = yesterday_in_lagos()
    days = max(1, current_app.config["FUNDING_RECONCILE_DAYS"])
    with leases.held("funding-reconcile", 3600) as mine:
        if mine:
            for back in range(days - 1, -1, -1):
                _reconcile_day(yesterday - timedelta(days=back))
            recheck_closed_fundings()


def recheck_closed_fundings() -> int:
    """Verify again each card funding closed as failed in the last
    ``FUNDING_RECHECK_FAILED_DAYS`` days (``verification.closed_fundings_to_recheck``):
    a checkout paid after its funding closed, its webhooks lost, is credited
    here (once: ``verify_funding`` and the ledger's UNIQUE (funding_id)).
    Stops at the first "the gateway could not be asked", as the sweep does.

    :returns: how many were credited.
    """
    credited = 0
    for funding_id in verification.closed_fundings_to_recheck():
        try:
            outcome = verification.verify_funding(funding_id).outcome
        except Exception:  # noqa: BLE001 - one bad row must not stop the night's run
            log.exception("recheck of closed funding %s failed", funding_id)
            continue
        if outcome == "unknown":
            log.warning("recheck of closed fundings stopped: the gateway cannot be reached")
            break
        credited += outcome == "credited"
    if credited:
        log.info("recheck of closed fundings credited %d paid after they closed", credited)
    return credited


def _reconcile_day(day: date) -> None:
    run = reconciliation.reconcile(day)
    log.info("reconciliation of %s: %d gateway transactions, %d credited, %d flagged%s",
             run.day, run.gateway_transactions, run.credited, run.flagged,
             f", error: {run.error}" if run.error else "")
