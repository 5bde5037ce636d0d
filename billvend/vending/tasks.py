"""Huey tasks: ``vend``, ``requery``, ``reverse`` and the periodic ``sweep``.

The tasks are thin: each pushes the app context, asks ``billvend.vending.lifecycle``
(the lifecycle module) to do one step of the state machine, and enqueues
whatever follow-up that step returns, after the step's units of work have
committed. They hold no lifecycle rules: what to re-drive comes from
``payments.sweep_candidates``. The database row is the source of truth;
Huey may lose a task (a killed worker does not acknowledge), which is why
``sweep`` re-drives every payment that is not where it should be.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timezone

from flask import current_app
from huey import crontab
from huey.signals import SIGNAL_INTERRUPTED

from billvend.platform import leases
from billvend.vending import lifecycle as payments
from billvend.platform.clock import db_now
from billvend.platform.extensions import db
from billvend.vending.providers import get_provider
from billvend.platform.queue import huey, huey_app, in_app_context

log = logging.getLogger(__name__)


def _follow_up(payment_id: int, follow_up: payments.FollowUp) -> None:
    if follow_up.action == "reverse":
        reverse(payment_id)
    elif follow_up.action == "requery":
        requery.schedule((payment_id,), delay=follow_up.delay_seconds)


@huey.task()
@in_app_context
def vend(payment_id: int) -> None:
    """Claim a ``pending`` payment and call the provider (DESIGN.md, Vending)."""
    _follow_up(payment_id, payments.vend_payment(payment_id, get_provider()))


@huey.task()
@in_app_context
def requery(payment_id: int, include_vending: bool = False, force: bool = False) -> None:
    """Ask the provider about an ``unknown`` (or stale ``vending``) payment
    when it is due (``force``: now); see ``payments.requery_payment``."""
    follow_up = payments.requery_payment(payment_id, get_provider(),
                                         include_vending=include_vending, force=force)
    _follow_up(payment_id, follow_up)


@huey.task()
@in_app_context
def reverse(payment_id: int) -> None:
    """Refund a ``failed`` payment, exactly once."""
    payments.reverse_payment(payment_id)


@huey.task()
@in_app_context
def requery_refunded(payment_id: int) -> None:
    """Ask the provider again about a payment refunded while its outcome was
    uncertain, when due (``payments.requery_after_refund``)."""
    payments.requery_after_refund(payment_id, get_provider())


def enqueue_vend(payment_id: int) -> bool:
    """Queue the vend for a just-committed payment.

    :returns: False when the queue is unreachable; the payment stays
        ``pending`` and the sweep vends it later, so the caller only logs.
    """
    if current_app.config["FAULT_SKIP_ENQUEUE"]:
        log.warning("FAULT_SKIP_ENQUEUE: not enqueueing payment %s", payment_id)
        return False
    try:
        vend(payment_id)
    except Exception:  # noqa: BLE001 - Redis down, SQLite locked, ...
        log.exception("could not enqueue vend for payment %s; the sweep will", payment_id)
        return False
    return True


def sweep_once() -> dict[str, int]:
    """Re-drive payments whose tasks may have been lost
    (``payments.sweep_candidates``, decided on the database clock). Returns
    counts by status.

    - ``pending`` past ``PENDING_GRACE_SECONDS``: enqueue ``vend`` again
      (the claim makes a duplicate harmless);
    - ``vending`` past ``VENDING_LEASE_SECONDS``: requery, never a second ``pay``;
    - ``unknown`` due: requery;
    - ``failed`` without a reported delivery: reverse;
    - ``reversed`` while uncertain, its requery after the refund due
      (1 h and 24 h after it by default): requery, flag a delivery found.
    """
    candidates = payments.sweep_candidates(db_now())
    db.session.rollback()  # end the read before the tasks run
    for payment_id in candidates["pending"]:
        vend(payment_id)
    for payment_id in candidates["vending"]:
        requery(payment_id, include_vending=True)
    for payment_id in candidates["unknown"]:
        requery(payment_id)
    for payment_id in candidates["failed"]:
        reverse(payment_id)
    for payment_id in candidates["refunded"]:
        requery_refunded(payment_id)
    return {status: len(ids) for status, ids in candidates.items()}


def sweep_is_due(timestamp: datetime) -> bool:
    """Huey's once-a-minute periodic check for :func:`sweep`.

    True every ``ceil(SWEEP_INTERVAL_SECONDS / 60)`` minutes (every minute by
    default). Always False for an interval under a minute: then the
    consumer's sweep clock enqueues ``sweep`` itself (``billvend.platform.worker``).

    :param timestamp: the check's time, naive UTC (``huey.utc``) or aware.
    """
    interval_seconds = huey_app().config["SWEEP_INTERVAL_SECONDS"]
    if interval_seconds < 60:
        return False
    every_minutes = math.ceil(interval_seconds / 60)
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=timezone.utc)
    return int(timestamp.timestamp() // 60) % every_minutes == 0


SWEEP_LEASE = "sweep"


@huey.periodic_task(sweep_is_due)
@in_app_context
def sweep() -> None:
    """Every ``SWEEP_INTERVAL_SECONDS``: :func:`sweep_once`, one sweeper at a time.

    The sweep runs under the ``sweep`` lease (``billvend.platform.leases``), which
    expires ``SWEEP_LOCK_SECONDS`` after it was taken (database clock) if
    its holder dies; a sweep that finds it held is skipped, the next tick
    comes soon enough.
    """
    with leases.held(SWEEP_LEASE, current_app.config["SWEEP_LOCK_SECONDS"]) as mine:
        if not mine:
            return
        counts = sweep_once()
    if any(counts.values()):
        log.info("sweep re-drove %s", counts)


@huey.periodic_task(crontab(minute="*/10"))
@in_app_context
def purge_expired_sessions() -> None:
    """Every 10 minutes: delete sessions and remember tokens past their
    deadlines (``sessions.delete_expired``), and password-reset and
    verification links and phone codes long expired. Saves also purge, one
    in 50, but a quiet site saves rarely; a delete of what is expired is
    safe to run twice, so no lease."""
    from billvend.accounts import links, phone_verification, sessions
    from billvend.platform import transactions
    from billvend.platform.models import utcnow

    def purge() -> None:
        now = utcnow()
        sessions.delete_expired(db.session, now)
        links.delete_expired(db.session, now)
        phone_verification.delete_expired(db.session, now)

    transactions.run(purge)


@huey.signal(SIGNAL_INTERRUPTED)
def _log_interrupted(signal_name: str, task, *args) -> None:
    # The consumer stopped before this task finished (shutdown timeout, a
    # second signal). Nothing to undo: every step committed on its own.
    log.warning("worker stopped during %s%s; the sweep will finish that payment",
                task.name, tuple(task.args or ()))

