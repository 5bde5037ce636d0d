"""Waiting for a payment's status to change, for the status long poll.

Every web request waiting on a payment registers here and sleeps on an
event; ONE thread per process looks at all the watched payments with one
query every ``CHECK_INTERVAL_SECONDS`` (0.05 s) and wakes the requests whose
payment left the status their page shows. So forty pages waiting cost twenty
queries a second, not eight hundred (one per waiter per check), and a
waiting request holds no database connection. The thread stops when nobody waits and starts again on demand.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import Flask

log = logging.getLogger(__name__)

#: How often the watcher looks at the watched payments (seconds): a page sees
#: a new status within this, plus one query and a render.
CHECK_INTERVAL_SECONDS = 0.05


@dataclass(eq=False)
class _Waiter:
    since: str
    event: threading.Event = field(default_factory=threading.Event)


class StatusWatcher:
    """One per app (``watcher_for``); thread-safe."""

    def __init__(self, app: Flask):
        self.app = app
        self._lock = threading.Lock()
        self._waiters: dict[int, list[_Waiter]] = {}
        #: How many requests each holder (a user id) has waiting now.
        self._per_holder: dict[object, int] = {}
        self._thread: threading.Thread | None = None

    def wait(self, payment_id: int, since: str, timeout_seconds: float, *,
             holder: object = None, max_per_holder: int | None = None) -> bool | None:
        """Block until payment ``payment_id`` is no longer in status
        ``since`` (True) or ``timeout_seconds`` pass (False).

        Each waiting request holds a web thread: with ``holder`` (the user)
        and ``max_per_holder``, a holder who already has that many waiting
        gets None at once instead of a wait, so one user cannot take every
        thread of the process.
        """
        waiter = _Waiter(since)
        with self._lock:
            if holder is not None and max_per_holder is not None \
                    and self._per_holder.get(holder, 0) >= max_per_holder:
                return None
            if holder is not None:
                self._per_holder[holder] = self._per_holder.get(holder, 0) + 1
            self._waiters.setdefault(payment_id, []).append(waiter)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)
                self._thread.start()
        try:
            return waiter.event.wait(timeout_seconds)
        finally:
            with self._lock:
                waiters = self._waiters.get(payment_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(payment_id, None)
                if holder is not None:
                    left = self._per_holder.get(holder, 1) - 1
                    if left:
                        self._per_holder[holder] = left
                    else:
                        self._per_holder.pop(holder, None)

    def _run(self) -> None:
        from billvend.platform.extensions import db
        from billvend.vending.models import Payment

        while True:
            time.sleep(CHECK_INTERVAL_SECONDS)
            with self._lock:
                ids = list(self._waiters)
                if not ids:
                    self._thread = None
                    return
            try:
                with self.app.app_context(), db.engine.connect() as conn:
                    statuses = dict(conn.execute(
                        sa.select(Payment.id, Payment.status).where(Payment.id.in_(ids))).all())
            except Exception:  # noqa: BLE001 - database down: the waits time out
                log.warning("status watch: could not read payments", exc_info=True)
                continue
            with self._lock:
                for payment_id, waiters in self._waiters.items():
                    status = statuses.get(payment_id)
                    for waiter in waiters:
                        if status != waiter.since:
                            waiter.event.set()


_CREATE_LOCK = threading.Lock()


def watcher_for(app: Flask) -> StatusWatcher:
    """The app's watcher, created on first use."""
    with _CREATE_LOCK:
        watcher = app.extensions.get("billvend_status_watch")
        if watcher is None:
            watcher = app.extensions["billvend_status_watch"] = StatusWatcher(app)
        return watcher
