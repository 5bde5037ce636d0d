"""The Huey consumer billvend runs (``huey_consumer wsgi.huey``, Procfile ``worker``).

``BillvendHuey.create_consumer`` (``billvend.platform.queue``) hands the stock
``huey_consumer`` command this :class:`Consumer`, which differs from Huey's in
two ways:

**Signals.** Heroku (and honcho, and most process managers) stop a dyno with
SIGTERM, then SIGKILL 30 s later. Huey's own consumer treats SIGTERM as "stop
now", abandoning tasks mid-flight. Here SIGTERM is graceful, like SIGINT:
the workers take no new task, tasks already running get up to
``--shutdown-timeout`` seconds (the Procfile sets 20, under Heroku's 30) to
finish, then the process exits. A second signal exits at once. Whatever is
cut short (the timeout elapsed, a second signal, SIGKILL) was cut between two
committed steps of the payment state machine, so the payment is ``pending``
(re-vended after ``PENDING_GRACE_SECONDS``), ``vending`` (requeried after
``VENDING_LEASE_SECONDS``, never paid twice) or ``unknown`` (requeried when
due): the sweep finishes it.

**The sweep clock.** Huey checks periodic tasks once a minute, so a crontab
cannot say "every 10 seconds". ``sweep`` is a periodic task that runs every
``ceil(SWEEP_INTERVAL_SECONDS / 60)`` minutes when the interval is a minute or
more (the default, 60). For a shorter interval, the consumer's scheduler
thread (:class:`SweepClockScheduler`, which already wakes every second to move
due scheduled tasks onto the queue) enqueues ``sweep`` every
``SWEEP_INTERVAL_SECONDS`` itself, starting as the consumer starts. Either
way ``sweep`` runs under the ``sweep`` lease (``billvend.platform.leases``: a
database row with an expiry from the database clock), so with several
worker processes one sweep runs at a time, a tick that finds the lease held
is skipped, a killed holder's lease expires by itself after
``SWEEP_LOCK_SECONDS``, and a starting worker never clears a live sweep's
lease (the Procfile no longer passes ``--flush-locks``).
"""

from __future__ import annotations

import logging
import signal
import time

from huey import consumer as huey_consumer
from huey.exceptions import ConfigurationError

from billvend.platform import heartbeat
from billvend.platform.logs import has_json_root_handler
from billvend.platform.queue import huey_app

log = logging.getLogger(__name__)

#: How often a worker records its heartbeat (billvend.platform.heartbeat).
HEARTBEAT_INTERVAL_SECONDS = 5

#: Below this many seconds the consumer's clock, not Huey's once-a-minute
#: periodic check, drives the sweep.
PERIODIC_RESOLUTION_SECONDS = 60


def sweep_interval_seconds() -> int:
    """``SWEEP_INTERVAL_SECONDS`` of the process's app.

    :raises ConfigurationError: if it is not a positive whole number.
    """
    interval = huey_app().config["SWEEP_INTERVAL_SECONDS"]
    if not isinstance(interval, int) or interval < 1:
        raise ConfigurationError(f"SWEEP_INTERVAL_SECONDS must be a positive integer, not {interval!r}")
    return interval


class SweepClockScheduler(huey_consumer.Scheduler):
    """Huey's scheduler, plus the sub-minute sweep clock (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sweep_interval_seconds = sweep_interval_seconds()
        self._next_sweep = time.monotonic()
        self._next_heartbeat = time.monotonic()
        self.heartbeat_name = heartbeat.process_name()
        self.worker_concurrency = 0  # set by Consumer

    def _heartbeat(self, now_monotonic: float) -> None:
        # The admin overview and /metrics show when each worker last ran this
        # loop (database clock).
        if now_monotonic < self._next_heartbeat:
            return
        self._next_heartbeat = now_monotonic + HEARTBEAT_INTERVAL_SECONDS
        try:
            with huey_app().app_context():
                heartbeat.beat(self.heartbeat_name, self.worker_concurrency)
        except Exception:  # noqa: BLE001 - database down: the age shows it
            self._logger.warning("could not record the worker heartbeat", exc_info=True)

    def loop(self, now=None):
        now_monotonic = time.monotonic()
        self._heartbeat(now_monotonic)
        # Half a tick of slack: this loop wakes about once a second, a few
        # milliseconds early or late, and must not round 10 s up to 11 s.
        if (self.periodic and self.sweep_interval_seconds < PERIODIC_RESOLUTION_SECONDS
                and now_monotonic >= self._next_sweep - self.interval / 2):
            # Keep the cadence; after a stall, start again from now.
            self._next_sweep = max(self._next_sweep + self.sweep_interval_seconds, now_monotonic)
            try:
                self.huey.clock_task()  # vending's sweep (BillvendHuey.clock_task)
            except Exception:  # noqa: BLE001 - queue down: try again next tick
                self._logger.exception("could not enqueue the sweep")
        super().loop(now)


class Consumer(huey_consumer.Consumer):
    """Huey's consumer with graceful SIGTERM and the sweep clock."""

    scheduler_class = SweepClockScheduler

    def __init__(self, huey, **options):
        super().__init__(huey, **options)
        # huey_consumer sets up logging for "huey" only; billvend's own
        # records (what the sweep re-drove, interrupted payments) go to the
        # same place.
        app_logger = logging.getLogger("billvend")
        huey_logger = logging.getLogger("huey")
        if has_json_root_handler():
            # billvend.platform.logs set up the root handler (JSON or text): huey's
            # records go to it too, not to huey_consumer's own handler as well.
            for handler in list(huey_logger.handlers):
                huey_logger.removeHandler(handler)
        elif not app_logger.handlers and huey_logger.handlers:
            for handler in huey_logger.handlers:
                app_logger.addHandler(handler)
            app_logger.setLevel(logging.INFO)
        # (restart, graceful) as in Huey: both stop signals are graceful.
        self._signal_actions[signal.SIGINT] = (False, True)
        self._signal_actions[signal.SIGTERM] = (False, True)

    def _create_scheduler(self):
        scheduler = super()._create_scheduler()
        scheduler.worker_concurrency = self.workers  # shown with its heartbeat
        return scheduler

    def start(self):
        self._logger.info(
            "billvend worker: SIGINT/SIGTERM finish running tasks (shutdown timeout %s s) then exit; "
            "sweep every %s s", self.shutdown_timeout, sweep_interval_seconds())
        super().start()
