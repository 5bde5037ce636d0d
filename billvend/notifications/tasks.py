"""Sending the outbox: the ``send_messages`` task, the sender threads, the sweep.

A message is sent in threads of the outbox's own (``NOTIFY_CONCURRENCY`` per
process), never in the Huey worker thread that ran the task: a mail server
that accepts connections and never answers holds those threads until
``SMTP_DEADLINE_SECONDS``, while every vend thread goes on. The task only
hands the ids over and returns. A channel whose gateway cannot be reached is
left alone for ``NOTIFY_RETRY_BASE_SECONDS`` (the queued messages stay
``pending`` and due), so 300 queued messages cost a few deadlines, not 300.

Nothing is lost when a worker dies: the row is the truth, and
:func:`message_sweep` (every ``SWEEP_INTERVAL_SECONDS``) hands over every
due ``pending`` message again, including one whose claim expired.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Iterable

from flask import Flask, current_app

from billvend.notifications import services
from billvend.notifications.channels import SendError, sender_for
from billvend.notifications.models import Message
from billvend.notifications.outbox import claim, due_message_ids, record_failure, record_sent
from billvend.platform import leases
from billvend.platform.extensions import db
from billvend.platform.queue import huey, huey_app, in_app_context
from billvend.platform.transactions import run

log = logging.getLogger(__name__)

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_in_hand: set[int] = set()  # ids handed to the pool and not finished, this process
_paused_until: dict[str, float] = {}  # channel -> time.monotonic() it may be tried again


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="billvend-notify")
    return _pool


def hand_over(ids: Iterable[int]) -> int:
    """Give messages to this process's sender threads; an id already in hand
    is skipped. Returns how many were handed over (0 when
    ``NOTIFY_CONCURRENCY`` is 0: another process sends)."""
    app = huey_app()
    workers = app.config["NOTIFY_CONCURRENCY"]
    if workers <= 0:
        return 0
    handed = 0
    with _lock:
        pool = _executor(workers)
        for message_id in ids:
            if message_id not in _in_hand:
                _in_hand.add(message_id)
                pool.submit(_send_in_thread, app, message_id)
                handed += 1
    return handed


def _send_in_thread(app: Flask, message_id: int) -> None:
    try:
        with app.app_context():
            try:
                send_message(message_id)
            finally:
                db.session.remove()
    except Exception:  # noqa: BLE001 - a thread of the pool must never die of one message
        log.exception("message %s: send failed; the sweep will try again", message_id)
    finally:
        with _lock:
            _in_hand.discard(message_id)


def send_message(message_id: int) -> str:
    """Claim, send and record one message (outside any transaction).

    :returns: "sent", "failed" (given up), "retry" (due again later),
        "paused" (its channel is unreachable: left due, untouched) or
        "skipped" (not pending, not due, or claimed by another sender).
    """
    channel = db.session.scalar(db.select(Message.channel).where(Message.id == message_id))
    db.session.rollback()
    if channel is None:
        return "skipped"
    if _paused_until.get(channel, 0.0) > time.monotonic():
        return "paused"
    message = run(claim, message_id)
    if message is None:
        return "skipped"
    if current_app.config["FAULT_SEND_DELAY_SECONDS"]:
        # tests/test_faults.py kills the worker here: claimed and committed, not sent.
        log.warning("FAULT_SEND_DELAY_SECONDS: message %s claimed, sending later", message_id)
        time.sleep(current_app.config["FAULT_SEND_DELAY_SECONDS"])
    try:
        provider_id = sender_for(channel)(message, services.render(message))
    except SendError as exc:
        if exc.channel_down:
            _paused_until[channel] = time.monotonic() + current_app.config["NOTIFY_RETRY_BASE_SECONDS"]
        log.warning("message %s (%s) not sent: %s", message_id, channel, exc)
        return run(record_failure, message_id, str(exc), permanent=exc.permanent)
    except Exception as exc:  # noqa: BLE001 - a sender's bug: retried, then failed
        log.exception("message %s (%s): sender raised", message_id, channel)
        return run(record_failure, message_id, f"{type(exc).__name__}: {exc}", permanent=False)
    run(record_sent, message_id, provider_id)
    return "sent"


@huey.task()
def send_messages(ids: list[int]) -> None:
    """Hand just-committed messages to the sender threads (returns at once)."""
    hand_over(ids)


def enqueue_send(ids: list[int]) -> None:
    """After a unit of work committed messages: queue their send. A queue
    that is unreachable only delays them until the sweep."""
    try:
        send_messages(list(ids))
    except Exception:  # noqa: BLE001 - Redis down, SQLite locked, ...
        log.exception("could not enqueue messages %s; the sweep will send them", ids)


services.after_commit_hook = enqueue_send


def message_sweep_once() -> int:
    """Hand every due ``pending`` message over again (a lost task, a dead
    worker's expired claim, a retry whose time came). Returns how many."""
    ids = due_message_ids()
    db.session.rollback()  # end the read before the sends
    return hand_over(ids)


def message_sweep_is_due(timestamp: datetime) -> bool:
    """Huey's once-a-minute check for :func:`message_sweep`: the vending
    sweep's cadence (every ``ceil(SWEEP_INTERVAL_SECONDS / 60)`` minutes;
    below a minute the consumer's clock enqueues it instead)."""
    interval_seconds = huey_app().config["SWEEP_INTERVAL_SECONDS"]
    if interval_seconds < 60:
        return False
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=timezone.utc)
    return int(timestamp.timestamp() // 60) % math.ceil(interval_seconds / 60) == 0


@huey.periodic_task(message_sweep_is_due)
@in_app_context
def message_sweep() -> None:
    """Every ``SWEEP_INTERVAL_SECONDS``: :func:`message_sweep_once`, one
    sweeper at a time (the ``message-sweep`` lease)."""
    with leases.held("message-sweep", current_app.config["SWEEP_LOCK_SECONDS"]) as mine:
        if mine:
            count = message_sweep_once()
            if count:
                log.info("message sweep handed over %d messages", count)


def wait_until_idle(timeout: float = 10.0) -> bool:
    """Wait until this process's sender threads hold no message (tests,
    shutdown). Returns False if some still do after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _lock:
            if not _in_hand:
                return True
        time.sleep(0.01)
    return False


def stop_senders(timeout: float = 10.0) -> None:
    """Wait for the sender threads, then drop them and every channel pause
    (the next hand-over starts fresh; tests call this between apps)."""
    global _pool
    wait_until_idle(timeout)
    with _lock:
        pool, _pool = _pool, None
        _paused_until.clear()
    if pool is not None:
        pool.shutdown(wait=False)
